"""Differentiable all-gather for global-batch contrastive losses across Train workers.

Every rank computes the loss on the gathered global batch. Since rank r's local embeddings
enter every rank's (identical) loss, the gradient w.r.t. them is the SUM over ranks of each
rank's gradient for that slice: backward all-reduces (sum) the incoming gradient and returns
this rank's slice. After DDP averages parameter gradients over W ranks, the update equals the
single-process gradient on the global batch. (A backward that returns ``grad[rank]`` without
the all-reduce, a bug seen elsewhere, under-counts the gradient by a factor of W.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _all_gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    """All-gather along dim 0, allowing a different leading size on each rank."""
    max_n = max(sizes)
    if x.shape[0] < max_n:
        x = torch.cat([x, x.new_zeros((max_n - x.shape[0], *x.shape[1:]))])
    out = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(out, x.contiguous())
    return torch.cat([t[:n] for t, n in zip(out, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        sizes = _gather_sizes(x.shape[0], x.device)
        rank = dist.get_rank()
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        return _all_gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start: ctx.stop]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order), differentiably.

    Identity when not running distributed.
    """
    return _GatherWithGrad.apply(x) if is_distributed() else x


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (e.g. labels) from every rank along dim 0; identity if not distributed."""
    if not is_distributed():
        return x
    return _all_gather_padded(x, _gather_sizes(x.shape[0], x.device))


def global_batch(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """This worker's ``[b, V, D]`` embeddings and ``[b]`` labels -> the global batch across workers
    (differentiable in ``z``; the identity in one process)."""
    return gather_with_grad(z), gather_no_grad(labels)


def gather_objects(obj: Any, world: int) -> list[Any]:
    """``obj`` from every worker, in rank order (just ``[obj]`` in one process)."""
    if world == 1 or not is_distributed():
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out
