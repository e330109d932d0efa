"""Embedding geometry: effective rank of the singular value spectrum (dimensional collapse)."""

from __future__ import annotations

import torch
from torch import Tensor


def singular_values(feats: Tensor) -> Tensor:
    """Singular values of the centred feature matrix, descending."""
    x = feats.double()
    return torch.linalg.svdvals(x - x.mean(0, keepdim=True))


def effective_rank(feats: Tensor) -> float:
    """exp(entropy of the normalised singular values) (Roy & Vetterli 2007): 1 for a rank-1
    embedding, D for a perfectly isotropic one."""
    s = singular_values(feats)
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
