"""Counter-based random draws per sample and the crop geometry drawn from them, with NumPy only.

Every random draw of an augmentation is a hash of (seed, epoch, view, draw, sample index), so a
sample gets the same views whatever the worker count, batch composition or order. This module
imports no torch: the Ray Data tasks that decode and crop images (``core.data.block_ops``) stay small
processes (a worker that imported torch holds ~0.3 GB more).
"""

from __future__ import annotations

import math

import numpy as np

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser on a Python int (scalar keys)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _mix_np(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sample_uniform(indices: np.ndarray, seed: int, epoch: int, view: int, draw: int) -> np.ndarray:
    """Deterministic U[0, 1) per sample index for one (seed, epoch, view, draw) stream."""
    key = _mix(_mix(_mix(_mix(seed) ^ epoch) ^ view) ^ draw)
    h = _mix_np(np.asarray(indices).astype(np.uint64) ^ np.uint64(key))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def crop_boxes(indices: np.ndarray, width: int, height: int, *, views: int, strength: float, seed: int, epoch: int,
               min_area: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's RandomResizedCrop box and flip per view, in pixels of a ``width x height`` original:
    area fraction in [1 - (1 - min_area) s, 1], aspect ratio in [(3/4)^s, (4/3)^s] (torchvision's
    definition, clamped to the image), flip with p = 0.5 s. Returns boxes ``[B, V, 4]`` as
    (x0, y0, x1, y1) and flips ``[B, V]``. The same draws serve array sources (a vectorised affine
    crop) and encoded ones (cut at decode time), so a sample's geometry is defined once."""
    idx = np.asarray(indices)
    boxes = np.empty((idx.shape[0], views, 4))
    flips = np.empty((idx.shape[0], views), dtype=bool)
    for v in range(views):
        def u(draw: int, v: int = v) -> np.ndarray:
            return sample_uniform(idx, seed, epoch, v, draw)
        area = (1.0 - (1.0 - min_area) * strength * u(0)) * width * height
        log_ratio = (2 * u(1) - 1) * math.log(4 / 3) * strength
        w = np.minimum(np.sqrt(area * np.exp(log_ratio)), width)
        h = np.minimum(np.sqrt(area / np.exp(log_ratio)), height)
        x0, y0 = u(2) * (width - w), u(3) * (height - h)
        boxes[:, v] = np.stack([x0, y0, x0 + w, y0 + h], axis=1)
        flips[:, v] = u(4) < 0.5 * strength
    return boxes, flips


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def sample_keys(index: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 key per sample id (splitmix64 of id ^ seed)."""
    with np.errstate(over="ignore"):
        return _mix_np(np.asarray(index).astype(np.uint64) ^ (np.uint64(seed) * _GOLDEN))


def class_quotas(labels: np.ndarray, limit: int) -> dict[int, int]:
    """Images to take per class: proportional to its size (largest remainders), at least one each,
    ``limit`` in all (or every image when there are fewer)."""
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    total = int(counts.sum())
    if total <= limit:
        return {int(c): int(n) for c, n in zip(classes, counts)}
    share = counts * (limit / total)
    quota = np.maximum(np.floor(share).astype(int), 1)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    for i in order[: max(0, limit - int(quota.sum()))]:
        quota[i] += 1
    return {int(c): int(min(q, n)) for c, q, n in zip(classes, quota, counts)}


def stratified_positions(labels: np.ndarray, index: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Positions (sorted) of a stratified subsample of at most ``limit`` of the samples ``labels``/``index``."""
    labels, keys = np.asarray(labels), sample_keys(index, seed)
    out = []
    for c, q in class_quotas(labels, limit).items():
        members = np.flatnonzero(labels == c)
        out.append(members[np.argsort(keys[members], kind="stable")[:q]])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


