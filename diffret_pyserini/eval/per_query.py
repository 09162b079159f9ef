"""Per-query analysis over a grid of runs: the best fixed cell, the per-query oracle, and paired significance.

A *table* is ``{cell: {qid: value}}`` (a cell is any hashable name, e.g. ``(kq, kp)``), one metric per query as
trec_eval -q reports it. Everything is compared on the queries every cell has (the same topics), and ties are
broken by the cells' order, so the same table always gives the same answer. Pure functions: no files, no labels
beyond the values given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

__all__ = ["Table", "common_queries", "mean_of", "best_fixed", "Oracle", "oracle", "restrict", "compose",
           "Significance", "paired_test", "randomization_p", "t_test_p"]

Table = Mapping[Hashable, Mapping[str, float]]


def common_queries(table: Table) -> list[str]:
    """The qids every cell has, in the first cell's order."""
    cells = list(table.values())
    if not cells:
        return []
    shared = set(cells[0]).intersection(*map(set, cells[1:]))
    return [q for q in cells[0] if q in shared]


def mean_of(values: Mapping[str, float], qids: Sequence[str]) -> float:
    return sum(values[q] for q in qids) / len(qids) if qids else 0.0


def best_fixed(table: Table) -> tuple[Hashable, float]:
    """(cell, mean) of the cell with the highest mean over the common queries (first cell on a tie)."""
    qids = common_queries(table)
    best = None
    for cell, values in table.items():
        m = mean_of(values, qids)
        if best is None or m > best[1]:
            best = (cell, m)
    if best is None:
        raise ValueError("an empty table has no best cell")
    return best


def restrict(table: Table, keep) -> dict:
    """The cells for which `keep(cell)` is true, in table order."""
    return {cell: values for cell, values in table.items() if keep(cell)}


@dataclass
class Oracle:
    """The per-query oracle: each query gets the cell that scores it best (ties: the earliest cell)."""

    mean: float
    choice: dict[str, Hashable]     # qid -> chosen cell
    values: dict[str, float]        # qid -> the chosen cell's value
    reference: Hashable             # the best fixed cell among the same cells
    reference_mean: float
    helped: list[tuple[str, float]]  # (qid, gain over the reference), largest gain first

    @property
    def gap(self) -> float:
        return self.mean - self.reference_mean


def oracle(table: Table) -> Oracle:
    """Per-query oracle over every cell of `table`, against the best fixed cell of the same table."""
    qids = common_queries(table)
    reference, ref_mean = best_fixed(table)
    choice: dict[str, Hashable] = {}
    values: dict[str, float] = {}
    for q in qids:
        for cell, row in table.items():
            if q not in values or row[q] > values[q]:
                choice[q], values[q] = cell, row[q]
    helped = [(q, values[q] - table[reference][q]) for q in qids if values[q] > table[reference][q]]
    helped.sort(key=lambda item: (-item[1], item[0]))
    return Oracle(mean_of(values, qids), choice, values, reference, ref_mean, helped)


def compose(table: Table, choice: Mapping[str, Hashable]) -> dict[str, float]:
    """The per-query values of a selection {qid: cell} (what a selector scores on these queries)."""
    return {q: table[cell][q] for q, cell in choice.items()}


# ------------------------------------------------------------------------------------------ significance

def randomization_p(a: Sequence[float], b: Sequence[float], trials: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomisation (sign-flip) test of mean(a - b) = 0: ``scipy.stats.permutation_test``
    with ``permutation_type="samples"`` (each pair's two values swapped at random), seeded, so deterministic.

    With 2**n <= trials scipy enumerates every sign pattern (an exact p); otherwise it draws `trials` of them
    and counts the observed statistic as one, so p is never 0. 1.0 when every difference is 0."""
    import numpy as np
    from scipy import stats

    xs, ys = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xs.size == 0 or not np.any(xs != ys):
        return 1.0

    def mean_difference(x, y, axis):
        return np.mean(x - y, axis=axis)

    # batch bounds the resample matrix (batch x topics floats) on large topic sets
    result = stats.permutation_test((xs, ys), mean_difference, permutation_type="samples", vectorized=True,
                                    n_resamples=trials, batch=1000, alternative="two-sided", random_state=seed)
    return min(1.0, float(result.pvalue))


def t_test_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value (scipy.stats.ttest_rel); 1.0 when every difference is equal."""
    from scipy import stats

    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2 or max(diffs) == min(diffs):
        return 1.0
    p = float(stats.ttest_rel(a, b).pvalue)
    return 1.0 if math.isnan(p) else p


@dataclass
class Significance:
    """A against B on the same queries."""

    mean_a: float
    mean_b: float
    wins: int
    losses: int
    p_randomization: float
    p_t: float

    @property
    def delta(self) -> float:
        return self.mean_a - self.mean_b


def paired_test(a: Mapping[str, float], b: Mapping[str, float], trials: int = 10_000,
                seed: int = 0) -> Significance:
    """Compare two per-query value maps on their common queries (a's order)."""
    qids = [q for q in a if q in b]
    xs, ys = [a[q] for q in qids], [b[q] for q in qids]
    return Significance(mean_of(a, qids), mean_of(b, qids), sum(x > y for x, y in zip(xs, ys)),
                        sum(x < y for x, y in zip(xs, ys)), randomization_p(xs, ys, trials, seed), t_test_p(xs, ys))
