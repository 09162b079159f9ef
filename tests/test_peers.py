"""Peers through Pyserini's own encoder classes, indexes and searchers, on a small real collection (no mocks)."""
import json

import pytest

from diffret_pyserini.datasets import load_queries, normalize_text, resolve_dataset
from diffret_pyserini.eval.runs import read_trec_run
from diffret_pyserini.eval.trec_eval import read_metrics
from diffret_pyserini.pipeline.peers import PEERS, PeerContext, main, splade_pooling
from tests.numeric_collection import key, make_numeric_collection


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return make_numeric_collection(tmp_path_factory.mktemp("peers") / "numeric", n_docs=30)


@pytest.fixture(scope="module")
def built(collection, tmp_path_factory):
    """One CLI run of the two Pyserini peers (the expensive part), shared by the tests below."""
    root = tmp_path_factory.mktemp("built")
    code = main(["--dataset", str(collection), "--indexes", str(root / "ix"), "--runs", str(root / "runs"),
                 "--peers", "splade-pooling", "minilm", "--hits", "10", "--threads", "1"])
    assert code == 0
    return root


def _ctx(root, dataset_dir, **kw):
    dataset = resolve_dataset(dataset_dir)
    topics = {q: normalize_text(t) for q, t in load_queries(dataset.queries_path).items()}
    return PeerContext(dataset, topics, root, hits=10, threads=1, batch_size=8, **kw)


def test_cli_writes_peer_rows_beside_bm25(collection, built):
    out = built / "runs" / key(collection) / "peers"
    metrics = read_metrics(out / "metrics.json")
    assert list(metrics) == ["bm25", "peer-splade-pooling", "peer-minilm"]
    assert metrics["peer-minilm"]["nDCG@10"] > 0.8 and metrics["bm25"]["nDCG@10"] > 0.8
    assert (out / "metrics.png").stat().st_size > 0 and "peer-minilm" in (out / "metrics.md").read_text()
    assert len(read_trec_run(out / "peer-minilm.trec")["1"]) == 10


def test_splade_pooling_finds_each_title_query_its_document_and_reuses_its_index(collection, built):
    peers = built / "ix" / key(collection) / "peers"
    run = read_trec_run(built / "runs" / key(collection) / "peers" / "peer-splade-pooling.trec")
    # each query is the title of one document (1000, 1005, ...): the planted document must come first
    assert [run[q][0][0] for q in ("1", "2", "3", "4", "5")] == ["1000", "1005", "1010", "1015", "1020"]
    lines = (peers / "splade-pooling" / "collection" / "vectors.jsonl").read_text().splitlines()
    vec = json.loads(lines[0])["vector"]
    assert len(lines) == 30 and vec and all(isinstance(w, int) and w > 0 for w in vec.values())
    index = peers / "splade-pooling" / "index"
    stamp = index.stat().st_mtime_ns
    again = splade_pooling(_ctx(peers, collection))["peer-splade-pooling"]  # fingerprints match: read back
    assert again == run and index.stat().st_mtime_ns == stamp


def test_minilm_dense_384_dims_l2_normalised(collection, built):
    import faiss
    import numpy as np

    index = faiss.read_index(str(built / "ix" / key(collection) / "peers" / "minilm" / "dense" / "index"))
    vectors = index.reconstruct_n(0, index.ntotal)
    assert vectors.shape == (30, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    run = read_trec_run(built / "runs" / key(collection) / "peers" / "peer-minilm.trec")
    assert [run[q][0][0] for q in ("1", "2", "3")] == ["1000", "1005", "1010"]
    assert 0.5 < run["1"][0][1] <= 1.0 + 1e-5  # cosine of a title and its document: close, not identical


def test_cli_bad_flag_is_one_line(tmp_path, capsys):
    code = main(["--dataset", "cacm", "--indexes", str(tmp_path), "--runs", str(tmp_path), "--hits", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: --hits 0: must be an integer >= 1"


@pytest.mark.slow  # SmolLM2 on CPU: ~1 s a document on a loaded 2-core machine
def test_promptreps_single_rows(tmp_path):
    from diffret_pyserini.pipeline.peers import promptreps_single

    small = make_numeric_collection(tmp_path / "small", n_docs=21)
    runs = promptreps_single(_ctx(tmp_path / "peers", small))
    assert list(runs) == ["peer-promptreps-single-sparse", "peer-promptreps-single-dense",
                          "peer-promptreps-single-hybrid"]
    assert all(len(run) == 5 for run in runs.values())
    assert sorted(PEERS) == ["minilm", "promptreps-multi", "promptreps-single", "splade-pooling"]
