"""CIFAR-10-C made here with make_cifar_c.py's parameters, and the released .npy layout read back."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import RunConfig, layered
from core.errors import EvaluationError
from core.eval.cifar_c import BENCHMARK, CORRUPTIONS, EXTRA, PARAMS, corrupt_cifar_c
from core.eval.corrupted import array_corruptions, check_corruptions
from core.registry import CORRUPTION_SUITES


@pytest.fixture(scope="module")
def photos():
    """32 px RGB images with texture and colour (smooth gradients plus noise), like CIFAR's."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    base = np.stack([xx, yy, (xx + yy) / 2], -1)
    return np.clip((base[None] * rng.uniform(0.3, 0.9, (6, 1, 1, 3)) + rng.uniform(0, 0.2, (6, 32, 32, 3))) * 255,
                   0, 255).astype(np.uint8)


def test_the_suite_has_the_15_benchmark_types_and_4_extra():
    suite = CORRUPTION_SUITES.get("cifar_c")
    assert suite.corruptions == BENCHMARK and len(BENCHMARK) == 15 and suite.extra == EXTRA and len(EXTRA) == 4
    assert set(CORRUPTIONS) == set(PARAMS) == {*BENCHMARK, *EXTRA}
    assert suite.made_for == 32 and suite.cached and suite.size_note(32) == "" and suite.size_note(16) == ""
    assert "made for 32 px images and is used here at 8 px" in suite.size_note(8)
    assert "made for 224 px" in CORRUPTION_SUITES.get("imagenet_c").size_note(32)  # ImageNet-C on CIFAR: named


@pytest.mark.parametrize("name", [*BENCHMARK, *EXTRA])
def test_every_type_is_seeded_per_image_and_keeps_shape(photos, name):
    index = np.arange(100, 106)
    out = corrupt_cifar_c(photos, name, 3, index=index)
    assert out.shape == photos.shape and out.dtype == np.uint8
    assert np.array_equal(out, corrupt_cifar_c(photos, name, 3, index=index))  # the same images again
    alone = corrupt_cifar_c(photos[2:3], name, 3, index=index[2:3])
    assert np.array_equal(alone[0], out[2])  # an image's corruption does not depend on its batch
    gray = corrupt_cifar_c(photos[:2, ..., :1], name, 1, index=index[:2])
    assert gray.shape == (2, 32, 32, 1)


def test_contrast_and_brightness_are_make_cifar_c_exactly(photos):
    from skimage.color import hsv2rgb, rgb2hsv

    for severity, c in enumerate(PARAMS["contrast"], start=1):
        x = photos / 255.0
        means = x.mean(axis=(1, 2), keepdims=True)
        want = np.uint8(np.clip((x - means) * c + means, 0, 1) * 255)
        assert np.array_equal(corrupt_cifar_c(photos, "contrast", severity), want), severity
    assert PARAMS["contrast"] == (0.75, 0.5, 0.4, 0.3, 0.15) and PARAMS["brightness"] == (0.05, 0.1, 0.15, 0.2, 0.3)
    for severity, c in enumerate(PARAMS["brightness"], start=1):
        hsv = rgb2hsv(photos[0] / 255.0)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        want = np.uint8(np.clip(hsv2rgb(hsv), 0, 1) * 255)
        assert np.array_equal(corrupt_cifar_c(photos[:1], "brightness", severity)[0], want), severity


def test_noise_scales_are_make_cifar_c(photos):
    gray = np.full((40, 32, 32, 3), 128, np.uint8)  # mid-gray: no clipping at these scales
    for severity, c in enumerate(PARAMS["gaussian_noise"], start=1):
        noise = corrupt_cifar_c(gray, "gaussian_noise", severity).astype(float) / 255 - 128 / 255
        assert noise.std() == pytest.approx(c, rel=0.05), severity
    assert PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    for severity, c in enumerate(PARAMS["shot_noise"], start=1):  # Poisson(x c) / c: variance x / c
        out = corrupt_cifar_c(gray, "shot_noise", severity).astype(float) / 255
        assert out.var() == pytest.approx((128 / 255) / c, rel=0.1), severity
    for severity, c in enumerate(PARAMS["impulse_noise"], start=1):  # salt and pepper on a fraction c
        out = corrupt_cifar_c(gray, "impulse_noise", severity)
        assert np.isin(out, (0, 255)).mean() == pytest.approx(c, rel=0.15), severity


def test_jpeg_quality_and_pixelate_sizes_are_make_cifar_c(photos):
    assert PARAMS["jpeg_compression"] == (80, 65, 58, 50, 40)
    for severity, quality in enumerate(PARAMS["jpeg_compression"], start=1):
        buffer = io.BytesIO()
        Image.fromarray(photos[0]).save(buffer, "JPEG", quality=quality)
        want = np.asarray(Image.open(buffer).convert("RGB"))
        assert np.array_equal(corrupt_cifar_c(photos[:1], "jpeg_compression", severity)[0], want), severity
    sizes = [int(32 * c) for c in PARAMS["pixelate"]]
    assert sizes == [30, 28, 27, 24, 20]
    for severity, size in enumerate(sizes, start=1):
        small = Image.fromarray(photos[0]).resize((size, size), Image.BOX)
        want = np.asarray(small.resize((32, 32), Image.BOX))
        assert np.array_equal(corrupt_cifar_c(photos[:1], "pixelate", severity)[0], want), severity


@pytest.mark.parametrize("name", ["gaussian_noise", "gaussian_blur", "defocus_blur", "zoom_blur", "contrast", "fog",
                                  "pixelate", "jpeg_compression", "glass_blur"])
def test_damage_grows_with_severity(photos, name):
    dist = [np.abs(corrupt_cifar_c(photos, name, s).astype(float) - photos).mean() for s in range(1, 6)]
    assert dist[4] > dist[0] and all(b >= a - 1.0 for a, b in zip(dist, dist[1:])), dist


def test_bad_input_fails_clearly(photos):
    with pytest.raises(ValueError, match="unknown CIFAR-10-C corruption 'rain'"):
        corrupt_cifar_c(photos, "rain", 1)
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        corrupt_cifar_c(photos, "fog", 0)
    with pytest.raises(ValueError, match="uint8"):
        corrupt_cifar_c(photos.astype(np.float32), "fog", 1)


def _released(root, n=30, names=("contrast", "fog"), size=32):
    """A small CIFAR-10-C in the released layout: 5 severities of an n-image test split, labels 0-9."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.arange(n) % 10, 5).astype(np.uint8)
    np.save(root / "labels.npy", labels)
    for name in names:
        np.save(root / f"{name}.npy", rng.integers(0, 256, (5 * n, size, size, 3), dtype=np.uint8))
    return labels


def _cifar_c_config(root, **extra):
    overrides = [f"eval.corruption_root={root}", "eval.robustness=true", "eval.corruption_suite=cifar_c",
                 "eval.corruptions=[contrast,fog]", "data.image_size=32", *[f"{k}={v}" for k, v in extra.items()]]
    return layered(RunConfig(), overrides=overrides)


def test_the_released_layout_is_read_back_severity_by_severity(tmp_path):
    labels = _released(tmp_path / "c")
    cfg = _cifar_c_config(tmp_path / "c")
    check_corruptions(cfg, 30)
    batches = list(array_corruptions(cfg, chunk=16))
    keys = [k for k, _ in batches]
    assert sorted(set(keys)) == [(n, s) for n in ("contrast", "fog") for s in range(1, 6)]
    fog3 = [b for k, b in batches if k == ("fog", 3)]
    images = np.concatenate([b["image"] for b in fog3])
    assert np.array_equal(images, np.load(tmp_path / "c" / "fog.npy")[60:90])  # the third fifth
    assert np.array_equal(np.concatenate([b["label"] for b in fog3]), labels[60:90])
    assert np.array_equal(np.concatenate([b["index"] for b in fog3]), np.arange(30))  # positions in the test split
    limited = [b for k, b in array_corruptions(_cifar_c_config(tmp_path / "c", **{"eval.test_limit": 10}))
               if k == ("contrast", 1)]
    kept = np.concatenate([b["label"] for b in limited])
    assert len(kept) == 10 and sorted(kept.tolist()) == list(range(10))  # stratified: one per class


def test_a_released_layout_that_lacks_a_type_or_has_wrong_shapes_is_refused(tmp_path):
    _released(tmp_path / "c", names=("contrast",))
    with pytest.raises(EvaluationError, match=r"lacks 1 of 2 files \(e.g. fog.npy"):
        check_corruptions(_cifar_c_config(tmp_path / "c"), 30)
    np.save(tmp_path / "c" / "fog.npy", np.zeros((10, 32, 32, 3), np.uint8))
    with pytest.raises(EvaluationError, match=r"fog.npy is uint8 \(10, 32, 32, 3\); expected uint8 \[150, H, W, 3\]"):
        check_corruptions(_cifar_c_config(tmp_path / "c"), 30)
    np.save(tmp_path / "c" / "labels.npy", np.zeros(7, np.uint8))
    with pytest.raises(EvaluationError, match="5 severities of the test split in order"):
        check_corruptions(_cifar_c_config(tmp_path / "c"), 30)


def test_a_run_scores_the_released_files_with_cifars_convention(tmp_path):
    from core.data.arrays import ArraySplit
    from core.eval.stage import evaluate
    from core.losses import head_of
    from core.models import build_model

    _released(tmp_path / "c", n=40)
    cfg = _cifar_c_config(tmp_path / "c", **{"model.width": 4, "eval.probe_epochs": 2, "eval.few_shot_episodes": 0})
    rng = np.random.default_rng(0)
    split = ArraySplit(rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), np.arange(60) % 10, np.arange(60))
    torch.manual_seed(0)
    result = evaluate(build_model(cfg, 10, head_of(cfg)), cfg, split, split, 10, torch.device("cpu"))
    s = result.scalars
    assert len(result.corruptions) == 10 and {c.severity for c in result.corruptions} == {1, 2, 3, 4, 5}
    assert s["corruption_error"] == pytest.approx(100 - s["corruption_acc"])  # mean over the sets, unnormalised
    assert "imagenet_c_mce" not in s and all(f"corruption_acc_s{k}" in s for k in range(1, 6))
    assert "released files in" in s["corruption_protocol"] and "10 sets (2 types x 5 severities)" in \
        s["corruption_protocol"] and "of 40 images each" in s["corruption_protocol"]
