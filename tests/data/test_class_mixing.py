"""Class-mixed batches from a class-sorted source (ImageNet's folder layout): the per-epoch file
and row order plus the local buffer must give nearly i.i.d. class counts per batch."""

import numpy as np
import pytest

from core.config import RunConfig
from core.data.pipeline import epoch_dataset, train_batches
from core.data.shard import shard_dataset
from core.data.sources import load_source
from core.tools.photos import make_photo_folder

CLASSES, PER_CLASS, BATCH = 20, 400, 64


def _iid_expectation() -> float:
    """Expected distinct classes in a batch drawn without replacement from 20 x 400 images."""
    n, k = CLASSES * PER_CLASS, PER_CLASS
    p_absent = np.prod([(n - k - i) / (n - i) for i in range(BATCH)])
    return CLASSES * (1 - p_absent)


def _classes_per_batch(batches) -> float:
    return float(np.mean([len(np.unique(b["label"])) for b in batches]))


@pytest.fixture(scope="module")
def sorted_folder(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("sorted")
    return str(make_photo_folder(str(root), CLASSES, {"train": PER_CLASS, "val": 1}, size=(20, 15)))


def _cfg(**data):
    return RunConfig().with_(**{"optim.batch_size": BATCH, "data.image_size": 8, "augment.policy": "none",
                                **{f"data.{k}": v for k, v in data.items()}})


def test_image_folder_batches_are_class_mixed(sorted_folder):
    cfg = _cfg(source="imagefolder", root=sorted_folder)
    src = load_source(cfg.data)
    assert src.train_size == CLASSES * PER_CLASS
    mixed = _classes_per_batch(train_batches(epoch_dataset(src.train_rows, cfg, 0), BATCH))
    assert mixed >= 0.9 * _iid_expectation(), (mixed, _iid_expectation())  # the bar: >= 17.5
    # the pitfall this guards against: listing order + a local shuffle buffer alone
    naive = _classes_per_batch(src.train_rows.ordered().iter_batches(
        batch_size=BATCH, drop_last=True, batch_format="numpy", local_shuffle_buffer_size=1024, local_shuffle_seed=0))
    assert naive < 12, naive


def test_parquet_shards_from_a_sorted_folder_are_class_mixed(sorted_folder, tmp_path):
    shard_dataset(sorted_folder, str(tmp_path / "shards"), shard_size=500)
    cfg = _cfg(source="parquet", root=str(tmp_path / "shards"))
    src = load_source(cfg.data)
    first = []
    for epoch in (0, 1):
        batches = list(train_batches(epoch_dataset(src.train_rows, cfg, epoch), BATCH))
        assert _classes_per_batch(batches) >= 0.9 * _iid_expectation()
        assert sum(len(b["label"]) for b in batches) == (CLASSES * PER_CLASS // BATCH) * BATCH
        first.append(batches[0]["index"])
    assert not np.array_equal(first[0], first[1])  # a new order every epoch
