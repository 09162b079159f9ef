"""The budget sweep: every (Kq, Kp) cell of a grid, per-query metrics, the per-query oracle, adaptive Kq.

    python -m diffret_pyserini.sweep --dataset cacm --model splade-tiny --kq 1 2 4 8 16 --kp 1 2 4 8 16

Encodes the corpus once per Kp and the queries once per Kq (the pipeline's cached cells), searches every system
per cell, evaluates per query with trec_eval -q, and writes under runs/<dataset>/sweep/<model>/: per_query.json,
sweep.json and sweep.md (mean table per system, encode latency per cell, best fixed cell, per-query oracle over
Kq at each Kp, over Kp at each Kq and over the grid with the topics it helps, and each adaptive Kq method against
the best fixed Kq and the oracle on the same topics, with paired significance), plus heatmap-<system>.png.
Resumable: every cell's encodings and runs are cached stages; a re-run only redoes the evaluation and the report.
Modules: arguments.py (flags), grid.py (cells, latency, adaptive runs), report.py (tables, heatmaps).
"""
from diffret_pyserini.sweep.arguments import SweepArguments

__all__ = ["SweepArguments"]
