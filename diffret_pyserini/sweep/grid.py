"""The sweep's work: cells, encode latency, per-query metrics, adaptive Kq runs; then the report."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from diffret_pyserini.atomic import atomic_write_text
from diffret_pyserini.cli import InputError
from diffret_pyserini.sweep.arguments import SweepArguments

log = logging.getLogger("diffret_pyserini.sweep")


def cell_name(system: str, kq: int, kp: int) -> str:
    return f"{system}|{kq}|{kp}"


def encode_latency(model: str, args: SweepArguments, topics: dict[str, str], docs: list[str]) -> dict:
    """Seconds (wall and process CPU) to encode the topics at each Kq and `docs` at each Kp, measured side by
    side in this process, cache or not (the cached stages say nothing about time)."""
    from diffret_pyserini.pipeline.cells import role_encoders

    out: dict = {"queries": {}, "passages": {}, "n_queries": len(topics), "n_docs": len(docs)}
    texts = list(topics.values())
    for role, ks, items in (("queries", args.kq, texts), ("passages", args.kp, docs)):
        for k in ks:
            enc = role_encoders(model, replace(args, kq=k if role == "queries" else args.kq[0],
                                               kp=k if role == "passages" else args.kp[0]))[0 if role == "queries" else 1]
            r = "query" if role == "queries" else "passage"
            enc.encode(items[:2], r)  # warm-up: prompt builder, kernels
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(items), args.batch_size):
                enc.encode(items[i:i + args.batch_size], r)
            out[role][k] = {"wall_ms_per_text": 1000 * (time.perf_counter() - wall) / len(items),
                            "cpu_ms_per_text": 1000 * (time.process_time() - cpu) / len(items)}
    return out


def run(args: SweepArguments) -> dict:
    """Every cell of the grid, the per-query analysis and the adaptive methods; returns the sweep summary."""
    from diffret_pyserini.bench.common import contention_probe
    from diffret_pyserini.datasets import check_dataset, iter_corpus, load_queries, normalize_text, resolve_dataset
    from diffret_pyserini.eval.runs import write_trec_run
    from diffret_pyserini.eval.trec_eval import evaluate_per_query
    from diffret_pyserini.fingerprint import fingerprint
    from diffret_pyserini.index.lucene import bm25_fingerprint, bm25_index, dataset_key
    from diffret_pyserini.pipeline.adaptive_k import auto_system_name, gather, select, train_learned
    from diffret_pyserini.pipeline.cells import slug
    from diffret_pyserini.sweep.report import write_report

    args.validate()
    dataset = resolve_dataset(args.dataset)
    for warning in check_dataset(dataset):
        log.warning(f"warning: {warning}")
    if dataset.qrels_path is None:
        raise InputError(f"--dataset {args.dataset}: no qrels; a sweep reports per-query metrics")
    topics = {qid: normalize_text(text) for qid, text in load_queries(dataset.queries_path).items()}
    key = dataset_key(dataset)
    bm25 = bm25_index(dataset, Path(args.indexes) / key / "bm25", args.threads, args.force)
    bm25_fp = fingerprint(bm25=bm25_fingerprint(bm25), topics=topics)
    runs_root = Path(args.runs) / key
    name = args.name or slug(Path(args.model).name if Path(args.model).is_dir() else args.model)
    out = runs_root / "sweep" / name
    ks, kps = sorted(set(args.kq)), sorted(set(args.kp))
    methods = list(args.kq_method) if len(ks) > 1 else []
    paths: dict[str, Path] = {}
    adaptive_paths: dict[str, Path] = {}
    choices: dict[str, dict] = {}
    signal_s: dict[int, float] = {}
    for kp in kps:
        log.info(f"Kp={kp}: cells for Kq in {ks}")
        g = gather(dataset, args, topics, args.model, ks, kp, args.systems, bm25, bm25_fp, runs_root)
        signal_s.update(g.signal_s)
        for system in args.systems:
            for k in ks:
                paths[cell_name(system, k, kp)] = g.paths[system][k]
        selectors = (train_learned(dataset, args, args.model, ks, kp, args.systems, bm25, bm25_fp, runs_root)
                     if "learned" in methods else {})
        for system in args.systems:
            for method in methods:
                run_, choice = select(method, g, system, selectors.get(system))
                label = f"{auto_system_name(system, method)}|{kp}"
                adaptive_paths[label] = write_trec_run(run_, out / "adaptive" / f"{label.replace('|', '-kp')}.trec",
                                                       tag=auto_system_name(system, method), k=args.hits)
                if choice is not None:
                    choices[label] = choice
    log.info("per-query evaluation (trec_eval -q) ...")
    per_query = evaluate_per_query(dataset.qrels_path, {**paths, **adaptive_paths})
    docs = [d.contents for _, d in zip(range(args.latency_docs), iter_corpus(dataset.corpus_path))]
    latency = encode_latency(args.model, args, topics, docs)
    latency["slot_signal_ms_per_query"] = {k: 1000 * s / len(topics) for k, s in signal_s.items()}
    latency["contention"] = contention_probe(args.threads)
    atomic_write_text(out / "per_query.json", json.dumps(per_query, indent=0) + "\n")
    summary = write_report(out, f"{dataset.name} / {name}", per_query, args.systems, ks, kps, methods, choices,
                           latency)
    print((out / "sweep.md").read_text())
    return summary
