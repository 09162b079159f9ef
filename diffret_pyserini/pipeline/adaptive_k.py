"""Adaptive Kq end to end: encode and search at every candidate Kq (cached cells), compute the label-free
signals, select a Kq per query, and write the selected run. Used by `--kq auto` and by the sweep.

Nothing here reads qrels: the test topics' runs and texts go in, a run comes out. The learned selector is
trained on pseudo-queries from the corpus (their own documents are their only "judgements").
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from diffret_pyserini.atomic import atomic_write_text
from diffret_pyserini.budget import METHODS
from diffret_pyserini.budget.learned import Selector, feature_vector, fit_selector
from diffret_pyserini.budget.select import compose_run, fuse_rrf, select_agree, select_nqc, select_slot
from diffret_pyserini.budget.signals import agreement, nqc, slot_signals
from diffret_pyserini.cli import InputError
from diffret_pyserini.fingerprint import fingerprint

__all__ = ["Gathered", "gather", "select", "train_learned", "pseudo_topics", "auto_system_name", "AUTO_SYSTEMS"]

log = logging.getLogger("diffret_pyserini.budget")
AUTO_SYSTEMS = ("sparse", "dense", "multi")  # the systems a per-query Kq applies to (one model's own runs)
PSEUDO_QUERIES = 200  # title pseudo-queries the learned selector trains on
PSEUDO_SEED = 7


def auto_system_name(system: str, method: str) -> str:
    """The metrics-table name of an adaptive system: 'sparse-kq-nqc'."""
    return f"{system}-kq-{method}"


@dataclass
class Gathered:
    """One model at one Kp, every candidate Kq: runs per system, slot signals, and what the signals cost."""

    kp: int
    runs: dict[str, dict[int, dict]] = field(default_factory=dict)    # system -> Kq -> run
    paths: dict[str, dict[int, Path]] = field(default_factory=dict)   # system -> Kq -> TREC file
    signals: dict[int, dict[str, dict]] = field(default_factory=dict)  # Kq -> qid -> slot signals
    signal_s: dict[int, float] = field(default_factory=dict)           # Kq -> seconds to compute them
    tags: dict[int, str] = field(default_factory=dict)                 # Kq -> cell tag


def cached_signals(encoder, topics: dict[str, str], k: int, folder: Path, name: str) -> tuple[dict, float]:
    """Slot signals of `topics` at `k` slots, cached in folder/<name> by (topics, encoder) fingerprint;
    returns (signals, seconds spent computing them when they were made)."""
    from diffret_pyserini.encode.jobs import encoder_fingerprint

    path = folder / name
    fp = fingerprint(topics=topics, encoder=encoder_fingerprint(encoder), k=k, version=1)
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("fingerprint") == fp:
            return data["signals"], data["seconds"]
    start = time.perf_counter()
    rows = slot_signals(encoder, list(topics.values()), k)
    seconds = time.perf_counter() - start
    signals = dict(zip(topics, rows))
    atomic_write_text(path, json.dumps({"fingerprint": fp, "seconds": seconds, "signals": signals}) + "\n")
    return signals, seconds


def gather(dataset, args, topics: dict[str, str], model: str, ks: list[int], kp: int, systems: list[str],
           bm25: Path, bm25_fp: str, runs_root: Path, queries_name: str = "queries") -> Gathered:
    """Encode (cached) and search each (k, kp) cell; `queries_name` other than 'queries' encodes `topics` as an
    extra query set (pseudo-queries) beside the cell's own and searches those instead."""
    from diffret_pyserini.eval.runs import read_trec_run
    from diffret_pyserini.pipeline.cells import encode_query_set, encode_stages, role_encoders, search_cell

    out = Gathered(kp)
    for k in ks:
        args_k = replace(args, kq=k, kp=kp)
        q_encoder = role_encoders(model, args_k)[0]
        if queries_name == "queries":
            cell = encode_stages(dataset, args_k, topics, model)
            inputs = cell.search_inputs(bm25, topics)
            run_dir = runs_root / cell.tag
            index_fp = {"bm25": bm25_fp, "model": cell.fingerprint}
            sig_folder = cell.queries.parent
        else:  # pseudo-queries: the corpus encoding as usual, the queries in their own folder
            cell = _cell_only(dataset, args_k, model)
            q_root = cell.queries.parent / queries_name
            q_fp = encode_query_set(q_encoder, topics, q_root, args.batch_size, args.force)
            inputs = cell.search_inputs(bm25, topics, q_root / "queries")
            run_dir = runs_root / queries_name / cell.tag
            index_fp = {"bm25": bm25_fp, "model": fingerprint(cell=cell.fingerprint, q=q_fp)}
            sig_folder = q_root
        paths = search_cell(inputs, run_dir, index_fp, args_k, systems)
        for system, path in paths.items():
            out.paths.setdefault(system, {})[k] = path
            out.runs.setdefault(system, {})[k] = read_trec_run(path)
        out.signals[k], out.signal_s[k] = cached_signals(q_encoder, topics, k, sig_folder, "slot_signals.json")
        out.tags[k] = cell.tag
    return out


def _cell_only(dataset, args, model):
    """The corpus side of a cell (its passage encoding), with the test topics' query encoding left as is."""
    from diffret_pyserini.datasets import load_queries, normalize_text
    from diffret_pyserini.pipeline.cells import encode_stages

    topics = {q: normalize_text(t) for q, t in load_queries(dataset.queries_path).items()}
    return encode_stages(dataset, args, topics, model)


def features_of(g: Gathered, system: str) -> dict[int, dict[str, list[float]]]:
    """{Kq: {qid: feature vector}} for one system's runs."""
    runs = g.runs[system]
    qids = list(next(iter(g.signals.values())))
    agree = {q: agreement(runs, q) for q in qids}
    return {k: {q: feature_vector(g.signals[k][q], nqc(runs[k].get(q, [])), agree[q][k]) for q in qids}
            for k in runs}


def select(method: str, g: Gathered, system: str, selector: Selector | None = None,
           ) -> tuple[dict[str, list], dict[str, int] | None]:
    """(run, {qid: Kq} or None for fusion) of one method on one system's candidate runs."""
    runs = g.runs[system]
    if method == "slot":
        choice = select_slot(g.signals)
    elif method == "nqc":
        choice = select_nqc(runs)
    elif method == "agree":
        choice = select_agree(runs)
    elif method == "learned":
        if selector is None:
            raise ValueError("the learned method needs a trained selector")
        choice = selector.predict(features_of(g, system))
    elif method == "fuse":
        return fuse_rrf(runs), None
    else:
        raise ValueError(f"unknown budget method {method!r}; choose from {METHODS}")
    return compose_run(runs, choice), choice


def pseudo_topics(corpus: str | Path, n: int = PSEUDO_QUERIES, seed: int = PSEUDO_SEED,
                  ) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(topics, positives): `n` title pseudo-queries sampled from the corpus, and each one's own documents."""
    from diffret_pyserini.train.default import MINE
    from diffret_pyserini.train.mine import pseudo_queries

    seeds = pseudo_queries(corpus, "titles", MINE["titles"]["min_words"], seed)
    picked = random.Random(seed).sample(seeds, min(n, len(seeds)))
    return ({f"p{s.qid}": s.query for s in picked}, {f"p{s.qid}": set(s.exclude) for s in picked})


def train_learned(dataset, args, model: str, ks: list[int], kp: int, systems: list[str], bm25: Path, bm25_fp: str,
                  runs_root: Path) -> dict[str, Selector]:
    """One selector per system, trained on title pseudo-queries of the corpus at (each k, kp)."""
    from diffret_pyserini.eval.trec_eval import evaluate_per_query

    topics, positives = pseudo_topics(dataset.corpus_path)
    if not topics:
        raise InputError(f"{dataset.corpus_path}: no titled documents to make pseudo-queries for the learned selector")
    g = gather(dataset, args, topics, model, ks, kp, systems, bm25, bm25_fp, runs_root, queries_name="pseudo")
    qrels = runs_root / "pseudo" / "qrels.tsv"
    atomic_write_text(qrels, "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, docs in positives.items() for d in sorted(docs)))
    selectors = {}
    for system in systems:
        targets = evaluate_per_query(qrels, {k: p for k, p in g.paths[system].items()})
        selectors[system] = fit_selector(features_of(g, system), targets)
        selectors[system].save(runs_root / "pseudo" / f"selector-{system}-kp{kp}.json")
    return selectors
