"""Evaluation subsamples are seeded and stratified: on a class-sorted set they cover every class in
proportion (the first n of a class-sorted ImageNet split would cover its first few classes only)."""

import numpy as np
import torch

from core.data.seeded_draws import class_quotas, stratified_positions
from core.eval.subsample import StreamSample
from tests.block_views import BlockViews

SORTED = np.repeat(np.arange(10), 100)  # 10 classes, class after class


def test_stratified_positions_cover_every_class_in_proportion():
    pos = stratified_positions(SORTED, np.arange(1000) + 7, 200, seed=0)
    assert len(pos) == 200 and np.bincount(SORTED[pos]).tolist() == [20] * 10
    assert not np.array_equal(pos, stratified_positions(SORTED, np.arange(1000) + 7, 200, seed=1))  # seeded
    uneven = np.repeat([0, 1, 2], [600, 300, 100])
    assert np.bincount(uneven[stratified_positions(uneven, np.arange(1000), 100)]).tolist() == [60, 30, 10]
    assert class_quotas(np.array([0] * 999 + [1]), 10) == {0: 9, 1: 1}  # every class keeps at least one


def test_the_sample_does_not_depend_on_the_order():
    ids = np.arange(1000) * 13
    perm = np.random.default_rng(0).permutation(1000)
    a = set(ids[stratified_positions(SORTED, ids, 100)])
    b = set(ids[perm][stratified_positions(SORTED[perm], ids[perm], 100)])
    assert a == b


def test_a_streamed_sample_of_a_class_sorted_split_covers_every_class():
    sample = StreamSample(limit=200, num_classes=10, seed=0)
    images = np.arange(1000)[:, None, None, None].repeat(2, 1)
    for start in range(0, 1000, 64):  # batches arrive class after class
        stop = min(start + 64, 1000)
        sample.add(images[start:stop], SORTED[start:stop], np.arange(start, stop))
    kept, labels = sample.result()
    assert np.bincount(labels).tolist() == [20] * 10 and len(kept) == 200
    assert len({int(x) for x in kept[:, 0, 0, 0]}) == 200  # distinct images, not the first 200


def test_a_streamed_sample_keeps_copies_not_views_of_its_batches():
    """A kept image that is a view pins its whole block (in Ray: object-store memory) until the end."""
    blocks = BlockViews({"image": np.arange(1000)[:, None, None, None].repeat(2, 1), "label": SORTED,
                         "index": np.arange(1000)}, rows_per_block=64)
    sample = StreamSample(limit=200, num_classes=10, seed=0)
    for batch in blocks:
        sample.add(batch["image"], batch["label"], batch["index"])
    assert blocks.most_held == 0 and len(sample.result()[1]) == 200


def test_geometry_metrics_sample_every_class_and_both_views():
    from core.eval.features import Features
    from core.eval.stage import GEOMETRY_SAMPLE, geometry_metrics
    from core.results import Evaluation

    n = 3 * GEOMETRY_SAMPLE  # class-sorted, larger than the sample
    labels = torch.from_numpy(np.repeat(np.arange(6), n // 6))
    feats = torch.nn.functional.one_hot(labels, 6).float() + 0.01 * torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
    z0 = torch.nn.functional.normalize(feats, dim=1)
    z1 = torch.nn.functional.normalize(feats.roll(1, dims=1), dim=1)  # the second view differs
    result = Evaluation()
    geometry_metrics(Features(feats, labels, np.arange(n), view_pairs=(z0, z1)), result)
    assert result.scalars["cluster_ari"] > 0.99  # all six classes clustered: the first 5000 held only two
    from core.eval.geometry import uniformity

    only_first_view = uniformity(z0[torch.from_numpy(stratified_positions(labels.numpy(), np.arange(n), n))])
    assert result.scalars["uniformity"] != only_first_view
