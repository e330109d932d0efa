"""Batches shaped like Ray Data's numpy batches: read-only views of one block each, the blocks watched.

A consumer that keeps a slice of a batch past it (a row's id, one image) keeps the whole block alive;
in Ray the block is object-store memory, so such a pass holds the whole split there. ``BlockViews``
yields a batch per block and records, as each batch is asked for, how many earlier blocks the
consumer still holds.
"""

from __future__ import annotations

import gc
import weakref
from typing import Iterator

import numpy as np


class BlockViews:
    def __init__(self, columns: dict[str, np.ndarray], rows_per_block: int) -> None:
        self.columns, self.rows = columns, rows_per_block
        self.blocks: list[list[weakref.ref]] = []  # per batch, its columns
        self.most_held = 0  # the most earlier blocks alive when a batch was asked for

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        n = len(next(iter(self.columns.values())))
        for start in range(0, n, self.rows):
            gc.collect()
            # the consumer may still hold the batch it is done with (its loop variable), nothing older
            self.most_held = max(self.most_held, sum(any(ref() is not None for ref in refs)
                                                     for refs in self.blocks[:-1]))
            block = {k: v[start: start + self.rows].copy() for k, v in self.columns.items()}
            for array in block.values():
                array.flags.writeable = False
            self.blocks.append([weakref.ref(array) for array in block.values()])
            yield {k: v[:] for k, v in block.items()}  # views, as a zero-copy batch is
            del block
