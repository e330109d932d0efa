"""Calibration of a classifier's probabilities: expected calibration error and negative log-likelihood."""

from __future__ import annotations

import torch
from torch import Tensor


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE (%) with equal-width confidence bins (Guo et al. 2017):
    sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|."""
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be [N, C] and labels [N], got {tuple(probs.shape)} and {tuple(labels.shape)}")
    conf, pred = probs.max(1)
    return ece_from_confidence(conf, pred == labels, bins)


def ece_from_confidence(conf: Tensor, correct: Tensor, bins: int = 15) -> float:
    """ECE (%) from each prediction's confidence and whether it was right (streaming-friendly:
    keep two numbers per input instead of the whole probability matrix)."""
    correct = correct.double()
    # bin b holds confidences in (b/bins, (b+1)/bins]; confidence exactly 0 cannot occur for a max
    idx = (conf.double() * bins).ceil().long().clamp(1, bins) - 1
    acc_sum = torch.bincount(idx, weights=correct, minlength=bins)
    conf_sum = torch.bincount(idx, weights=conf.double(), minlength=bins)
    return float(100.0 * (acc_sum - conf_sum).abs().sum() / max(conf.shape[0], 1))


def negative_log_likelihood(probs: Tensor, labels: Tensor, eps: float = 1e-12) -> float:
    """Mean -log p(y|x) of the true class."""
    return float(-probs.double().gather(1, labels[:, None]).clamp_min(eps).log().mean())
