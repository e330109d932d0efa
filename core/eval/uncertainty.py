"""Does an uncertainty score flag errors and track corruption severity?

Scores: VCL's per-input posterior log-det, and a deterministic-embedding baseline any encoder has,
the cosine distance to the nearest class centroid of the training features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import Tensor


def centroid_distance(train_feats: Tensor, train_labels: Tensor, feats: Tensor) -> Tensor:
    """1 - cosine similarity to the nearest class mean of ``train_feats`` (higher = less certain)."""
    classes = torch.unique(train_labels)
    onehot = (train_labels[:, None] == classes[None, :]).float()
    means = F.normalize((onehot.T @ F.normalize(train_feats.float(), dim=1)) / onehot.sum(0)[:, None], dim=1)
    return 1.0 - (F.normalize(feats.float(), dim=1) @ means.T).max(dim=1).values


def misclassification_auroc(score: np.ndarray | Tensor, wrong: np.ndarray | Tensor) -> float:
    """AUROC of ``score`` for telling misclassified inputs (positives) from correct ones; 0.5 = chance."""
    score, wrong = np.asarray(score, dtype=np.float64), np.asarray(wrong, dtype=bool)
    if wrong.all() or not wrong.any():
        return float("nan")  # undefined with one class only
    return float(roc_auc_score(wrong, score))


def severity_correlation(score: np.ndarray | Tensor, severity: np.ndarray | Tensor) -> float:
    """Spearman rank correlation between per-input score and corruption severity (0 = clean)."""
    return float(spearmanr(np.asarray(score, dtype=np.float64), np.asarray(severity, dtype=np.float64)).statistic)
