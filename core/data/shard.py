"""Write parquet shards (original encoded image bytes + label + stable index + path) from an
ImageFolder or CIFAR folder, to a local path or an object-store URI (``s3://``, ``gs://``, ``file://``
through ``pyarrow.fs``).

    python -m core.data.shard SRC DEST --shard-size N [--format imagefolder|cifar10|cifar100] [--workers W]

- **Class-mixed shards.** Records are written in a seeded random order (``--seed``), so every shard
  holds many classes even though ImageFolder paths sort by class; readers shuffle the file order
  per epoch on top.
- **Parallel.** ``--workers W`` > 1 writes shards in Ray tasks (W at a time).
- **Resumable.** Each shard is written under a temporary name and renamed, then recorded in
  ``DEST/manifest.json`` (rows, sha256, class counts). The manifest also records the source listing
  (a digest of every file's path, size and mtime, or of the arrays), the shard size and the seed: a
  rerun with the same three skips the shards already written; a rerun that finds a different source,
  size or seed rebuilds every shard and removes stale ones (never a mixture of two builds).

An ImageFolder ``SRC`` with ``train/`` and ``val/`` sub-directories gives ``DEST/train`` and
``DEST/val``, which ``data.source=parquet data.root=DEST`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from collections import Counter
from functools import partial
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm import tqdm

from core.data.sources import DataError, _list_image_folder, load_cifar, stable_index

SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("index", pa.int64()), ("path", pa.string())])
MANIFEST = "manifest.json"


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, path inside it) for a local path or a URI."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as exc:
            raise DataError(f"{uri!r}: {exc}") from exc
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def _write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    tmp = _join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def _read(fs: pafs.FileSystem, path: str) -> bytes | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError):
        return None


def _folder_records(root: str) -> tuple[list[tuple[str, int]], list[str], str]:
    """(path, label) records, class names and a digest of the listing (path, size, mtime, label)."""
    paths, classes = _list_image_folder(root)
    idx = {c: i for i, c in enumerate(classes)}
    h = hashlib.sha256()
    records = []
    for p in paths:
        rel = os.path.relpath(p, root)
        try:
            st = os.stat(p)
        except OSError as exc:  # a dangling link, a symlink loop, no permission
            raise DataError(f"cannot read {p!r}: {exc.strerror}") from None
        label = idx[rel.split(os.sep)[0]]
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
        records.append((p, label))
    return records, classes, h.hexdigest()


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _encode_file(record: tuple[str, int], root: str) -> tuple[bytes, int, int, str]:
    path, label = record
    with open(path, "rb") as fh:
        rel = os.path.relpath(path, root)
        return fh.read(), label, stable_index(rel), rel


def _shard_bytes(rows: list[tuple[bytes, int, int, str]]) -> bytes:
    table = pa.table({"image": [r[0] for r in rows], "label": [r[1] for r in rows],
                      "index": [r[2] for r in rows], "path": [r[3] for r in rows]}, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_one_shard(chunk: list, encode: Callable, dest: str, name: str) -> dict[str, Any]:
    """Encode ``chunk`` into one parquet shard at ``dest/name`` (atomically); its manifest entry."""
    fs, base = filesystem(dest)
    rows = [encode(r) for r in chunk]
    data = _shard_bytes(rows)
    _write_atomic(fs, _join(base, name), data)
    return {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest(),
            "class_counts": dict(Counter(str(r[1]) for r in rows))}


def write_shards(records: list, dest: str, shard_size: int, encode: Callable, classes: list[str], desc: str,
                 source_digest: str, seed: int = 0, workers: int = 1) -> dict:
    """Write ``records`` in a seeded random order, ``shard_size`` per shard (``encode(record) ->
    (bytes, label, index, path)``); resumes a build with the same source, size and seed."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if not records:
        raise DataError(f"{desc}: nothing to write")
    fs, base = filesystem(dest)
    fs.create_dir(base, recursive=True)
    manifest_path = _join(base, MANIFEST)
    raw = _read(fs, manifest_path)
    old = json.loads(raw) if raw else {}
    build = {"source_digest": source_digest, "shard_size": shard_size, "seed": seed, "total": len(records)}
    same_build = all(old.get(k) == v for k, v in build.items())
    if old and not same_build:
        changed = [k for k, v in build.items() if old.get(k) != v]
        print(f"{desc}: {', '.join(changed)} changed since the last build; rebuilding every shard", flush=True)
    done: dict[str, dict] = old.get("shards", {}) if same_build else {}
    order = np.random.default_rng(seed).permutation(len(records))
    records = [records[i] for i in order]
    n_shards = (len(records) + shard_size - 1) // shard_size
    names = [f"shard-{s:05d}.parquet" for s in range(n_shards)]
    _remove_stale(fs, base, keep=set(names) if same_build else set())

    def intact(name: str, rows: int) -> bool:
        entry = done.get(name)
        if not entry or entry["rows"] != rows:
            return False
        data = _read(fs, _join(base, name))
        return data is not None and hashlib.sha256(data).hexdigest() == entry["sha256"]

    todo = [s for s, name in enumerate(names) if not intact(name, len(records[s * shard_size:(s + 1) * shard_size]))]
    redo = {names[s] for s in todo}
    done = {n: done[n] for n in names if n in done and n not in redo}

    def save(final: bool = False) -> None:
        manifest = {**build, "classes": classes, "shards": dict(sorted(done.items())), "complete": final}
        if final:
            counts: Counter = Counter()
            for entry in done.values():
                counts.update(entry["class_counts"])
            manifest["class_counts"] = dict(sorted(counts.items(), key=lambda kv: int(kv[0])))
        _write_atomic(fs, manifest_path, json.dumps(manifest, indent=1).encode())

    bar = tqdm(total=n_shards, initial=n_shards - len(todo), desc=desc, unit="shard")
    chunks = {s: records[s * shard_size:(s + 1) * shard_size] for s in todo}
    if workers > 1 and len(todo) > 1:
        import ray

        if not ray.is_initialized():
            ray.init("local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=1)(write_one_shard)
        pending: dict = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < workers * 2:
                s = queue.pop(0)
                pending[task.remote(chunks[s], encode, dest, names[s])] = s
            ready, _ = ray.wait(list(pending), num_returns=1)
            s = pending.pop(ready[0])
            done[names[s]] = ray.get(ready[0])
            save()  # progress survives a kill
            bar.update()
    else:
        for s in todo:
            done[names[s]] = write_one_shard(chunks[s], encode, dest, names[s])
            save()
            bar.update()
    bar.close()
    save(final=True)
    return json.loads(_read(fs, manifest_path))


def _remove_stale(fs: pafs.FileSystem, base: str, keep: set[str]) -> None:
    """Delete shard files of an earlier build that this build does not keep."""
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        name = os.path.basename(info.path)
        if info.is_file and name.startswith("shard-") and name.endswith(".parquet") and name not in keep:
            fs.delete_file(info.path)


def shard_dataset(src: str, dest: str, shard_size: int, fmt: str = "imagefolder", seed: int = 0,
                  workers: int = 1) -> dict[str, dict]:
    """Shard every split of ``src`` into ``dest/<split>``; returns the manifests."""
    out: dict[str, dict] = {}
    if fmt == "imagefolder":
        splits = [s for s in ("train", "val", "test") if os.path.isdir(os.path.join(src, s))] or [""]
        for split in splits:
            root = os.path.join(src, split) if split else src
            records, classes, digest = _folder_records(root)
            out[split or "all"] = write_shards(records, _join(dest, split) if split else dest, shard_size,
                                               partial(_encode_file, root=root), classes, f"shards {split or root}",
                                               digest, seed, workers)
    elif fmt in ("cifar10", "cifar100"):
        arrays = load_cifar(src, fmt, 32)
        for split, name in (("train", "train"), ("test", "val")):
            images, labels, index = arrays[split]
            digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
            records = [(images[i], int(labels[i]), int(index[i]), f"{fmt}/{split}/{int(index[i])}")
                       for i in range(len(labels))]
            out[name] = write_shards(records, _join(dest, name), shard_size, _encode_array,
                                     [str(c) for c in range(int(labels.max()) + 1)], f"shards {fmt} {split}",
                                     digest, seed, workers)
    else:
        raise ValueError(f"--format must be imagefolder, cifar10 or cifar100, got {fmt!r}")
    return out


def _encode_array(record: tuple) -> tuple[bytes, int, int, str]:
    image, label, index, path = record
    return _png_bytes(image), label, index, path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dest", help="local path or URI (s3://bucket/prefix, gs://..., file:///...)")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--format", default="imagefolder", choices=["imagefolder", "cifar10", "cifar100"])
    p.add_argument("--seed", type=int, default=0, help="seed of the random record order")
    p.add_argument("--workers", type=int, default=1, help="shards written at once (Ray tasks when > 1)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        manifests = shard_dataset(args.src, args.dest, args.shard_size, args.format, args.seed, args.workers)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, m in manifests.items():
        print(f"{split}: {m['total']} images in {len(m['shards'])} shards -> "
              f"{_join(args.dest, split) if split != 'all' else args.dest} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
