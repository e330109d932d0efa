"""Augmentation as a Ray Data map_batches stage (data.augment_in=ray_data)."""

import threading

import numpy as np
import pytest
import torch

from core.config import RunConfig
from core.data.augment import augment_views
from core.data.pipeline import epoch_views
from core.data.sources import arrays_to_dataset, digits_arrays

CFG = RunConfig().with_overrides(["augment.policy=randaugment", "augment.strength=0.7", "seed=3"])


@pytest.fixture(scope="module")
def digits(ray_session):
    images, labels, index = digits_arrays(16)["train"]
    images, labels, index = images[:300], labels[:300], index[:300]
    return images, index, arrays_to_dataset(images, labels, index)


def _by_index(batches) -> dict[int, np.ndarray]:
    return {int(i): v for b in batches for i, v in zip(b["index"], b["views"])}


def test_stage_makes_the_trainers_views_for_each_epoch(digits):
    images, index, ds = digits
    for epoch in (0, 4):
        got = _by_index(epoch_views(ds, CFG, epoch).iter_batches(batch_size=64, batch_format="numpy"))
        want = augment_views(torch.from_numpy(images), index, policy="randaugment", strength=0.7, views=2, seed=3,
                             epoch=epoch)
        assert len(got) == len(index) and got[int(index[7])].shape == (2, 3, 16, 16)
        assert all(np.allclose(got[int(i)], want[k].numpy(), atol=1e-6) for k, i in enumerate(index))
    epoch0 = _by_index(epoch_views(ds, CFG, 0).iter_batches(batch_size=64, batch_format="numpy"))
    epoch1 = _by_index(epoch_views(ds, CFG, 1).iter_batches(batch_size=64, batch_format="numpy"))
    assert not np.allclose(epoch0[int(index[0])], epoch1[int(index[0])])  # new views every epoch


def test_same_views_across_one_and_two_shards(digits):
    _, _, ds = digits
    whole = _by_index(epoch_views(ds, CFG, 2).iter_batches(batch_size=50, batch_format="numpy"))
    shards = epoch_views(ds, CFG, 2).streaming_split(2, equal=True)
    parts: list[dict] = [{}, {}]

    def consume(k: int) -> None:  # streaming_split needs both consumers at once
        parts[k] = _by_index(shards[k].iter_batches(batch_size=50, batch_format="numpy"))

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])  # disjoint shards
    assert len(parts[0]) + len(parts[1]) == len(whole)
    for part in parts:
        assert all(np.array_equal(v, whole[i]) for i, v in part.items())
