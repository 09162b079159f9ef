"""Per-topic significance of every row against a baseline row (BM25), and which rows are peers.

Pure functions over per-query values (``{row: {qid: value}}``, as ``eval.trec_eval.evaluate_per_query`` gives):
the tests themselves are scipy's (``per_query.paired_test``: ``scipy.stats.ttest_rel`` and
``scipy.stats.permutation_test``); this module only pairs each row with the baseline, counts the topics better
and worse, and formats the extra columns of metrics.md and the content of significance.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from diffret_pyserini.eval.per_query import Significance, paired_test

__all__ = ["PEER_PREFIXES", "TRIALS", "SEED", "row_kind", "is_peer", "Comparison", "compare_to_baseline",
           "column_headers", "row_cells", "legend"]

# rows another method produced: peers (peers.py names them so) and the paper's baselines (pipeline/baselines.py)
PEER_PREFIXES = ("peer-", "ft-peer-", "diffembed", "ft-diffembed", "repllama-", "ft-repllama-")
TRIALS = 10_000  # randomisation resamples
SEED = 0


def is_peer(row: str) -> bool:
    """True for a peer's row (``peer-...``, or ``ft-peer-...`` for a fine-tuned one) or a baseline's
    (``diffembed``, ``repllama-...`` and their ``ft-`` rows)."""
    return row.startswith(PEER_PREFIXES)


def row_kind(row: str, baseline: str = "bm25") -> str:
    """'baseline', 'peer' or 'ours': how metrics.md and metrics.png mark a row."""
    if row == baseline:
        return "baseline"
    return "peer" if is_peer(row) else "ours"


@dataclass
class Comparison:
    """Every row against `baseline` on one metric, topic by topic."""

    baseline: str
    metric: str                      # display name, e.g. "nDCG@10"
    topics: int                      # judged topics the baseline has per-query values for
    rows: dict[str, Significance]    # row -> its test against the baseline (the baseline itself left out)
    trials: int = TRIALS
    seed: int = SEED
    row_topics: dict[str, int] = field(default_factory=dict)  # row -> topics it shares with the baseline

    def to_json(self) -> dict:
        """The content of significance.json (rows in table order)."""
        return {
            "baseline": self.baseline, "metric": self.metric, "topics": self.topics,
            "tests": {"t": "paired two-sided t-test (scipy.stats.ttest_rel)",
                      "randomization": f"paired two-sided randomisation (scipy.stats.permutation_test, "
                                       f"permutation_type='samples', {self.trials} resamples, seed {self.seed})"},
            "rows": {row: {"kind": row_kind(row, self.baseline), "mean": s.mean_a, "baseline_mean": s.mean_b,
                           "delta": s.delta, "p_t": s.p_t, "p_randomization": s.p_randomization,
                           "better": s.wins, "worse": s.losses, "ties": self.ties(row),
                           "topics": self.topics_of(row)}
                     for row, s in self.rows.items()},
        }

    def topics_of(self, row: str) -> int:
        """Topics `row` was tested on (those it shares with the baseline)."""
        return self.row_topics.get(row, self.topics)

    def ties(self, row: str) -> int:
        """Topics on which `row` and the baseline score the same."""
        s = self.rows[row]
        return self.topics_of(row) - s.wins - s.losses


def compare_to_baseline(per_query: Mapping[str, Mapping[str, float]], baseline: str = "bm25",
                        metric: str = "nDCG@10", trials: int = TRIALS, seed: int = SEED) -> Comparison:
    """Each row of `per_query` but the baseline, tested against it on the topics both have."""
    if baseline not in per_query:
        raise KeyError(f"baseline row {baseline!r} is not among {list(per_query)}")
    base = per_query[baseline]
    comparison = Comparison(baseline, metric, len(base), {}, trials, seed)
    for row, values in per_query.items():
        if row == baseline:
            continue
        comparison.rows[row] = paired_test(values, base, trials=trials, seed=seed)
        comparison.row_topics[row] = sum(q in base for q in values)
    return comparison


def column_headers(comparison: Comparison) -> list[str]:
    """The extra metrics.md columns, after the metrics."""
    return [f"Δ {comparison.metric} vs {comparison.baseline}", "p (t)", "p (rand.)", "better/worse"]


def _p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def row_cells(comparison: Comparison, row: str) -> list[str]:
    """The extra cells of one row: '—' for the baseline, '-' for a row without a run to test."""
    if row == comparison.baseline:
        return ["—"] * 4
    s = comparison.rows.get(row)
    if s is None:
        return ["-"] * 4
    return [f"{s.delta:+.4f}", _p(s.p_t), _p(s.p_randomization), f"{s.wins}/{s.losses}"]


def legend(comparison: Comparison) -> str:
    """One line for under the table: the tests, and the topics they ran on."""
    return (f"Δ, p and better/worse: per-topic {comparison.metric} of each row against {comparison.baseline} "
            f"on {comparison.topics} judged topics (ties are the rest); p (t): paired two-sided t-test "
            f"(scipy.stats.ttest_rel); p (rand.): paired two-sided randomisation test "
            f"(scipy.stats.permutation_test, {comparison.trials:,} resamples, seed {comparison.seed}).")
