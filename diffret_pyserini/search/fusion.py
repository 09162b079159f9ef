"""Hybrid fusion math: per-query score normalisation and dense + sparse fusion.

Pure functions over score mappings; nothing here knows about files, Pyserini or FAISS. Fusion follows the
DiffRetriever reference: per-query min-max normalisation of each side, then ``alpha * sparse + (1 - alpha) *
dense``; a document missing on one side gets 0 on that side. ``fuse_pyserini`` reproduces Pyserini's
``HybridSearcher`` formula, minus its ZeroDivisionError.

Choosing a hybrid's alpha on held-out pseudo-queries (``choose_alpha``): every alpha of the grid is fused and
scored by nDCG@10 against the dev judgements; the best wins, ties going to the alpha nearest 0.5 (the paper's
equal weights). Nothing here reads the test topics.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["min_max_normalize", "center_normalize", "fuse", "fuse_pyserini", "sort_scores", "as_score_dict",
           "ALPHA_GRID", "ndcg_at_k", "mean_ndcg", "choose_alpha"]


def _rescale(scores: Mapping[str, float], degenerate: float, centre: bool) -> dict[str, float]:
    """``(s - origin) / (max - min)`` with origin min (or the midpoint); `degenerate` when max == min."""
    if not scores:
        return {}
    values = [float(v) for v in scores.values()]
    lo, hi = min(values), max(values)
    if not hi > lo:
        return dict.fromkeys(scores, degenerate)
    origin = (lo + hi) / 2.0 if centre else lo
    return {d: (float(s) - origin) / (hi - lo) for d, s in scores.items()}


def min_max_normalize(scores: Mapping[str, float]) -> dict[str, float]:
    """Per-query min-max normalisation ``(s - min) / (max - min)`` into [0, 1].

    Degenerate lists are handled rather than divided by zero: a single hit, or hits that all share one score,
    all map to 1.0 (each is the best the side has, and 1.0 keeps them above documents missing on that side,
    which fusion scores 0). An empty mapping returns an empty dict.
    """
    return _rescale(scores, 1.0, centre=False)


def center_normalize(scores: Mapping[str, float]) -> dict[str, float]:
    """Pyserini's normalisation ``(s - (min + max) / 2) / (max - min)`` into [-0.5, 0.5], made safe.

    When ``max == min`` (one hit, or equal scores) every score maps to 0.0, the centre of the range: Pyserini
    raises ZeroDivisionError there (or yields NaN for numpy scores).
    """
    return _rescale(scores, 0.0, centre=True)


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


Run = Mapping[str, Sequence[tuple[str, float]]]
ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))


def ndcg_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    """trec_eval's ndcg_cut.k for one query: gain = grade, discount log2(rank + 1), ideal from the judgements
    (grades <= 0 count as non-relevant); 0.0 for a query with no relevant document."""
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    if not ideal:
        return 0.0
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


def mean_ndcg(run: Run, qrels: Mapping[str, Mapping[str, int]], k: int = 10) -> float:
    """Mean nDCG@k over the judged queries (a query the run does not answer counts 0, as trec_eval -c)."""
    qids = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    if not qids:
        return 0.0
    return sum(ndcg_at_k([d for d, _ in run.get(q, ())], qrels[q], k) for q in qids) / len(qids)


def choose_alpha(dense_run: Run, sparse_run: Run, qrels: Mapping[str, Mapping[str, int]],
                 grid: Sequence[float] = ALPHA_GRID, depth: int = 1000) -> tuple[float, dict[float, float]]:
    """(best alpha, {alpha: dev nDCG@10}) for fusing `sparse_run` (weight alpha) with `dense_run`."""
    if not grid:
        raise ValueError("choose_alpha: empty alpha grid")
    scores = {}
    for alpha in grid:
        fused = {q: fuse(dense_run.get(q, ()), sparse_run.get(q, ()), alpha=alpha, k=depth) for q in qrels}
        scores[float(alpha)] = round(mean_ndcg(fused, qrels), 6)
    best = max(scores, key=lambda a: (scores[a], -abs(a - 0.5), -a))
    return best, scores
