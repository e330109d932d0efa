"""Straightforward NumPy references written from the formulas in shared/SCIENCE.md (loops on purpose)."""

from __future__ import annotations

import numpy as np


def _logsumexp(x: np.ndarray) -> float:
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m))))


def supcon_ref(features: np.ndarray, labels: np.ndarray, t: float, variant: str = "out",
               contrast_mode: str = "all", base_t: float | None = None) -> float:
    n, v, d = features.shape
    z = features.transpose(1, 0, 2).reshape(n * v, d)
    y = np.tile(labels, v)
    anchors = range(n * v) if contrast_mode == "all" else range(n)
    losses = []
    for i in anchors:
        others = [a for a in range(n * v) if a != i]
        pos = [p for p in others if y[p] == y[i]]
        if not pos:
            continue
        log_den = _logsumexp(np.array([z[i] @ z[a] / t for a in others]))
        if variant == "out":
            li = -np.mean([z[i] @ z[p] / t - log_den for p in pos])
        else:
            li = -(_logsumexp(np.array([z[i] @ z[p] / t for p in pos])) - np.log(len(pos)) - log_den)
        losses.append(li)
    loss = float(np.mean(losses))
    return loss * (t / base_t) if base_t else loss


def varcon_ref(z: np.ndarray, labels: np.ndarray, t1: float, eps: float, kl_weight: float = 1.0) -> float:
    classes = sorted(set(labels.tolist()))
    cb = len(classes)
    w = []
    for r in classes:
        c = z[labels == r].mean(0)
        w.append(c / np.linalg.norm(c))
    w = np.stack(w)
    total = 0.0
    for i in range(len(z)):
        logits = z[i] @ w.T / t1
        logp = logits - _logsumexp(logits)
        yi = classes.index(labels[i])
        conf = np.exp(logp[yi])
        t2 = max((t1 - eps) + 2 * eps * conf, 1e-6)
        den = np.exp(1 / t2) + cb - 1
        q = np.full(cb, 1 / den)
        q[yi] = np.exp(1 / t2) / den
        kl = float(np.sum(q * (np.log(q) - logp)))
        total += kl_weight * kl - logp[yi]
    return total / len(z)


def gaussian_kl_over_d_ref(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Analytic KL(N(mu, diag s2) || N(0, I)) / D per row, from the textbook formula."""
    d = mu.shape[-1]
    s2 = np.exp(logvar)
    return 0.5 * (np.sum(s2, -1) + np.sum(mu**2, -1) - d - np.sum(logvar, -1)) / d
