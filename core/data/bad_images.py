"""Undecodable images, accounted in one place.

A decoded batch marks each image it could not decode with ``ok=False`` (and zero pixels), carrying
its ``path``. :class:`BadImages` drops those rows, names each file once in a warning, counts them,
and (for training) fails the pass once the bad fraction is certain to exceed the limit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from core.errors import DataError


def split_undecodable(batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str], list[int]]:
    """(the batch without its ``ok=False`` rows, their paths, their labels); the batch as is when all
    decoded."""
    if "ok" not in batch or batch["ok"].all():
        return batch, [], []
    ok = np.asarray(batch["ok"]).astype(bool)
    paths = [str(p) for p in batch["path"][~ok]] if "path" in batch else ["?"] * int((~ok).sum())
    return {k: v[ok] for k, v in batch.items()}, paths, [int(x) for x in batch["label"][~ok]]


@dataclass
class BadImages:
    """The undecodable images of one pass over a split.

    With ``max_fraction`` set, the pass fails once more than ``max_fraction`` of ``expected`` (the
    number of images the pass will see, e.g. one epoch) are bad, and at :meth:`finish` once more than
    ``max_fraction`` of those seen were: the limit is judged over the pass, never on its first batches.
    """

    max_fraction: float | None = None
    expected: int | None = None
    where: str = ""  # prefix of the warnings ("evaluation: ")
    warn: bool = True
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    seen: int = 0

    def keep(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's decodable rows; the others are named, counted and checked against the limit."""
        self.seen += len(batch["label"])
        batch, paths, labels = split_undecodable(batch)
        if self.warn:
            for p in paths:
                warnings.warn(f"{self.where}skipping undecodable image {p!r}")
        self.paths += paths
        self.labels += labels
        if self.max_fraction is not None and self.expected and len(self.paths) > self.max_fraction * self.expected:
            self._fail(self.expected)
        return batch

    def finish(self) -> None:
        """At the end of the pass: the limit on the fraction of the images actually seen."""
        if self.max_fraction is not None and len(self.paths) > self.max_fraction * max(self.seen, 1):
            self._fail(self.seen)

    def _fail(self, total: int) -> None:
        raise DataError(f"{len(self.paths)} of {total} images undecodable (> data.max_bad_fraction="
                        f"{self.max_fraction}); first: {self.paths[:5]}")
