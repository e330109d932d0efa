"""Corrupted evaluation splits made image by image (ImageNet-C, CIFAR-10-C), built once and cached.

A corrupted split depends on the images only, never on the model, so it is computed once per batch of
evaluation images and cached on disk (``core.io.cache_dir()/<suite>/<key>.npz``: write-then-rename, a
file lock so concurrent trials on one node compute it once), and, on a cluster, kept in the study's
storage for every node (``shared``). ``parallel``: one Ray task per (corruption, severity), no more in
flight than the cluster has CPUs.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from core.fs import filesystem, join, read_bytes, write_bytes_atomic
from core.io import cache_dir, write_atomic

# (images uint8 [N, H, W, C], corruption, severity, seed, stable ids) -> corrupted images, same shape
CorruptFn = Callable[[np.ndarray, str, int, int, "np.ndarray | None"], np.ndarray]
Sets = dict[tuple[str, int], np.ndarray]


def image_seed(seed: int, name: str, severity: int, position: int) -> int:
    """The seed of one image's corruption: a hash of the seed, the type, the severity and its sample id."""
    return zlib.crc32(f"{seed}/{name}/{severity}/{position}".encode()) & 0x7FFFFFFF


def corrupted_split(images: np.ndarray, names: tuple[str, ...], corrupt: CorruptFn, suite: str, seed: int = 0,
                    cache: Path | None = None, bar=None, parallel: bool = False, index: np.ndarray | None = None,
                    shared: str | None = None) -> Sets:
    """Every (corruption, severity) version of a batch of evaluation images (``index``: their sample ids),
    from the disk cache ``cache`` (default ``cache_dir()``) when there. ``bar``: a
    :class:`core.progress.Progress` advanced by one per set made."""
    ids = b"" if index is None else np.asarray(index, np.int64).tobytes()
    key = hashlib.sha1(images.tobytes() + ids + repr((images.shape, names, seed)).encode()).hexdigest()[:16]
    path = (cache or cache_dir()) / suite / f"{key}.npz"
    pairs = [(n, s) for n in names for s in range(1, 6)]
    if path.exists() and (cached := _read_cache(path, names, images.shape)) is not None:
        return _counted(cached, bar)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be writing it: wait, then read
        if (path.exists() or _fetch(shared, suite, key, path)) and \
                (cached := _read_cache(path, names, images.shape)) is not None:
            return _counted(cached, bar)
        out = _compute(images, pairs, corrupt, seed, bar, parallel, index)
        write_atomic(path, lambda tmp: np.savez(tmp, **{f"{n}_{s}": v for (n, s), v in out.items()}))
        _publish(shared, suite, key, path)
        return out


def _counted(sets: Sets, bar) -> Sets:
    if bar is not None:
        bar.update(len(sets))
    return sets


def _remote(shared: str, suite: str, key: str) -> tuple:
    fs, base = filesystem(shared)
    return fs, join(base, suite, f"{key}.npz")


def _fetch(shared: str | None, suite: str, key: str, path: Path) -> bool:
    """The split ``key`` copied from ``shared`` to ``path``; whether it was there."""
    if not shared:
        return False
    fs, remote = _remote(shared, suite, key)
    t0 = time.perf_counter()
    print(f"fetching the corrupted split {key} from {join(shared, suite)} (built once by the study's driver)",
          flush=True)
    data = read_bytes(fs, remote)
    if data is not None:
        write_atomic(path, lambda tmp: tmp.write_bytes(data))
        print(f"fetched the corrupted split {key}: {len(data) / 2**20:.0f} MiB in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return data is not None


def _publish(shared: str | None, suite: str, key: str, path: Path) -> None:
    if shared:
        fs, remote = _remote(shared, suite, key)
        fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
        write_bytes_atomic(fs, remote, path.read_bytes())


def _read_cache(path: Path, names: tuple[str, ...], shape: tuple[int, ...]) -> Sets | None:
    """A cached corrupted split, or None (and the file removed, to be made again) when it is damaged:
    truncated by a kill or a full disk, missing a set, or holding sets of another shape than the clean
    batch ``shape`` (a file written by something else under this name)."""
    try:
        with np.load(path) as z:
            sets = {(n, s): z[f"{n}_{s}"] for n in names for s in range(1, 6)}
        odd = next((f"{n}_{s} holds {v.shape}" for (n, s), v in sets.items() if v.shape != tuple(shape)), None)
        if odd:
            raise ValueError(f"{odd}, not the batch's {tuple(shape)}")
        return sets
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as exc:
        warnings.warn(f"damaged corruption cache {str(path)!r} ({type(exc).__name__}: {str(exc)[:120]}); computing it "
                      f"again")
        path.unlink(missing_ok=True)
        return None


def _compute(images: np.ndarray, pairs: list[tuple[str, int]], corrupt: CorruptFn, seed: int, bar,
             parallel: bool, index: np.ndarray | None = None) -> Sets:
    out: Sets = {}
    if parallel:
        import ray

        if not ray.is_initialized():  # a run that needs no Ray otherwise (see prepare_corruptions)
            from core.runtime import start_ray

            start_ray(log_to_driver=False)
        task = ray.remote(num_cpus=1)(corrupt)
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
            _counted({0: 0}, bar)
    else:
        for n, s in pairs:
            out[(n, s)] = corrupt(images, n, s, seed, index)
            _counted({0: 0}, bar)
    return {k: out[k] for k in pairs}


def cached_suite(suite: str, corrupt: CorruptFn):
    """A suite's ``make`` (``core.eval.robustness.MakeCorrupted``) from its per-image corruption function:
    the cached split of each batch, seed 0 (every run of a study is scored on the same corrupted images)."""
    def make(images: np.ndarray, names: tuple[str, ...], index: np.ndarray, parallel: bool = False, bar=None,
             shared: str | None = None) -> Sets:
        return corrupted_split(images, names, corrupt, suite, seed=0, bar=bar, parallel=parallel, index=index,
                               shared=shared)
    return make
