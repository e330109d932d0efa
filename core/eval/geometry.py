"""Embedding geometry: singular value spectrum and effective rank (dimensional collapse),
alignment and uniformity, and how well a hierarchical clustering recovers the classes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def normalized_spectrum(feats: Tensor) -> Tensor:
    """Singular values divided by their sum (the distribution whose entropy gives the effective
    rank); a fast-decaying tail is dimensional collapse."""
    s = singular_values(feats)
    return (s / s.sum().clamp_min(1e-12)).float()


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola (2020): E ||f(x) - f(x+)||^alpha over positive pairs of L2-normalised
    embeddings (lower = positives closer)."""
    z1, z2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    return float((z1 - z2).norm(dim=1).pow(alpha).mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """Wang & Isola (2020): log E exp(-t ||f(x) - f(y)||^2) over distinct pairs of L2-normalised
    embeddings (lower = more uniform on the sphere)."""
    z = F.normalize(z.double(), dim=1)
    sq = torch.pdist(z).pow(2)
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel()))


def cluster_agreement(feats: Tensor, labels: Tensor, n_clusters: int | None = None) -> float:
    """Adjusted Rand index between Ward hierarchical clustering of the L2-normalised features, cut
    at the true number of classes, and the labels: 1 = the dendrogram recovers the classes,
    ~0 = chance (VarCon's clustering claim)."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score

    x = F.normalize(feats.double(), dim=1).numpy()
    y = labels.numpy()
    k = n_clusters or len(set(y.tolist()))
    pred = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
    return float(adjusted_rand_score(y, pred))
