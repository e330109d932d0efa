"""The 15 ImageNet-C corruption types (Hendrycks & Dietterich 2019) at 5 severities, through the
maintained ``imagecorruptions-imaug`` package (the original ``imagecorruptions`` 1.1.2 breaks on
NumPy 2 and scikit-image >= 0.19: ``np.float_``, ``multichannel``).

The library works on one image of at least 32 px at a time with NumPy's global RNG. Here every
image gets its own seed (a hash of seed, corruption, severity and position), so a corrupted set
is the same whatever order or batching produced it; images smaller than 32 px are upscaled
(bilinear) to 32, corrupted, and area-downsampled back. A corrupted evaluation split depends on
the images only, never on the model, so it is computed once and cached on disk (write-then-rename,
a file lock so concurrent trials on one node compute it once).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.eval.robustness import REFERENCE_ERRORS, CorruptionSuite
from core.fs import filesystem, join, read_bytes, write_bytes_atomic
from core.io import write_atomic
from core.registry import CORRUPTION_SUITES

IMAGENET_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
              "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
              "pixelate", "jpeg_compression")
GENERATED_LIMIT = 10_000  # test images above which the types must come from eval.corruption_root (~75 ms per image)
MIN_SIZE = 32  # the library refuses smaller images
CACHE_DIR = os.environ.get("CONTRASTIVE_CACHE", os.path.expanduser("~/.cache/contrastive-platform"))


def _image_seed(seed: int, name: str, severity: int, position: int) -> int:
    return zlib.crc32(f"{seed}/{name}/{severity}/{position}".encode()) & 0x7FFFFFFF


def _resize(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    # a Ray task's argument is a read-only view of the object store: torch warns on wrapping one
    x = torch.from_numpy(np.require(images, requirements="W")).permute(0, 3, 1, 2).float()
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def corrupt_imagenet_c(images: np.ndarray, name: str, severity: int, seed: int = 0,
                       index: np.ndarray | None = None) -> np.ndarray:
    """Corrupt uint8 ``[N, H, W, C]`` images (C = 1 or 3); returns the same shape and dtype. Image i's
    randomness is seeded by ``index[i]`` (its stable sample id; by default its position), so a
    corrupted image does not depend on the batch it came in."""
    from imagecorruptions import corrupt

    if name not in IMAGENET_C:
        raise ValueError(f"unknown ImageNet-C corruption {name!r} (known: {list(IMAGENET_C)})")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 [N, H, W, 1|3] images, got {images.dtype} {tuple(images.shape)}")
    n, h, w, c = images.shape
    small = min(h, w) < MIN_SIZE
    work = _resize(images, MIN_SIZE, "bilinear") if small else images
    if c == 1:
        work = np.repeat(work, 3, axis=-1)
    out = np.empty_like(work)
    takes_seed = name in ("glass_blur", "impulse_noise")
    state = np.random.get_state()
    try:
        for i in range(n):
            s = _image_seed(seed, name, severity, i if index is None else int(index[i]))
            np.random.seed(s)
            out[i] = corrupt(work[i], corruption_name=name, severity=severity, **({"seed": s} if takes_seed else {}))
    finally:
        np.random.set_state(state)  # leave the caller's global RNG as it was
    if c == 1:
        out = np.round(out.astype(np.float32).mean(-1, keepdims=True)).astype(np.uint8)
    return _resize(out, h, "area") if small else out


def corrupted_split(images: np.ndarray, names: tuple[str, ...], seed: int = 0, cache_dir: str | None = CACHE_DIR,
                    progress: bool = False, parallel: bool = False, index: np.ndarray | None = None,
                    shared: str | None = None) -> dict[tuple[str, int], np.ndarray]:
    """Every (corruption, severity) version of a batch of evaluation images (``index``: their sample
    ids), from the disk cache when there. ``parallel``: one Ray task per (corruption, severity)
    (needs ``ray.init``), e.g. in a study's driver before the trials start. ``shared``: a path or URI
    every node reaches (a study's storage on a cluster): a split missing here is fetched from it, and one
    computed here is put there, so a cluster builds each split once and no node reads another's disk."""
    ids = b"" if index is None else np.asarray(index, np.int64).tobytes()
    key = hashlib.sha1(images.tobytes() + ids + repr((images.shape, names, seed)).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "imagenet_c" / f"{key}.npz" if cache_dir else None
    if path and path.exists() and (cached := _read_cache(path, names)) is not None:
        return cached
    lock = None
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "w")
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be writing it: wait, then read
        if (path.exists() or _fetch(shared, key, path)) and (cached := _read_cache(path, names)) is not None:
            lock.close()
            return cached
    try:
        out = _compute(images, [(n, s) for n in names for s in range(1, 6)], seed, progress, parallel, index)
        if path:
            write_atomic(path, lambda tmp: np.savez(tmp, **{f"{n}_{s}": v for (n, s), v in out.items()}))
            _publish(shared, key, path)
        return out
    finally:
        if lock:
            lock.close()


def _remote(shared: str, key: str) -> tuple:
    fs, base = filesystem(shared)
    return fs, join(base, "imagenet_c", f"{key}.npz")


def _fetch(shared: str | None, key: str, path: Path) -> bool:
    """The split ``key`` copied from ``shared`` to ``path``; whether it was there."""
    if not shared:
        return False
    fs, remote = _remote(shared, key)
    data = read_bytes(fs, remote)
    if data is not None:
        write_atomic(path, lambda tmp: tmp.write_bytes(data))
    return data is not None


def _publish(shared: str | None, key: str, path: Path) -> None:
    if shared:
        fs, remote = _remote(shared, key)
        fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
        write_bytes_atomic(fs, remote, path.read_bytes())


def _read_cache(path: Path, names: tuple[str, ...]) -> dict[tuple[str, int], np.ndarray] | None:
    """A cached corrupted split, or None (and the file removed, to be made again) when it is damaged:
    truncated by a kill or a full disk, or missing a set."""
    try:
        with np.load(path) as z:
            return {(n, s): z[f"{n}_{s}"] for n in names for s in range(1, 6)}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as exc:
        warnings.warn(f"damaged corruption cache {str(path)!r} ({type(exc).__name__}); computing it again")
        path.unlink(missing_ok=True)
        return None


def _compute(images: np.ndarray, pairs: list[tuple[str, int]], seed: int, progress: bool,
             parallel: bool, index: np.ndarray | None = None) -> dict[tuple[str, int], np.ndarray]:
    from tqdm import tqdm

    bar = tqdm(total=len(pairs), desc=f"ImageNet-C on {len(images)} images", unit="set", disable=not progress)
    out: dict[tuple[str, int], np.ndarray] = {}
    if parallel:
        import ray

        task = ray.remote(num_cpus=1)(corrupt_imagenet_c)
        ref = ray.put(images)
        todo, pending = list(pairs), {}
        while todo or pending:
            # no more tasks queued than the CPUs the cluster has now (one when it has none): a queue of 75 CPU
            # tasks made the autoscaler add every node type it could, 8-GPU nodes included, for CPU work
            limit = max(1, int(ray.cluster_resources().get("CPU", 0)))
            while todo and len(pending) < limit:
                n, s = todo.pop(0)
                pending[task.remote(ref, n, s, seed, index)] = (n, s)
            done, _ = ray.wait(list(pending), num_returns=1)
            out[pending.pop(done[0])] = ray.get(done[0])
            bar.update()
    else:
        for n, s in pairs:
            out[(n, s)] = corrupt_imagenet_c(images, n, s, seed, index)
            bar.update()
    bar.close()
    return {k: out[k] for k in pairs}


def _make(images: np.ndarray, names: tuple[str, ...], index: np.ndarray, parallel: bool = False,
          progress: bool = False, shared: str | None = None) -> dict[tuple[str, int], np.ndarray]:
    return corrupted_split(images, names, seed=0, index=index, parallel=parallel, progress=progress, shared=shared)


CORRUPTION_SUITES.register("imagenet_c", CorruptionSuite(
    "imagenet_c", IMAGENET_C, _make, references=tuple(REFERENCE_ERRORS), cached=True, generated_limit=GENERATED_LIMIT))
