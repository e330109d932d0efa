"""The functions Ray Data runs in its tasks for the platform's sources: reading files, reordering
rows within a block, unpacking WebDataset samples. Like ``core.data.decode`` they import no torch
(nor anything that does), so the task workers stay small processes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.data.folders import stable_index
from core.errors import DataError
from core.fs import filesystem, is_uri, open_input

ROWS_PER_BLOCK = 256  # listing rows per block of a file source (one decode task each)


def owned(values, dtype=None) -> np.ndarray:
    """A copy of a batch's column (or row) that owns its memory. A numpy batch from Ray Data is a view of
    its block in the object store, and any slice of it kept past the batch (a row's id, one image) keeps
    the whole block pinned: a pass that keeps the ids of every batch holds the whole split's pixels in the
    store (spilled to disk once it is full, with spill and restore workers started for it)."""
    return np.array(values, dtype=dtype, copy=True)


def permute_rows(block, seed: int):
    """Shuffle the rows of one block (a shard's row group) with a permutation drawn from the epoch's
    seed and the block's first sample id: a new order inside every shard each epoch, at the cost of
    reordering encoded bytes, not decoded views."""
    n = block.num_rows
    if n < 2:
        return block
    first = int(block.column("index")[0].as_py())
    perm = np.random.default_rng([seed, first & 0xFFFFFFFF, first >> 32]).permutation(n)
    return block.take(perm)


def read_shards(batch, fs, seed: int | None):
    """The rows of the parquet shards named in ``batch["file"]`` (a block of placeholder rows per shard),
    ``image`` renamed ``bytes``; each shard's rows in the epoch's order (:func:`permute_rows` with ``seed``),
    or as stored when ``seed`` is None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for name in dict.fromkeys(batch.column("file").to_pylist()):
        table = pq.read_table(name, filesystem=fs)
        table = table.rename_columns(["bytes" if c == "image" else c for c in table.column_names])
        tables.append(table if seed is None else permute_rows(table, seed))
    return pa.concat_tables(tables)


def read_files(batch: pd.DataFrame) -> pd.DataFrame:
    """Each row's file bytes (local paths, or URIs of one object store); a file that cannot be read
    gets no bytes, so its decode fails and it is counted and named as undecodable."""
    paths = list(batch["path"])
    store = filesystem(paths[0])[0] if paths and is_uri(paths[0]) else None
    data = []
    for p in paths:
        try:
            with open_input(p, store) as fh:
                data.append(fh.read())
        except OSError:
            data.append(b"")
    return batch.assign(bytes=data)


def _absent(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def webdataset_rows(batch: dict, num_classes: int | None = None) -> dict:
    """WebDataset samples as rows, each label checked as it streams by (a sample without ``.cls``, or with a
    label outside ``[0, num_classes)``, stops the read naming the sample, before any training is spent on it)."""
    keys = batch["__key__"]
    image = next((k for k in ("jpg", "jpeg", "png") if k in batch), None)
    images, classes = (batch.get(image) if image else None), batch.get("cls")
    for i, k in enumerate(keys):  # a member a sample lacks is None, or NaN where Ray Data fills its column
        lacks = "an image (jpg/png)" if images is None or _absent(images[i]) else \
            "a .cls label" if classes is None or _absent(classes[i]) else None
        if lacks:
            raise DataError(f"webdataset sample {k!r} lacks {lacks}; every sample needs both")
    labels = []
    for k, c in zip(keys, classes):
        text = bytes(c).decode(errors="replace").strip() if isinstance(c, (bytes, bytearray)) else str(c)
        try:
            label = int(text)
        except ValueError:
            raise DataError(f"webdataset sample {k!r}: label {text!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise DataError(f"webdataset sample {k!r}: label {label} is outside [0, {num_classes or 'data.num_classes'})")
        labels.append(label)
    return {"bytes": list(images), "label": np.asarray(labels, np.int64),
            "index": np.asarray([stable_index(str(k)) for k in keys], np.int64), "path": np.asarray(keys)}
