"""Section throughput: whole-corpus encoding, before (corpus order, batches of 32) against after (each chunk
sorted by token length, batches under a token budget), with the padding of each and the limit: the backbone
body's own forward time on the after batches' tokens (the same real tokens, nothing else timed).

Two real collections: the packaged CACM (title + text) and the original CACM texts (Anserini's
`cacm.tar.gz` in ../shared/data/cacm/original: every `<pre>` body with its tags stripped and its whitespace
collapsed, so each document keeps its title, date, authors and citation rows; longer, and shaped otherwise).
Each round encodes each collection once per arm, in a rotated order (side by side in one run); ratios are
medians of per-round ratios, wall and process CPU time both reported.
"""
from __future__ import annotations

import html
import json
import re
import statistics
import tarfile
import time
from pathlib import Path
from typing import Any

import torch

from diffret_pyserini.bench.common import BenchOptions, log, percentile, sync
from diffret_pyserini.cli import InputError
from diffret_pyserini.model.device import parse_device

TARGET_SPEEDUP = 1.6    # after >= 1.6 x before, docs/s
TARGET_PADDING = 0.05   # after: padding <= 5% of the positions computed
TARGET_LIMIT = 1.10     # after: within 10% of the body's own forward time on the same tokens
BEFORE_BATCH = 32
_REPO = Path(__file__).resolve().parents[2]
# ../shared beside the checkout, or shared/ inside it (what travels to a device machine with the working tree)
_ORIGINAL = Path("shared") / "data" / "cacm" / "original" / "cacm.tar.gz"
ORIGINAL_CACM = next((p for p in (_REPO.parent / _ORIGINAL, _REPO / _ORIGINAL) if p.is_file()),
                     _REPO.parent / _ORIGINAL)
_TAG = re.compile(r"<[^>]+>")


def original_cacm_jsonl(dest: Path, limit: int | None = None) -> Path:
    """The original CACM HTML texts as a corpus jsonl (tags stripped, whitespace collapsed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ORIGINAL_CACM) as tar, open(dest, "w", encoding="utf-8") as out:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".html")), key=lambda m: m.name)
        for m in members[:limit]:
            raw = tar.extractfile(m).read().decode("utf-8", errors="replace")
            text = " ".join(html.unescape(_TAG.sub(" ", raw)).split())
            out.write(json.dumps({"_id": Path(m.name).stem, "text": text}) + "\n")
    return dest


def collections(work: Path, limit: int | None) -> list[tuple[str, Path]]:
    from diffret_pyserini.datasets import resolve_dataset

    cacm = resolve_dataset("cacm").corpus_path
    if limit:
        cut = work / "cacm.jsonl"
        cut.write_text("".join(open(cacm, encoding="utf-8").readlines()[:limit]), encoding="utf-8")
        cacm = cut
    out = [("CACM (packaged: title + text)", cacm)]
    if ORIGINAL_CACM.is_file():
        out.append(("CACM original HTML texts", original_cacm_jsonl(work / "cacm-original.jsonl", limit)))
    else:
        log(f"throughput: {ORIGINAL_CACM} not found; one collection only")
    return out


def body_limit(encoder, corpus: Path, device: torch.device, max_rows: int, max_tokens: int,
               ) -> tuple[callable, dict]:
    """A callable timing only the backbone body over the after arm's batches (inputs built beforehand)."""
    from diffret_pyserini.datasets import iter_corpus
    from diffret_pyserini.encode.jobs import batched, plan_window

    backbone = encoder.backbone
    builder = encoder.builder("passage")
    inputs, lengths = [], []
    for chunk in batched(iter_corpus(corpus), 1024):
        window = plan_window(encoder, chunk, None, max_rows, max_tokens, True)
        lengths += window.plan.lengths
        for rows in window.plan.batches:
            batch = builder.build([window.texts[i] for i in rows], [window.text_ids[i] for i in rows]).to(device)
            x = {"input_ids": batch.input_ids, **backbone.attention_inputs(batch)}
            if backbone.takes_position_ids:
                x["position_ids"] = batch.position_ids
            inputs.append(x)

    @torch.inference_mode()
    def run() -> None:
        for x in inputs:
            backbone.body_features(**x)

    return run, {"median_tokens": statistics.median(lengths), "p90_tokens": percentile(lengths, 90),
                 "batches": len(inputs)}


def measure(name: str, corpus: Path, encoder, opts: BenchOptions, work: Path) -> dict:
    from diffret_pyserini.encode.jobs import EncodeOptions, EncodeStats, encode_corpus

    device = parse_device(opts.device)
    stats: dict[str, EncodeStats] = {}

    def arm(label: str, **kw):
        def run() -> None:
            stats[label] = EncodeStats()
            encode_corpus(encoder, corpus, work / label, EncodeOptions(overwrite=True, **kw), stats=stats[label])
        return run

    rows, max_tokens = opts.throughput_rows, opts.throughput_max_tokens
    limit_run, shape = body_limit(encoder, corpus, device, rows, max_tokens)
    cells = {"before": arm("before", batch_size=BEFORE_BATCH, length_buckets=False),
             "after": arm("after", batch_size=rows, max_tokens=max_tokens, length_buckets=True),
             "limit": limit_run}
    wall: dict[str, list[float]] = {k: [] for k in cells}
    cpu: dict[str, list[float]] = {k: [] for k in cells}
    start = time.perf_counter()
    for r in range(max(1, opts.repeats)):
        names = list(cells)
        for label in names[r % 3:] + names[:r % 3]:
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            cells[label]()
            sync(device)
            wall[label].append(time.perf_counter() - t)
            cpu[label].append(time.process_time() - c)
        elapsed = time.perf_counter() - start
        log(f"throughput {name} round {r + 1}: {elapsed:.0f}s")
        if elapsed / (r + 1) * (r + 2) > opts.budget_s:
            break
    docs = stats["after"].docs

    def ratio(samples: dict, a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

    speedup, limit_ratio = ratio(wall, "before", "after"), ratio(wall, "after", "limit")
    padding = {k: stats[k].padding for k in ("before", "after")}
    return {"collection": name, "kp": encoder.settings.kp, "corpus": str(corpus), "docs": docs, **shape,
            "rounds": len(wall["after"]),
            "seconds": {k: statistics.median(v) for k, v in wall.items()},
            "cpu_seconds": {k: statistics.median(v) for k, v in cpu.items()},
            "samples": wall, "cpu_samples": cpu,
            "docs_per_s": {k: docs / statistics.median(v) for k, v in wall.items()},
            "padding": padding, "batches": {k: stats[k].batches for k in ("before", "after")},
            "speedup": speedup, "speedup_cpu": ratio(cpu, "before", "after"),
            "after_over_limit": limit_ratio, "after_over_limit_cpu": ratio(cpu, "after", "limit"),
            "targets_met": {"padding": padding["after"] <= TARGET_PADDING, "speedup": speedup >= TARGET_SPEEDUP,
                            "limit": limit_ratio <= TARGET_LIMIT}}


def run(opts: BenchOptions) -> dict[str, Any]:
    """Every collection at every K of `opts.throughput_kp`, on the first one-pass system (`--decoder` read
    bidirectionally, else `--masked`, else the first of `--models`: a Dream or LLaDA folder)."""
    import shutil

    from diffret_pyserini.bench.common import one_pass_systems
    from diffret_pyserini.model.encoder import DiffRetEncoder, EncoderSettings

    systems = one_pass_systems(opts)
    if not systems:
        raise InputError("throughput: no model (give --decoder, --masked or --models)")
    system = systems[0]
    backbone = system.backbone(opts)
    saved = dict(getattr(getattr(backbone, "spec", None), "settings", {}) or {})
    work = Path(opts.workdir or Path(opts.out) / "work") / "throughput"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name, corpus in collections(work, 64 if opts.quick else None):
            for kp in opts.throughput_kp:
                log(f"throughput: {name} ({corpus}), K={kp}")
                encoder = DiffRetEncoder(backbone, EncoderSettings.from_dict({**saved, "kp": kp}))
                rows.append(measure(name, corpus, encoder, opts, work))
    finally:
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
            try:  # the shared work folder too, when no other section left anything in it
                work.parent.rmdir()
            except OSError:
                pass
    return {"rows": rows, "model": system.model, "kind": system.kind or "auto", "kp": list(opts.throughput_kp),
            "dtype": str(backbone.dtype), "before": f"corpus order, batch {BEFORE_BATCH}",
            "after": f"length-bucketed per 1,024-doc chunk, <= {opts.throughput_rows} rows and "
                     f"<= {opts.throughput_max_tokens} tokens",
            "targets": {"padding": TARGET_PADDING, "speedup": TARGET_SPEEDUP, "after_over_limit": TARGET_LIMIT}}


def tables(doc: dict) -> str:
    from diffret_pyserini.bench.report import table, yes

    rows = []
    for r in doc["rows"]:
        t = r["targets_met"]
        rows.append([r["collection"], r.get("kp", doc["kp"]), r["docs"],
                     f"{r['median_tokens']:.0f} / {r['p90_tokens']:.0f}",
                     f"{r['padding']['before']:.1%}", f"{r['padding']['after']:.1%} ({yes(t['padding'])})",
                     f"{r['docs_per_s']['before']:.1f}", f"{r['docs_per_s']['after']:.1f}",
                     f"{r['speedup']:.2f}x ({yes(t['speedup'])})", f"{r['speedup_cpu']:.2f}x",
                     f"{r['docs_per_s']['limit']:.1f}", f"{r['after_over_limit']:.3f} ({yes(t['limit'])})",
                     f"{r['after_over_limit_cpu']:.3f}", r["rounds"]])
    head = (f"{doc['model']} ({doc['kind']}, {doc.get('dtype', 'float32')}), dense + multi + sparse written. Before: "
            f"{doc['before']}; after: {doc['after']}; limit: the body's forward alone on the after batches. "
            f"Targets: padding <= {doc['targets']['padding']:.0%}, after >= {doc['targets']['speedup']}x "
            f"before, after <= {doc['targets']['after_over_limit']:.2f} x limit.\n\n")
    return head + table(["collection", "K", "docs", "tokens median / p90 (with prompt)", "padding before",
                         "padding after", "docs/s before", "docs/s after", "speedup (wall)", "speedup (CPU)",
                         "docs/s limit", "after / limit (wall)", "after / limit (CPU)", "rounds"], rows)


def plot(doc: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from diffret_pyserini.bench.report import save

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.25
    for j, arm in enumerate(("before", "after", "limit")):
        ax.bar([i + (j - 1) * width for i in range(len(doc["rows"]))],
               [r["docs_per_s"][arm] for r in doc["rows"]], width, label=arm)
    ax.set_xticks(range(len(doc["rows"])), [f"{r['collection']}\nK={r.get('kp', doc['kp'])}" for r in doc["rows"]])
    ax.set_ylabel("documents / s")
    ax.set_title(f"whole-corpus encoding, {doc['model']}")
    ax.legend()
    save(fig, path)
