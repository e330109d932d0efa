"""Seeded, class-stratified subsamples of an evaluation split.

Evaluation sets read from folders or shards come back class-sorted, so "the first n" covers only the
first classes. A subsample here takes from every class in proportion to its size (at least one image
each), choosing within a class by a seeded hash of the stable sample id: the same images whatever the
batch layout or order they arrive in.
"""

from __future__ import annotations

import numpy as np

from core.data.block_ops import owned

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def sample_keys(index: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 key per sample id (splitmix64 of id ^ seed)."""
    with np.errstate(over="ignore"):
        x = np.asarray(index).astype(np.uint64) ^ (np.uint64(seed) * _GOLDEN)
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


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


class StreamSample:
    """A stratified subsample taken while a split streams by (bounded memory: about twice ``limit``
    rows): each class keeps its ``ceil(limit / num_classes)`` rows of smallest seeded key (all of a
    smaller class), so a class-sorted stream is covered evenly, never just its first classes."""

    def __init__(self, limit: int, num_classes: int, seed: int = 0) -> None:
        self.per_class = max(1, -(-limit // max(num_classes, 1)))
        self.seed = seed
        self.kept: dict[int, list[tuple[int, np.ndarray]]] = {}  # class -> [(key, row)]

    def add(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        keys = sample_keys(index, self.seed)
        for c in np.unique(labels):
            rows = self.kept.setdefault(int(c), [])
            rows.extend((int(keys[i]), owned(images[i])) for i in np.flatnonzero(labels == c))
            if len(rows) > 2 * self.per_class:
                rows.sort(key=lambda r: r[0])
                del rows[self.per_class:]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of the sample, in class order."""
        images, labels = [], []
        for c in sorted(self.kept):
            rows = sorted(self.kept[c], key=lambda r: r[0])[: self.per_class]
            images += [r[1] for r in rows]
            labels += [c] * len(rows)
        return (np.stack(images) if images else np.zeros((0,), np.uint8)), np.asarray(labels, np.int64)
