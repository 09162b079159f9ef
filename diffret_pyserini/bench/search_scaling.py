"""Section 4, index build and search cost against corpus size, through Pyserini's searchers and ours.

Per corpus size N (synthetic data with the real shapes, see `synthetic`):
- build: Lucene impact index (`python -m pyserini.index.lucene --collection JsonVectorCollection --impact
  --pretokenized`, wall time including the JVM start), FAISS flat dir (index + docid, as our writer makes it),
  the multi-vector store (float16), and the searchers' own start-up (LuceneImpactSearcher reads every term's
  df; MultiVectorSearcher builds its FAISS candidate index, 'auto' kind: see search/maxsim.py);
- search: per-query latency p50/p95 and QPS (sequential, one query at a time) for sparse (LuceneImpactSearcher),
  dense (FaissSearcher), MaxSim multi-vector (MultiVectorSearcher) and hybrid (RobustHybridSearcher over dense
  or multi + sparse); the systems are interleaved query by query;
- memory: the multi-vector store in float32 and float16, the candidate index, the owner map, the FAISS flat index;
- quality check: the MaxSim top-k from FAISS candidates against exact MaxSim over every document (recall).
"""
from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffret_pyserini.bench import synthetic as S
from diffret_pyserini.bench.common import BenchOptions, log, percentile
from diffret_pyserini.cli import ToolError

TARGET_P95_S = 0.050     # MaxSim at 100k documents x Kp=16: p95 under 50 ms per query
TARGET_DOCS = 100_000
WARMUP_QUERIES = 3
RECALL_QUERIES = 20      # queries checked against exact MaxSim (every document scored), not timed


def queries_for(size: int, opts: BenchOptions, index: int) -> int:
    """Timed queries at one corpus size: fewer at larger sizes, so the default run stays in minutes."""
    if opts.search_queries:
        return opts.search_queries[min(index, len(opts.search_queries) - 1)]
    return int(min(200, max(30, round(200 * (1000 / size) ** 0.3))))


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def build_impact_index(collection: Path, index: Path, threads: int) -> None:
    cmd = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection",
           "--input", str(collection), "--index", str(index), "--generator", "DefaultLuceneDocumentGenerator",
           "--threads", str(threads), "--impact", "--pretokenized"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stdout.strip().splitlines()[-5:])
        raise ToolError(f"pyserini.index.lucene failed (exit {proc.returncode}): {tail}")


def build_faiss_dir(path: Path, vectors: np.ndarray) -> None:
    """index + docid, exactly the layout FaissSearcher reads (and our writer writes)."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    path.mkdir(parents=True, exist_ok=True)
    (path / "docid").write_text("".join(f"d{i}\n" for i in range(len(vectors))), encoding="utf-8")
    faiss.write_index(index, str(path / "index"))


def candidate_index_bytes(index: Any) -> int:
    """Memory of MultiVectorSearcher's FAISS index: codes (+ ids and coarse centroids for IVF)."""
    import faiss

    if index is None:
        return 0
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # exhaustive (Flat, SQfp16): one code per vector
        return int(index.ntotal) * int(index.sa_code_size())
    return int(ivf.ntotal) * (int(ivf.code_size) + 8) + int(ivf.nlist) * int(ivf.d) * 4


def build(size: int, opts: BenchOptions, work: Path, rng: np.random.Generator, n_queries: int):
    """Write the synthetic corpus and every index; returns (paths, build seconds, sizes, queries, dense)."""
    from diffret_pyserini.index.multivector import write_multi_store

    log(f"search {size}: synthetic data")
    ranks, gen_sparse = timed(lambda: S.write_sparse_corpus(work / "sparse" / "docs.jsonl", size, opts.vocab_size,
                                                            opts.doc_terms, rng))
    dense, gen_dense = timed(lambda: S.dense_corpus(size, opts.search_dim, opts.search_kp, rng))
    queries = S.make_queries(n_queries + WARMUP_QUERIES, dense, ranks, opts.vocab_size, opts.query_terms,
                             opts.search_kq, rng)
    paths = {"impact": work / "impact", "faiss": work / "faiss", "multi": work / "multi"}
    log(f"search {size}: Lucene impact index")
    _, t_impact = timed(lambda: build_impact_index(work / "sparse", paths["impact"], opts.threads))
    _, t_faiss = timed(lambda: build_faiss_dir(paths["faiss"], dense.single))
    counts = np.full(size, opts.search_kp, dtype=np.int64)
    ids = [f"d{i}" for i in range(size)]
    _, t_multi = timed(lambda: write_multi_store(paths["multi"], ids, [dense.multi], counts, opts.search_dim,
                                                 "float16"))
    seconds = {"synthetic sparse docs (not an index)": gen_sparse, "synthetic vectors (not an index)": gen_dense,
               "impact index (pyserini.index.lucene, incl. JVM start)": t_impact,
               "faiss flat dir": t_faiss, "multi-vector store (float16)": t_multi}
    disk = {"sparse collection jsonl": dir_bytes(work / "sparse"), "impact index": dir_bytes(paths["impact"]),
            "faiss flat dir": dir_bytes(paths["faiss"]), "multi-vector store (float16)": dir_bytes(paths["multi"])}
    return paths, seconds, disk, queries, dense


def open_searchers(paths: dict[str, Path], queries: S.Queries) -> tuple[dict[str, Any], dict[str, float], Any]:
    """Pyserini's searchers and ours over the built indexes; start-up seconds of each."""
    from pyserini.search.faiss import FaissSearcher
    from pyserini.search.lucene import LuceneImpactSearcher

    from diffret_pyserini.search.hybrid import RobustHybridSearcher
    from diffret_pyserini.search.maxsim import MultiVectorSearcher

    # min_idf=-1: keep query terms found in every document (Pyserini drops idf <= min_idf).
    impact, t_impact = timed(lambda: LuceneImpactSearcher(str(paths["impact"]), S.LookupEncoder(queries.sparse),
                                                          min_idf=-1))
    faiss_s, t_faiss = timed(lambda: FaissSearcher(str(paths["faiss"]), S.LookupEncoder(queries.dense)))
    multi, t_multi = timed(lambda: MultiVectorSearcher(paths["multi"], S.LookupEncoder(queries.multi)))
    searchers = {"sparse (LuceneImpactSearcher)": impact, "dense (FaissSearcher)": faiss_s,
                 "multi MaxSim (MultiVectorSearcher)": multi,
                 "hybrid dense+sparse (RobustHybridSearcher)": RobustHybridSearcher(faiss_s, impact),
                 "hybrid multi+sparse (RobustHybridSearcher)": RobustHybridSearcher(multi, impact)}
    startup = {"LuceneImpactSearcher (reads term dfs)": t_impact, "FaissSearcher (loads index)": t_faiss,
               "MultiVectorSearcher (builds candidate index)": t_multi}
    return searchers, startup, multi


def search_call(name: str, searcher: Any, hits: int) -> Callable[[str], Any]:
    if name.startswith("hybrid"):
        return lambda q: searcher.search(q, k0=hits, k=hits)
    return lambda q: searcher.search(q, k=hits)


def time_queries(searchers: dict[str, Any], texts: list[str], hits: int) -> dict[str, dict]:
    """Per-query latencies, systems interleaved query by query (rotated order); the first queries warm up."""
    calls = {name: search_call(name, s, hits) for name, s in searchers.items()}
    names = list(calls)
    for q in texts[:WARMUP_QUERIES]:
        for name in names:
            calls[name](q)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    hit_counts: dict[str, list[int]] = {name: [] for name in names}
    for i, q in enumerate(texts[WARMUP_QUERIES:]):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            result = calls[name](q)
            latencies[name].append(time.perf_counter() - start)
            hit_counts[name].append(len(result))
    return {name: {"p50_s": percentile(lat, 50), "p95_s": percentile(lat, 95), "mean_s": float(np.mean(lat)),
                   "qps": len(lat) / sum(lat), "queries": len(lat), "mean_hits": float(np.mean(hit_counts[name]))}
            for name, lat in latencies.items()}


def maxsim_recall(store: Path, queries: S.Queries, approx: Any, hits: int, n: int) -> dict:
    """Overlap of the candidate-based MaxSim top-k with exact MaxSim over every document (first `n` queries),
    at k = 10 (the head of the ranking) and k = hits. On synthetic data the tail below the query's own topic is
    near-ties, so recall at depth `hits` mostly measures how ties fall, recall@10 how the head is found."""
    from diffret_pyserini.search.maxsim import MultiVectorSearcher

    exact = MultiVectorSearcher(store, S.LookupEncoder(queries.multi), exact=True)
    texts = queries.texts[WARMUP_QUERIES:WARMUP_QUERIES + n]
    depths = sorted({min(10, hits), hits})
    overlaps: dict[int, list[float]] = {d: [] for d in depths}
    for q in texts:
        want = [h.docid for h in exact.search(q, k=hits)]
        got = [h.docid for h in approx.search(q, k=hits)]
        for d in depths:
            overlaps[d].append(len(set(want[:d]) & set(got[:d])) / max(len(want[:d]), 1))
    return {"recall_vs_exact": {str(d): float(np.mean(v)) for d, v in overlaps.items()}, "queries": len(texts)}


def memory(size: int, opts: BenchOptions, multi_searcher: Any) -> dict[str, int]:
    n_vectors = size * opts.search_kp
    return {"multi store float32 (bytes)": n_vectors * opts.search_dim * 4,
            "multi store float16 (bytes)": n_vectors * opts.search_dim * 2,
            "multi candidate index (bytes)": candidate_index_bytes(multi_searcher.index),
            "multi owner map (bytes)": int(multi_searcher.owner.nbytes),
            "faiss flat dense index (bytes)": size * opts.search_dim * 4,
            "process peak RSS (bytes)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def measure_size(size: int, index: int, opts: BenchOptions, root: Path) -> dict:
    rng = np.random.default_rng(opts.seed + size)
    n_queries = queries_for(size, opts, index)
    work = root / f"n{size}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        paths, seconds, disk, queries, _ = build(size, opts, work, rng, n_queries)
        log(f"search {size}: opening searchers")
        searchers, startup, multi = open_searchers(paths, queries)
        log(f"search {size}: {n_queries} timed queries x {len(searchers)} systems")
        latency = time_queries(searchers, queries.texts, opts.hits)
        recall = maxsim_recall(paths["multi"], queries, multi, opts.hits, min(RECALL_QUERIES, n_queries))
        mem = memory(size, opts, multi)
        spec = multi.index_spec
    finally:
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return {"docs": size, "kp": opts.search_kp, "kq": opts.search_kq, "dim": opts.search_dim,
            "vectors": size * opts.search_kp, "hits": opts.hits, "build_seconds": seconds,
            "startup_seconds": startup, "disk_bytes": disk, "memory_bytes": mem, "search": latency,
            "multi_candidate_index": spec, "multi_recall": recall}


def run(opts: BenchOptions) -> dict[str, Any]:
    root = Path(opts.workdir) if opts.workdir else Path(opts.out) / "work"
    root.mkdir(parents=True, exist_ok=True)
    rows = [measure_size(size, i, opts, root) for i, size in enumerate(opts.sizes)]
    if not opts.keep_work and not any(root.iterdir()):
        root.rmdir()
    target = next((r for r in rows if r["docs"] == TARGET_DOCS and r["kp"] == 16), None)
    p95 = target["search"]["multi MaxSim (MultiVectorSearcher)"]["p95_s"] if target else None
    return {"rows": rows, "target": {"what": f"MaxSim p95 < {TARGET_P95_S * 1000:.0f} ms at {TARGET_DOCS} docs x Kp=16",
                                     "measured_p95_s": p95, "met": None if p95 is None else p95 < TARGET_P95_S}}

