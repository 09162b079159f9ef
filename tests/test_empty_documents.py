"""Documents without content: an empty text and an [UNK]-only text have no dense or multi vector, so they never top
a dense or multi-vector ranking; they are counted in the encode log and stay in every output (no document lost)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from diffret_pyserini.datasets import iter_corpus, load_queries, resolve_dataset
from diffret_pyserini.encode.jobs import EncodeOptions, encode_corpus
from diffret_pyserini.index.faiss_dirs import read_faiss_dir
from diffret_pyserini.index.multivector import MultiVectorStore
from diffret_pyserini.model.spec import get_encoder
from diffret_pyserini.search.maxsim import MultiVectorSearcher

EMPTY, UNK_ONLY = "EMPTY-1", "UNK-1"
UNK_TEXT = "🛰️ 🌌 🚀 🛸"  # characters outside SPLADE-tiny's vocabulary: every token is [UNK]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("empty-docs")
    docs = [{"_id": d.docid, "title": d.title, "text": d.text}
            for _, d in zip(range(300), iter_corpus(resolve_dataset("cacm").corpus_path))]
    docs.insert(100, {"_id": EMPTY, "title": "", "text": ""})
    docs.insert(200, {"_id": UNK_ONLY, "title": "", "text": UNK_TEXT})
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    encoder = get_encoder("splade-tiny", device="cpu")
    return tmp, corpus, encoder, len(docs)


def test_the_unk_text_really_is_unk_only(encoded):
    _, _, encoder, _ = encoded
    tok = encoder.backbone.tokenizer
    ids = tok(UNK_TEXT, add_special_tokens=False)["input_ids"]
    assert ids and set(ids) == {tok.unk_token_id}


def test_documents_without_content_never_rank_in_the_dense_or_multi_top_10(encoded, caplog):
    tmp, corpus, encoder, n = encoded
    with caplog.at_level(logging.INFO, logger="diffret_pyserini"):
        paths = encode_corpus(encoder, corpus, tmp / "out", EncodeOptions(chunk_size=64))
    assert "encoded 302 documents" in caplog.text and "2 with no content token" in caplog.text
    # no document lost: every output holds every id
    docids, vectors = read_faiss_dir(paths["dense"])
    assert len(docids) == n and len(vectors) == n
    store = MultiVectorStore.load(paths["multi"])
    assert store.docids == docids
    sparse_ids = [json.loads(line)["id"] for line in paths["sparse"].read_text(encoding="utf-8").splitlines()]
    assert sparse_ids == docids
    # no vector: zero dense rows, no multi vectors
    for docid in (EMPTY, UNK_ONLY):
        i = docids.index(docid)
        assert not np.any(vectors[i])
        assert store.offsets[i + 1] == store.offsets[i]
    queries = list(load_queries(resolve_dataset("cacm").queries_path).values())
    enc = encoder.encode(queries, "query", want=("dense", "multi"))
    scores = vectors @ enc.dense.T  # exhaustive inner product, what the flat FAISS index computes
    top10 = {docids[j] for q in range(len(queries)) for j in np.argsort(-scores[:, q], kind="stable")[:10]}
    assert EMPTY not in top10 and UNK_ONLY not in top10
    searcher = MultiVectorSearcher(paths["multi"], exact=True)
    for q in range(len(queries)):
        hits = searcher.search(enc.multi[q][enc.multi_valid[q]], k=10)
        assert {h.docid for h in hits}.isdisjoint({EMPTY, UNK_ONLY})


def test_a_query_without_content_gets_a_zero_vector_not_the_prompts(encoded):
    _, _, encoder, _ = encoded
    enc = encoder.encode(["", UNK_TEXT, "information retrieval"], "query", want=("dense", "multi", "sparse"))
    assert enc.content.tolist() == [False, False, True]
    assert not enc.dense[:2].any() and enc.dense[2].any()
    assert not enc.multi_valid[:2].any() and enc.multi_valid[2].any()
    assert enc.sparse[0] == {} and enc.sparse[1] == {}
