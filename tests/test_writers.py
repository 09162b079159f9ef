"""Writers: atomic files, resumable shards, and outputs that Pyserini's own readers load."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from diffret_pyserini.atomic import atomic_write, atomic_write_json
from diffret_pyserini.encode.writers import (
    RepresentationShardWriter,
    ResumeError,
    merge_shards,
    write_query_multi,
    write_query_sparse_jsonl,
)
from diffret_pyserini.index.faiss_dirs import write_query_embeddings_pkl
from diffret_pyserini.index.multivector import MultiVectorStore

H, K = 8, 3


def make_docs(n: int, seed: int = 0):
    """n docs with unit dense vectors, multi vectors with a varying number of valid slots, sparse dicts."""
    rng = np.random.default_rng(seed)
    ids = [f"doc-{i}" for i in range(n)]
    contents = [f"contents of {i} 检索 🚀" for i in range(n)]
    dense = rng.standard_normal((n, H)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    multi = rng.standard_normal((n, K, H)).astype(np.float32)
    mask = np.arange(K)[None, :] < (np.arange(n) % K + 1)[:, None]  # doc i has i % K + 1 valid vectors
    sparse = [{"term": i + 1, f"t{i}": 100, "zero": 0} for i in range(n)]
    return ids, contents, dense, multi, mask, sparse


def write_all(w: RepresentationShardWriter, data, start: int, stop: int, batch: int = 4) -> None:
    ids, contents, dense, multi, mask, sparse = data
    for s in range(start, stop, batch):
        e = min(s + batch, stop)
        w.write_batch(ids[s:e], contents[s:e], dense=dense[s:e], multi=multi[s:e], multi_mask=mask[s:e],
                      sparse=sparse[s:e])


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": "ü"})
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text(encoding="utf-8")) == {"x": "ü"}
    assert os.listdir(tmp_path) == ["a.json"]


def test_round_trip_all_outputs(tmp_path):
    import faiss

    data = make_docs(11)
    ids, contents, dense, multi, mask, sparse = data
    w = RepresentationShardWriter(tmp_path, chunk_size=5, fingerprint="fp", multi_dtype="float32")
    write_all(w, data, 0, 11, batch=3)  # batches straddle chunk borders
    assert w.completed_docs() == 10  # two full chunks committed, one doc buffered
    paths = w.finalize()
    assert paths == {"dense": tmp_path / "dense", "multi": tmp_path / "multi",
                     "sparse": tmp_path / "sparse" / "embeddings.jsonl"}

    lines = [json.loads(x) for x in paths["sparse"].read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == ids and [x["contents"] for x in lines] == contents
    assert lines[3]["vector"] == {"term": 4, "t3": 100}  # zero weights dropped

    index = faiss.read_index(str(tmp_path / "dense" / "index"))
    assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == 11 and index.d == H
    np.testing.assert_array_equal(index.reconstruct_n(0, 11), dense)
    assert (tmp_path / "dense" / "docid").read_text().splitlines() == ids

    store = MultiVectorStore.load(tmp_path / "multi")
    assert store.docids == ids and isinstance(store.vectors, np.memmap)
    assert store.meta == {"dim": H, "dtype": "float32", "n_docs": 11, "n_vectors": int(mask.sum())}
    assert store.offsets.dtype == np.int64 and store.offsets[-1] == mask.sum()
    for i in range(11):
        np.testing.assert_array_equal(store.doc_vectors(i), multi[i][mask[i]])
    assert len(store.doc_vectors(3)) == 1 and len(store.doc_vectors(5)) == 3
    # The work dir keeps only the manifest; finalize again is a no-op and resume says "all done".
    assert sorted(p.name for p in w.work_dir.iterdir()) == ["manifest.json"]
    again = RepresentationShardWriter(tmp_path, chunk_size=5, fingerprint="fp", multi_dtype="float32")
    assert again.completed_docs() == 11 and again.finalize() == paths
    with pytest.raises(RuntimeError, match="already finalized"):
        write_all(again, data, 0, 1)


def test_faiss_dir_loads_in_pyserini_faiss_searcher(tmp_path):
    from pyserini.search.faiss import FaissSearcher

    data = make_docs(20, seed=1)
    ids, contents, dense = data[0], data[1], data[2]
    w = RepresentationShardWriter(tmp_path, representations={"dense"}, chunk_size=7)
    w.write_batch(ids, contents, dense=dense)
    w.finalize()

    class TinyQueryEncoder:  # FaissSearcher only calls encode(text) -> np.ndarray (H,)
        def encode(self, query: str) -> np.ndarray:
            return dense[int(query.split()[-1])] * 2.0

    searcher = FaissSearcher(str(tmp_path / "dense"), TinyQueryEncoder())
    for target in (0, 13, 19):
        hits = searcher.search(f"find doc {target}", k=3)
        assert hits[0].docid == f"doc-{target}"
        assert hits[0].score == pytest.approx(2.0, abs=1e-5)


def test_resume_after_kill(tmp_path):
    data = make_docs(13)
    w = RepresentationShardWriter(tmp_path, chunk_size=4, fingerprint="fp")
    write_all(w, data, 0, 10, batch=5)  # commits chunks of 4 and 4; 2 docs only buffered
    assert w.completed_docs() == 8
    # Simulate a kill: no finalize, a half-written temp file and an uncommitted chunk left behind.
    (w.work_dir / "part-000002.jsonl.tmp-99999").write_text('{"id": "doc-8"')
    (w.work_dir / "part-000002.npz").write_bytes(b"garbage")
    (tmp_path / "sparse").mkdir()
    (tmp_path / "sparse" / "embeddings.jsonl.tmp-99999").write_text("half")
    del w

    w2 = RepresentationShardWriter(tmp_path, chunk_size=4, fingerprint="fp")
    assert w2.completed_docs() == 8
    names = sorted(p.name for p in w2.work_dir.iterdir())
    assert names == ["manifest.json", "part-000000.jsonl", "part-000000.npz", "part-000001.jsonl",
                     "part-000001.npz"]
    assert not (tmp_path / "sparse" / "embeddings.jsonl.tmp-99999").exists()
    write_all(w2, data, w2.completed_docs(), 13, batch=3)
    w2.finalize()
    # Anserini indexes every file in sparse/: no temp name may ever appear there.
    assert [p.name for p in (tmp_path / "sparse").iterdir()] == ["embeddings.jsonl"]
    ids = [json.loads(x)["id"] for x in (tmp_path / "sparse" / "embeddings.jsonl").read_text().splitlines()]
    assert ids == data[0]
    store = MultiVectorStore.load(tmp_path / "multi")
    assert store.vectors.dtype == np.float16 and store.docids == data[0]
    np.testing.assert_allclose(store.doc_vectors(12), data[3][12][data[4][12]], atol=1e-2)


def test_duplicate_docids_are_caught(tmp_path):
    data = make_docs(6)
    w = RepresentationShardWriter(tmp_path, representations={"sparse"}, chunk_size=4)
    w.write_batch(data[0][:4], data[1][:4], sparse=data[5][:4])
    w.write_batch(data[0][2:6], data[1][2:6], sparse=data[5][2:6])  # caller forgot to skip committed docs
    with pytest.raises(ValueError, match="duplicate docid 'doc-2'"):
        w.finalize()


def test_fingerprint_and_representations_mismatch(tmp_path):
    data = make_docs(4)
    w = RepresentationShardWriter(tmp_path, representations={"sparse"}, chunk_size=2, fingerprint="model-a")
    w.write_batch(data[0], data[1], sparse=data[5])
    with pytest.raises(ResumeError, match="fingerprint='model-a' \\(now 'model-b'\\).*overwrite=True"):
        RepresentationShardWriter(tmp_path, representations={"sparse"}, fingerprint="model-b")
    with pytest.raises(ResumeError, match="representations"):
        RepresentationShardWriter(tmp_path, representations={"dense"}, fingerprint="model-a")
    fresh = RepresentationShardWriter(tmp_path, representations={"sparse"}, fingerprint="model-b", overwrite=True)
    assert fresh.completed_docs() == 0


def test_write_batch_validation(tmp_path):
    data = make_docs(2)
    w = RepresentationShardWriter(tmp_path, representations={"dense", "sparse"})
    with pytest.raises(ValueError, match="expects"):
        w.write_batch(data[0], data[1], dense=data[2])
    with pytest.raises(ValueError, match="whitespace"):
        w.write_batch(["a b", "c"], data[1], dense=data[2], sparse=data[5])
    with pytest.raises(ValueError, match="non-negative int"):
        w.write_batch(data[0], data[1], dense=data[2], sparse=[{"x": 1.7}, {"y": 1}])
    with pytest.raises(ValueError, match="indexer would split"):
        w.write_batch(data[0], data[1], dense=data[2], sparse=[{"a b": 1}, {"y": 1}])
    w.write_batch(data[0], data[1], dense=data[2], sparse=data[5])
    with pytest.raises(ValueError, match="dimension 4 differs"):
        w.write_batch(["x", "y"], data[1], dense=np.zeros((2, 4)), sparse=data[5])


def test_sparse_checks_hold_for_terms_and_weights_already_seen():
    """The writer checks each distinct term once; weights are checked every time, and a bad term is still
    caught after good ones were remembered."""
    from diffret_pyserini.encode.writers import _int_vector

    seen: set[str] = set()
    assert _int_vector({"a": 3, "b": np.int64(2), "z": 0}, "doc 1", seen) == {"a": 3, "b": 2}
    assert seen == {"a", "b", "z"}
    assert type(_int_vector({"b": np.int64(2)}, "doc 2", seen)["b"]) is int
    for bad in (True, np.bool_(True), 1.0, -1, np.int64(-2), "3"):
        with pytest.raises(ValueError, match="doc 3: weight .* of term 'a' must be a non-negative int"):
            _int_vector({"a": bad}, "doc 3", seen)
    with pytest.raises(ValueError, match="doc 4: term 'c d' is empty or contains whitespace"):
        _int_vector({"a": 1, "c d": 1}, "doc 4", seen)
    with pytest.raises(ValueError, match="doc 5: term '' is empty"):
        _int_vector({"": 1}, "doc 5", seen)
    assert seen == {"a", "b", "z"}


def test_shards_and_merge(tmp_path):
    import faiss

    data = make_docs(9)
    bounds = [(0, 4), (4, 9)]
    for shard, (s, e) in enumerate(bounds):
        w = RepresentationShardWriter(tmp_path, chunk_size=3, shard_id=shard, shard_num=2)
        write_all(w, data, s, e, batch=2)
        w.finalize()
    assert sorted(p.name for p in (tmp_path / "sparse").iterdir()) == ["embeddings-shard000.jsonl",
                                                                        "embeddings-shard001.jsonl"]
    assert (tmp_path / "dense-shard001" / "index").is_file()
    merged = merge_shards(tmp_path, 2)
    assert set(merged) == {"dense", "multi"}
    index = faiss.read_index(str(tmp_path / "dense" / "index"))
    np.testing.assert_array_equal(index.reconstruct_n(0, 9), data[2])
    assert (tmp_path / "dense" / "docid").read_text().splitlines() == data[0]
    store = MultiVectorStore.load(tmp_path / "multi")
    assert store.docids == data[0] and store.offsets[-1] == data[4].sum()


def test_query_embedding_pkl_read_by_pyserini(tmp_path):
    from pyserini.encode import QueryEncoder

    vecs = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = write_query_embeddings_pkl(tmp_path / "qenc", ["first q", "second q", "第三"], vecs)
    assert out == tmp_path / "qenc" / "embedding.pkl"
    table = QueryEncoder._load_embeddings(str(tmp_path / "qenc"))
    assert list(table) == ["first q", "second q", "第三"]
    assert isinstance(table["第三"], np.ndarray) and table["第三"].dtype == np.float32
    np.testing.assert_array_equal(QueryEncoder(str(tmp_path / "qenc")).encode("second q"), [2.0, 3.0])
    with pytest.raises(ValueError, match="bpr"):
        write_query_embeddings_pkl(tmp_path / "bpr-queries", ["a"], vecs[:1])


def test_query_sparse_jsonl_read_by_pyserini(tmp_path):
    from pyserini.encode._cached_data import CachedDataQueryEncoder

    path = write_query_sparse_jsonl(tmp_path / "q.jsonl", ["1", "2"], ["hello world", "检索"],
                                    [{"hello": 120, "np": np.int64(3)}, {"检": 7}])
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"id": "1", "contents": "hello world", "vector": {"hello": 120, "np": 3}}
    enc = CachedDataQueryEncoder(str(path))
    assert enc.encode(" hello world ") == {"hello": 120, "np": 3} and enc.encode("检索") == {"检": 7}
    with pytest.raises(ValueError, match="keys on text"):
        write_query_sparse_jsonl(tmp_path / "d.jsonl", ["1", "2"], ["same", "same"], [{"a": 1}, {"b": 1}])


def test_query_multi_store(tmp_path):
    vecs = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    write_query_multi(tmp_path / "qmulti", ["q1", "q2"], vecs, mask)
    store = MultiVectorStore.load(tmp_path / "qmulti", mmap=False)
    assert store.docids == ["q1", "q2"] and list(store.offsets) == [0, 2, 6]
    np.testing.assert_array_equal(store.doc_vectors(0), vecs[0, :2])
    np.testing.assert_array_equal(store.doc_vectors(1), vecs[1])
    write_query_multi(tmp_path / "empty", ["q"], vecs[:1], np.zeros((1, 4), dtype=bool))
    assert MultiVectorStore.load(tmp_path / "empty").doc_vectors(0).shape == (0, 3)


@pytest.mark.slow
def test_sparse_output_indexes_and_searches_in_anserini(tmp_path):
    """The JsonVectorCollection output and the query jsonl work with Pyserini's own indexer and searcher."""
    import subprocess
    import sys

    from pyserini.search.lucene import LuceneImpactSearcher

    w = RepresentationShardWriter(tmp_path / "out", representations={"sparse"}, chunk_size=2)
    w.write_batch(["a", "b", "c"], ["alpha doc", "beta doc", "检索 doc"],
                  sparse=[{"alpha": 50, "doc": 3}, {"beta": 40, "doc": 3}, {"检索": 30, "doc": 3}])
    w.finalize()
    subprocess.run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection",
                    "--input", str(tmp_path / "out" / "sparse"), "--index", str(tmp_path / "idx"),
                    "--generator", "DefaultLuceneDocumentGenerator", "--threads", "1", "--impact",
                    "--pretokenized"], check=True, capture_output=True)
    queries = write_query_sparse_jsonl(tmp_path / "q.jsonl", ["1", "2"], ["find alpha", "检索"],
                                       [{"alpha": 2, "doc": 1}, {"检索": 1}])
    searcher = LuceneImpactSearcher(str(tmp_path / "idx"), str(queries), min_idf=-1)
    hits = searcher.search("find alpha", k=3)
    assert [h.docid for h in hits] == ["a", "b", "c"]
    assert [h.score for h in hits] == pytest.approx([103.0, 3.0, 3.0], abs=1e-4)  # 50*2 + 3*1
    assert [h.docid for h in searcher.search("检索", k=3)] == ["c"]


def test_store_dtypes_int8_and_float16(tmp_path):
    """write_multi_store: int8 keeps codes + one scale per vector (within max|x|/254 of the input); a float16
    store written over it in the same folder drops the stale scales."""
    from diffret_pyserini.index.multivector import QUANT_TOLERANCE, write_multi_store

    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((10, 8)).astype(np.float32)
    write_multi_store(tmp_path / "s", ["a", "b", "c"], [vecs[:4], vecs[4:]], np.array([3, 0, 7]), 8, "int8")
    store = MultiVectorStore.load(tmp_path / "s")
    assert store.meta["dtype"] == "int8" and store.scales.shape == (10,) and len(store.doc_vectors(1)) == 0
    got = np.concatenate([store.doc_vectors(0), store.doc_vectors(2)])
    assert np.all(np.abs(got - vecs) <= QUANT_TOLERANCE * np.abs(vecs).max(axis=1, keepdims=True) + 1e-7)
    write_multi_store(tmp_path / "s", ["a", "b", "c"], [vecs], np.array([3, 0, 7]), 8, "float16")
    store = MultiVectorStore.load(tmp_path / "s")
    assert store.scales is None and not (tmp_path / "s" / "scales.npy").exists()
    with pytest.raises(ValueError, match="without their scales"):
        write_multi_store(tmp_path / "t", ["a"], [np.zeros((2, 8), np.int8)], np.array([2]), 8, "int8")


@pytest.mark.parametrize("sizes", [[], [0], [5], [3, 0, 4, 1]])
def test_flat_index_written_block_by_block_is_faiss_own_file(tmp_path, sizes):
    import faiss

    from diffret_pyserini.index.faiss_dirs import write_flat_ip_index

    rng = np.random.default_rng(len(sizes))
    blocks = [rng.standard_normal((n, 6)).astype(np.float64) for n in sizes]  # any float dtype is taken
    assert write_flat_ip_index(tmp_path / "ours", iter(blocks), 6) == sum(sizes)
    index = faiss.IndexFlatIP(6)
    for b in blocks:
        index.add(b.astype(np.float32))
    faiss.write_index(index, str(tmp_path / "faiss"))
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "faiss").read_bytes()
    back = faiss.read_index(str(tmp_path / "ours"))
    assert back.ntotal == sum(sizes) and back.metric_type == faiss.METRIC_INNER_PRODUCT


def test_flat_index_with_a_wrong_count_or_width_replaces_nothing(tmp_path):
    from diffret_pyserini.index.faiss_dirs import write_flat_ip_index

    path = tmp_path / "index"
    write_flat_ip_index(path, [np.ones((2, 4))], 4)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"index: 3 vectors for 2 docids"):
        write_flat_ip_index(path, [np.ones((3, 4))], 4, expected=2)
    with pytest.raises(ValueError, match=r"a block of shape \(1, 5\) in a 4-dimensional index"):
        write_flat_ip_index(path, [np.ones((1, 5))], 4)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_atomic_dir_replaces_the_folder_only_when_complete(tmp_path):
    from diffret_pyserini.atomic import atomic_dir

    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="killed midway"):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed midway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folder left
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # the old folder is untouched
    with atomic_dir(out) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == tmp_path
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_adopted_blocks_give_the_outputs_of_one_writer(tmp_path):
    """Blocks written by separate writers (as Ray actors write them), adopted in order, finalize to exactly what
    one writer over all documents writes."""
    from diffret_pyserini.index.faiss_dirs import read_faiss_dir

    data = make_docs(13)
    whole = RepresentationShardWriter(tmp_path / "whole", chunk_size=4)
    write_all(whole, data, 0, 13)
    expected = whole.finalize()
    blocks = []
    for i, (start, stop) in enumerate(((0, 5), (5, 9), (9, 13))):
        # a block is one chunk of its own size, committed by the write that fills it
        write_all(RepresentationShardWriter(tmp_path / f"block-{i}", chunk_size=stop - start), data, start, stop,
                  batch=stop - start)
        blocks.append(RepresentationShardWriter(tmp_path / f"block-{i}", chunk_size=stop - start))
    merged = RepresentationShardWriter(tmp_path / "merged", chunk_size=4)
    merged.adopt(blocks)
    assert merged.completed_docs() == 13
    assert [c["name"] for c in merged.manifest["chunks"]] == ["part-000000", "part-000001", "part-000002"]
    got = merged.finalize()
    assert (got["sparse"]).read_text() == expected["sparse"].read_text()
    ids_a, vec_a = read_faiss_dir(expected["dense"])
    ids_b, vec_b = read_faiss_dir(got["dense"])
    assert ids_a == ids_b and np.array_equal(vec_a, vec_b)
    a, b = MultiVectorStore.load(expected["multi"]), MultiVectorStore.load(got["multi"])
    assert a.docids == b.docids and np.array_equal(a.offsets, b.offsets) and np.array_equal(a.vectors, b.vectors)
    with pytest.raises(ValueError, match="representations"):
        RepresentationShardWriter(tmp_path / "dense-only", ["dense"]).adopt(blocks[:1])
