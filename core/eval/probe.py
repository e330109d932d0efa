"""Frozen-encoder evaluation: weighted kNN and linear probe on precomputed features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KNN_PROTOCOL = "weighted kNN: cosine similarity, top-k neighbours, votes exp(sim/T) (Wu et al. 2018)"


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent for each k (k capped at the number of classes)."""
    res = {}
    for k in ks:
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices
        res[f"top{k}"] = 100.0 * (top == labels[:, None]).any(1).float().mean().item()
    return res


KNN_BLOCK_BYTES = 64 << 20  # similarities held at once by the kNN search (a query chunk x a bank block)


@torch.no_grad()
def knn_scores(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, num_classes: int,
               k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> Tensor:
    """Class scores ``[N_test, C]`` (on the CPU) from weighted kNN voting with cosine similarity; the
    search runs on the bank's device (move ``train_feats`` to a GPU to search there). Memory beyond the
    bank is bounded by construction: a query chunk's similarities to a block of the bank at a time
    (``KNN_BLOCK_BYTES``), each block normalised as it is used, the running top-k kept."""
    if train_feats.shape[0] == 0:
        raise ValueError("kNN needs a non-empty training bank")
    n, dev = train_feats.shape[0], train_feats.device
    k = min(k, n)
    block = max(k, KNN_BLOCK_BYTES // (4 * min(chunk, max(1, test_feats.shape[0]))))
    whole = n <= block  # a bank this small is normalised once (and searched in one product)
    bank = F.normalize(train_feats.float(), dim=1) if whole else train_feats
    norms = None if whole else train_feats.float().norm(dim=1).clamp_min(1e-12)  # as F.normalize's eps
    train_labels = train_labels.to(dev)
    scores = []
    for start in range(0, test_feats.shape[0], chunk):
        q = F.normalize(test_feats[start: start + chunk].to(dev).float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1) if whole else _blocked_topk(q, bank, norms, k, block)
        votes = torch.zeros(q.shape[0], num_classes, device=dev)
        # exp((sim - max sim) / T): the same relative weights as exp(sim / T), finite for any T > 0
        votes.scatter_add_(1, train_labels[idx], ((sim - sim[:, :1]) / temperature).exp())
        scores.append(votes.cpu())
    return torch.cat(scores)


def _blocked_topk(q: Tensor, bank: Tensor, norms: Tensor, k: int, block: int) -> tuple[Tensor, Tensor]:
    """The top-k cosine similarities of ``q`` (normalised) over the bank, one block of rows at a time."""
    best_sim = best_idx = None
    for start in range(0, bank.shape[0], block):
        rows = bank[start: start + block].float() / norms[start: start + block, None]
        sim, idx = (q @ rows.T).topk(min(k, rows.shape[0]), dim=1)
        idx = idx + start
        if best_sim is not None:
            sim, pick = torch.cat([best_sim, sim], 1).topk(k, dim=1)
            idx = torch.cat([best_idx, idx], 1).gather(1, pick)
        best_sim, best_idx = sim, idx
    return best_sim, best_idx


def knn_accuracy(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
                 num_classes: int, k: int = 200, temperature: float = 0.1) -> dict[str, float]:
    return topk_accuracy(knn_scores(train_feats, train_labels, test_feats, num_classes, k, temperature), test_labels)


@dataclass
class ProbeResult:
    top1: float
    top5: float
    probabilities: Tensor  # [N_test, C] softmax outputs of the final-epoch probe (for calibration)
    protocol: str
    predict: Callable[[Tensor], Tensor]  # raw features -> class probabilities (same standardisation)


def linear_probe(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
                 num_classes: int, epochs: int = 100, lr: float = 0.1, batch_size: int = 256,
                 weight_decay: float = 0.0, seed: int = 0, device: torch.device | str | None = None) -> ProbeResult:
    """Linear classifier on frozen features (standardised with train statistics), SGD momentum 0.9,
    cosine LR, cross-entropy; reports the FINAL-epoch test accuracy (no test-set model selection).
    Trains on ``device`` (default: the features' device); probabilities come back on the CPU."""
    if train_feats.shape[0] < 2:
        raise ValueError(f"linear probe needs at least 2 training features, got {train_feats.shape[0]}")
    dev = torch.device(device) if device is not None else train_feats.device
    train_feats, train_labels = train_feats.to(dev), train_labels.to(dev)
    g = torch.Generator().manual_seed(seed)
    mean, std = train_feats.mean(0), train_feats.std(0).clamp_min(1e-6)
    xtr = train_feats  # standardised batch by batch below: no second copy of the bank (N x D)
    clf = nn.Linear(xtr.shape[1], num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf.reset_parameters()
    clf = clf.to(dev)
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * math.ceil(xtr.shape[0] / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        perm = torch.randperm(xtr.shape[0], generator=g).to(dev)
        for start in range(0, xtr.shape[0], batch_size):
            i = perm[start: start + batch_size]
            loss = F.cross_entropy(clf((xtr[i] - mean) / std), train_labels[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    @torch.no_grad()
    def predict(feats: Tensor) -> Tensor:
        return clf((feats.to(dev) - mean) / std).softmax(1).cpu()

    probs = predict(test_feats)
    acc = topk_accuracy(probs, test_labels)
    protocol = (f"linear probe: frozen encoder (eval mode), standardised features, SGD m=0.9 lr={lr} cosine, "
                f"batch {batch_size}, {epochs} epochs, final-epoch accuracy")
    return ProbeResult(acc["top1"], acc["top5"], probs, protocol, predict)
