import numpy as np
import pytest
import torch

from core.data.augment import augment_views, eval_view, sample_uniform
from core.data.sources import digits_arrays
from core.registry import AUGMENTATIONS


@pytest.fixture(scope="module")
def digits():
    images, labels, index = digits_arrays(16)["train"]
    return torch.from_numpy(images[:64]), index[:64]


def _views(images, index, policy="simaugment", strength=0.8, epoch=0, seed=0, views=2):
    return augment_views(images, index, policy=policy, strength=strength, views=views, seed=seed, epoch=epoch)


@pytest.mark.parametrize("policy", AUGMENTATIONS.names())
def test_same_views_whatever_the_sharding(digits, policy):
    images, index = digits
    full = _views(images, index, policy)
    # two shards, in a different order: each sample still gets the same views
    perm = np.random.default_rng(0).permutation(len(index))
    a, b = perm[:20], perm[20:]
    sharded = torch.cat([_views(images[a], index[a], policy), _views(images[b], index[b], policy)])
    inverse = np.argsort(np.concatenate([a, b]))
    assert torch.allclose(sharded[inverse], full, atol=1e-6)


def test_views_differ_across_views_epochs_and_seeds(digits):
    images, index = digits
    v = _views(images, index)
    assert v.shape == (64, 2, 3, 16, 16)
    assert (v[:, 0] - v[:, 1]).abs().mean() > 0.05
    assert (_views(images, index, epoch=1) - v).abs().mean() > 0.05
    assert (_views(images, index, seed=1) - v).abs().mean() > 0.05


@pytest.mark.parametrize("policy", AUGMENTATIONS.names())
def test_strength_zero_is_identity(digits, policy):
    images, index = digits
    v = _views(images, index, policy, strength=0.0)
    ev = eval_view(images)
    assert torch.allclose(v[:, 0], ev, atol=1e-5) and torch.allclose(v[:, 1], ev, atol=1e-5)


@pytest.mark.parametrize("policy", ["simaugment", "randaugment", "stacked_randaugment", "autoaugment"])
def test_distortion_grows_with_strength(digits, policy):
    images, index = digits
    ev = eval_view(images)[:, None]
    dist = [(_views(images, index, policy, s) - ev).abs().mean().item() for s in (0.0, 0.3, 1.0)]
    assert dist[0] < 1e-6 < dist[1] < dist[2]


def test_uniform_stream_is_uniform_and_keyed():
    u = sample_uniform(np.arange(100_000), seed=0, epoch=0, view=0, draw=0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 12 ** -0.5) < 0.01
    assert not np.allclose(u, sample_uniform(np.arange(100_000), 0, 0, 0, 1))


def test_bad_input(digits):
    images, index = digits
    with pytest.raises(ValueError, match="unknown augmentation policy"):
        _views(images, index, policy="mixup")
    with pytest.raises(ValueError, match="strength must be in"):
        _views(images, index, strength=2.0)
    with pytest.raises(ValueError, match=r"indices must be \[B\]"):
        _views(images, index[:3])


@pytest.mark.parametrize("op", ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                                "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize"])
def test_batched_randaugment_ops_match_torchvision(digits, op):
    from torchvision.transforms import v2

    from core.data.augment import _ra_apply, _ra_magnitude

    ra = v2.RandAugment(num_ops=2, magnitude=14, num_magnitude_bins=31)
    if not hasattr(ra, "_apply_image_or_video_transform"):
        pytest.skip("this torchvision has no per-op entry point to compare with")
    images = digits[0][:16].permute(0, 3, 1, 2).contiguous()
    mag = _ra_magnitude(op, 14, 31, 16, 16)
    space = ra._AUGMENTATION_SPACE[op][0](31, 16, 16)
    if space is not None:
        assert mag == pytest.approx(float(space[14]), rel=1e-6)
    for sign in (1, -1) if ra._AUGMENTATION_SPACE[op][1] else (1,):
        want = torch.stack([ra._apply_image_or_video_transform(im, op, sign * mag, interpolation=ra.interpolation,
                                                               fill=ra._fill) for im in images])
        assert torch.equal(_ra_apply(images, op, sign * mag), want)


def _color_reference(x, u, strength):
    """The colour jitter step by step (brightness, contrast, saturation, YIQ hue, grayscale): the
    reference for the single-affine-map implementation."""
    from core.data.augment import _FROM_YIQ, _TO_YIQ

    def col(a):
        return torch.from_numpy(np.asarray(a, np.float64)).float()[:, None, None, None]

    def gray(y):
        return 0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]

    apply, b = col(u(5) < 0.8), col(1 + (2 * u(6) - 1) * 0.4 * strength)
    c, sat = col(1 + (2 * u(7) - 1) * 0.4 * strength), col(1 + (2 * u(8) - 1) * 0.4 * strength)
    hue = (2 * u(9) - 1) * 0.1 * strength * 2 * np.pi
    y = x * b
    y = (y - gray(y).mean((1, 2, 3), keepdim=True)) * c + gray(y).mean((1, 2, 3), keepdim=True)
    y = gray(y) + (y - gray(y)) * sat
    yiq = torch.einsum("ij,bjhw->bihw", _TO_YIQ, y)
    cs, sn = torch.from_numpy(np.cos(hue)).float(), torch.from_numpy(np.sin(hue)).float()
    i, q = yiq[:, 1].clone(), yiq[:, 2].clone()
    yiq[:, 1], yiq[:, 2] = cs[:, None, None] * i - sn[:, None, None] * q, sn[:, None, None] * i + cs[:, None, None] * q
    y = x + apply * (torch.einsum("ij,bjhw->bihw", _FROM_YIQ, yiq) - x)
    g = col(u(10) < 0.2 * strength)
    return (y + g * (gray(y).expand_as(y) - y)).clamp(0, 1)


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_colour_jitter_as_one_affine_map_equals_the_step_by_step_definition(strength):
    from core.data.augment import _color

    x = torch.rand(64, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    index = np.arange(64) * 7

    def u(draw):
        return sample_uniform(index, 3, 1, 0, draw)

    assert torch.allclose(_color(x, u, strength), _color_reference(x, u, strength), atol=2e-5)


def test_cropped_views_photometric_fast_path_equals_the_general_one():
    from core.data.augment import _photometric, augment_cropped, to_float

    views = torch.randint(0, 256, (16, 2, 10, 10, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    index = np.arange(16) + 100
    got = augment_cropped(views, index, policy="simaugment", strength=0.9, seed=2, epoch=3)
    for v in range(2):
        def u(draw, v=v):
            return sample_uniform(index, 2, 3, v, draw)
        want = _photometric(to_float(views[:, v]), u, "simaugment", 0.9)
        assert torch.allclose(got[:, v], want, atol=1e-4)
