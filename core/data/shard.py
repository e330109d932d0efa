"""Write parquet shards (original encoded image bytes + label + stable index + path) from an
ImageFolder or CIFAR folder, to a local path or an object-store URI (``s3://``, ``gs://``, ``file://``
through ``pyarrow.fs``).

    python -m core.data.shard SRC DEST --shard-size N [--format imagefolder|cifar10|cifar100] [--workers W]

- **Class-mixed shards.** Records are written in a seeded random order (``--seed``), so every shard
  holds many classes even though ImageFolder paths sort by class; readers shuffle the file order
  per epoch on top.
- **Parallel.** ``--workers W`` > 1 writes shards in Ray tasks (W at a time), on a private local Ray
  instance, or on the cluster ``--address`` (default ``$RAY_ADDRESS``: set inside a Ray Job) names: its
  tasks read SRC and write DEST on whichever node they run, so on a cluster of several nodes both must be
  in object storage or on a mount every node has (a local path is refused before any shard is written);
  ``--address local`` writes from this machine alone.
- **Resumable.** Each shard is written under a temporary name and renamed, then recorded in
  ``DEST/manifest.json`` (rows, sha256, class counts; ``core.data.manifest``; saved every
  ``MANIFEST_EVERY_S`` seconds or more and at the end). The manifest also records the source listing
  (a digest of every file's path, size and mtime, or of the arrays), the shard size, the seed and the
  classes: a rerun with the same build skips the shards already written; a rerun that finds a
  different one rebuilds every shard and removes stale ones (never a mixture of two builds).

An ImageFolder ``SRC`` with ``train/`` and ``val/`` sub-directories gives ``DEST/train`` and
``DEST/val``, which ``data.source=parquet data.root=DEST`` reads; ``val/`` is labelled with the
classes of ``train/`` (a class missing from ``val/`` shifts no label).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm import tqdm

from core.data.arrays import load_cifar
from core.data.folders import list_image_folder, stable_index
from core.data.manifest import Manifest, ShardEntry, read_manifest, write_manifest
from core.errors import DataError, cli_main
from core.fs import filesystem, is_uri, join, list_dir, read_bytes, write_bytes_atomic
from core.io import DirectoryLock

# The manifest lists every shard (with its class counts), so writing it after every shard made a build
# quadratic: at ImageNet's 1,282 shards of 1,000, gigabytes of JSON. It is written this often, or less when one
# write takes over a tenth of that (20 MB of JSON at ImageNet): a kill loses that much of the build at most.
MANIFEST_EVERY_S = 10.0
SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("index", pa.int64()), ("path", pa.string())])


@dataclass(frozen=True)
class ShardSource:
    """What one split's build writes: its records, how one record is encoded, its identity."""

    records: list
    encode: Callable  # record -> (bytes, label, index, path)
    classes: list[str]
    desc: str
    digest: str


def folder_source(root: str, classes: list[str] | None = None) -> ShardSource:
    """An ImageFolder split (labelled by ``classes``, default its own folders) and a digest of its
    listing (path, size, mtime, label)."""
    listing = list_image_folder(root, classes)
    _refuse_links_out(root, listing.paths)
    h = hashlib.sha256()
    for p, label in zip(listing.paths, listing.labels.tolist()):
        st = os.stat(p)
        h.update(f"{os.path.relpath(p, root)}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
    h.update("\0".join(listing.classes).encode())
    return ShardSource(list(zip(listing.paths, listing.labels.tolist())), partial(_encode_file, root=root),
                       listing.classes, f"shards {os.path.basename(root) or root}", h.hexdigest())


def _refuse_links_out(root: str, paths: list[str]) -> None:
    """A file that resolves outside SRC (``train/cls/passwd.jpg -> /etc/passwd``) would put bytes from elsewhere
    on this machine into shards bound for a bucket: refused, naming it and its target."""
    inside = os.path.join(os.path.realpath(root), "")
    for path in paths:
        real = os.path.realpath(path)
        if not real.startswith(inside):
            raise DataError(f"{path!r} is a symbolic link to {real!r}, outside SRC {root!r}; refusing to store it "
                            f"in a shard (copy the file into SRC, or remove the link)")


def _encode_file(record: tuple[str, int], root: str) -> tuple[bytes, int, int, str]:
    """A file's bytes, once they are known to decode as an image (never bytes that are not one)."""
    from PIL import Image, UnidentifiedImageError

    path, label = record
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale, enough to know it decodes
            im.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path!r} does not decode as an image ({type(exc).__name__}: {str(exc)[:80]}); remove or "
                        f"replace it, then rerun (shards written so far are kept)") from None
    rel = os.path.relpath(path, root)
    return data, label, stable_index(rel), rel


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _encode_array(record: tuple) -> tuple[bytes, int, int, str]:
    image, label, index, path = record
    return _png_bytes(image), label, index, path


def _shard_bytes(rows: list[tuple[bytes, int, int, str]]) -> bytes:
    table = pa.table({"image": [r[0] for r in rows], "label": [r[1] for r in rows],
                      "index": [r[2] for r in rows], "path": [r[3] for r in rows]}, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_one_shard(chunk: list, encode: Callable, dest: str, name: str) -> ShardEntry:
    """Encode ``chunk`` into one parquet shard at ``dest/name`` (atomically); its manifest entry."""
    fs, base = filesystem(dest)
    rows = [encode(r) for r in chunk]
    data = _shard_bytes(rows)
    write_bytes_atomic(fs, join(base, name), data)
    return ShardEntry(len(rows), hashlib.sha256(data).hexdigest(), dict(Counter(str(r[1]) for r in rows)))


def write_shards(source: ShardSource, dest: str, shard_size: int, seed: int = 0, workers: int = 1) -> Manifest:
    """Write ``source``'s records in a seeded random order, ``shard_size`` per shard; resumes a build
    with the same source, size, seed and classes."""
    if shard_size < 1:
        raise DataError(f"--shard-size must be >= 1, got {shard_size}")
    if not source.records:
        raise DataError(f"{source.desc}: nothing to write")
    fs, base = filesystem(dest)
    fs.create_dir(base, recursive=True)
    manifest = Manifest(source.digest, shard_size, seed, len(source.records), source.classes)
    old = read_manifest(fs, base)
    if old and not manifest.same_build(old):
        changed = [k for k in Manifest.build_keys() if getattr(old, k) != getattr(manifest, k)]
        print(f"{source.desc}: {', '.join(changed)} changed since the last build; rebuilding every shard", flush=True)
    order = np.random.default_rng(seed).permutation(len(source.records))
    records = [source.records[i] for i in order]
    chunks = [records[s:s + shard_size] for s in range(0, len(records), shard_size)]
    names = [f"shard-{s:05d}.parquet" for s in range(len(chunks))]
    _remove_stale(fs, dest, keep=set(names) if manifest.same_build(old) else set())
    if manifest.same_build(old):
        manifest.shards = {n: e for n, e in old.shards.items()
                           if n in names and _intact(fs, base, n, e, len(chunks[names.index(n)]))}
    todo = [s for s, name in enumerate(names) if name not in manifest.shards]
    bar = tqdm(total=len(names), initial=len(names) - len(todo), desc=source.desc, unit="shard")
    saved, every = time.monotonic(), MANIFEST_EVERY_S
    for s, entry in _written(todo, chunks, source.encode, dest, names, workers):
        manifest.shards[names[s]] = entry
        if time.monotonic() - saved >= every:  # progress survives a kill
            t0 = time.monotonic()
            write_manifest(fs, base, manifest)
            saved = time.monotonic()
            every = max(MANIFEST_EVERY_S, 10 * (saved - t0))  # the manifest takes at most a tenth of the build
        bar.update()
    bar.close()
    manifest = manifest.finished()
    write_manifest(fs, base, manifest)
    return manifest


def _intact(fs: pafs.FileSystem, base: str, name: str, entry: ShardEntry, rows: int) -> bool:
    data = read_bytes(fs, join(base, name))
    return entry.rows == rows and data is not None and hashlib.sha256(data).hexdigest() == entry.sha256


def _written(todo: list[int], chunks: list, encode: Callable, dest: str, names: list[str], workers: int):
    """(shard number, entry) as each shard of ``todo`` is written: here, or ``workers`` Ray tasks at a time."""
    if workers <= 1 or len(todo) <= 1:
        for s in todo:
            yield s, write_one_shard(chunks[s], encode, dest, names[s])
        return
    import ray

    from core.runtime import start_ray

    if not ray.is_initialized():
        start_ray(num_cpus=workers, log_to_driver=False)
    task = ray.remote(num_cpus=1)(write_one_shard)
    pending: dict = {}
    queue = list(todo)
    while queue or pending:
        while queue and len(pending) < workers * 2:
            s = queue.pop(0)
            pending[task.remote(chunks[s], encode, dest, names[s])] = s
        ready, _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(ready[0]), ray.get(ready[0])


def _remove_stale(fs: pafs.FileSystem, dest: str, keep: set[str]) -> None:
    """Delete shard files of an earlier build that this build does not keep."""
    for info in list_dir(dest, "shard directory"):
        name = os.path.basename(info.path)
        if info.is_file and name.startswith("shard-") and name.endswith(".parquet") and name not in keep:
            fs.delete_file(info.path)


def _array_sources(src: str, fmt: str) -> dict[str, ShardSource]:
    """CIFAR's train and test arrays as shard sources (``train`` and ``val``)."""
    arrays = load_cifar(src, fmt, 32)
    out = {}
    for split, name in (("train", "train"), ("test", "val")):
        images, labels, index = arrays[split]
        records = [(images[i], int(labels[i]), int(index[i]), f"{fmt}/{split}/{int(index[i])}")
                   for i in range(len(labels))]
        classes = [str(c) for c in range(10 if fmt == "cifar10" else 100)]
        out[name] = ShardSource(records, _encode_array, classes, f"shards {fmt} {split}",
                                hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest())
    return out


def shard_dataset(src: str, dest: str, shard_size: int, fmt: str = "imagefolder", seed: int = 0,
                  workers: int = 1) -> dict[str, Manifest]:
    """Shard every split of ``src`` into ``dest/<split>``; returns the manifests."""
    if fmt == "imagefolder":
        splits = [s for s in ("train", "val", "test") if os.path.isdir(os.path.join(src, s))]
        sources: dict[str, ShardSource] = {}
        for split in splits or [""]:
            classes = sources["train"].classes if split != "train" and "train" in sources else None
            sources[split or "all"] = folder_source(os.path.join(src, split) if split else src, classes)
    elif fmt in ("cifar10", "cifar100"):
        sources = _array_sources(src, fmt)
    else:
        raise DataError(f"--format must be imagefolder, cifar10 or cifar100, got {fmt!r}")
    with _dest_lock(dest):
        return {split: write_shards(s, dest if split == "all" else join(dest, split), shard_size, seed, workers)
                for split, s in sources.items()}


@contextlib.contextmanager
def _dest_lock(dest: str):
    """A local DEST is locked for the build (two builds into one DEST left a mixture of both): a second one
    is refused, naming the holder. Object storage has no lock: one build per DEST there is the user's to keep."""
    if is_uri(dest):
        yield
        return
    os.makedirs(dest, exist_ok=True)
    with DirectoryLock(dest, "shard destination"):
        yield


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dest", help="local path or URI (s3://bucket/prefix, gs://..., file:///...)")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--format", default="imagefolder", choices=["imagefolder", "cifar10", "cifar100"])
    p.add_argument("--seed", type=int, default=0, help="seed of the random record order")
    p.add_argument("--workers", type=int, default=1, help="shards written at once (Ray tasks when > 1)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="the Ray cluster whose nodes write the shards (default $RAY_ADDRESS; 'local': this machine)")
    args = p.parse_args(argv)
    return cli_main(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    if args.workers > 1 and args.address and args.address != "local":
        from core.runtime import require_shared, start_ray

        start_ray(args.address, log_to_driver=False)
        require_shared({"SRC": args.src, "DEST": args.dest}, "the shard tasks read SRC and write DEST on any node; "
                       "or pass --address local to write from this machine alone")
    t0 = time.perf_counter()
    manifests = shard_dataset(args.src, args.dest, args.shard_size, args.format, args.seed, args.workers)
    for split, m in manifests.items():
        print(f"{split}: {m.total} images in {len(m.shards)} shards -> "
              f"{join(args.dest, split) if split != 'all' else args.dest} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
