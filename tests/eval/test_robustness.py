import pytest

from core.eval.robustness import mean_corruption_error, normalized_corruption_errors


def test_imagenet_c_mce_and_relative_mce_by_hand():
    # two corruptions x two severities; errors (100 - acc): model {a: 20, 40; b: 10, 30}, baseline {a: 40, 40; b: 20, 20}
    acc = {("a", 1): 80.0, ("a", 2): 60.0, ("b", 1): 90.0, ("b", 2): 70.0}
    base = {("a", 1): 60.0, ("a", 2): 60.0, ("b", 1): 80.0, ("b", 2): 80.0}
    out = normalized_corruption_errors(acc, clean_acc=95.0, base_acc=base, base_clean_acc=90.0)
    # CE_a = 60/80, CE_b = 40/40 -> mCE = 87.5; rel_a = (15+35)/(30+30), rel_b = (5+25)/(10+10) -> 116.67
    assert out["mce"] == pytest.approx(87.5)
    assert out["relative_mce"] == pytest.approx(100 * (50 / 60 + 30 / 20) / 2)
    assert normalized_corruption_errors(base, 90.0, base, 90.0) == {"mce": 100.0, "relative_mce": 100.0}
    assert mean_corruption_error(acc) == pytest.approx(25.0)


def test_mismatched_pairs_are_refused():
    with pytest.raises(ValueError, match="same"):
        normalized_corruption_errors({("a", 1): 50.0}, 90.0, {("b", 1): 50.0}, 90.0)


def test_fast_corruptions_are_seeded_shaped_and_grow_with_severity():
    import numpy as np
    import torch

    from core.data.sources import digits_arrays
    from core.eval.robustness import CORRUPTIONS, corrupt

    images = torch.from_numpy(digits_arrays(16)["test"][0][:32])
    for name in CORRUPTIONS:
        out = [corrupt(images, name, s, seed=0) for s in range(1, 6)]
        assert all(o.shape == images.shape and o.dtype == torch.uint8 for o in out)
        dist = [(o.float() - images.float()).abs().mean().item() for o in out]
        assert dist[4] > dist[0] > 0, (name, dist)
        assert torch.equal(out[2], corrupt(images, name, 3, seed=0))
    assert not torch.equal(corrupt(images, "gaussian_noise", 3, seed=0), corrupt(images, "gaussian_noise", 3, seed=1))
    with pytest.raises(ValueError, match="unknown corruption 'frost'"):
        corrupt(images, "frost", 1)
    assert np.isfinite(dist).all()


def test_fast_suite_noise_is_seeded_per_sample_whatever_the_batch_split():
    """Each image's noise used to depend on its position in the batch: the first 4 of a batch of 8
    matched a batch of 4, but any other split changed every image."""
    import numpy as np
    import torch

    from core.data.sources import digits_arrays
    from core.eval.robustness import CORRUPTIONS, corrupt

    images = torch.from_numpy(digits_arrays(16)["test"][0][:12])
    ids = np.arange(100, 112)
    for name in CORRUPTIONS:
        whole = corrupt(images, name, 3, seed=0, index=ids)
        split = torch.cat([corrupt(images[a:b], name, 3, seed=0, index=ids[a:b]) for a, b in ((0, 5), (5, 7), (7, 12))])
        reversed_ = corrupt(images.flip(0), name, 3, seed=0, index=ids[::-1].copy()).flip(0)
        assert torch.equal(whole, split) and torch.equal(whole, reversed_), name
    noisy = corrupt(images[:2], "gaussian_noise", 3, seed=0, index=np.array([7, 7]))
    assert not torch.equal(noisy[0], noisy[1]) or torch.equal(images[0], images[1])  # same id, different image
    assert torch.equal(corrupt(images[:1], "gaussian_noise", 3, index=np.array([5])),
                       corrupt(images[1:2].clone().copy_(images[:1]), "gaussian_noise", 3, index=np.array([5])))
