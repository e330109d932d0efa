"""Tensor helpers every loss family shares: precision for softmax statistics, label ids without a host sync."""

from __future__ import annotations

import torch
from torch import Tensor


def upcast(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 (softmax statistics need it); float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def dense_label_ids(labels: Tensor) -> Tensor:
    """Labels -> ids in [0, M) with equal labels sharing an id, computed on the labels' device with no
    host synchronisation (``torch.unique`` must copy its output size to the host: a stall per step on
    a GPU). Ids are dense over the classes present; buffers indexed by them are sized M."""
    order = labels.argsort()
    ordered = labels[order]
    new = torch.ones_like(ordered, dtype=torch.long)
    new[1:] = (ordered[1:] != ordered[:-1]).long()
    ids = torch.empty_like(new)
    ids[order] = new.cumsum(0) - 1
    return ids
