"""Multi-vector MaxSim searcher with Pyserini's dense-searcher interface.

Store format (written by ``diffret_pyserini.encode.writers``): a folder with ``vectors.npy`` (float16/float32
[n_vectors, H], L2-normalised rows), ``offsets.npy`` (int64 [n_docs + 1]; doc i owns rows
offsets[i]:offsets[i+1]), ``docid`` (one id per line) and ``meta.json`` {"dim", "dtype", "n_docs", "n_vectors"}.

Search = candidate generation + exact re-scoring (the ColBERT recipe):
1. every query vector searches a FAISS inner-product index over all document vectors (one ``search`` call for
   all Kq vectors); the owners of the hit vectors form the candidate set;
2. candidates are scored with exact MaxSim over all their vectors (a gather + one matmul + segment max).
``exact=True`` skips step 1 and scores every document (tests, small corpora).

Memory: the store is memory-mapped (float16: 2 bytes x H per vector, int8: 1 byte x H + a 4-byte scale; read
from the page cache for the candidates only) plus a 4-byte owner id per vector, plus the FAISS index: 'Flat'
keeps a float32 copy (4 bytes x H per vector), 'SQfp16' and 'IVFn,SQfp16' keep float16 codes (2 bytes x H,
+8 bytes per vector for IVF ids), 'IVFn,PQmxb' (the compressed candidate index, ``index='ivfpq'``) keeps
m x b / 8 bytes + 8 per vector: 40 bytes for H=128 with PQ32x8, so 10M vectors need 400 MB, not 2.6 GB.
For 100k docs x 16 vectors x H=128: store 410 MB (mmap) + owners 6.4 MB + IVF4096,SQfp16 423 MB (Flat would
be 819 MB).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import faiss
import numpy as np

from diffret_pyserini.index.faiss_dirs import IndexSettings, ivf_nlist
from diffret_pyserini.index.multivector import MultiVectorStore, build_candidate_index, candidate_index_spec
from diffret_pyserini.search.maxsim_scoring import maxsim_segments, rows_of_docs

__all__ = ["MultiVectorSearcher", "load_store"]

_SCORE_BLOCK_ROWS = 1 << 18  # int8 stores: rows dequantised at a time when every document is scored
_SEARCH_CHUNK = 4096  # query vectors per FAISS search call in batch_search


@functools.lru_cache(maxsize=1)
def _dense_result_types():
    """Pyserini's own result classes, imported lazily (first search, not construction): pyserini.search.faiss
    starts the JVM (~8 s), which building a candidate index does not need."""
    from pyserini.search.faiss import DenseSearchResult, PrfDenseSearchResult

    return DenseSearchResult, PrfDenseSearchResult


def load_store(store_dir: str | os.PathLike, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Read a multi-vector store: (vectors [N, H] (memmap), offsets int64 [n+1], docids, meta); validated."""
    store = MultiVectorStore.load(store_dir, mmap=mmap)
    return store.vectors, store.offsets, store.docids, store.meta




class MultiVectorSearcher:
    """MaxSim search over a multi-vector store; a drop-in dense side for Pyserini's ``HybridSearcher``.

    Parameters
    ----------
    store_dir : multi-vector store folder (see module docstring).
    query_encoder : object whose ``encode(query: str)`` returns the query's vectors as an array [Kq, H]
        (numpy or torch; a 1-D [H] array means Kq = 1), or a tuple ``(vectors, mask)`` with a boolean [Kq]
        mask of the vectors to use. Vectors are used as given (the encoder L2-normalises, as for documents).
        An optional ``encode_batch(queries)`` returning a list of such results is used by ``batch_search``.
        May be None when queries are passed pre-encoded.
    candidates_per_vector : k' hits per query vector in candidate generation; ``max(k', k)`` is used so that
        a depth-k run is not starved of candidates. Re-scoring reads up to Kq * k' docs' vectors (256 x 4 x 16
        = 16k rows: ~5 ms, mostly the float16 -> float32 conversion); larger k' trades time for recall.
    exact : score every document with exact MaxSim (no FAISS index is built).
    index : 'auto' (see ``auto_index_spec``), 'Flat' (IndexFlatIP: exhaustive, keeps a float32 copy),
        'SQfp16' (exhaustive over float16 codes), one of index.faiss_dirs.INDEX_TYPES in lower case ('ivfpq':
        the compressed candidate index, 'ivfsq8', 'hnsw', 'sq8', ...; shaped by ``index_settings``), or any
        FAISS ``index_factory`` string (inner-product metric), e.g. 'IVF4096,SQfp16' (approximate candidates,
        ~10x faster at 1.6M vectors).
    nprobe : IVF lists visited per query vector (ignored for non-IVF indexes).
    index_cache : optional file for the built FAISS index: read if present (and matching), else written
        (worth it for IVF: training takes ~1 min for 1.6M vectors on 2 cores).
    threads : FAISS threads when a call passes ``threads=None``. 0 = automatic: all cores for exhaustive
        indexes (a memory-bound scan that halves with 2 threads), 1 for IVF (a probe takes ~2 ms; OpenMP
        hand-off cost more than it saved: p50 44 ms with 2 threads vs 24 ms with 1 on a loaded 2-core host).
    index_settings : IndexSettings for a named index type (nlist, pq_m, pq_nbits, ...); nprobe above wins.

    The store may be float16, float32 or int8 (codes + per-vector scales, see index.multivector): int8 rows are
    dequantised as they are read, for training, adding and re-scoring alike.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        query_encoder: Any = None,
        candidates_per_vector: int = 256,
        exact: bool = False,
        index: str = "auto",
        nprobe: int = 64,
        index_cache: str | os.PathLike | None = None,
        threads: int = 0,
        index_settings: IndexSettings | None = None,
    ) -> None:
        self.store_dir = str(store_dir)
        self.query_encoder = query_encoder
        self.candidates_per_vector = int(candidates_per_vector)
        self.exact = bool(exact)
        self.store = MultiVectorStore.load(store_dir)
        self.vectors, self.offsets, self.docids, self.meta = (self.store.vectors, self.store.offsets,
                                                              self.store.docids, self.store.meta)
        self.quantized = self.store.scales is not None
        self.dimension = int(self.vectors.shape[1])
        self.num_docs = len(self.docids)
        self.num_vectors = int(self.vectors.shape[0])
        # Vector -> owning doc; int32 halves the memory of a searchsorted-free lookup (fine below 2^31 docs).
        self.owner = np.repeat(np.arange(self.num_docs, dtype=np.int32), np.diff(self.offsets))
        self.index_settings = index_settings or IndexSettings()
        self.index_settings.nprobe = int(nprobe)
        self.index_spec = None if self.exact else candidate_index_spec(self.store, index, self.index_settings)
        self.index = None
        if not self.exact and self.num_vectors:
            self.index = self._load_or_build_index(index_cache)
            if ivf_nlist(self.index):
                faiss.extract_index_ivf(self.index).nprobe = int(nprobe)
        is_ivf = self.index is not None and ivf_nlist(self.index) > 0
        self.threads = int(threads) if threads else (1 if is_ivf else (os.cpu_count() or 1))

    # ----------------------------------------------------------------------------------------- index
    def _load_or_build_index(self, cache: str | os.PathLike | None) -> Any:
        if cache is not None and os.path.isfile(cache):
            index = faiss.read_index(str(cache))
            if index.ntotal == self.num_vectors and index.d == self.dimension:
                return index
        index = self._build_index(self.index_spec)
        if cache is not None:
            tmp = f"{cache}.tmp-{os.getpid()}"
            faiss.write_index(index, tmp)
            os.replace(tmp, cache)
        return index

    def _build_index(self, spec: str) -> Any:
        return build_candidate_index(self.store, spec, self.index_settings)

    # --------------------------------------------------------------------------------------- queries
    def _as_query(self, query: Any) -> np.ndarray:
        """Query vectors [Kq, H] float32 from an encoder result, array, (array, mask) tuple, or text."""
        if isinstance(query, str):
            if self.query_encoder is None:
                raise ValueError("a text query needs a query_encoder; pass pre-encoded vectors instead")
            query = self.query_encoder.encode(query)
        elif isinstance(query, dict):
            query = self.query_encoder.encode(**query)
        mask = None
        if isinstance(query, tuple):
            query, mask = query
        if hasattr(query, "detach"):  # torch.Tensor
            query = query.detach().float().cpu().numpy()
        q = np.atleast_2d(np.asarray(query, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dimension:
            raise ValueError(f"query vectors must be [Kq, {self.dimension}], got {q.shape}")
        if mask is not None:
            if hasattr(mask, "detach"):
                mask = mask.detach().cpu().numpy()
            q = q[np.asarray(mask, dtype=bool).reshape(-1)]
        return np.ascontiguousarray(q)

    def _encode_many(self, queries: Any) -> list[np.ndarray]:
        if isinstance(queries, np.ndarray) and queries.ndim == 3:
            return [self._as_query(q) for q in queries]
        queries = list(queries)
        if queries and all(isinstance(q, str) for q in queries) and hasattr(self.query_encoder, "encode_batch"):
            return [self._as_query(q) for q in self.query_encoder.encode_batch(queries)]
        return [self._as_query(q) for q in queries]

    # ---------------------------------------------------------------------------------------- scoring
    def _threads(self, threads: int | None) -> int:
        return self.threads if not threads else max(1, int(threads))

    def _depth(self, k: int) -> int:
        return max(self.candidates_per_vector, int(k))

    def _candidates(self, ids: np.ndarray) -> np.ndarray:
        """Sorted unique owning docs of FAISS hit ids ([Kq, k'], -1 = no hit)."""
        ids = ids[ids >= 0]
        return np.unique(self.owner[ids])

    def _maxsim(self, q: np.ndarray, docs: np.ndarray | None) -> np.ndarray:
        """Exact MaxSim of ``q`` against ``docs`` (all docs when None), for any store dtype."""
        if not self.quantized:
            return maxsim_segments(q, self.vectors, self.offsets, docs)
        if docs is not None:
            # Gather the candidates' rows, dequantise once, and score them as a small store of their own.
            scores = np.zeros(docs.shape[0], dtype=np.float32)
            rows, seg_starts, nonempty = rows_of_docs(self.offsets, docs)
            if rows.size:
                local = np.append(seg_starts, rows.size).astype(np.int64)
                scores[nonempty] = maxsim_segments(q, self.store.rows(rows), local)
            return scores
        scores = np.zeros(self.num_docs, dtype=np.float32)
        first = 0
        while first < self.num_docs:  # whole documents per block, so no document is split
            last = int(np.searchsorted(self.offsets, self.offsets[first] + _SCORE_BLOCK_ROWS, side="right")) - 1
            last = min(max(last, first + 1), self.num_docs)
            lo, hi = int(self.offsets[first]), int(self.offsets[last])
            block = self.store.rows(slice(lo, hi))
            scores[first:last] = maxsim_segments(q, block, self.offsets[first:last + 1] - lo)
            first = last
        return scores

    def _rank(self, q: np.ndarray, k: int, candidate_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (doc indices, scores) by descending MaxSim, ties by ascending doc index."""
        if candidate_ids is None:
            docs = np.arange(self.num_docs, dtype=np.int64)
            scores = self._maxsim(q, None)
        else:
            docs = self._candidates(candidate_ids).astype(np.int64)
            scores = self._maxsim(q, docs)
        if k <= 0 or docs.size == 0:
            return docs[:0], scores[:0]
        if docs.size > k:
            # Keep everything tied with the k-th score so the tie-break below is exact, then sort that few.
            kth = np.partition(scores, docs.size - k)[docs.size - k]
            keep = scores >= kth
            docs, scores = docs[keep], scores[keep]
        order = np.lexsort((docs, -scores))[:k]
        return docs[order], scores[order]

    @property
    def _DenseSearchResult(self) -> Any:  # noqa: N802 - Pyserini's class, looked up on first search
        return _dense_result_types()[0]

    @property
    def _PrfResult(self) -> Any:  # noqa: N802
        return _dense_result_types()[1]

    def _hits(self, q: np.ndarray, docs: np.ndarray, scores: np.ndarray, return_vector: bool) -> Any:
        if return_vector:
            # Multi-vector analogue of FaissSearcher's return_vector: each hit carries its doc's [Kp, H] vectors.
            hits = [self._PrfResult(self.docids[d], float(s), self.doc_vectors(int(d)))
                    for d, s in zip(docs, scores)]
            return q, hits
        return [self._DenseSearchResult(self.docids[d], float(s)) for d, s in zip(docs, scores)]

    def doc_vectors(self, i: int) -> np.ndarray:
        """Document i's vectors as float32 [Kp, H]."""
        return self.store.rows(slice(int(self.offsets[i]), int(self.offsets[i + 1])))

    def score(self, query: Any, docids: Sequence[str]) -> list[float]:
        """Exact MaxSim of one query against the given docids (for re-ranking and checks)."""
        if not hasattr(self, "_docid_index"):
            self._docid_index = {d: i for i, d in enumerate(self.docids)}
        docs = np.asarray([self._docid_index[d] for d in docids], dtype=np.int64)
        return [float(s) for s in self._maxsim(self._as_query(query), docs)]

    # ----------------------------------------------------------------------------- Pyserini interface
    def search(self, query: Any, k: int = 10, threads: int | None = None, remove_dups: bool = False,
               return_vector: bool = False) -> Any:
        """Top-k hits (``DenseSearchResult``: .docid, .score) for a text query or pre-encoded vectors.

        Same signature as ``FaissSearcher.search``. ``remove_dups`` is accepted for compatibility (each doc
        appears once anyway). With ``return_vector`` returns ``(query_vectors, [PrfDenseSearchResult])``
        whose ``.vectors`` are the doc's [Kp, H] vectors.
        """
        q = self._as_query(query)
        candidate_ids = None
        if not self.exact:
            if self.index is None or q.shape[0] == 0:
                candidate_ids = np.empty((0,), dtype=np.int64)
            else:
                faiss.omp_set_num_threads(self._threads(threads))
                _, candidate_ids = self.index.search(q, min(self._depth(k), self.num_vectors))
        docs, scores = self._rank(q, k, candidate_ids)
        return self._hits(q, docs, scores, return_vector)

    def batch_search(self, queries: Any, q_ids: Sequence[str], k: int = 10, threads: int | None = None,
                     return_vector: bool = False) -> Any:
        """{qid: hits} for many queries (texts, list of [Kq, H] arrays, or an array [n, Kq, H]).

        Same signature as ``FaissSearcher.batch_search``. Candidate generation runs as few FAISS calls over
        all queries' vectors at once (BLAS-friendly); re-scoring is per query.
        """
        qs = self._encode_many(queries)
        if len(qs) != len(q_ids):
            raise ValueError(f"{len(qs)} queries but {len(q_ids)} query ids")
        per_query: list[np.ndarray | None] = [None] * len(qs)
        if not self.exact:
            per_query = self._batch_candidates(qs, k, threads)
        results: dict[str, Any] = {}
        vectors_out = []
        for qid, q, cand in zip(q_ids, qs, per_query):
            docs, scores = self._rank(q, k, cand)
            out = self._hits(q, docs, scores, return_vector)
            if return_vector:
                vectors_out.append(out[0])
                out = out[1]
            results[qid] = out
        if return_vector:
            return vectors_out, results
        return results

    def _batch_candidates(self, qs: list[np.ndarray], k: int, threads: int | None) -> list[np.ndarray]:
        lens = [q.shape[0] for q in qs]
        if self.index is None or sum(lens) == 0:
            return [np.empty((0,), dtype=np.int64) for _ in qs]
        faiss.omp_set_num_threads(self._threads(threads))
        depth = min(self._depth(k), self.num_vectors)
        allq = np.concatenate([q for q in qs if q.shape[0]], axis=0)
        ids = np.concatenate([self.index.search(allq[lo:lo + _SEARCH_CHUNK], depth)[1]
                              for lo in range(0, allq.shape[0], _SEARCH_CHUNK)], axis=0)
        bounds = np.concatenate([[0], np.cumsum(lens)])
        return [ids[bounds[i]:bounds[i + 1]] for i in range(len(qs))]

    def __repr__(self) -> str:
        mode = "exact" if self.exact else f"{self.index_spec}, k'={self.candidates_per_vector}"
        return (f"MultiVectorSearcher({self.store_dir!r}: {self.num_docs} docs, {self.num_vectors} x "
                f"{self.dimension} {self.vectors.dtype}, {mode})")

