"""Section 1, cost of K: encode time as a function of the number of slots K, per system, side by side.

Workloads: `query@1` (real CACM queries, each encoded alone: latency per query), `passage@1` (one 256-token
CACM passage: latency) and `passage@B` (B such passages in one batch: time per document). Systems on the same
weights: the decoder run bidirectionally (one pass for all K slots) and causally (PromptReps: K greedy steps with
a KV cache, `stop_early=False` so it really makes K steps), plus the masked-LM default and any extra folders.

Beside each latency ratio latency(K)/latency(K=1) stands the token-count ratio, the compute-bound limit: padded
sequence tokens at K over those at K=1 (for PromptReps: prompt tokens + K-1 generated ones).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffret_pyserini.model.device import parse_device
from diffret_pyserini.bench.common import (BenchOptions, Cell, SystemSpec, encoder_for, log, one_pass_systems,
                                           paired_ratio, passages_of_tokens, cacm_queries,
                                           run_interleaved)
from diffret_pyserini.model.encoder import REPRESENTATIONS

TARGET_PASSAGE_RATIO = 1.10     # one-pass latency(K=16)/latency(K=1), 256-token passages, batch 1 and B
TARGET_QUERY_SLACK = 1.05       # one-pass query latency ratio <= 1.05 x token-count ratio
TARGET_K = 16


@dataclass
class Workload:
    """Texts encoded by one timed call: `batches` run one after the other."""

    name: str
    role: str
    batches: list[list[str]]

    @property
    def items(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def batch_size(self) -> int:
        return len(self.batches[0])


def workloads(tokenizer, opts: BenchOptions) -> list[Workload]:
    """query@1, passage@1 and passage@B, passages cut to `doc_tokens` by this model's tokenizer."""
    docs = passages_of_tokens(tokenizer, max(opts.doc_batch, 1), opts.doc_tokens)
    return [Workload("query@1", "query", [[q] for q in cacm_queries(opts.n_queries)]),
            Workload("passage@1", "passage", [docs[:1]]),
            Workload(f"passage@{opts.doc_batch}", "passage", [docs[:opts.doc_batch]])]


def sequence_tokens(encoder, workload: Workload, k: int, autoregressive: bool) -> dict:
    """Padded tokens the model processes for one timed call, and the text lengths it really saw."""
    total, text_lengths = 0, []
    for batch in workload.batches:
        prompt = encoder.builder(workload.role, k).build(batch)
        rows, length = prompt.input_ids.shape
        total += rows * length + (rows * (k - 1) if autoregressive else 0)
        text_lengths += prompt.text_lengths
    return {"tokens": total, "text_tokens_min": min(text_lengths), "text_tokens_max": max(text_lengths)}


def system_groups(opts: BenchOptions) -> list[list[SystemSpec]]:
    """Systems that share weights are timed together (interleaved): the decoder one-pass and PromptReps."""
    groups = []
    for spec in one_pass_systems(opts):
        group = [spec]
        if spec.model == opts.decoder and spec.kind == "bidirectional":
            group.append(SystemSpec(spec.model, "causal", "promptreps-ar"))
        groups.append(group)
    return groups


def make_cell(spec: SystemSpec, backbone, encoder, workload: Workload, k: int) -> Cell:
    def run() -> None:
        for batch in workload.batches:
            encoder.encode(batch, workload.role, want=REPRESENTATIONS)

    def warm() -> None:  # builds the prompt layout and term vocabulary; a short text keeps it cheap
        encoder.encode([workload.batches[0][0][:200]], workload.role, want=REPRESENTATIONS)

    return Cell(key=(spec.label, workload.name, k), run=run, warm=warm, counter=lambda: backbone.forward_calls)


def measure_group(group: list[SystemSpec], opts: BenchOptions) -> list[dict]:
    """All (system, workload, K) rows of one weight group; cells of a workload are interleaved."""
    device = parse_device(opts.device)
    backbones = {spec: spec.backbone(opts) for spec in group}
    loads = workloads(backbones[group[0]].tokenizer, opts)
    rows: list[dict] = []
    for workload in loads:
        cells: dict[tuple[SystemSpec, int], Cell] = {}
        tokens: dict[tuple[SystemSpec, int], dict] = {}
        for spec in group:
            for k in opts.ks:
                encoder = encoder_for(backbones[spec], opts, k)
                cells[spec, k] = make_cell(spec, backbones[spec], encoder, workload, k)
                tokens[spec, k] = sequence_tokens(encoder, workload, k, spec.method == "promptreps-ar")
        label = f"cost-of-k {short_group(group)} {workload.name}"
        rounds = run_interleaved(list(cells.values()), opts.repeats, opts.budget_s, opts.min_sample_s, device,
                                 label)
        base_k = min(opts.ks)
        for spec in group:
            for k in opts.ks:
                rows.append(row(spec, workload, k, cells[spec, k], cells[spec, base_k], tokens[spec, k],
                                tokens[spec, base_k], rounds))
    return rows


def short_group(group: list[SystemSpec]) -> str:
    return group[0].label.split(" ")[0]


def row(spec: SystemSpec, workload: Workload, k: int, cell: Cell, base: Cell, tokens: dict, base_tokens: dict,
        rounds: int) -> dict:
    per_item = [s / workload.items for s in cell.samples]
    seconds = cell.median / workload.items
    cpu = cell.cpu_median
    return {
        "system": spec.label, "model": spec.model, "kind": "causal" if spec.method == "promptreps-ar" else spec.kind,
        "method": spec.method, "workload": workload.name, "role": workload.role, "batch": workload.batch_size,
        "items_per_call": workload.items, "k": k, "seconds_per_item": seconds, "samples_per_item": per_item,
        "items_per_second": 1.0 / seconds if seconds > 0 else None, "rounds": rounds,
        "ratio": paired_ratio(cell, base), "tokens": tokens["tokens"],
        "cpu_seconds_per_item": None if cpu is None else cpu / workload.items,
        "cpu_ratio": paired_ratio(cell, base, cpu=True),
        "token_ratio": tokens["tokens"] / base_tokens["tokens"],
        "text_tokens": [tokens["text_tokens_min"], tokens["text_tokens_max"]],
        "forward_calls_per_batch": (cell.calls_per_run or 0) / len(workload.batches),
    }


def targets(rows: list[dict], ks: tuple[int, ...]) -> list[dict]:
    """The issue's targets for one-pass systems at K=16 (or the largest K measured below it)."""
    k = max((x for x in ks if x <= TARGET_K), default=max(ks))
    out = []
    for r in rows:
        if r["method"] != "one-pass" or r["k"] != k:
            continue
        if r["role"] == "passage":
            limit = TARGET_PASSAGE_RATIO
            what = f"latency(K={k})/latency(K=1) <= {limit:.2f}"
        else:
            limit = TARGET_QUERY_SLACK * r["token_ratio"]
            what = f"latency ratio <= {TARGET_QUERY_SLACK:.2f} x token ratio {r['token_ratio']:.3f} = {limit:.3f}"
        ar = next((a for a in rows if a["method"] == "promptreps-ar" and a["model"] == r["model"]
                   and a["workload"] == r["workload"] and a["k"] == k), None)
        cpu = r["cpu_ratio"]
        out.append({"system": r["system"], "workload": r["workload"], "k": k, "target": what,
                    "measured": r["ratio"], "limit": limit, "met": r["ratio"] <= limit,
                    "measured_cpu": cpu, "met_cpu": None if cpu is None else cpu <= limit,
                    "promptreps_ratio": ar["ratio"] if ar else None,
                    "promptreps_cpu_ratio": ar["cpu_ratio"] if ar else None})
    return out


def run(opts: BenchOptions) -> dict[str, Any]:
    """Measure every group; returns the section's JSON document (without the shared meta block)."""
    rows: list[dict] = []
    for group in system_groups(opts):
        log(f"cost-of-k: {', '.join(s.label for s in group)}")
        rows += measure_group(group, opts)
    return {"rows": rows, "targets": targets(rows, opts.ks), "ks": list(opts.ks)}
