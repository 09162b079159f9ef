"""Hybrid fusion math: per-query score normalisation and dense + sparse fusion.

Pure functions over score mappings; nothing here knows about files, Pyserini or FAISS. Fusion follows the
DiffRetriever reference: per-query min-max normalisation of each side, then ``alpha * sparse + (1 - alpha) *
dense``; a document missing on one side gets 0 on that side. ``fuse_pyserini`` reproduces Pyserini's
``HybridSearcher`` formula, minus its ZeroDivisionError.

Choosing a hybrid's alpha on held-out pseudo-queries: ``choose_alpha`` fuses every alpha of the grid, scores it
by nDCG@10 against the dev judgements and takes the best (ties going to the alpha nearest 0.5, the paper's equal
weights). ``choose_safely`` is what the main job uses: an option other than the anchor (for a BM25 hybrid, a
BM25-dominant weight) is taken only when its paired gain over the anchor, bootstrapped over the dev queries,
stays above zero at the lower end of its interval; the ``Choice`` it returns says why. Nothing here reads
the test topics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

__all__ = ["min_max_normalize", "center_normalize", "fuse", "fuse_sides", "ensemble_run", "fuse_pyserini", "sort_scores", "as_score_dict",
           "ALPHA_GRID", "ndcg_at_k", "mean_ndcg", "choose_alpha", "per_query_ndcg", "fuse_run", "alpha_curves",
           "bootstrap_interval", "Choice", "choose_safely", "BOOTSTRAP_TRIALS", "CONFIDENCE"]


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
    return sort_scores(_weighted_sum((s, d), (alpha, 1.0 - alpha), (s_missing, d_missing)), k)


def _weighted_sum(sides: Sequence[Mapping[str, float]], weights: Sequence[float],
                  missing: Sequence[float]) -> dict[str, float]:
    """{doc: sum of weight * side score} over the union of the sides' documents, `missing` where a side lacks it."""
    docs = set().union(*sides)
    return {doc: sum(w * side.get(doc, fill) for side, w, fill in zip(sides, weights, missing)) for doc in docs}


def fuse_sides(sides: Sequence[Mapping[str, float] | Iterable[Any]], weights: Sequence[float] | None = None,
               k: int | None = None) -> list[tuple[str, float]]:
    """``fuse`` over any number of sides: each min-max normalised per query, a document missing on a side 0
    there, ``sum(weight * side)``; equal weights (1 / number of sides) unless given. With two sides and weights
    (alpha, 1 - alpha) it is ``fuse(sides[1], sides[0], alpha)``."""
    if not sides:
        raise ValueError("fuse_sides: no side to fuse")
    weights = [1.0 / len(sides)] * len(sides) if weights is None else [float(w) for w in weights]
    if len(weights) != len(sides):
        raise ValueError(f"fuse_sides: {len(weights)} weights for {len(sides)} sides")
    normalised = [min_max_normalize(as_score_dict(side)) for side in sides]
    return sort_scores(_weighted_sum(normalised, weights, [0.0] * len(sides)), k)


def ensemble_run(runs: Sequence["Run"], qids: Iterable[str], depth: int = 1000) -> dict:
    """Several models' runs of one seat as one run: ``fuse_sides`` at equal weights for every qid in `qids`."""
    return {q: fuse_sides([run.get(q, ()) for run in runs], k=depth) for q in qids}


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


def per_query_ndcg(run: Run, qrels: Mapping[str, Mapping[str, int]], k: int = 10) -> dict[str, float]:
    """{qid: nDCG@k} over the judged queries (those with a relevant document), an unanswered one 0."""
    return {q: ndcg_at_k([d for d, _ in run.get(q, ())], judged, k)
            for q, judged in qrels.items() if any(g > 0 for g in judged.values())}


def fuse_run(dense_run: Run, sparse_run: Run, alpha: float, qids: Iterable[str], depth: int = 1000) -> dict:
    """``fuse`` for every qid in `qids`: {qid: [(docid, score), ...]}."""
    return {q: fuse(dense_run.get(q, ()), sparse_run.get(q, ()), alpha=alpha, k=depth) for q in qids}


def alpha_curves(dense_run: Run, sparse_run: Run, qrels: Mapping[str, Mapping[str, int]],
                 grid: Sequence[float] = ALPHA_GRID, depth: int = 1000) -> dict[float, dict[str, float]]:
    """{alpha: {qid: nDCG@10}} of the fusion at every alpha of `grid` (an alpha of 1.0 is the sparse seat
    alone, 0.0 the dense seat alone, each still min-max normalised)."""
    return {float(a): per_query_ndcg(fuse_run(dense_run, sparse_run, a, qrels, depth), qrels) for a in grid}


BOOTSTRAP_TRIALS = 2000
_ROUNDING = 1e-9  # a mean of differences that is zero in exact arithmetic can come out 1e-17 in floats
CONFIDENCE = 0.9  # two-sided: the lower end is a one-sided 95% bound


def bootstrap_interval(values: Sequence[float], trials: int = BOOTSTRAP_TRIALS, confidence: float = CONFIDENCE,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (per-query differences): queries resampled with
    replacement `trials` times, seeded; (0.0, 0.0) for no values."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(trials, x.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


@dataclass
class Choice:
    """What `choose_safely` took and why: every option's dev mean, and its gain over the anchor with the
    bootstrap interval of that gain."""

    chosen: Hashable
    anchor: Hashable
    queries: int
    means: dict                     # option -> dev mean
    gains: dict                     # option -> (mean gain over the anchor, lower, upper); the anchor (0, 0, 0)
    why: str

    def to_json(self) -> dict:
        r = lambda v: round(float(v), 4)  # noqa: E731
        return {"chosen": self.chosen, "anchor": self.anchor, "queries": self.queries,
                "dev": {str(o): r(m) for o, m in self.means.items()},
                "gain": {str(o): [r(g) for g in self.gains[o]] for o in self.means},
                "why": self.why}


def choose_safely(options: Mapping[Hashable, Mapping[str, float]], anchor: Hashable, margin: float = 0.0,
                  trials: int = BOOTSTRAP_TRIALS, confidence: float = CONFIDENCE, seed: int = 0) -> Choice:
    """Keep `anchor` unless another option's dev gain over it is sure: the lower end of the bootstrap interval of
    the mean per-query gain (paired, on the queries both have) above `margin`. Among the sure options, the one
    whose lower end is highest (the surest gain, not the largest: a noisy large gain would be the one to regret);
    ties keep the options' order. `options`: {option: {qid: dev value}}."""
    if anchor not in options:
        raise ValueError(f"choose_safely: the anchor {anchor!r} is not among the options {list(options)}")
    base = options[anchor]
    means = {o: (sum(v.values()) / len(v) if v else 0.0) for o, v in options.items()}
    gains: dict = {}
    for option, values in options.items():
        qids = [q for q in base if q in values]
        diffs = [values[q] - base[q] for q in qids]
        mean = sum(diffs) / len(diffs) if diffs else 0.0
        gains[option] = (0.0, 0.0, 0.0) if option == anchor else (mean, *bootstrap_interval(diffs, trials,
                                                                                             confidence, seed))
    sure = [o for o in options if o != anchor and gains[o][1] > margin + _ROUNDING]
    level = f"{confidence:.0%}"
    if not sure:
        best = max(options, key=lambda o: gains[o][0])
        why = (f"kept {anchor}: no option's gain is sure ({best} best on dev, gain {gains[best][0]:+.4f}, "
               f"{level} interval [{gains[best][1]:+.4f}, {gains[best][2]:+.4f}])" if best != anchor
               else f"kept {anchor}: no option scores above it on dev")
        return Choice(anchor, anchor, len(base), means, gains, why)
    chosen = max(sure, key=lambda o: gains[o][1])
    g = gains[chosen]
    why = (f"{chosen} over {anchor}: gain {g[0]:+.4f}, {level} interval [{g[1]:+.4f}, {g[2]:+.4f}] "
           f"(the surest of {len(sure)} option{'s' if len(sure) > 1 else ''} above zero)")
    return Choice(chosen, anchor, len(base), means, gains, why)
