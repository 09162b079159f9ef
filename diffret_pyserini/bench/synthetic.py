"""Synthetic corpora for the search benchmark: real dimensions and shapes, made-up content.

- Sparse: each document holds up to `doc_terms` distinct terms drawn from a Zipfian vocabulary (rank r has
  probability ~ 1/r^1.1, so a few terms are in most documents and most terms are rare), with integer impacts,
  written as a JsonVectorCollection (`{"id", "contents", "vector": {term: int}}`).
- Dense / multi: documents belong to one of `topics` clusters; each of a document's Kp vectors is its topic
  centre plus noise, L2-normalised; its single vector is the normalised mean (as our encoder pools).
- Queries are drawn from random documents (their topic, a few of their terms), so every query has matches.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ZIPF_EXPONENT = 1.1
TOPICS = 256
NOISE_NORM = 1.0  # expected norm of the noise added to a unit topic centre (cosine to the centre ~0.7)


@dataclass
class Queries:
    """Pre-encoded queries, keyed by their text 'q<i>' (what the searchers are asked)."""

    texts: list[str]
    sparse: dict[str, dict[str, int]]
    dense: dict[str, np.ndarray]   # [H] float32
    multi: dict[str, np.ndarray]   # [Kq, H] float32


@dataclass
class DenseCorpus:
    single: np.ndarray   # [N, H] float32
    multi: np.ndarray    # [N * Kp, H] float16 (what the store holds)
    kp: int
    topic: np.ndarray    # [N] int


def term_name(rank: int) -> str:
    return f"w{rank}"


def zipf_probabilities(vocab_size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, vocab_size + 1, dtype=np.float64) ** ZIPF_EXPONENT
    return weights / weights.sum()


def write_sparse_corpus(path: Path, n_docs: int, vocab_size: int, doc_terms: int, rng: np.random.Generator,
                        chunk: int = 5000) -> list[np.ndarray]:
    """Write the JsonVectorCollection file; returns each document's term ranks (queries are drawn from them)."""
    probs = zipf_probabilities(vocab_size)
    names = [term_name(r) for r in range(vocab_size)]
    path.parent.mkdir(parents=True, exist_ok=True)
    doc_ranks: list[np.ndarray] = []
    with open(path, "w", encoding="utf-8") as f:
        for lo in range(0, n_docs, chunk):
            rows = min(chunk, n_docs - lo)
            draws = rng.choice(vocab_size, size=(rows, doc_terms * 2), p=probs)
            impacts = rng.integers(1, 300, size=(rows, doc_terms * 2))
            for i in range(rows):
                ranks, first = np.unique(draws[i], return_index=True)
                keep = np.argsort(first)[:doc_terms]  # first-drawn distinct terms, not just the commonest
                ranks, weights = ranks[keep], impacts[i, :len(keep)]
                doc_ranks.append(ranks)
                vector = {names[r]: int(w) for r, w in zip(ranks.tolist(), weights.tolist())}
                f.write(json.dumps({"id": f"d{lo + i}", "contents": f"d{lo + i}", "vector": vector}) + "\n")
    return doc_ranks


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def dense_corpus(n_docs: int, dim: int, kp: int, rng: np.random.Generator, chunk: int = 10000) -> DenseCorpus:
    """Topic-clustered unit vectors: Kp per document (float16, as the store keeps them) and one pooled vector."""
    centres = _normalise(rng.standard_normal((TOPICS, dim), dtype=np.float32))
    topic = rng.integers(0, TOPICS, size=n_docs)
    multi = np.empty((n_docs * kp, dim), dtype=np.float16)
    single = np.empty((n_docs, dim), dtype=np.float32)
    for lo in range(0, n_docs, chunk):
        hi = min(lo + chunk, n_docs)
        noise = rng.standard_normal((hi - lo, kp, dim), dtype=np.float32) * (NOISE_NORM / np.sqrt(dim))
        vectors = _normalise(centres[topic[lo:hi], None, :] + noise)
        multi[lo * kp:hi * kp] = vectors.reshape(-1, dim)
        single[lo:hi] = _normalise(vectors.mean(axis=1))
    return DenseCorpus(single=single, multi=multi, kp=kp, topic=topic)


def make_queries(n: int, corpus: DenseCorpus, doc_ranks: list[np.ndarray], vocab_size: int, query_terms: int,
                 kq: int, rng: np.random.Generator) -> Queries:
    """`n` queries, each from a random document: half its terms from that document, its topic for vectors."""
    dim = corpus.single.shape[1]
    probs = zipf_probabilities(vocab_size)
    texts, sparse, dense, multi = [], {}, {}, {}
    centre_of = {}
    for i in range(n):
        doc = int(rng.integers(0, len(doc_ranks)))
        own = doc_ranks[doc]
        picked = rng.choice(own, size=min(len(own), max(1, query_terms // 2)), replace=False)
        extra = rng.choice(vocab_size, size=query_terms, p=probs)
        ranks = list(dict.fromkeys([*picked.tolist(), *extra.tolist()]))[:query_terms]
        text = f"q{i}"
        texts.append(text)
        sparse[text] = {term_name(r): int(w) for r, w in zip(ranks, rng.integers(1, 100, size=len(ranks)))}
        t = int(corpus.topic[doc])
        if t not in centre_of:  # the topic centre, estimated from the document's own vectors
            centre_of[t] = _normalise(corpus.multi[doc * corpus.kp:(doc + 1) * corpus.kp].astype(np.float32)
                                      .mean(axis=0))
        noise = rng.standard_normal((kq, dim), dtype=np.float32) * (NOISE_NORM / np.sqrt(dim))
        vectors = _normalise(centre_of[t][None, :] + noise).astype(np.float32)
        multi[text] = vectors
        dense[text] = _normalise(vectors.mean(axis=0)).astype(np.float32)
    return Queries(texts, sparse, dense, multi)


class LookupEncoder:
    """A query encoder that returns pre-encoded vectors by query text (what Pyserini's searchers call)."""

    def __init__(self, table: dict):
        self.table = table

    def encode(self, query: str, **kwargs):
        return self.table[query]
