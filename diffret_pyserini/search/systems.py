"""The retrieval systems of the main job, each built from Pyserini's own searchers over our stage outputs.

    bm25          LuceneSearcher (k1=0.9, b=0.4) over title + text
    sparse        LuceneImpactSearcher over our impact index, queries pre-encoded (queries/sparse.jsonl)
    dense         FaissSearcher over our FAISS dir, queries pre-encoded (queries/dense/embedding.pkl)
    multi         MultiVectorSearcher (FAISS candidates per query vector, exact MaxSim re-scoring)
    hybrid-dense  RobustHybridSearcher(dense, sparse): Pyserini's HybridSearcher, safe min-max fusion
    hybrid-multi  RobustHybridSearcher(multi, sparse)
    hybrid-bm25-sparse, hybrid-bm25-dense, hybrid-bm25-multi
                  RobustHybridSearcher(ours, bm25): one of our systems fused with BM25, BM25 in the sparse seat
                  (so the hybrid alpha is BM25's weight); the usual "learned model + BM25" baseline
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffret_pyserini.datasets import normalize_text


class EncodedMultiQueries:
    """Query encoder for MultiVectorSearcher that looks pre-encoded [Kq,H] vectors up by query text."""

    def __init__(self, store_dir: str | Path, topics: dict[str, str]):
        from diffret_pyserini.index.multivector import MultiVectorStore

        store = MultiVectorStore.load(store_dir, mmap=False)
        by_qid = {qid: np.asarray(store.doc_vectors(i), dtype=np.float32) for i, qid in enumerate(store.docids)}
        self.by_text = {normalize_text(text): by_qid[qid] for qid, text in topics.items() if qid in by_qid}

    def encode(self, query: str) -> np.ndarray:
        try:
            return self.by_text[normalize_text(query)]
        except KeyError:
            raise KeyError(f"query {query[:60]!r} was not pre-encoded") from None


@dataclass
class SearchInputs:
    """Where one model's indexes and encoded queries are."""

    bm25_index: Path
    impact_index: Path
    faiss_dir: Path
    multi_dir: Path
    queries_dir: Path
    topics: dict[str, str]


def bm25_searcher(inputs: SearchInputs):
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(inputs.bm25_index))
    searcher.set_bm25(0.9, 0.4)
    return searcher


def sparse_searcher(inputs: SearchInputs):
    from pyserini.search.lucene import LuceneImpactSearcher

    # min_idf=-1: Pyserini drops query terms with idf <= min_idf, and the default 0 would drop terms found in
    # every document (see the shared notes).
    return LuceneImpactSearcher(str(inputs.impact_index), str(inputs.queries_dir / "sparse.jsonl"), min_idf=-1)


def dense_searcher(inputs: SearchInputs):
    from pyserini.encode import QueryEncoder
    from pyserini.search.faiss import FaissSearcher

    return FaissSearcher(str(inputs.faiss_dir), QueryEncoder(encoded_query_dir=str(inputs.queries_dir / "dense")))


# Up to this many stored vectors exact MaxSim over every document costs tens of ms a query (measured ~0.35-0.6 s
# at 1.6M vectors), so the candidate stage, which can miss relevant documents at depth 1000, is skipped.
EXACT_MAXSIM_VECTORS = 100_000


# A candidate index prebuilt by `python -m diffret_pyserini.index candidates --output MULTI/candidates.faiss`.
CANDIDATES_FILE = "candidates.faiss"


def multi_searcher(inputs: SearchInputs):
    from diffret_pyserini.index.multivector import MultiVectorStore
    from diffret_pyserini.search.maxsim import MultiVectorSearcher

    queries = EncodedMultiQueries(inputs.queries_dir / "multi", inputs.topics)
    cache = inputs.multi_dir / CANDIDATES_FILE
    # Used only when newer than the store's meta.json (written last): a re-encoded store invalidates it.
    if cache.is_file() and cache.stat().st_mtime_ns >= (inputs.multi_dir / "meta.json").stat().st_mtime_ns:
        return MultiVectorSearcher(inputs.multi_dir, queries, index_cache=cache)
    exact = MultiVectorStore.load(inputs.multi_dir).meta["n_vectors"] <= EXACT_MAXSIM_VECTORS
    return MultiVectorSearcher(inputs.multi_dir, queries, exact=exact)


SINGLE_SYSTEMS = {"bm25": bm25_searcher, "sparse": sparse_searcher, "dense": dense_searcher,
                  "multi": multi_searcher}
# hybrid system -> (searcher in HybridSearcher's dense seat, searcher in its sparse seat)
HYBRID_SYSTEMS = {"hybrid-dense": ("dense", "sparse"), "hybrid-multi": ("multi", "sparse"),
                  "hybrid-bm25-sparse": ("sparse", "bm25"), "hybrid-bm25-dense": ("dense", "bm25"),
                  "hybrid-bm25-multi": ("multi", "bm25")}
SYSTEMS = (*SINGLE_SYSTEMS, *HYBRID_SYSTEMS)  # the pipeline's default order


def uses_bm25(system: str) -> bool:
    """Whether a system's results depend on the BM25 index."""
    return system == "bm25" or "bm25" in HYBRID_SYSTEMS.get(system, ())


def uses_model(system: str) -> bool:
    """Whether a system's results depend on the model's encodings."""
    return system != "bm25"


def run_system(system: str, inputs: SearchInputs, hits: int = 1000, alpha: float = 0.5,
               threads: int = 2) -> dict[str, list]:
    """{qid: hits} for every topic, through the system's Pyserini searcher."""
    qids = list(inputs.topics)
    texts = [normalize_text(inputs.topics[q]) for q in qids]
    if system in HYBRID_SYSTEMS:
        from diffret_pyserini.search.hybrid import RobustHybridSearcher

        dense_seat, sparse_seat = (SINGLE_SYSTEMS[name](inputs) for name in HYBRID_SYSTEMS[system])
        searcher = RobustHybridSearcher(dense_seat, sparse_seat)
        results = searcher.batch_search(texts, qids, k0=hits, k=hits, threads=threads, alpha=alpha)
    elif system in SINGLE_SYSTEMS:
        results = SINGLE_SYSTEMS[system](inputs).batch_search(texts, qids, k=hits, threads=threads)
    else:
        raise ValueError(f"unknown system {system!r}; choose from {SYSTEMS}")
    return {qid: results.get(qid, []) for qid in qids}
