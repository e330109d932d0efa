"""Cross-entropy: the supervised baseline (same encoder, linear head), over every view."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from core.losses.ops import upcast
from core.losses.registry import LossFamily, register


def cross_entropy_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean CE over all views: ``logits [N, V, C]`` (or ``[N, C]``) against labels ``[N]``."""
    if logits.dim() == 2:
        logits = logits[:, None]
    if logits.dim() != 3 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [N, V, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    n, v, c = logits.shape
    return F.cross_entropy(upcast(logits).reshape(n * v, c), labels.repeat_interleave(v),
                           label_smoothing=label_smoothing)


class CrossEntropyLoss(nn.Module):
    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return cross_entropy_loss(logits, labels)


CROSS_ENTROPY = register(LossFamily(
    name="cross_entropy", head="linear", summary="cross-entropy on a linear head (the supervised baseline)",
    fields=(), build=lambda c, k: CrossEntropyLoss(),
    # logits need no global batch: each worker's mean, averaged by DDP
    objective=lambda fn, out, y, b, v: fn(out.z.reshape(b, v, -1), y)))
