"""`python -m diffret_pyserini.bench`: what K, the one-pass encoder and the searchers cost, measured side by side.

Sections (each writes `<out>/<section>.json` and `<out>/<section>.png`, and prints markdown tables):
- `cost-of-k`: encode latency/throughput for K in {1..32}: one-pass bidirectional vs PromptReps K-step
  generation on the same weights, the masked-LM default, and any extra model folders;
- `overhead`: our whole encode (+ writing) vs a bare `model(**batch)` and vs body + LM head at the K slots,
  with a per-stage profile;
- `passes`: dense + sparse from one pass vs the two passes `python -m pyserini.encode` needs;
- `search`: index build time/size and search latency (p50/p95, QPS) for sparse, dense, MaxSim and hybrid
  searchers at growing corpus sizes, with the multi-vector store's memory.
"""
