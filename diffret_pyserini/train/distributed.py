"""In-batch negatives across processes: gather every process's representations, the local slice differentiable.

Each process computes the loss of the WHOLE global batch (all processes' queries against all passages), but
only its own slice carries a graph. The gradient of that loss with respect to the local representations is
the local share of the full gradient; DDP / DeepSpeed then AVERAGE gradients over the N processes, so the local
slice's gradient is scaled by N on the way back (`_ScaleGrad`) and the average becomes the sum: the update of
one process with the global batch. The loss value itself is unscaled, so logs read the same as one process.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> int:
    """Processes in the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; gradient times `scale` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def gather(t: torch.Tensor) -> torch.Tensor:
    """Every process's `t` concatenated along dim 0 in rank order; this process's part keeps its graph."""
    n, rank = world(), dist.get_rank()
    send = t.detach().contiguous()
    as_bool = send.dtype == torch.bool
    if as_bool:  # gloo does not all_gather bool tensors
        send = send.to(torch.uint8)
    parts = [torch.empty_like(send) for _ in range(n)]
    dist.all_gather(parts, send)
    if as_bool:
        parts = [p.bool() for p in parts]
    parts[rank] = _ScaleGrad.apply(t, float(n)) if t.requires_grad else t
    return torch.cat(parts)


def gather_texts(texts: list[str]) -> list[str]:
    """The other processes' texts (for a shared sparse column space); this process's own are left out."""
    everyone: list[list[str] | None] = [None] * world()
    dist.all_gather_object(everyone, texts)
    rank = dist.get_rank()
    return [t for r, part in enumerate(everyone) if r != rank for t in part]
