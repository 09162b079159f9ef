"""Dense post-processing: transforms checked by hand, and a FAISS dir rewritten for Pyserini's FaissSearcher."""
import dataclasses

import numpy as np
import pytest

from diffret_pyserini.index.dense_postprocess import (
    DenseTransform,
    apply_to_encoded_queries,
    apply_to_faiss_dir,
    fit_transform,
    main,
    mean_pairwise_cosine,
)
from diffret_pyserini.index.faiss_dirs import read_faiss_dir

S = np.sqrt(0.5)


def test_center_subtracts_the_sample_mean_then_normalises():
    t = fit_transform(np.array([[1.0, 2.0], [3.0, 4.0]]), "center")
    assert t.mean.tolist() == [2.0, 3.0] and t.matrix is None
    assert np.allclose(t.apply(np.array([[1.0, 2.0], [2.0, 5.0]])), [[-S, -S], [0.0, 1.0]])


def test_drop_removes_the_dimension_with_the_largest_mean_magnitude():
    sample = np.array([[0.0, 10.0, -1.0], [2.0, 12.0, 1.0]])  # mean (1, 11, 0): dimension 1 is the outlier
    t = fit_transform(sample, "drop", n=1)
    assert t.dim == 2 and t.matrix.tolist() == [[1, 0], [0, 0], [0, 1]]
    assert np.allclose(t.apply(np.array([4.0, 99.0, 3.0])), [S, S])  # (4-1, 3-0) = (3, 3)


def test_drop_arithmetic_by_hand():
    t = fit_transform(np.array([[0.0, 10.0, -1.0], [2.0, 12.0, 1.0]]), "drop", n=1)
    # x - mean = (4-1, 99-11, 4-0) = (3, 88, 4); keep dims 0 and 2 -> (3, 4) -> (0.6, 0.8)
    assert np.allclose(t.apply(np.array([4.0, 99.0, 4.0])), [0.6, 0.8])


def test_abtt_removes_the_top_principal_direction():
    sample = np.array([[-2.0, 0.1], [2.0, -0.1], [-1.0, 0.0], [1.0, 0.0]])  # mean 0, spread along x
    t = fit_transform(sample, "abtt", n=1)
    top = np.linalg.svd(sample - sample.mean(0))[2][0]
    assert np.allclose(t.matrix, np.eye(2) - np.outer(top, top), atol=1e-6)
    raw = dataclasses.replace(t, normalise=False)
    assert np.allclose(raw.apply(3 * top), 0.0, atol=1e-5)  # along the top direction: nothing left
    ortho = np.array([-top[1], top[0]])
    assert np.allclose(t.apply(2 * ortho), ortho, atol=1e-5)  # across it: kept, normalised


def test_whiten_makes_the_sample_covariance_the_identity():
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(200, 3)) * [10.0, 1.0, 0.1] + [5.0, 0.0, -2.0]
    t = dataclasses.replace(fit_transform(sample, "whiten", eps=0.0), normalise=False)
    y = t.apply(sample)
    assert t.dim == 3
    assert np.allclose(np.cov(y, rowvar=False), np.eye(3), atol=1e-4)
    assert np.allclose(y.mean(0), 0.0, atol=1e-5)


def test_mean_pairwise_cosine_by_hand():
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [0.0, 2.0]])) == pytest.approx(0.0)
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])) == pytest.approx(1 / 3)


def test_save_and_load_round_trip(tmp_path):
    t = fit_transform(np.array([[0.0, 10.0, -1.0], [2.0, 12.0, 1.0]]), "drop", n=1)
    back = DenseTransform.load(t.save(tmp_path / "t.npz"))
    assert back.method == "drop" and back.normalise
    assert np.array_equal(back.mean, t.mean) and np.array_equal(back.matrix, t.matrix)


def test_bad_arguments_are_one_line():
    with pytest.raises(ValueError, match="unknown method 'zca'"):
        fit_transform(np.ones((3, 2)), "zca")
    with pytest.raises(ValueError, match=r"drop: n must be in \[1, 1\], got 2"):
        fit_transform(np.ones((3, 2)), "drop", n=2)


def _collapsed(tmp_path):
    """Six documents sharing one huge dimension whose size grows with the doc (like length), plus a small
    topical part; each query is the corpus offset plus one document's topic."""
    import faiss

    from diffret_pyserini.index.faiss_dirs import write_query_embeddings_pkl

    n, h = 6, 8
    docs = np.zeros((n, h), np.float32)
    docs[:, 0] = 50.0 + np.arange(n)           # the shared "massive activation", larger for later docs
    docs[np.arange(n), np.arange(n) + 1] = 1.0  # the topic of doc i
    queries = np.zeros((2, h), np.float32)
    queries[:, 0] = docs[:, 0].mean()
    queries[0, 2], queries[1, 4] = 1.0, 1.0      # topics of d1 and d3
    faiss_dir = tmp_path / "dense"
    faiss_dir.mkdir()
    index = faiss.IndexFlatIP(h)
    index.add(docs)
    faiss.write_index(index, str(faiss_dir / "index"))
    (faiss_dir / "docid").write_text("".join(f"d{i}\n" for i in range(n)))
    write_query_embeddings_pkl(tmp_path / "queries", ["first query", "second query"], queries)
    return faiss_dir, tmp_path / "queries", docs


def _top(faiss_dir, query_dir, text):
    from pyserini.encode import QueryEncoder
    from pyserini.search.faiss import FaissSearcher

    searcher = FaissSearcher(str(faiss_dir), QueryEncoder(encoded_query_dir=str(query_dir)))
    return [hit.docid for hit in searcher.search(text, k=3)]


def test_centering_a_faiss_dir_puts_the_topical_document_first_for_faiss_searcher(tmp_path):
    faiss_dir, query_dir, docs = _collapsed(tmp_path)
    assert _top(faiss_dir, query_dir, "first query")[0] == "d5"  # before: the largest shared part wins
    t = fit_transform(docs, "center")
    apply_to_faiss_dir(faiss_dir, tmp_path / "out" / "dense", t)
    apply_to_encoded_queries(query_dir, tmp_path / "out" / "queries", t)
    assert _top(tmp_path / "out" / "dense", tmp_path / "out" / "queries", "first query")[0] == "d1"
    assert _top(tmp_path / "out" / "dense", tmp_path / "out" / "queries", "second query")[0] == "d3"
    docids, vectors = read_faiss_dir(tmp_path / "out" / "dense")
    assert docids == [f"d{i}" for i in range(6)] and np.allclose(vectors, t.apply(docs), atol=1e-6)


def test_cli_writes_dirs_transform_and_cosines(tmp_path, capsys):
    faiss_dir, query_dir, _ = _collapsed(tmp_path)
    out = tmp_path / "cli"
    assert main(["--faiss", str(faiss_dir), "--queries", str(query_dir), "--out", str(out), "--method", "drop"]) == 0
    assert (out / "transform.npz").is_file() and (out / "queries" / "embedding.pkl").is_file()
    assert DenseTransform.load(out / "transform.npz").dim == 7
    assert main(["--faiss", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: --faiss {tmp_path / 'nowhere'}: no index there")
