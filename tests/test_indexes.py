"""Indexes that fit: FAISS index types read by Pyserini's FaissSearcher, the compressed multi-vector candidate
index with exact MaxSim re-scoring, and the int8 multi-vector store (all real FAISS, no mocks)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffret_pyserini.encode.writers import RepresentationShardWriter
from diffret_pyserini.index.__main__ import main as index_main
from diffret_pyserini.index.faiss_dirs import INDEX_TYPES, default_nlist, default_pq_m, flat_vectors
from diffret_pyserini.index.multivector import (
    QUANT_TOLERANCE,
    MultiVectorStore,
    auto_index_spec,
    quantize_int8,
    write_multi_store,
)
from diffret_pyserini.search.maxsim import MultiVectorSearcher

DIM, N_DOCS, N_QUERIES = 32, 3000, 40


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class Lookup:
    """Pre-encoded queries by text, as FaissSearcher's query encoder (duck-typed `encode`)."""

    def __init__(self, table):
        self.table = table

    def encode(self, text):
        return self.table[text]


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    """A real FAISS dir written by our writer (3000 clustered unit vectors), and queries planted next to docs."""
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((30, DIM)))
    dense = unit(centres[rng.integers(0, 30, N_DOCS)] + 0.6 * rng.standard_normal((N_DOCS, DIM)))
    ids = [f"d{i}" for i in range(N_DOCS)]
    out = tmp_path_factory.mktemp("enc")
    w = RepresentationShardWriter(out, representations={"dense"}, chunk_size=1000, fingerprint="t")
    w.write_batch(ids, ids, dense=dense)
    w.finalize()
    planted = rng.choice(N_DOCS, N_QUERIES, replace=False)
    queries = {f"q{i}": unit(dense[d] + 0.05 * rng.standard_normal(DIM)) for i, d in enumerate(planted)}
    return out / "dense", queries, [ids[d] for d in planted]


def faiss_search_all(index_dir: Path, queries: dict, k: int = 10) -> dict[str, list[str]]:
    from pyserini.search.faiss import FaissSearcher

    searcher = FaissSearcher(str(index_dir), Lookup(queries))
    return {q: [h.docid for h in searcher.search(q, k=k)] for q in queries}


def test_flat_vectors_are_the_index_file_memory_mapped(dense_dir):
    import faiss

    src, _, _ = dense_dir
    mapped = flat_vectors(src / "index")
    assert isinstance(mapped, np.memmap) and mapped.shape == (N_DOCS, DIM)
    index = faiss.read_index(str(src / "index"))
    np.testing.assert_array_equal(mapped, index.reconstruct_n(0, index.ntotal))


@pytest.mark.parametrize("kind", [t for t in INDEX_TYPES if t != "flat"])
def test_each_index_type_is_read_by_faiss_searcher(dense_dir, tmp_path, kind, capsys):
    src, queries, planted = dense_dir
    exact = faiss_search_all(src, queries)
    out = tmp_path / kind
    assert index_main(["faiss", "--input", str(src), "--output", str(out), "--type", kind, "--threads", "2",
                       "--hnsw-m", "16", "--ef-construction", "64"]) == 0
    assert (out / "docid").read_text() == (src / "docid").read_text()
    got = faiss_search_all(out, queries)
    top1 = np.mean([got[q][0] == want for q, want in zip(queries, planted)])
    recall = np.mean([len(set(got[q]) & set(exact[q])) / 10 for q in queries])
    print(f"{kind}: top-1 planted {top1:.3f}, recall@10 vs flat {recall:.3f}")
    assert top1 == 1.0, f"{kind}: the planted (nearest) document must rank first"
    assert recall >= (0.4 if kind == "ivfpq" else 0.9), f"{kind}: recall@10 vs flat {recall:.3f}"


def test_search_knobs_are_saved_in_the_index_file(dense_dir, tmp_path):
    import faiss

    src, _, _ = dense_dir
    assert index_main(["faiss", "--input", str(src), "--output", str(tmp_path / "ivf"), "--type", "ivfpq",
                       "--nlist", "16", "--nprobe", "7", "--pq-m", "8", "--pq-nbits", "6"]) == 0
    assert faiss.extract_index_ivf(faiss.read_index(str(tmp_path / "ivf" / "index"))).nprobe == 7
    assert index_main(["faiss", "--input", str(src), "--output", str(tmp_path / "h"), "--type", "hnsw",
                       "--ef-search", "77", "--hnsw-m", "8", "--ef-construction", "32"]) == 0
    assert faiss.downcast_index(faiss.read_index(str(tmp_path / "h" / "index"))).hnsw.efSearch == 77


PYSERINI_CLI_FLAGS = [["--hnsw", "--M", "16", "--efC", "64"],
                      pytest.param(["--pq", "--pq-m", "8", "--pq-nbits", "6"],
                                   marks=pytest.mark.slow(reason="a second ~10 s Pyserini start-up"))]


@pytest.mark.parametrize("flags", PYSERINI_CLI_FLAGS)
def test_pyserini_own_faiss_cli_on_our_dir(dense_dir, tmp_path, flags):
    """`python -m pyserini.index.faiss --hnsw` / `--pq` read our FAISS dir (it has `index`) and FaissSearcher reads
    what they write; --dim must be given (its default is 768)."""
    src, queries, planted = dense_dir
    out = tmp_path / flags[0].strip("-")
    proc = subprocess.run([sys.executable, "-m", "pyserini.index.faiss", "--input", str(src), "--output",
                           str(out), "--dim", str(DIM), "--threads", "2", *flags], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = faiss_search_all(out, queries)
    assert np.mean([got[q][0] == want for q, want in zip(queries, planted)]) >= 0.95


def test_bad_index_flags_are_one_line_errors(dense_dir, tmp_path, capsys):
    src, _, _ = dense_dir
    assert index_main(["faiss", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "nope/index: missing" in capsys.readouterr().err
    assert index_main(["faiss", "--input", str(src), "--output", str(tmp_path / "o"), "--type", "ivfpq",
                       "--pq-m", "5"]) == 2
    assert "--pq-m 5: must divide the vector dimension 32" in capsys.readouterr().err
    assert index_main(["faiss", "--input", str(src), "--output", str(src)]) == 2
    with pytest.raises(SystemExit) as err:
        index_main(["faiss", "--input", str(src), "--output", "o", "--type", "lsh"])
    assert err.value.code == 2


def test_index_defaults():
    assert default_pq_m(128) == 32 and default_pq_m(576) == 64 and default_pq_m(3584) == 64
    assert default_nlist(16_000_000) == 16384 and default_nlist(3000) == 64
    assert auto_index_spec(1_600_000, 128) == "IVF4096,SQfp16"  # 410 MB of float16 codes: no PQ needed
    assert auto_index_spec(20_000_000, 128) == "IVF16384,PQ32x8"  # 5.1 GB of float16 codes: PQ
    assert auto_index_spec(2_000_000, 3584) == "IVF4096,PQ64x8"
    assert auto_index_spec(800_000, 3584) == "IVF4096,PQ64x8"  # 5.7 GB of float16 codes: no exhaustive scan


# ------------------------------------------------------------------------------------------------ multi-vector
@pytest.fixture(scope="module")
def planted_multi(tmp_path_factory):
    """600 docs x 4 vectors (H=32) in 60 topics of 10 docs; each query's 3 vectors sit near one topic, so its
    exact-MaxSim top 10 are that topic's documents."""
    rng = np.random.default_rng(1)
    topics = unit(rng.standard_normal((60, DIM)))
    topic = np.repeat(np.arange(60), 10)
    rng.shuffle(topic)
    vectors = unit(topics[np.repeat(topic, 4)] + 0.35 / np.sqrt(DIM) * rng.standard_normal((600 * 4, DIM)))
    ids = [f"m{i}" for i in range(600)]
    root = tmp_path_factory.mktemp("multi")
    write_multi_store(root / "fp16", ids, [vectors], np.full(600, 4), DIM, "float16")
    queries = [unit(topics[t] + 0.35 / np.sqrt(DIM) * rng.standard_normal((3, DIM)))
               for t in rng.choice(60, 20, replace=False)]
    return root, vectors, queries


def test_compressed_candidates_plus_exact_rescoring_equal_exact_maxsim(planted_multi):
    root, _, queries = planted_multi
    exact = MultiVectorSearcher(root / "fp16", exact=True)
    approx = MultiVectorSearcher(root / "fp16", index="ivfpq", candidates_per_vector=64, nprobe=16)
    assert approx.index_spec.startswith("IVF") and ",PQ8x" in approx.index_spec
    for q in queries:
        want, got = exact.search(q, k=10), approx.search(q, k=10)
        assert [h.docid for h in got] == [h.docid for h in want]  # recall@10 = 1, same order
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=0, atol=1e-6)


def test_candidates_cli_writes_an_index_the_searcher_reuses(planted_multi, tmp_path):
    root, _, queries = planted_multi
    cache = tmp_path / "cand.faiss"
    assert index_main(["candidates", "--input", str(root / "fp16"), "--output", str(cache), "--type", "ivfpq",
                       "--nlist", "16", "--nprobe", "16"]) == 0
    searcher = MultiVectorSearcher(root / "fp16", index="ivfpq", index_cache=cache, candidates_per_vector=64)
    assert searcher.index.ntotal == 2400
    exact = MultiVectorSearcher(root / "fp16", exact=True)
    assert [h.docid for h in searcher.search(queries[0], k=10)] == [h.docid for h in exact.search(queries[0], k=10)]


def test_int8_store_round_trips_within_tolerance(planted_multi, tmp_path):
    root, vectors, _ = planted_multi
    assert index_main(["multi", "--input", str(root / "fp16"), "--output", str(tmp_path / "i8"),
                       "--dtype", "int8"]) == 0
    store = MultiVectorStore.load(tmp_path / "i8")
    assert store.vectors.dtype == np.int8 and store.scales.dtype == np.float32
    assert store.meta["dtype"] == "int8" and store.meta["n_vectors"] == 2400
    source = vectors.astype(np.float16).astype(np.float32)
    error = np.abs(store.rows(slice(0, 2400)) - source).max(axis=1)
    bound = QUANT_TOLERANCE * np.abs(source).max(axis=1) * (1 + 1e-5)
    assert np.all(error <= bound)
    np.testing.assert_allclose(store.doc_vectors(7), source[28:32], atol=float(bound.max()))
    # disk: 1 byte per value + a 4-byte scale per vector, against 2 bytes per value
    assert (tmp_path / "i8" / "vectors.npy").stat().st_size < 0.55 * (root / "fp16" / "vectors.npy").stat().st_size


def test_int8_maxsim_ranking_matches_float16(planted_multi, tmp_path):
    root, _, queries = planted_multi
    write_multi_store(tmp_path / "i8", MultiVectorStore.load(root / "fp16").docids,
                      MultiVectorStore.load(root / "fp16").float_blocks(), np.full(600, 4), DIM, "int8")
    fp16 = MultiVectorSearcher(root / "fp16", exact=True)
    for searcher in (MultiVectorSearcher(tmp_path / "i8", exact=True),
                     MultiVectorSearcher(tmp_path / "i8", index="ivfpq", candidates_per_vector=64, nprobe=16)):
        for q in queries:
            want, got = fp16.search(q, k=10), searcher.search(q, k=10)
            assert {h.docid for h in got} == {h.docid for h in want}  # the planted topic's 10 documents
            # int8 moves a score by at most sum_i ||q_i||_1 x max|x| / 254 (~0.02 here): documents whose
            # float16 scores differ by more than twice that keep their order
            rank = {h.docid: i for i, h in enumerate(got)}
            for a in want:
                for b in want:
                    if a.score - b.score > 0.04:
                        assert rank[a.docid] < rank[b.docid]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=0.02)


def test_quantize_int8_edge_cases():
    codes, scales = quantize_int8(np.array([[0.0, 0.0], [1.0, -0.5]], dtype=np.float32))
    assert codes.tolist() == [[0, 0], [127, -64]] and scales[0] == 1.0
    with pytest.raises(ValueError, match="dtype 'int16'"):
        write_multi_store("unused", [], [], np.zeros(0), 2, "int16")


# ------------------------------------------------------------------------------------------------ scale bench
def test_scale_section_quick_writes_json_and_png(tmp_path):
    """10 s here at load average 5 (two sizes, each a Lucene JVM start + 5 dense and 3 multi FAISS builds)."""
    import json

    from diffret_pyserini.bench.__main__ import main as bench_main

    out = tmp_path / "bench"
    assert bench_main(["--quick", "--sections", "scale", "--out", str(out), "--threads", "1"]) == 0
    assert (out / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "scale.json").read_text())
    assert [s["docs"] for s in doc["sizes"]] == [200, 400]
    for size in doc["sizes"]:
        assert size["writer"]["writer_seconds"] > 0 and size["writer"]["peak_rss"] > 0
        rows = {(r["representation"], r["index"]): r for r in size["index"]["rows"]}
        assert rows[("dense", "flat (IndexFlatIP)")]["recall@10"] == 1.0
        assert {"SQfp16", "SQ8", "HNSW32,Flat"} <= {i for rep, i in rows if rep == "dense"}
        multi = [r for (rep, i), r in rows.items() if rep == "multi" and "PQ" in i]
        assert len(multi) == 2 and all(0 <= r["recall@10"] <= 1 and r["p95_s"] > 0 for r in multi)
        assert rows[("sparse", "Lucene impact")]["disk_bytes"] > 0
    assert not (out / "work").exists(), "synthetic indexes are removed afterwards"


def test_multi_system_uses_a_fresh_prebuilt_candidate_index(planted_multi, tmp_path):
    import os
    import shutil

    from diffret_pyserini.encode.writers import write_query_multi
    from diffret_pyserini.search.systems import CANDIDATES_FILE, SearchInputs, multi_searcher

    root, _, queries = planted_multi
    store = tmp_path / "multi"
    shutil.copytree(root / "fp16", store)
    write_query_multi(tmp_path / "queries" / "multi", ["1"], np.stack([queries[0]]))
    inputs = SearchInputs(bm25_index=tmp_path, impact_index=tmp_path, faiss_dir=tmp_path, multi_dir=store,
                          queries_dir=tmp_path / "queries", topics={"1": "first query"})
    assert multi_searcher(inputs).exact  # a small store, no candidate index: exact MaxSim
    assert index_main(["candidates", "--input", str(store), "--output", str(store / CANDIDATES_FILE),
                       "--nlist", "16", "--nprobe", "16"]) == 0
    searcher = multi_searcher(inputs)
    assert not searcher.exact and searcher.index.ntotal == 2400
    exact = MultiVectorSearcher(store, exact=True)
    assert [h.docid for h in searcher.search("first query", k=10)] == [h.docid for h in exact.search(queries[0], k=10)]
    # a store written after the candidate index (re-encoded) makes it stale: not used
    meta = store / "meta.json"
    later = (store / CANDIDATES_FILE).stat().st_mtime_ns + 10**9
    os.utime(meta, ns=(later, later))
    assert multi_searcher(inputs).exact
