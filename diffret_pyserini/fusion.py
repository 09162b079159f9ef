"""Scoring and fusion math: MaxSim (single pair and batched over a flat vector store) and hybrid fusion.

Pure functions over numpy arrays (torch tensors are accepted and converted); nothing here knows about files,
Pyserini or FAISS.

Conventions
-----------
* MaxSim follows the DiffRetriever reference: for every (valid) query vector take the maximum dot product
  over the document's (valid) vectors, clamp it at 0, and sum over query vectors.
* Fusion follows the DiffRetriever reference: per-query min-max normalisation of each side, then
  ``alpha * sparse + (1 - alpha) * dense``; a document missing on one side gets 0 on that side.
  ``fuse_pyserini`` reproduces Pyserini's ``HybridSearcher`` formula, minus its ZeroDivisionError.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

__all__ = [
    "maxsim",
    "maxsim_segments",
    "rows_of_docs",
    "min_max_normalize",
    "center_normalize",
    "fuse",
    "fuse_pyserini",
    "sort_scores",
    "as_score_dict",
]

# Rows scored per block when every document is scored, so the [rows, Kq] similarity matrix stays small.
_BLOCK_ROWS = 1 << 18
# Rows converted to float32 and multiplied per step: the chunk stays in L2 cache and under OpenBLAS's
# threading threshold. Measured 2.5x faster than one astype + one large matmul (75 vs 210 ms for 262k x 128).
_SIM_CHUNK = 1024


def _to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """numpy view of an array-like; torch tensors are detached and moved to CPU first."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if dtype is not None and str(x.dtype) == "torch.bfloat16":
            x = x.float()  # numpy has no bfloat16
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _as_bool_mask(mask: Any, n: int) -> np.ndarray | None:
    if mask is None:
        return None
    m = _to_numpy(mask).astype(bool).reshape(-1)
    if m.shape[0] != n:
        raise ValueError(f"mask has {m.shape[0]} entries, expected {n}")
    return m


def maxsim(query_vecs: Any, doc_vecs: Any, query_mask: Any = None, doc_mask: Any = None) -> float:
    """MaxSim of one query [Kq, H] against one document [Kp, H].

    ``sum_i max(0, max_j <q_i, d_j>)`` over valid query vectors i and valid document vectors j. Masks are
    booleans (or 0/1) of length Kq / Kp; a document with no valid vector scores 0.
    """
    q = np.atleast_2d(_to_numpy(query_vecs, np.float32))
    d = np.atleast_2d(_to_numpy(doc_vecs, np.float32))
    qm = _as_bool_mask(query_mask, q.shape[0])
    dm = _as_bool_mask(doc_mask, d.shape[0])
    if qm is not None:
        q = q[qm]
    if dm is not None:
        d = d[dm]
    if q.shape[0] == 0 or d.shape[0] == 0:
        return 0.0
    best = (q @ d.T).max(axis=1)
    return float(np.maximum(best, 0.0).sum())


def rows_of_docs(offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Store rows owned by ``docs`` (doc i owns rows offsets[i]:offsets[i+1]).

    Returns ``(rows, seg_starts, nonempty)``: the concatenated row indices, where each non-empty doc's run
    starts inside ``rows``, and the boolean mask of docs that own at least one row.
    """
    starts = offsets[docs]
    lens = offsets[docs + 1] - starts
    nonempty = lens > 0
    starts, lens = starts[nonempty], lens[nonempty]
    ends = np.cumsum(lens)
    seg_starts = ends - lens
    # Row r of doc j sits at seg_starts[j] + t  ->  store row starts[j] + t; one repeat + arange, no Python loop.
    rows = np.repeat(starts - seg_starts, lens) + np.arange(int(ends[-1]) if len(ends) else 0)
    return rows, seg_starts, nonempty


def _similarities(block: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """``block @ qt`` as float32 [rows, Kq] for a float16/float32 block, converted chunk by chunk."""
    n = block.shape[0]
    out = np.empty((n, qt.shape[1]), dtype=np.float32)
    buf = np.empty((min(n, _SIM_CHUNK), block.shape[1]), dtype=np.float32)
    for lo in range(0, n, _SIM_CHUNK):
        hi = min(lo + _SIM_CHUNK, n)
        chunk = buf[:hi - lo]
        chunk[...] = block[lo:hi]  # float16 -> float32 (numpy has no float16 BLAS path)
        np.dot(chunk, qt, out=out[lo:hi])
    return out


def _segment_maxsim(sims: np.ndarray, seg_starts: np.ndarray) -> np.ndarray:
    """[rows, Kq] similarities + segment starts -> per-segment MaxSim (clamped at 0, summed over Kq)."""
    seg_max = np.maximum.reduceat(sims, seg_starts, axis=0)
    np.maximum(seg_max, 0.0, out=seg_max)
    return seg_max.sum(axis=1)


def maxsim_segments(
    query_vecs: Any,
    vectors: Any,
    offsets: Any,
    docs: Any = None,
    query_mask: Any = None,
) -> np.ndarray:
    """Batched MaxSim of one query against many documents stored as one flat matrix (the search hot path).

    Parameters
    ----------
    query_vecs : [Kq, H] query vectors (used as given; no re-normalisation).
    vectors : [N, H] all document vectors (float16 or float32, may be a read-only memmap).
    offsets : int [n_docs + 1]; doc i owns ``vectors[offsets[i]:offsets[i+1]]``.
    docs : optional int array of doc indices to score; default all docs. Sorted indices read the store in order.
    query_mask : optional [Kq] booleans; masked query vectors contribute nothing.

    Returns float32 scores aligned with ``docs`` (or with all docs); a doc with no vectors scores 0.
    """
    q = np.atleast_2d(_to_numpy(query_vecs, np.float32))
    qm = _as_bool_mask(query_mask, q.shape[0])
    if qm is not None:
        q = q[qm]
    offsets = np.asarray(_to_numpy(offsets), dtype=np.int64)
    if not isinstance(vectors, np.ndarray):
        vectors = _to_numpy(vectors)
    n_docs = offsets.shape[0] - 1
    if docs is None:
        return _maxsim_all(q, vectors, offsets, n_docs)
    docs = np.asarray(_to_numpy(docs), dtype=np.int64).reshape(-1)
    scores = np.zeros(docs.shape[0], dtype=np.float32)
    if docs.size == 0 or q.shape[0] == 0:
        return scores
    rows, seg_starts, nonempty = rows_of_docs(offsets, docs)
    if rows.size == 0:
        return scores
    # A C-contiguous [H, Kq] right operand measured 2-5x faster in OpenBLAS than the transposed view q.T.
    sims = _similarities(vectors[rows], np.ascontiguousarray(q.T))
    scores[nonempty] = _segment_maxsim(sims, seg_starts)
    return scores


def _maxsim_all(q: np.ndarray, vectors: np.ndarray, offsets: np.ndarray, n_docs: int) -> np.ndarray:
    """Score every doc, in blocks of whole documents so no segment is split across blocks."""
    scores = np.zeros(n_docs, dtype=np.float32)
    if n_docs == 0 or q.shape[0] == 0:
        return scores
    qt = np.ascontiguousarray(q.T)
    first = 0
    while first < n_docs:
        # Largest doc range starting at `first` whose rows fit in one block (at least one doc).
        last = int(np.searchsorted(offsets, offsets[first] + _BLOCK_ROWS, side="right")) - 1
        last = min(max(last, first + 1), n_docs)
        lo, hi = int(offsets[first]), int(offsets[last])
        if hi > lo:
            lens = np.diff(offsets[first:last + 1])
            nonempty = lens > 0
            seg_starts = (offsets[first:last] - lo)[nonempty]
            sims = _similarities(vectors[lo:hi], qt)  # contiguous slice of the store: no gather
            scores[first:last][nonempty] = _segment_maxsim(sims, seg_starts)
        first = last
    return scores


def min_max_normalize(scores: Mapping[str, float]) -> dict[str, float]:
    """Per-query min-max normalisation ``(s - min) / (max - min)`` into [0, 1].

    Degenerate lists are handled rather than divided by zero: a single hit, or hits that all share one score,
    all map to 1.0 (each is the best the side has, and 1.0 keeps them above documents missing on that side,
    which fusion scores 0). An empty mapping returns an empty dict.
    """
    if not scores:
        return {}
    values = [float(v) for v in scores.values()]
    lo, hi = min(values), max(values)
    if not hi > lo:
        return {d: 1.0 for d in scores}
    span = hi - lo
    return {d: (float(s) - lo) / span for d, s in scores.items()}


def center_normalize(scores: Mapping[str, float]) -> dict[str, float]:
    """Pyserini's normalisation ``(s - (min + max) / 2) / (max - min)`` into [-0.5, 0.5], made safe.

    When ``max == min`` (one hit, or equal scores) every score maps to 0.0, the centre of the range: Pyserini
    raises ZeroDivisionError there (or yields NaN for numpy scores).
    """
    if not scores:
        return {}
    values = [float(v) for v in scores.values()]
    lo, hi = min(values), max(values)
    if not hi > lo:
        return {d: 0.0 for d in scores}
    mid, span = (lo + hi) / 2.0, hi - lo
    return {d: (float(s) - mid) / span for d, s in scores.items()}


def as_score_dict(hits: Mapping[str, float] | Iterable[Any]) -> dict[str, float]:
    """{docid: score} from a dict, (docid, score) pairs, or hit objects with ``.docid`` and ``.score``.

    If a docid repeats, its highest score is kept.
    """
    if isinstance(hits, Mapping):
        return {str(d): float(s) for d, s in hits.items()}
    out: dict[str, float] = {}
    for hit in hits:
        if isinstance(hit, (tuple, list)):
            docid, score = hit[0], hit[1]
        else:
            docid, score = hit.docid, hit.score
        docid, score = str(docid), float(score)
        if docid not in out or score > out[docid]:
            out[docid] = score
    return out


def sort_scores(scores: Mapping[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """(docid, score) pairs by descending score, ties broken by ascending docid; first ``k`` if given."""
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ranked if k is None else ranked[:k]


def fuse(
    dense: Mapping[str, float] | Iterable[Any],
    sparse: Mapping[str, float] | Iterable[Any],
    alpha: float = 0.5,
    normalization: str = "minmax",
    missing: str = "zero",
    k: int | None = None,
) -> list[tuple[str, float]]:
    """Reference hybrid fusion of one query's dense and sparse scores.

    ``score = alpha * norm(sparse) + (1 - alpha) * norm(dense)``: ``alpha`` is the weight of the sparse side
    (0.5 = the paper's equal weights).

    normalization : 'minmax' (per query, see ``min_max_normalize``) or 'none' (raw scores).
    missing : what a document absent from one side gets on that side: 'zero' (the reference) or 'min'
        (that side's minimum after normalisation, as Pyserini does).
    Returns (docid, score) sorted by descending score, ties by ascending docid; first ``k`` if given.
    """
    if normalization not in ("minmax", "none"):
        raise ValueError(f"normalization must be 'minmax' or 'none', got {normalization!r}")
    if missing not in ("zero", "min"):
        raise ValueError(f"missing must be 'zero' or 'min', got {missing!r}")
    d, s = as_score_dict(dense), as_score_dict(sparse)
    if normalization == "minmax":
        d, s = min_max_normalize(d), min_max_normalize(s)
    d_missing = min(d.values()) if (missing == "min" and d) else 0.0
    s_missing = min(s.values()) if (missing == "min" and s) else 0.0
    fused = {
        doc: alpha * s.get(doc, s_missing) + (1.0 - alpha) * d.get(doc, d_missing)
        for doc in d.keys() | s.keys()
    }
    return sort_scores(fused, k)


def fuse_pyserini(
    dense: Mapping[str, float] | Iterable[Any],
    sparse: Mapping[str, float] | Iterable[Any],
    alpha: float = 0.1,
    normalization: bool = False,
    weight_on_dense: bool = False,
    k: int | None = None,
) -> list[tuple[str, float]]:
    """Pyserini's ``HybridSearcher._hybrid_results`` formula, without its division by zero.

    ``alpha * sparse + dense`` (or ``sparse + alpha * dense`` with ``weight_on_dense``); a document missing on
    one side gets that side's minimum raw score; with ``normalization`` both sides go through
    ``center_normalize``. Identical to Pyserini whenever Pyserini does not fail; ties by ascending docid.
    """
    d, s = as_score_dict(dense), as_score_dict(sparse)
    d_min = min(d.values()) if d else 0.0
    s_min = min(s.values()) if s else 0.0
    # Fill missing sides with the raw minimum *before* normalising, exactly as Pyserini does.
    docs = d.keys() | s.keys()
    d_full = {doc: d.get(doc, d_min) for doc in docs}
    s_full = {doc: s.get(doc, s_min) for doc in docs}
    if normalization:
        d_full = _center_with_range(d_full, d)
        s_full = _center_with_range(s_full, s)
    if weight_on_dense:
        fused = {doc: s_full[doc] + alpha * d_full[doc] for doc in docs}
    else:
        fused = {doc: alpha * s_full[doc] + d_full[doc] for doc in docs}
    return sort_scores(fused, k)


def _center_with_range(values: dict[str, float], observed: Mapping[str, float]) -> dict[str, float]:
    """center_normalize of ``values`` using the min/max of the scores actually observed on that side."""
    if not observed:
        # Pyserini uses min=0, max=1 for an empty side; every value there is the 0 fill.
        return {doc: v - 0.5 for doc, v in values.items()}
    lo, hi = min(observed.values()), max(observed.values())
    if not hi > lo:
        return {doc: 0.0 for doc in values}
    mid, span = (lo + hi) / 2.0, hi - lo
    return {doc: (v - mid) / span for doc, v in values.items()}

