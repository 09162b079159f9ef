"""The per-query budget selectors and the fusion baseline. Inputs are per-Kq signals and runs, never qrels.

Every rule breaks ties toward the smaller Kq (the cheaper budget), so a selection is a pure function of its
inputs. A run is ``{qid: [(docid, score), ...]}`` best first, as `runs.read_trec_run` returns it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from diffret_pyserini.budget.signals import agreement, nqc

__all__ = ["Run", "select_slot", "select_nqc", "select_agree", "compose_run", "fuse_rrf", "argmax_k"]

Run = Mapping[str, Sequence[tuple[str, float]]]


def argmax_k(scores: Mapping[int, float]) -> int:
    """The Kq with the highest score; the smallest Kq among equals."""
    return min(scores, key=lambda k: (-scores[k], k))


def select_slot(signals: Mapping[int, Mapping[str, Mapping[str, float]]]) -> dict[str, int]:
    """Saturation rule on the slot signal: the smallest Kq whose distinct (content, non-repeated) top-1 slot
    predictions reach the most any candidate Kq reaches; slots beyond it add nothing new to decode."""
    ks = sorted(signals)
    qids = list(signals[ks[0]])
    choice = {}
    for q in qids:
        best = max(signals[k][q]["distinct"] for k in ks)
        choice[q] = next(k for k in ks if signals[k][q]["distinct"] >= best)
    return choice


def select_nqc(runs: Mapping[int, Run], depth: int = 100) -> dict[str, int]:
    """The Kq whose first-stage run has the widest score spread (NQC-style) for the query."""
    qids = sorted(set().union(*(set(r) for r in runs.values())))
    return {q: argmax_k({k: nqc(run.get(q, []), depth) for k, run in runs.items()}) for q in qids}


def select_agree(runs: Mapping[int, Run], depth: int = 10) -> dict[str, int]:
    """The Kq whose top-`depth` agrees most with the other Kq's runs (the consensus budget)."""
    qids = sorted(set().union(*(set(r) for r in runs.values())))
    return {q: argmax_k(agreement(runs, q, depth)) for q in qids}


def compose_run(runs: Mapping[int, Run], choice: Mapping[str, int]) -> dict[str, list[tuple[str, float]]]:
    """Each query answered by the run of its chosen Kq."""
    return {q: list(runs[k].get(q, [])) for q, k in choice.items()}


def fuse_rrf(runs: Mapping[int, Run], depth: int = 1000, k0: int = 60) -> dict[str, list[tuple[str, float]]]:
    """Reciprocal-rank fusion of the runs of several Kq: score(d) = sum over runs of 1 / (k0 + rank)."""
    qids = sorted(set().union(*(set(r) for r in runs.values())))
    out = {}
    for q in qids:
        scores: dict[str, float] = {}
        for k in sorted(runs):
            for rank, (docid, _) in enumerate(runs[k].get(q, [])[:depth], start=1):
                scores[docid] = scores.get(docid, 0.0) + 1.0 / (k0 + rank)
        out[q] = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]
    return out
