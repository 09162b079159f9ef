"""Section 2, encoder overhead: our whole encode against the bare model, and where the rest of the time goes.

Three cells per (system, batch), timed interleaved on the same prompt batch:
- `ours`: `DiffRetEncoder.encode` (prompt building, one forward, dense pooling, sparse extraction, quantisation,
  term dicts) + `RepresentationShardWriter.write_batch` with the CLI's chunk size (1024 documents: most calls
  only validate and buffer; committing a chunk, fsync included, is measured apart and reported per document,
  amortized, as a corpus run pays it);
- `bare`: `model(**inputs)` on the same inputs, the naive way: vocabulary logits at EVERY position;
- `body+head@K`: the backbone body alone (decoder swapped for an identity, `Backbone.body_features`) plus the LM
  head applied at the K slots only, the least any encoder reading K slots must compute.

`ours` runs with light stage timers (patched in for the run, removed after), which split its time into prompt
building, forward, dense pooling, the parts of sparse extraction, writing, and the rest.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from diffret_pyserini.model import representations as R
from diffret_pyserini.model.device import parse_device
from diffret_pyserini.bench.common import (BenchOptions, Cell, SystemSpec, encoder_for, log, one_pass_systems,
                                           paired_ratio, passages_of_tokens, run_interleaved, sync)
from diffret_pyserini.model.encoder import REPRESENTATIONS
from diffret_pyserini.model.prompts import PromptBuilder

TARGET_BODY_RATIO = 1.05  # ours <= 1.05 x (body + LM head at the K slots)
CHUNK_SIZE = 1024         # documents per committed chunk, as `encode.jobs.encode_corpus` writes them
# Stage names, in pipeline order; sparse sub-stages are nested inside "sparse extraction".
STAGES = ("prompts (tokenise + layout)", "forward (body + slot gather)", "dense pooling",
          "sparse extraction", "sparse: content filter (tokenise words)", "sparse: logits on kept columns",
          "sparse: weights + top-N + max over K", "sparse: quantise", "sparse: term dicts",
          "sparse: candidate columns + mask", "writing (write_batch)", "other (glue, numpy copies)")
TOP_LEVEL = ("prompts (tokenise + layout)", "forward (body + slot gather)", "dense pooling", "sparse extraction",
             "writing (write_batch)")
SPARSE_PARTS = STAGES[4:9]
# representations.* functions `DiffRetEncoder.encode` calls -> the stage they belong to.
MODULE_STAGES = {"dense_single": "dense pooling", "dense_multi": "dense pooling",
                 "content_token_ids": "sparse: content filter (tokenise words)",
                 "sparse_slot_weights": "sparse: weights + top-N + max over K",
                 "pool_sparse": "sparse: weights + top-N + max over K",
                 "quantize": "sparse: quantise", "to_term_dicts": "sparse: term dicts"}


class StageTimer:
    """Accumulates seconds per stage while its patches are active (see `patched`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls = 0
        self.total = 0.0
        self.active: set[str] = set()

    def wrap(self, stage: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            if stage in self.active:  # nested call of the same stage (dense_single calls dense_multi): count once
                return fn(*args, **kwargs)
            self.active.add(stage)
            sync(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.device)
                self.seconds[stage] += time.perf_counter() - start
                self.active.discard(stage)
        return timed

    @contextlib.contextmanager
    def patched(self, encoder, writer) -> Iterator[None]:
        """Time the real code path by wrapping the functions `DiffRetEncoder.encode` calls, then restore them.

        Module functions of `representations` are looked up at call time by `encoding`, the prompt builder
        through its class, and the backbone/encoder/writer methods through instance attributes.
        """
        saved = {name: getattr(R, name) for name in MODULE_STAGES}
        build = PromptBuilder.build
        backbone = encoder.backbone
        instance = ((backbone, "read_slots", "forward (body + slot gather)"),
                    (backbone, "vocab_logits", "sparse: logits on kept columns"),
                    (encoder, "sparse_vectors", "sparse extraction"), (writer, "write_batch", "writing (write_batch)"))
        try:
            for name, stage in MODULE_STAGES.items():
                setattr(R, name, self.wrap(stage, saved[name]))
            PromptBuilder.build = self.wrap("prompts (tokenise + layout)", build)
            for obj, attr, stage in instance:
                setattr(obj, attr, self.wrap(stage, getattr(obj, attr)))
            yield
        finally:
            for name, fn in saved.items():
                setattr(R, name, fn)
            PromptBuilder.build = build
            for obj, attr, _ in instance:
                obj.__dict__.pop(attr, None)

    def run(self, encoder, writer, fn: Callable[[], Any]) -> None:
        """One profiled call of `fn` (the whole encode + write)."""
        with self.patched(encoder, writer):
            sync(self.device)
            start = time.perf_counter()
            fn()
            sync(self.device)
            self.total += time.perf_counter() - start
        self.calls += 1

    def profile(self) -> dict[str, float]:
        """Mean seconds per call per stage; the remainders go to "candidate columns" and "other"."""
        n = max(self.calls, 1)
        out = {stage: self.seconds.get(stage, 0.0) / n for stage in STAGES}
        out["sparse: candidate columns + mask"] = max(
            0.0, out["sparse extraction"] - sum(out[s] for s in SPARSE_PARTS))
        out["other (glue, numpy copies)"] = max(0.0, self.total / n - sum(out[s] for s in TOP_LEVEL))
        out["total"] = self.total / n
        return out


class BatchWriter:
    """The real shard writer with the CLI's chunk size, fed fresh ids; restarted now and then to bound disk use."""

    def __init__(self, root: Path, chunk_size: int = CHUNK_SIZE):
        self.root, self.chunk_size, self.next_id = root, chunk_size, 0
        self.reset()

    def reset(self) -> None:
        from diffret_pyserini.encode.writers import RepresentationShardWriter

        shutil.rmtree(self.root, ignore_errors=True)
        self.writer = RepresentationShardWriter(self.root, REPRESENTATIONS, chunk_size=self.chunk_size,
                                                overwrite=True)

    def maybe_reset(self) -> None:
        if len(self.writer.manifest["chunks"]) >= 50:
            self.reset()

    def write(self, texts: list[str], out) -> None:
        ids = [f"d{self.next_id + i}" for i in range(len(texts))]
        self.next_id += len(texts)
        self.writer.write_batch(ids, texts, dense=out.dense, multi=out.multi, multi_mask=out.multi_valid,
                                sparse=out.sparse)


def amortized_write_seconds(root: Path, texts: list[str], out) -> float:
    """Seconds per document to buffer AND commit a whole chunk (jsonl + npz + manifest, fsynced), the way a
    corpus run writes; the timed calls mostly only buffer, as a chunk fills once every CHUNK_SIZE documents."""
    writer = BatchWriter(root)
    start = time.perf_counter()
    while writer.next_id < CHUNK_SIZE:
        writer.write(texts, out)
    elapsed = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    return elapsed / writer.next_id


def model_inputs(backbone, prompt) -> dict:
    """The exact inputs our one-pass forward gives the model (attention form per backbone kind)."""
    prompt = prompt.to(backbone.device)
    inputs = {"input_ids": prompt.input_ids, **backbone.attention_inputs(prompt)}
    if backbone.takes_position_ids:
        inputs["position_ids"] = prompt.position_ids
    return inputs


def cells_for(spec: SystemSpec, opts: BenchOptions, texts: list[str], work: Path,
              timer: StageTimer) -> tuple[dict[str, Cell], dict]:
    """ours / bare / body+head@K on one prompt batch; `ours` is profiled by `timer` (reset after warm-up).

    Also returns a dict that holds the last encoded batch (`"out"`), for the amortized writing measurement.
    """
    backbone = spec.backbone(opts)
    encoder = encoder_for(backbone, opts, opts.overhead_k)
    prompt = encoder.builder("passage").build(texts)
    inputs = model_inputs(backbone, prompt)
    slots = prompt.slot_positions.to(backbone.device)
    writer = BatchWriter(work / "timed")
    last: dict = {}

    def encode_and_write() -> None:
        last["out"] = encoder.encode(texts, "passage", want=REPRESENTATIONS)
        writer.write(texts, last["out"])

    def ours() -> None:
        writer.maybe_reset()  # outside the timers: it swaps the writer object they patch
        timer.run(encoder, writer.writer, encode_and_write)

    def ours_warm() -> None:
        ours()
        timer.reset()

    @torch.inference_mode()
    def bare() -> None:
        backbone.model(**inputs)

    @torch.inference_mode()
    def body_head() -> None:
        features, _, _ = backbone.body_features(**inputs)
        backbone.vocab_logits(backbone.gather(features, slots))

    cells = {"ours": Cell(("ours",), ours, warm=ours_warm), "bare": Cell(("bare",), bare),
             "body+head@K": Cell(("body+head@K",), body_head)}
    return cells, last


def measure(spec: SystemSpec, opts: BenchOptions, batch: int) -> dict:
    """Timed cells, the stage profile and the amortized writing cost of one (system, batch size)."""
    device = parse_device(opts.device)
    texts = passages_of_tokens(spec.backbone(opts).tokenizer, batch, opts.doc_tokens)
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    timer = StageTimer(device)
    try:
        cells, last = cells_for(spec, opts, texts, work, timer)
        rounds = run_interleaved(list(cells.values()), opts.repeats, opts.budget_s, opts.min_sample_s, device,
                                 f"overhead {spec.label} batch {batch}")
        write_per_doc = amortized_write_seconds(work / "amortized", texts, last["out"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_body = paired_ratio(cells["ours"], cells["body+head@K"])
    ours_bare = paired_ratio(cells["ours"], cells["bare"])
    ours_body_cpu = paired_ratio(cells["ours"], cells["body+head@K"], cpu=True)
    ours_bare_cpu = paired_ratio(cells["ours"], cells["bare"], cpu=True)
    return {"system": spec.label, "model": spec.model, "kind": spec.kind, "batch": batch, "k": opts.overhead_k,
            "doc_tokens": opts.doc_tokens, "rounds": rounds,
            "seconds": {name: cell.median for name, cell in cells.items()},
            "samples": {name: cell.samples for name, cell in cells.items()},
            "cpu_seconds": {name: cell.cpu_median for name, cell in cells.items()},
            "ours_over_body_head": ours_body, "ours_over_bare": ours_bare,
            "body_head_over_bare": paired_ratio(cells["body+head@K"], cells["bare"]),
            "ours_over_body_head_cpu": ours_body_cpu, "ours_over_bare_cpu": ours_bare_cpu,
            "target_met_cpu": None if ours_body_cpu is None else (ours_body_cpu <= TARGET_BODY_RATIO
                                                                  and ours_bare_cpu < 1.0),
            "profile_seconds": timer.profile(), "profiled_calls": timer.calls,
            "write_seconds_per_doc_amortized": write_per_doc, "chunk_size": CHUNK_SIZE,
            "target_met": ours_body <= TARGET_BODY_RATIO and ours_bare < 1.0}


def run(opts: BenchOptions) -> dict[str, Any]:
    results = []
    for spec in one_pass_systems(opts):
        for batch in sorted({1, opts.doc_batch}):
            log(f"overhead: {spec.label} batch {batch}")
            results.append(measure(spec, opts, batch))
    return {"rows": results, "stages": list(STAGES), "top_level_stages": list(TOP_LEVEL),
            "target": f"ours <= {TARGET_BODY_RATIO:.2f} x body+head@K, and faster than bare model(**batch)"}
