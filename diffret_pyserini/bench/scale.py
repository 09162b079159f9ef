"""Section 'scale': encode, index and search cost at 10k / 100k / 1M documents, on one CPU.

Per corpus size N (each stage in its own fresh interpreter, so peak RSS is that stage's own):
- encode, model: `python -m diffret_pyserini.encode` with the packaged SPLADE-tiny on real CACM texts cycled to
  N documents (real length distribution), at the sizes in `scale_model_sizes` only (a 2-core CPU encodes
  ~100 docs/s: 1M would take hours); its sparse output gives the measured terms/doc and impact distribution;
- encode, writer path: RepresentationShardWriter (dense + multi + sparse, committed chunks, finalize) fed with
  synthetic vectors of the real shapes (Kp vectors x H per doc, topic-clustered unit vectors) and sparse
  vectors whose term counts and impacts are drawn from the measured ones (terms Zipfian over the vocabulary);
  docs/s of the writer alone and peak RSS, at every N;
  (the writer runs first in the size's process, so its peak RSS is read before any index is built);
- index: build time, file size and in-memory code size per representation and index type (Lucene impact;
  FAISS flat / SQfp16 / SQ8 / HNSW / IVF-PQ through `python -m diffret_pyserini.index`; multi-vector store float16 and
  int8, candidate index SQfp16 / IVF-SQfp16 / IVF-PQ);
- search: p50/p95 per query (sequential) and recall@10 against exact search (flat FAISS for dense, exact MaxSim
  over every document for multi; Lucene's impact search is exact).
"""
from __future__ import annotations

import json
import resource
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffret_pyserini.atomic import atomic_write_json
from diffret_pyserini.bench import scale_report  # noqa: F401 - registers the section's tables and chart
from diffret_pyserini.bench.common import BenchOptions, log, percentile
from diffret_pyserini.bench.synthetic import NOISE_NORM, term_name, zipf_probabilities
from diffret_pyserini.cli import ToolError

DOCS_PER_TOPIC = 100        # synthetic vectors: one topic per 100 documents at every size (same difficulty)
WRITER_BATCH = 256
DENSE_TYPES = ("flat", "sqfp16", "sq8", "hnsw", "ivfpq")
EXHAUSTIVE_MULTI_MAX = 2_000_000   # SQfp16 candidates (an exhaustive scan) only up to this many vectors
IVF_SQ_MULTI_MAX = 2_000_000       # IVF-SQfp16 keeps 2 x H bytes per vector: built up to this many vectors
# Built only up to this many documents (HNSW inserts one vector at a time; Lucene indexes every impact doc):
# 1M fits a run on 2 quiet cores (5-10 min each at 1M where the cores are shared).
HNSW_MAX_DOCS = LUCENE_MAX_DOCS = 1_000_000


# ------------------------------------------------------------------------------------------------ children
def _run_child(args: list[str], result: Path) -> dict:
    """`python -m diffret_pyserini.bench.scale ARGS` in a fresh interpreter; its JSON result (with peak RSS)."""
    proc = subprocess.run([sys.executable, "-m", "diffret_pyserini.bench.scale", *args, "--result", str(result)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ToolError(f"scale child {args[0]} failed (exit {proc.returncode}): "
                        + " | ".join(proc.stdout.strip().splitlines()[-8:]))
    return json.loads(result.read_text(encoding="utf-8"))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def topic_centres(n_docs: int, dim: int, seed: int) -> np.ndarray:
    """The synthetic topic centres for a corpus of n_docs (parent and children derive the same ones)."""
    rng = np.random.default_rng([seed, n_docs, 7])
    return _normalise(rng.standard_normal((max(16, n_docs // DOCS_PER_TOPIC), dim), dtype=np.float32))


# ------------------------------------------------------------------------------------------------ model encode
def cycled_corpus(path: Path, n: int) -> None:
    """CACM's real documents cycled to n (ids made unique): the real length distribution, N documents."""
    from diffret_pyserini.bench.common import cacm_documents

    docs = cacm_documents()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"c{i}", "contents": docs[i % len(docs)]}) + "\n")


def model_encode(n: int, opts: BenchOptions, work: Path) -> dict:
    """Real encode of n cycled CACM documents with `python -m diffret_pyserini.encode` (SPLADE-tiny); docs/s, RSS, terms."""
    corpus, out = work / "corpus.jsonl", work / "enc"
    cycled_corpus(corpus, n)
    args = ["run-module", "diffret_pyserini.encode", "input", "--corpus", str(corpus), "output", "--embeddings",
            str(out), "--overwrite", "encoder", "--model", opts.masked or "splade-tiny", "--device", "cpu",
            "--kp", str(opts.search_kp), "--kq", str(opts.search_kq), "--batch-size", "32",
            "--max-length", str(opts.doc_tokens)]
    res = _run_child(args, work / "model.json")
    terms, impacts = [], []
    with open(out / "sparse" / "embeddings.jsonl", encoding="utf-8") as f:
        for line in f:
            vector = json.loads(line)["vector"]
            terms.append(len(vector))
            impacts.extend(vector.values())
    dim = int(json.loads((out / "multi" / "meta.json").read_text())["dim"])
    shutil.rmtree(work, ignore_errors=True)
    return {"docs": n, "seconds": res["seconds"], "docs_per_s": n / res["seconds"], "peak_rss": res["peak_rss"],
            "terms_per_doc": terms, "impacts": impacts[:200_000], "model_dim": dim}


# ------------------------------------------------------------------------------------------------ writer job
def writer_spec(n: int, opts: BenchOptions, out: Path, terms: list[int] | None = None,
                impacts: list[int] | None = None) -> dict:
    """The writer job for n synthetic documents of opts' shapes; without measured distributions, every document
    has opts.doc_terms terms with impacts drawn from 1..299."""
    return {"docs": n, "dim": opts.search_dim, "kp": opts.search_kp, "seed": opts.seed, "out": str(out),
            "terms_per_doc": terms or [opts.doc_terms], "impacts": impacts or list(range(1, 300)),
            "vocab_size": opts.vocab_size}


def writer_job(spec: dict) -> dict:
    """Child: stream N synthetic documents through RepresentationShardWriter; seconds in the writer alone."""
    from diffret_pyserini.encode.writers import RepresentationShardWriter

    n, dim, kp, seed = spec["docs"], spec["dim"], spec["kp"], spec["seed"]
    rng = np.random.default_rng([seed, n])
    centres = topic_centres(n, dim, seed)
    counts = np.asarray(spec["terms_per_doc"], dtype=np.int64)
    impacts = np.asarray(spec["impacts"], dtype=np.int64)
    vocab = spec["vocab_size"]
    cdf = np.cumsum(zipf_probabilities(vocab))
    names = [term_name(r) for r in range(vocab)]
    w = RepresentationShardWriter(spec["out"], chunk_size=8192, fingerprint="scale", overwrite=True,
                                  multi_dtype="float16")
    gen_s = write_s = 0.0
    for lo in range(0, n, WRITER_BATCH):
        t0 = time.perf_counter()
        b = min(WRITER_BATCH, n - lo)
        topic = rng.integers(0, len(centres), b)
        noise = rng.standard_normal((b, kp, dim), dtype=np.float32) * np.float32(NOISE_NORM / np.sqrt(dim))
        multi = _normalise(centres[topic][:, None, :] + noise)
        dense = _normalise(multi.mean(axis=1))
        want = rng.choice(counts, b)
        draws = np.searchsorted(cdf, rng.random((b, int(want.max()) * 2 + 8)))
        sparse = []
        for i in range(b):
            ranks, first = np.unique(np.minimum(draws[i], vocab - 1), return_index=True)
            ranks = ranks[np.argsort(first)[:want[i]]]
            sparse.append(dict(zip((names[r] for r in ranks.tolist()), rng.choice(impacts, len(ranks)).tolist())))
        ids = [f"d{lo + i}" for i in range(b)]
        t1 = time.perf_counter()
        w.write_batch(ids, ids, dense=dense, multi=multi, sparse=sparse)
        t2 = time.perf_counter()
        gen_s, write_s = gen_s + t1 - t0, write_s + t2 - t1
    t0 = time.perf_counter()
    w.finalize()
    write_s += time.perf_counter() - t0
    return {"docs": n, "writer_seconds": write_s, "generate_seconds": gen_s, "peak_rss": _peak_rss()}


# ------------------------------------------------------------------------------------------------ index + search
def _queries(n_docs: int, opts: BenchOptions, count: int, vocab: int) -> dict:
    rng = np.random.default_rng([opts.seed, n_docs, 11])
    centres = topic_centres(n_docs, opts.search_dim, opts.seed)
    cdf = np.cumsum(zipf_probabilities(vocab))
    out: dict[str, Any] = {"texts": [f"q{i}" for i in range(count)], "dense": {}, "multi": {}, "sparse": {}}
    for text in out["texts"]:
        t = int(rng.integers(0, len(centres)))
        noise = rng.standard_normal((opts.search_kq, opts.search_dim), dtype=np.float32) * np.float32(
            NOISE_NORM / np.sqrt(opts.search_dim))
        multi = _normalise(centres[t][None, :] + noise).astype(np.float32)
        out["multi"][text], out["dense"][text] = multi, _normalise(multi.mean(axis=0)).astype(np.float32)
        ranks = np.unique(np.minimum(np.searchsorted(cdf, rng.random(opts.query_terms)), vocab - 1))
        out["sparse"][text] = {term_name(int(r)): int(w) for r, w in zip(ranks, rng.integers(1, 100, len(ranks)))}
    return out


def _time(fn) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _latency(search, texts: list[str], k: int) -> tuple[dict, dict[str, list[str]]]:
    search(texts[0], k)  # warm: first touch of the index pages
    lat, ranked = [], {}
    for q in texts:
        start = time.perf_counter()
        hits = search(q, k)
        lat.append(time.perf_counter() - start)
        ranked[q] = [h.docid for h in hits]
    return {"p50_s": percentile(lat, 50), "p95_s": percentile(lat, 95), "queries": len(lat)}, ranked


def _recall(got: dict[str, list[str]], want: dict[str, list[str]], k: int = 10) -> float:
    return float(np.mean([len(set(got[q][:k]) & set(want[q][:k])) / max(1, len(want[q][:k])) for q in want]))


def index_job(spec: dict) -> dict:
    """Child: build every index type over the writer's outputs, then time searches and measure recall@10."""
    import faiss
    from pyserini.search.faiss import FaissSearcher
    from pyserini.search.lucene import LuceneImpactSearcher

    from diffret_pyserini.bench.search_scaling import build_impact_index
    from diffret_pyserini.bench.synthetic import LookupEncoder
    from diffret_pyserini.index.faiss_dirs import IndexSettings, build_dense_dir, index_code_bytes
    from diffret_pyserini.index.multivector import convert_store
    from diffret_pyserini.search.maxsim import MultiVectorSearcher

    opts = BenchOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["opts"].items()})
    n, root = spec["docs"], Path(spec["out"])
    faiss.omp_set_num_threads(opts.threads)
    q = _queries(n, opts, spec["queries"], opts.vocab_size)
    texts, n_exact, k = q["texts"], spec["recall_queries"], 10
    rows: list[dict] = []

    def row(rep: str, kind: str, build_s: float | None, disk: int, memory: int | None, lat: dict | None,
            recall: float | None) -> None:
        rows.append({"representation": rep, "index": kind, "build_s": build_s, "disk_bytes": disk,
                     "memory_bytes": memory, "recall@10": recall, **(lat or {})})
        if spec.get("partial"):  # what is done so far survives a run stopped for time
            atomic_write_json(spec["partial"], {"docs": n, "rows": rows, "peak_rss": _peak_rss(),
                                                "writer": spec.get("writer_result")})

    # sparse: Lucene impact index over the JsonVectorCollection the writer made (exact top-k by impacts)
    if n <= LUCENE_MAX_DOCS:
        _, t = _time(lambda: build_impact_index(root / "sparse", root / "impact", opts.threads))
        impact = LuceneImpactSearcher(str(root / "impact"), LookupEncoder(q["sparse"]), min_idf=-1)
        lat, _ = _latency(lambda s, kk: impact.search(s, k=kk), texts, k)
        row("sparse", "Lucene impact", t, dir_bytes(root / "impact"), None, lat, None)
        del impact

    # dense: flat (as written) + the other types built from it by `python -m diffret_pyserini.index`
    hnsw_m = 16 if n >= 1_000_000 else 32
    flat = FaissSearcher(str(root / "dense"), LookupEncoder(q["dense"]))
    lat, exact = _latency(lambda s, kk: flat.search(s, k=kk), texts, k)
    row("dense", "flat (IndexFlatIP)", spec["dense_flat_s"], dir_bytes(root / "dense"),
        index_code_bytes(flat.index), lat, 1.0)
    del flat
    for kind in DENSE_TYPES[1:]:
        if kind == "hnsw" and n > HNSW_MAX_DOCS:
            continue
        # 1024 lists above 500k docs: k-means on the default 4096 takes ~10 min on one shared core
        settings = IndexSettings(type=kind, hnsw_m=hnsw_m, ef_construction=64, ef_search=128, nprobe=32,
                                 nlist=1024 if n > 500_000 else None)
        rec = build_dense_dir(root / "dense", root / f"dense-{kind}", settings, opts.threads)
        searcher = FaissSearcher(str(root / f"dense-{kind}"), LookupEncoder(q["dense"]))
        lat, got = _latency(lambda s, kk: searcher.search(s, k=kk), texts, k)
        row("dense", rec["factory"], rec["build_seconds"], dir_bytes(root / f"dense-{kind}"), rec["code_bytes"],
            lat, _recall(got, exact))
        del searcher
        shutil.rmtree(root / f"dense-{kind}", ignore_errors=True)

    # multi: store float16 (as written) and int8; candidate indexes; exact MaxSim as the reference
    store16, store8 = root / "multi", root / "multi-int8"
    _, t8 = _time(lambda: convert_store(store16, store8, "int8"))
    n_vec = n * opts.search_kp
    exact_searcher = MultiVectorSearcher(store16, LookupEncoder(q["multi"]), exact=True)
    lat, want = _latency(lambda s, kk: exact_searcher.search(s, k=kk), texts[:n_exact], k)
    row("multi", "store float16, exact MaxSim (every doc)", spec["multi_store_s"], dir_bytes(store16), 0, lat, 1.0)
    row("multi", "store int8 (from float16)", t8, dir_bytes(store8), 0, None, None)
    del exact_searcher
    # Above 1M vectors 1024 lists, above 4M 256: assigning 16M vectors to the default 16384 lists (or even
    # 1024) takes most of an hour on the share of 2 busy cores this host gives one process
    nlist = (256 if n_vec > 4_000_000 else 1024) if n_vec > 1_000_000 else None
    kinds = [("sqfp16", n_vec <= EXHAUSTIVE_MULTI_MAX), ("ivfsqfp16", n_vec <= IVF_SQ_MULTI_MAX), ("ivfpq", True)]
    for kind, wanted in kinds:
        if not wanted:
            continue
        settings = IndexSettings(type="ivfpq" if kind == "ivfpq" else "flat", nlist=nlist, nprobe=32)
        index_arg = {"sqfp16": "SQfp16", "ivfsqfp16": None, "ivfpq": "ivfpq"}[kind]
        if index_arg is None:
            from diffret_pyserini.index.faiss_dirs import default_nlist

            index_arg = f"IVF{nlist or default_nlist(n_vec)},SQfp16"
        cache = root / f"cand-{kind}.faiss"
        searcher, t = _time(lambda: MultiVectorSearcher(store16, LookupEncoder(q["multi"]), index=index_arg,
                                                        nprobe=32, index_settings=settings, index_cache=cache))
        spec_name = searcher.index_spec
        for store, label in ((store16, "float16"), (store8, "int8")):
            if store is store8:
                if kind != "ivfpq":
                    continue
                searcher = MultiVectorSearcher(store8, LookupEncoder(q["multi"]), index=index_arg, nprobe=32,
                                               index_settings=settings, index_cache=cache)
            lat, got = _latency(lambda s, kk: searcher.search(s, k=kk), texts, k)
            row("multi", f"{spec_name} candidates + exact MaxSim ({label} store)", t if label == "float16" else 0.0,
                cache.stat().st_size, index_code_bytes(searcher.index), lat,
                _recall({s: got[s] for s in want}, want))
        del searcher
        cache.unlink()
    return {"docs": n, "rows": rows, "peak_rss": _peak_rss(), "dim": opts.search_dim, "kp": opts.search_kp}


# ------------------------------------------------------------------------------------------------ the section
def queries_for(n: int, quick: bool) -> tuple[int, int]:
    """(timed queries, queries checked against exact search) at one size; exact MaxSim at 1M costs seconds."""
    if quick:
        return 8, 4
    return (50, 20) if n <= 100_000 else (30, 10)


def run(opts: BenchOptions) -> dict[str, Any]:
    root = Path(opts.workdir) if opts.workdir else Path(opts.out) / "work"
    work = root / "scale"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    try:
        model_rows = []
        for n in opts.scale_model_sizes:
            log(f"scale: model encode of {n} CACM-shaped documents")
            model_rows.append(model_encode(n, opts, work / f"model-{n}"))
        # the smallest encode's distributions, so that runs with different model sizes share them
        smallest = min(model_rows, key=lambda r: r["docs"]) if model_rows else None
        terms = smallest["terms_per_doc"] if smallest else None
        impacts = smallest["impacts"] if smallest else None
        sizes = []
        for n in opts.scale_sizes:
            out = work / f"n{n}"
            spec = writer_spec(n, opts, out, terms, impacts)
            timed, exact = queries_for(n, opts.quick)
            job = {"docs": n, "out": str(out), "opts": opts.to_dict(), "queries": timed, "recall_queries": exact,
                   "dense_flat_s": None, "multi_store_s": None, "writer": spec,
                   "partial": str(Path(opts.out) / f"scale-n{n}.partial.json")}
            log(f"scale {n}: writer path (dense + multi + sparse), then index builds and searches")
            # --quick stays in this process (seconds, not interpreter start-ups); its RSS figures are the parent's
            index = (size_job(job) if opts.quick else _run_child(["size", json.dumps(job)], work / f"size-{n}.json"))
            writer = index.pop("writer")
            disk = {"sparse jsonl": dir_bytes(out / "sparse"), "dense flat dir": dir_bytes(out / "dense"),
                    "multi store float16": dir_bytes(out / "multi")}
            sizes.append({"docs": n, "vectors": n * opts.search_kp, "writer": writer, "index": index,
                          "writer_disk_bytes": disk})
            atomic_write_json(Path(opts.out) / f"scale-n{n}.json", sizes[-1])  # kept if a later size fails
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()
    for r in model_rows:  # the distributions are summarised, not stored
        t = np.asarray(r.pop("terms_per_doc"))
        r.pop("impacts")
        r["terms_per_doc"] = {"mean": float(t.mean()), "p50": float(np.median(t)), "p90": float(np.percentile(t, 90))}
    return {"model": model_rows, "sizes": sizes, "dim": opts.search_dim, "kp": opts.search_kp,
            "kq": opts.search_kq, "terms_from": "measured" if model_rows else f"fixed {opts.doc_terms}"}


def size_job(job: dict) -> dict:
    """One size: the writer path, then (same process, after its peak RSS is read) the indexes and searches."""
    writer = writer_job(job["writer"])
    return {**index_job({**job, "writer_result": writer}), "writer": writer}


def merge_docs(docs: list[dict]) -> dict:
    """One scale document from runs over different sizes (e.g. 10k + 100k in one run, 1M in another): sizes in
    order, model rows of every run, each run's meta kept under "runs"."""
    merged = {**docs[0], "sizes": sorted((s for d in docs for s in d["sizes"]), key=lambda s: s["docs"]),
              "model": sorted((r for d in docs for r in d["model"]), key=lambda r: r["docs"])}
    merged["meta"] = {**docs[0]["meta"], "runs": [d["meta"] for d in docs]}
    return merged


def child_main(argv: list[str]) -> int:
    """`python -m diffret_pyserini.bench.scale {size JSON | run-module MODULE ARGS...} --result F`, or
    `python -m diffret_pyserini.bench.scale merge OUT_DIR RUN.json...` (writes OUT_DIR/scale.{json,png})."""
    if argv and argv[0] == "merge":
        from diffret_pyserini.bench.report import write_section

        doc = merge_docs([json.loads(Path(p).read_text(encoding="utf-8")) for p in argv[2:]])
        print(write_section("scale", doc, Path(argv[1]))[0])
        return 0
    result = Path(argv[argv.index("--result") + 1])
    args = argv[:argv.index("--result")]
    start = time.perf_counter()
    if args[0] == "run-module":
        sys.argv = [args[1], *args[2:]]
        code = 0
        try:
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        if code:
            return code
        out = {}
    elif args[0] == "index":  # the indexes over an existing writer output (a run resumed after its writer)
        out = index_job(json.loads(args[1]))
    else:
        out = size_job(json.loads(args[1]))
    out.update(seconds=time.perf_counter() - start, peak_rss=_peak_rss())
    result.write_text(json.dumps(out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
