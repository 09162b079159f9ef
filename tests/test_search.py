"""MultiVectorSearcher (real FAISS) and RobustHybridSearcher (real Lucene impact index, real HybridSearcher)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from diffret_pyserini.index.multivector import auto_index_spec
from diffret_pyserini.search.maxsim import MultiVectorSearcher
from diffret_pyserini.search.maxsim_scoring import maxsim


def write_store(path: Path, docids, per_doc, dtype=np.float16) -> Path:
    """Minimal writer of the multi-vector store format (kept local so this test stands alone)."""
    path.mkdir(parents=True, exist_ok=True)
    lens = [len(v) for v in per_doc]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    h = per_doc[0].shape[1]
    vectors = np.concatenate(per_doc, axis=0).astype(dtype)
    np.save(path / "vectors.npy", vectors)
    np.save(path / "offsets.npy", offsets)
    (path / "docid").write_text("".join(f"{d}\n" for d in docids))
    (path / "meta.json").write_text(json.dumps({"dim": h, "dtype": np.dtype(dtype).name, "n_docs": len(docids),
                                                "n_vectors": int(offsets[-1])}))
    return path


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def random_store(tmp_path_factory):
    """300 docs of 1..8 clustered vectors (H=32), plus a planted doc equal to the planted query."""
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((20, 32)))
    per_doc = [unit(centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, 32)))
               for n in rng.integers(1, 9, 300)]
    query = unit(centres[[1, 2, 3, 4]] + 0.5 * rng.standard_normal((4, 32)))
    per_doc[123] = query.copy()
    docids = [f"doc{i:03d}" for i in range(300)]
    return write_store(tmp_path_factory.mktemp("store"), docids, per_doc), query, per_doc


def test_planted_doc_ranks_first(random_store):
    store, query, _ = random_store
    for searcher in (MultiVectorSearcher(store, exact=True), MultiVectorSearcher(store, candidates_per_vector=5)):
        hits = searcher.search(query, k=5)
        assert hits[0].docid == "doc123"
        assert hits[0].score == pytest.approx(4.0, abs=1e-2)  # 4 query vectors, each matched exactly
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hits_are_pyserini_dense_results(random_store):
    from pyserini.search.faiss import DenseSearchResult

    store, query, per_doc = random_store
    hits = MultiVectorSearcher(store, exact=True).search(query, k=3)
    assert all(isinstance(h, DenseSearchResult) for h in hits)
    assert hits[0].docid == "doc123"  # the planted document, with its MaxSim score computed by hand
    for h in hits:
        assert h.score == pytest.approx(maxsim(query, per_doc[int(h.docid[3:])]), abs=1e-2)


def test_exact_scores_are_maxsim(random_store):
    store, query, per_doc = random_store
    searcher = MultiVectorSearcher(store, exact=True)
    hits = searcher.search(query, k=300)
    assert len(hits) == 300
    for hit in hits[:20]:
        i = int(hit.docid[3:])
        assert hit.score == pytest.approx(maxsim(query, per_doc[i].astype(np.float16)), abs=1e-4)


def test_candidate_mode_equals_exact(random_store):
    store, query, _ = random_store
    rng = np.random.default_rng(5)
    exact = MultiVectorSearcher(store, exact=True)
    n_vectors = exact.num_vectors
    everything = MultiVectorSearcher(store, candidates_per_vector=n_vectors)  # every doc is a candidate
    some = MultiVectorSearcher(store, candidates_per_vector=40)
    flat = MultiVectorSearcher(store, index="Flat", candidates_per_vector=40)
    for q in [query] + [unit(rng.standard_normal((4, 32))) for _ in range(5)]:
        ref = [(h.docid, h.score) for h in exact.search(q, k=10)]
        assert [(h.docid, h.score) for h in everything.search(q, k=10)] == ref
        got = some.search(q, k=10)
        # candidates are re-scored exactly; with 40 of ~1350 vectors per query vector the top 10 agree here
        assert [(h.docid, h.score) for h in got] == ref
        assert [(h.docid, h.score) for h in flat.search(q, k=10)] == ref


def test_ivf_index_with_all_lists_probed_equals_exact(random_store, tmp_path):
    store, query, _ = random_store
    cache = tmp_path / "ivf.faiss"
    ivf = MultiVectorSearcher(store, index="IVF4,Flat", nprobe=4, candidates_per_vector=10_000, index_cache=cache)
    assert cache.is_file()
    again = MultiVectorSearcher(store, index="IVF4,Flat", nprobe=4, candidates_per_vector=10_000,
                                index_cache=cache)
    exact = MultiVectorSearcher(store, exact=True)
    ref = [(h.docid, h.score) for h in exact.search(query, k=20)]
    assert [(h.docid, h.score) for h in ivf.search(query, k=20)] == ref
    assert [(h.docid, h.score) for h in again.search(query, k=20)] == ref


def test_auto_index_spec():
    assert auto_index_spec(1000) == "SQfp16"
    assert auto_index_spec(1_000_000) == "SQfp16"
    assert auto_index_spec(1_600_000) == "IVF4096,SQfp16"
    assert auto_index_spec(4_000_000) == "IVF8192,SQfp16"


class DictQueryEncoder:
    """Duck-typed query encoder: text -> a stored value (dense vectors or {term: int})."""

    def __init__(self, table):
        self.table = table

    def encode(self, query):
        return self.table[query]


def test_query_forms_and_batch_search(random_store):
    store, query, _ = random_store
    rng = np.random.default_rng(9)
    others = [unit(rng.standard_normal((3, 32))) for _ in range(3)]
    texts = ["planted", "x", "y", "z"]
    enc = DictQueryEncoder(dict(zip(texts, [query] + others)))
    searcher = MultiVectorSearcher(store, query_encoder=enc, candidates_per_vector=50)
    by_text = searcher.search("planted", k=7)
    assert by_text == searcher.search(query, k=7)
    # a mask dropping the last two vectors equals searching with the first two only
    assert searcher.search((query, np.array([1, 1, 0, 0])), k=7) == searcher.search(query[:2], k=7)
    batch = searcher.batch_search(texts, ["q0", "q1", "q2", "q3"], k=7, threads=2)
    assert list(batch) == ["q0", "q1", "q2", "q3"]
    for qid, text in zip(batch, texts):
        assert batch[qid] == searcher.search(text, k=7)
    q_vecs, prf = searcher.search(query, k=2, return_vector=True)
    assert prf[0].docid == "doc123" and prf[0].vectors.shape == (4, 32)
    assert q_vecs.shape == (4, 32)
    with pytest.raises(ValueError):
        searcher.search(np.zeros((2, 31), dtype=np.float32))


# ---------------------------------------------------------------------------------------------- hybrid

H = 4
E = np.eye(H, dtype=np.float32)
# Dense side: exact MaxSim, by hand for query [e1, e2]: d1 1, d2 2, d3 0, d4 .6+.8 = 1.4, d5 0
DOC_VECS = {"d1": [E[0]], "d2": [E[0], E[1]], "d3": [E[2]], "d4": [0.6 * E[0] + 0.8 * E[1]], "d5": [E[3]]}
# Sparse side (impact weights): query {alpha: 2} hits only d1 (score 6)
DOC_TERMS = {"d1": {"alpha": 3, "beta": 1}, "d2": {"beta": 2, "gamma": 1}, "d3": {"gamma": 5},
             "d4": {"delta": 2}, "d5": {"beta": 1, "epsilon": 4}}
DENSE_Q = {"single": np.stack([E[0], E[1]]), "multi": np.stack([E[2], E[3]])}
SPARSE_Q = {"single": {"alpha": 2}, "multi": {"beta": 1, "gamma": 1}}


@pytest.fixture(scope="module")
def hybrid_parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    coll = root / "collection"
    coll.mkdir()
    with open(coll / "docs.jsonl", "w") as f:
        for docid, vec in DOC_TERMS.items():
            f.write(json.dumps({"id": docid, "contents": " ".join(vec), "vector": vec}) + "\n")
    index = root / "impact-index"
    proc = subprocess.run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection",
                           "--input", str(coll), "--index", str(index), "--generator",
                           "DefaultLuceneDocumentGenerator", "--impact", "--pretokenized", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = write_store(root / "multi", list(DOC_VECS), [np.array(v) for v in DOC_VECS.values()],
                        dtype=np.float32)
    # A single-vector FAISS dir (Pyserini's own format: index + docid) for a FaissSearcher dense side.
    faiss_dir = root / "faiss"
    faiss_dir.mkdir()
    flat = faiss.IndexFlatIP(H)
    flat.add(unit(np.stack([np.mean(v, axis=0) for v in DOC_VECS.values()])))
    faiss.write_index(flat, str(faiss_dir / "index"))
    (faiss_dir / "docid").write_text("".join(f"{d}\n" for d in DOC_VECS))

    from pyserini.search.lucene import LuceneImpactSearcher

    sparse = LuceneImpactSearcher(str(index), DictQueryEncoder(SPARSE_Q), min_idf=-1)
    dense = MultiVectorSearcher(store, query_encoder=DictQueryEncoder(DENSE_Q), exact=True)
    return sparse, dense, faiss_dir


def test_impact_index_scores_by_hand(hybrid_parts):
    sparse, _, _ = hybrid_parts
    assert [(h.docid, h.score) for h in sparse.search("single", 10)] == [("d1", 6.0)]
    got = {h.docid: h.score for h in sparse.search("multi", 10)}
    # Lucene's impact scores are sums of floats: d5 comes back as 0.999999, so compare approximately
    assert got == pytest.approx({"d1": 1.0, "d2": 3.0, "d3": 5.0, "d5": 1.0}, abs=1e-5)


def test_pyserini_hybrid_divides_by_zero_on_single_hit(hybrid_parts):
    from pyserini.search.hybrid import HybridSearcher

    sparse, dense, _ = hybrid_parts
    with pytest.raises(ZeroDivisionError):
        HybridSearcher(dense, sparse).search("single", k0=10, k=10, alpha=0.5, normalization=True)


def test_robust_hybrid_reference_fusion_by_hand(hybrid_parts):
    from diffret_pyserini.search import RobustHybridSearcher

    sparse, dense, _ = hybrid_parts
    hybrid = RobustHybridSearcher(dense, sparse)
    # dense min-max: d2 1, d4 .7, d1 .5, d3 0, d5 0 ; sparse {d1: 6} -> 1 ; others missing -> 0
    got = [(h.docid, h.score) for h in hybrid.search("single", k0=10, k=10)]
    assert [d for d, _ in got] == ["d1", "d2", "d4", "d3", "d5"]
    assert [s for _, s in got] == pytest.approx([0.75, 0.5, 0.35, 0.0, 0.0])
    # multi: dense d3 1, d5 1, others 0 ; sparse d3 1, d2 .5, d1 0, d5 0 (d4 missing)
    got = {h.docid: h.score for h in hybrid.search("multi", k0=10, k=10, alpha=0.5, normalization=True)}
    assert got == pytest.approx({"d3": 1.0, "d5": 0.5, "d2": 0.25, "d1": 0.0, "d4": 0.0}, abs=1e-6)
    batch = hybrid.batch_search(["single", "multi"], ["1", "2"], k0=10, k=3)
    assert list(batch) == ["1", "2"]
    assert batch["1"] == hybrid.search("single", k0=10, k=3)
    assert batch["2"] == hybrid.search("multi", k0=10, k=3)


def test_pyserini_mode_matches_pyserini_where_it_works(hybrid_parts):
    from pyserini.search.hybrid import HybridSearcher

    from diffret_pyserini.search import RobustHybridSearcher

    sparse, dense, _ = hybrid_parts
    ours = RobustHybridSearcher(dense, sparse, mode="pyserini")
    theirs = HybridSearcher(dense, sparse)
    for kwargs in ({}, {"alpha": 0.3, "normalization": True}, {"alpha": 2.0, "weight_on_dense": True}):
        want = {h.docid: h.score for h in theirs.search("multi", k0=10, k=10, **kwargs)}
        got = {h.docid: h.score for h in ours.search("multi", k0=10, k=10, **kwargs)}
        assert got == pytest.approx(want)
    # where Pyserini raises, the degenerate sparse side maps to the centre (0) for every doc
    safe = {h.docid: h.score for h in ours.search("single", k0=10, k=10, alpha=0.5, normalization=True)}
    assert safe == pytest.approx({"d2": 0.5, "d4": 0.2, "d1": 0.0, "d3": -0.5, "d5": -0.5})


def test_robust_hybrid_with_faiss_searcher(hybrid_parts):
    from pyserini.search.faiss import FaissSearcher
    from pyserini.search.hybrid import HybridSearcher

    from diffret_pyserini.search import RobustHybridSearcher

    sparse, _, faiss_dir = hybrid_parts
    mean_q = {k: unit(v.mean(axis=0)) for k, v in DENSE_Q.items()}
    dense = FaissSearcher(str(faiss_dir), DictQueryEncoder(mean_q))
    with pytest.raises(ZeroDivisionError):
        HybridSearcher(dense, sparse).search("single", k0=10, k=10, normalization=True)
    hits = RobustHybridSearcher(dense, sparse).search("single", k0=10, k=10)
    assert hits[0].docid == "d1"  # the only sparse hit, and dense-relevant too
    assert len(hits) == 5 and all(np.isfinite(h.score) for h in hits)
