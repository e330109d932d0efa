from pathlib import Path

import numpy as np
import pytest

from core.data.sources import digits_arrays
from core.eval.corruption_cache import corrupted_split
from core.eval.imagenet_c import IMAGENET_C, corrupt_imagenet_c


@pytest.fixture(scope="module")
def digits16():
    return digits_arrays(16)["test"][0][:6]  # real 16 px images, 3 channels


def test_all_fifteen_types_run_on_small_images(digits16):
    assert len(IMAGENET_C) == 15
    for name in IMAGENET_C:
        for severity in (1, 5):
            out = corrupt_imagenet_c(digits16, name, severity)
            assert out.shape == digits16.shape and out.dtype == np.uint8, name


def test_corruption_grows_with_severity(digits16):
    for name in ("gaussian_noise", "defocus_blur", "contrast", "pixelate"):
        dist = [np.abs(corrupt_imagenet_c(digits16, name, s).astype(float) - digits16).mean() for s in range(1, 6)]
        assert dist[4] > dist[0] > 0, (name, dist)


def test_seeded_per_image_whatever_the_batching(digits16):
    whole = corrupt_imagenet_c(digits16, "shot_noise", 3, seed=1)
    np.random.seed(123)
    assert np.array_equal(whole, corrupt_imagenet_c(digits16, "shot_noise", 3, seed=1))
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)  # caller's RNG untouched
    assert not np.array_equal(whole, corrupt_imagenet_c(digits16, "shot_noise", 3, seed=2))
    assert np.array_equal(whole[:3], corrupt_imagenet_c(digits16[:3], "shot_noise", 3, seed=1))


def test_single_channel_images(digits16):
    gray = digits16[..., :1]
    out = corrupt_imagenet_c(gray, "fog", 2)
    assert out.shape == gray.shape and out.dtype == np.uint8


def test_bad_input_fails_clearly(digits16):
    with pytest.raises(ValueError, match="unknown ImageNet-C corruption 'rain'"):
        corrupt_imagenet_c(digits16, "rain", 1)
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        corrupt_imagenet_c(digits16, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt_imagenet_c(digits16.astype(np.float32), "fog", 1)


def split(images, names, cache, corrupt=corrupt_imagenet_c, **kwargs):
    return corrupted_split(images, names, corrupt, "imagenet_c", cache=cache, **kwargs)


def test_split_is_cached_on_disk(digits16, tmp_path):
    first = split(digits16, ("contrast", "fog"), tmp_path)
    assert len(first) == 10 and len(list((tmp_path / "imagenet_c").glob("*.npz"))) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed despite the cache")

    again = split(digits16, ("contrast", "fog"), tmp_path, must_not_run)
    assert all(np.array_equal(first[k], again[k]) for k in first)


def test_a_truncated_cache_file_is_computed_again(digits16, tmp_path):
    first = split(digits16, ("contrast",), tmp_path, seed=0)
    (cached,) = (tmp_path / "imagenet_c").glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:100])  # a kill or a full disk mid-write
    with pytest.warns(UserWarning, match="damaged corruption cache"):
        again = split(digits16, ("contrast",), tmp_path, seed=0)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert split(digits16, ("contrast",), tmp_path, seed=0).keys() == first.keys()


def test_imagenet_size_test_sets_are_not_corrupted_image_by_image():
    from core.config import RunConfig
    from core.errors import EvaluationError
    from core.eval.corrupted import check_corruptions
    from core.eval.imagenet_c import GENERATED_LIMIT

    recipe = RunConfig.from_yaml(Path(__file__).resolve().parents[2] / "configs" / "imagenet_resnet50.yaml")
    assert recipe.eval.robustness and recipe.eval.corruption_root  # the recipe reads the released ImageNet-C
    generated = recipe.with_overrides(["eval.corruption_root=null"])
    with pytest.raises(EvaluationError, match=r"50,000 test images .*point eval\.corruption_root at the released"):
        check_corruptions(generated, 50_000)
    check_corruptions(generated, GENERATED_LIMIT)  # up to the limit they are generated
    check_corruptions(generated.with_overrides(["eval.corruption_suite=fast", "eval.reference_errors=null"]), 50_000)  # the fast suite is cheap


def test_a_parallel_build_queues_no_more_tasks_than_the_cluster_has_cpus(ray_session, digits16, monkeypatch,
                                                                           tmp_path):
    """On an autoscaled cluster every queued task is demand: 10 queued CPU tasks brought up 8-GPU nodes (the
    local cluster's gpu_8x_a100) for CPU work. The build keeps at most the live CPU count in flight."""
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})  # a cluster with one CPU right now
    in_flight = []
    wait = ray.wait
    monkeypatch.setattr(ray, "wait", lambda refs, **kw: (in_flight.append(len(refs)), wait(refs, **kw))[1])
    built = split(digits16, ("contrast", "fog"), tmp_path / "parallel", parallel=True)
    assert in_flight == [1] * 10  # one at a time, every one of the 10 sets
    serial = split(digits16, ("contrast", "fog"), tmp_path / "serial")
    assert built.keys() == serial.keys() and all(np.array_equal(built[k], serial[k]) for k in built)


def test_a_cached_split_of_the_wrong_size_is_named_and_built_again(digits16, tmp_path):
    """A cache file with the right keys but another number of images failed the trial with a tensor-size
    traceback; it is named in a warning and made again."""
    first = split(digits16, ("contrast",), tmp_path)
    (cached,) = (tmp_path / "imagenet_c").glob("*.npz")
    np.savez(cached, **{f"contrast_{s}": first[("contrast", s)][:3] for s in range(1, 6)})
    with pytest.warns(UserWarning, match=r"damaged corruption cache .*contrast_1 holds \(3, 16, 16, 3\), not the "
                                         r"batch's \(\d+, 16, 16, 3\)\); computing it again"):
        again = split(digits16, ("contrast",), tmp_path)
    assert all(np.array_equal(first[k], again[k]) for k in first)
