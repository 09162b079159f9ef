"""Choosing a hybrid's fusion weight on held-out pseudo-queries: pure functions over runs and judgements.

A hybrid's alpha is the weight of its sparse seat in ``alpha * minmax(sparse) + (1 - alpha) * minmax(dense)``
(fusion.fuse, what RobustHybridSearcher computes). Given each seat's run over the dev queries, every alpha of
the grid is fused and scored by nDCG@10 against the dev judgements; the best wins, ties going to the alpha
nearest 0.5 (the paper's equal weights). Nothing here reads the test topics.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from diffret_pyserini.fusion import fuse

__all__ = ["ALPHA_GRID", "ndcg_at_k", "mean_ndcg", "choose_alpha"]

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
