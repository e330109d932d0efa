"""Seeded, class-stratified subsamples of an evaluation split.

Evaluation sets read from folders or shards come back class-sorted, so "the first n" covers only the
first classes. A subsample here takes from every class in proportion to its size (at least one image
each), choosing within a class by a seeded hash of the stable sample id: the same images whatever the
batch layout or order they arrive in.
"""

from __future__ import annotations

import numpy as np

from core.data.block_ops import owned
from core.data.seeded_draws import sample_keys


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
