"""Robust dense + sparse fusion through Pyserini's own ``HybridSearcher`` (subclassed, not forked).

How the fusion differs from Pyserini's default
----------------------------------------------
Pyserini (``HybridSearcher._hybrid_results``)::

    score = alpha * sparse + dense            (weight_on_dense: sparse + alpha * dense)
    a doc missing on one side gets that side's minimum raw score;
    normalization=True: s -> (s - (min + max) / 2) / (max - min), which raises ZeroDivisionError when a side
    has a single hit or all-equal scores (Python floats; numpy float32 scores silently become NaN instead).

Ours, ``mode='reference'`` (DiffRetriever)::

    score = alpha * minmax(sparse) + (1 - alpha) * minmax(dense)    (weight_on_dense: alpha goes on dense)
    minmax per query into [0, 1]; one hit / equal scores -> 1.0; a doc missing on one side gets 0 there.
    normalization=False uses raw scores in the same convex combination.

``mode='pyserini'`` reproduces Pyserini's formula exactly wherever Pyserini succeeds, and maps a degenerate
side to the centre (0.0) instead of dividing by zero. Both modes break score ties by ascending docid.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from pyserini.search.faiss import DenseSearchResult
from pyserini.search.hybrid import HybridSearcher

from diffret_pyserini.search.fusion import fuse, fuse_pyserini

__all__ = ["RobustHybridSearcher", "MODES"]

MODES = ("reference", "pyserini")
# Defaults per mode for alpha / normalization when the caller passes None: the paper's equal-weight min-max
# fusion, or Pyserini's own defaults (alpha=0.1, no normalisation) so `mode='pyserini'` behaves like Pyserini.
_DEFAULTS = {"reference": (0.5, True), "pyserini": (0.1, False)}


class RobustHybridSearcher(HybridSearcher):
    """Pyserini ``HybridSearcher`` whose fusion step never divides by zero.

    Parameters
    ----------
    dense_searcher : anything with Pyserini's dense interface (``FaissSearcher``, ``MultiVectorSearcher``).
    sparse_searcher : ``LuceneSearcher`` / ``LuceneImpactSearcher`` (hits with ``.docid`` and ``.score``).
    mode : 'reference' (DiffRetriever fusion, default) or 'pyserini' (Pyserini's formula, made safe).
    """

    def __init__(self, dense_searcher: Any, sparse_searcher: Any, mode: str = "reference") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(dense_searcher, sparse_searcher)
        self.mode = mode

    def _resolve(self, alpha: float | None, normalization: bool | None) -> tuple[float, bool]:
        default_alpha, default_norm = _DEFAULTS[self.mode]
        return (default_alpha if alpha is None else float(alpha),
                default_norm if normalization is None else bool(normalization))

    def search(self, query: str, k0: int = 10, k: int = 10, alpha: float | None = None,
               normalization: bool | None = None, weight_on_dense: bool = False) -> List[DenseSearchResult]:
        """Fused top-k of the top-k0 hits of each side; same signature as ``HybridSearcher.search``.

        ``alpha`` / ``normalization`` default per mode (reference: 0.5, True; pyserini: 0.1, False).
        """
        alpha, normalization = self._resolve(alpha, normalization)
        dense_hits = self.dense_searcher.search(query, k0)
        sparse_hits = self.sparse_searcher.search(query, k0)
        return self._hybrid_results(dense_hits, sparse_hits, alpha, k, normalization, weight_on_dense,
                                    mode=self.mode)

    def batch_search(self, queries: List[str], q_ids: List[str], k0: int = 10, k: int = 10, threads: int = 1,
                     alpha: float | None = None, normalization: bool | None = None,
                     weight_on_dense: bool = False) -> Dict[str, List[DenseSearchResult]]:
        """{qid: fused hits}; same signature as ``HybridSearcher.batch_search``.

        Unlike Pyserini (which iterates the dense side's keys), every qid in ``q_ids`` is answered, in order;
        a query with no hits on one side is fused with an empty list on that side.
        """
        alpha, normalization = self._resolve(alpha, normalization)
        dense_result = self.dense_searcher.batch_search(queries, q_ids, k0, threads)
        sparse_result = self.sparse_searcher.batch_search(queries, q_ids, k0, threads)
        return {
            qid: self._hybrid_results(dense_result.get(qid, []), sparse_result.get(qid, []), alpha, k,
                                      normalization, weight_on_dense, mode=self.mode)
            for qid in q_ids
        }

    @staticmethod
    def _hybrid_results(dense_results: Sequence[Any], sparse_results: Sequence[Any], alpha: float, k: int,
                        normalization: bool = False, weight_on_dense: bool = False,
                        mode: str = "reference") -> List[DenseSearchResult]:
        """Fuse one query's hit lists; Pyserini's signature plus ``mode``. Never raises on degenerate lists."""
        if mode == "reference":
            if weight_on_dense:
                # alpha is the dense weight here, as in Pyserini's weight_on_dense.
                alpha = 1.0 - alpha
            fused = fuse(dense_results, sparse_results, alpha=alpha,
                         normalization="minmax" if normalization else "none", missing="zero", k=k)
        elif mode == "pyserini":
            fused = fuse_pyserini(dense_results, sparse_results, alpha=alpha, normalization=normalization,
                                  weight_on_dense=weight_on_dense, k=k)
        else:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return [DenseSearchResult(docid, score) for docid, score in fused]
