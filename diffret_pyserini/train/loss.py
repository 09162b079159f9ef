"""Training losses as pure tensor functions: scores, InfoNCE over in-batch + hard negatives, FLOPS regulariser.

Batch layout (Tevatron's): Q queries and P = Q * G passages, where query i's group is passages
[i*G, (i+1)*G) and its positive is the group's first passage; every other passage in the batch (its own hard
negatives and the other queries' passages) is a negative.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def dense_scores(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """[Q,H] x [P,H] -> [Q,P] inner products (what FaissSearcher ranks by)."""
    return q @ p.T


def maxsim_scores(q: torch.Tensor, p: torch.Tensor, q_valid: torch.Tensor | None = None,
                  p_valid: torch.Tensor | None = None, reduce: str = "mean") -> torch.Tensor:
    """[Q,Kq,H] x [P,Kp,H] -> [Q,P] MaxSim: per query vector the best passage vector, clamped at >= 0.

    Invalid passage vectors never win; invalid query vectors add nothing. `reduce='sum'` is the searcher's
    score; 'mean' divides by the number of valid query vectors (same ranking), so one temperature suits dense
    and multi alike.
    """
    sim = torch.einsum("qih,pjh->qpij", q, p)
    if p_valid is not None:
        sim = sim.masked_fill(~p_valid[None, :, None, :], float("-inf"))
    best = sim.amax(-1).clamp(min=0)  # [Q,P,Kq]; an all-invalid passage gives -inf -> clamped to 0
    if q_valid is not None:
        best = best * q_valid[:, None, :].to(best.dtype)
    total = best.sum(-1)
    if reduce == "sum":
        return total
    if reduce == "mean":
        count = best.new_full((q.shape[0],), q.shape[1]) if q_valid is None else q_valid.sum(-1).to(best.dtype)
        return total / count.clamp(min=1).unsqueeze(-1)
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")


def sparse_scores(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """[Q,V] x [P,V] -> [Q,P]: dot products of sparse weights (the impact score, before quantisation)."""
    return q @ p.T


def group_targets(n_queries: int, n_passages: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Column of each query's positive: query i owns passages [i*G, (i+1)*G), positive first."""
    if n_queries < 1 or n_passages % n_queries:
        raise ValueError(f"{n_passages} passages do not split into groups for {n_queries} queries")
    return torch.arange(n_queries, device=device) * (n_passages // n_queries)


def info_nce(scores: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross entropy of softmax(scores / temperature) against the positive columns (mean over queries)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.cross_entropy(scores.float() / temperature, targets)


def flops(weights: torch.Tensor) -> torch.Tensor:
    """FLOPS regulariser (Paria et al. 2020, as in SPLADE): sum over terms of the squared mean weight.

    It penalises terms that are heavy across many texts, i.e. long posting lists, which is what costs search time.
    """
    return weights.float().abs().mean(0).pow(2).sum()


@dataclass
class LossWeights:
    """Weights of the terms of the total loss; a zero weight means that representation is not computed."""

    dense: float = 1.0
    multi: float = 1.0
    sparse: float = 1.0
    flops: float = 0.0
    temperature: float = 0.01
    sparse_temperature: float = 1.0


def combined_loss(q: dict[str, torch.Tensor], p: dict[str, torch.Tensor], w: LossWeights,
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of InfoNCE on dense / multi / sparse scores (+ FLOPS on the sparse weights).

    `q` and `p` hold 'dense' [B,H], 'multi' [B,K,H] with 'valid' [B,K], 'sparse' [B,V] where present.
    Returns the loss and its parts as floats (for logging).
    """
    anchor = next(iter(q.values()))
    targets = group_targets(anchor.shape[0], next(iter(p.values())).shape[0], anchor.device)
    total = anchor.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    if w.dense:
        loss = info_nce(dense_scores(q["dense"], p["dense"]), targets, w.temperature)
        total, parts["dense"] = total + w.dense * loss, loss.item()
    if w.multi:
        scores = maxsim_scores(q["multi"], p["multi"], q.get("valid"), p.get("valid"))
        loss = info_nce(scores, targets, w.temperature)
        total, parts["multi"] = total + w.multi * loss, loss.item()
    if w.sparse:
        loss = info_nce(sparse_scores(q["sparse"], p["sparse"]), targets, w.sparse_temperature)
        total, parts["sparse"] = total + w.sparse * loss, loss.item()
    if w.flops:
        loss = flops(q["sparse"]) + flops(p["sparse"])
        total, parts["flops"] = total + w.flops * loss, loss.item()
    parts["loss"] = total.item()
    return total, parts
