"""Length-bucketed batching: the plan respects its limits, and a bucketed encode writes the same vectors, in
corpus order, as corpus-order batching (sparse identical, dense and multi to 1e-5) with less padding."""
import json

import faiss
import numpy as np
import pytest

from diffret_pyserini.datasets import iter_corpus, resolve_dataset
from diffret_pyserini.encode.batching import plan_batches
from diffret_pyserini.encode.jobs import EncodeOptions, EncodeStats, encode_corpus
from diffret_pyserini.index.multivector import MultiVectorStore


def test_plan_covers_every_row_once_within_rows_and_token_budget():
    lengths = [5, 40, 7, 300, 12, 12, 90, 3, 41, 8]
    plan = plan_batches(lengths, batch_size=3, max_tokens=100)
    rows = sorted(i for b in plan.batches for i in b)
    assert rows == list(range(len(lengths)))
    for batch in plan.batches:
        assert len(batch) <= 3
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= 100 or len(batch) == 1  # the 300-token row runs alone
    assert plan.batches[0] == [3]  # longest first: a budget that does not fit fails at once
    flat = [lengths[i] for b in plan.batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    corpus_order = plan_batches(lengths, batch_size=3, bucket=False)
    assert corpus_order.batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert plan.padding < corpus_order.padding


def test_plan_rejects_bad_limits():
    with pytest.raises(ValueError):
        plan_batches([1], batch_size=0)
    with pytest.raises(ValueError):
        plan_batches([1], batch_size=1, max_tokens=0)


def read_outputs(out):
    sparse = (out / "sparse" / "embeddings.jsonl").read_text().splitlines()
    index = faiss.read_index(str(out / "dense" / "index"))
    store = MultiVectorStore.load(out / "multi")
    return {"sparse": sparse, "dense": index.reconstruct_n(0, index.ntotal),
            "dense_ids": (out / "dense" / "docid").read_text().split(), "multi": np.asarray(store.vectors, np.float32),
            "multi_ids": list(store.docids), "offsets": np.asarray(store.offsets)}


def assert_same_outputs(a, b, tol):
    assert a["sparse"] == b["sparse"]
    assert a["dense_ids"] == b["dense_ids"] and a["multi_ids"] == b["multi_ids"]
    np.testing.assert_allclose(a["dense"], b["dense"], atol=tol)
    np.testing.assert_array_equal(a["offsets"], b["offsets"])
    np.testing.assert_allclose(a["multi"], b["multi"], atol=max(tol, 1e-3))  # the store is float16


def test_bucketed_encode_equals_corpus_order_and_writes_in_corpus_order(tmp_path, splade_encoder):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(open(resolve_dataset("cacm").corpus_path).readlines()[:64]))
    plain, bucketed = EncodeStats(), EncodeStats()
    encode_corpus(splade_encoder, corpus, tmp_path / "plain", EncodeOptions(batch_size=8, chunk_size=32,
                                                                            length_buckets=False), stats=plain)
    encode_corpus(splade_encoder, corpus, tmp_path / "bucketed", EncodeOptions(batch_size=8, chunk_size=32,
                                                                               max_tokens=600), stats=bucketed)
    a, b = read_outputs(tmp_path / "plain"), read_outputs(tmp_path / "bucketed")
    assert a["dense_ids"] == [d.docid for d in iter_corpus(corpus)]  # corpus order
    assert [json.loads(x)["id"] for x in b["sparse"]] == a["dense_ids"]
    assert_same_outputs(a, b, 1e-5)
    assert plain.docs == bucketed.docs == 64 and plain.real_tokens == bucketed.real_tokens
    assert bucketed.padding < plain.padding / 2, (bucketed.padding, plain.padding)
    assert bucketed.batches > plain.batches  # the 600-token budget split the long batches


@pytest.fixture(scope="module")
def splade_encoder():
    from diffret_pyserini.model.spec import get_encoder

    return get_encoder("splade-tiny", device="cpu", kp=4)


def test_tokenising_overlaps_the_forward_pass_only_where_a_core_or_an_accelerator_is_free(monkeypatch):
    import os

    import torch

    from diffret_pyserini.encode.jobs import overlap_pays

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert not overlap_pays("cpu") and not overlap_pays(torch.device("cpu"))
    assert overlap_pays("cuda:0") and overlap_pays(torch.device("cuda", 1))  # the host idles during its forwards
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert overlap_pays("cpu")


@pytest.mark.parametrize("overlap", [True, False])
def test_with_or_without_the_tokenise_thread_the_outputs_and_errors_are_the_same(tmp_path, splade_encoder,
                                                                               monkeypatch, overlap):
    from diffret_pyserini.datasets import DatasetError
    from diffret_pyserini.encode import jobs as encode_jobs

    corpus = tmp_path / "corpus.jsonl"
    lines = open(resolve_dataset("cacm").corpus_path).readlines()[:40]
    corpus.write_text("".join(lines))
    encode_corpus(splade_encoder, corpus, tmp_path / "reference", EncodeOptions(batch_size=8, chunk_size=16))
    calls = []
    monkeypatch.setattr(encode_jobs, "overlap_pays", lambda device: calls.append(device) or overlap)
    encode_corpus(splade_encoder, corpus, tmp_path / "out", EncodeOptions(batch_size=8, chunk_size=16, overwrite=True))
    assert calls == [splade_encoder.backbone.device]
    assert_same_outputs(read_outputs(tmp_path / "reference"), read_outputs(tmp_path / "out"), 1e-6)
    # a bad line in a later window is raised where that window is planned, by either path, with what was
    # committed before it kept
    corpus.write_text("".join(lines[:20]) + '{"_id": "x", "text": 5}\n' + "".join(lines[20:]))
    with pytest.raises(DatasetError, match=r"corpus.jsonl:21: .*text"):
        encode_corpus(splade_encoder, corpus, tmp_path / "bad", EncodeOptions(batch_size=8, chunk_size=16))
