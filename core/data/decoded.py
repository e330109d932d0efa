"""Small image folders held in memory: decoded once, cached on disk as uint8 arrays.

A folder of small images (CIFAR's 60,000 32 px JPEGs: 184 MB of pixels) is cheaper to hold decoded
than to decode in every epoch: each epoch's crops, flips and colour are then batched tensor ops on the
arrays (``core.data.augment``), like any array source. The arrays are cached under
``core.io.cache_dir()/decoded``, keyed by the folder's listing (relative paths, sizes, modification
times), so every run and every trial of a study decodes the folder at most once, and maps the same file
(one copy of the pixels in the page cache, however many trial processes read it).
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from core.data.folders import FolderListing
from core.errors import DataError
from core.io import cache_dir, write_atomic

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images uint8 [N, H, W, 3], labels [N], index [N]
CHUNK = 1024  # images per decoding task


def listing_key(listing: FolderListing) -> str:
    """What identifies a folder's decoded pixels: its files' relative paths, sizes and modification times."""
    digest = hashlib.sha1(os.path.abspath(listing.root).encode())
    prefix = len(os.path.join(listing.root, ""))
    for path in listing.paths:
        st = os.stat(path)
        digest.update(f"{path[prefix:]}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    digest.update(np.asarray(listing.labels, np.int64).tobytes())
    return digest.hexdigest()[:20]


def _decode_into(out: np.ndarray, paths: list[str], start: int) -> str | None:
    """Decode ``paths`` into ``out[start:]`` (RGB); the first path whose size differs from ``out``'s, if any."""
    from PIL import Image, UnidentifiedImageError

    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                if im.size != (out.shape[2], out.shape[1]):
                    return f"{path!r} is {im.size[0]}x{im.size[1]}"
                out[start + i] = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot decode {path!r} ({type(exc).__name__}: {exc})") from None
    return None


def decode_folder(listing: FolderListing, size: tuple[int, int], what: str) -> Arrays:
    """Every image of a local ImageFolder split as uint8 arrays of ``size`` (H, W); an image of another size
    or one that does not decode is refused, naming it. Decoded with a thread per core (PIL releases the GIL)."""
    n = len(listing.paths)
    images = np.empty((n, *size, 3), np.uint8)
    starts = range(0, n, CHUNK)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        odd = [r for r in pool.map(lambda s: _decode_into(images, listing.paths[s: s + CHUNK], s), starts) if r]
    if odd:
        raise DataError(f"{what}: every image must be {size[1]}x{size[0]}; {odd[0]}")
    return images, np.asarray(listing.labels, np.int64), np.asarray(listing.index, np.int64)


def cached_folder(listing: FolderListing, size: tuple[int, int], what: str, verbose: bool = True) -> Arrays:
    """:func:`decode_folder`, read from the disk cache when this listing was decoded before (the images
    memory-mapped, read-only), written there otherwise."""
    folder = cache_dir() / "decoded" / f"{listing_key(listing)}-{size[0]}x{size[1]}"
    files = {name: folder / f"{name}.npy" for name in ("images", "labels", "index")}
    if all(f.exists() for f in files.values()):
        try:
            return (np.load(files["images"], mmap_mode="r"), np.load(files["labels"]), np.load(files["index"]))
        except (OSError, ValueError):  # a damaged cache entry is made again
            pass
    t0 = time.perf_counter()
    arrays = decode_folder(listing, size, what)
    for (name, path), array in zip(files.items(), arrays):
        write_atomic(path, lambda tmp, a=array: np.save(tmp, a))
    if verbose:
        print(f"{what}: decoded {len(arrays[1]):,} images once in {time.perf_counter() - t0:.1f} s "
              f"(cached in {folder})", flush=True)
    return np.load(files["images"], mmap_mode="r"), arrays[1], arrays[2]

