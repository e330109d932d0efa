"""Write parquet shards (encoded image bytes + label + stable index) from an ImageFolder or CIFAR folder.

    python -m core.data.shard SRC DEST --shard-size N [--format imagefolder|cifar10|cifar100]

Resumable: a shard whose file exists with the checksum recorded in the manifest is skipped.
Each shard is written to a temporary name and renamed, so a killed writer never leaves a
half-written shard. ``DEST/manifest.json`` records counts per class and a sha256 per shard.
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
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from core.data.sources import DataError, _list_image_folder, load_cifar, stable_index

SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("index", pa.int64()), ("path", pa.string())])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _folder_records(root: str) -> tuple[list[tuple[str, int]], list[str]]:
    paths, classes = _list_image_folder(root)
    idx = {c: i for i, c in enumerate(classes)}
    return [(p, idx[os.path.relpath(p, root).split(os.sep)[0]]) for p in paths], classes


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(records: list, dest: Path, shard_size: int, encode, classes: list[str], desc: str) -> dict:
    """Write ``records`` in shards of ``shard_size``; ``encode(record) -> (bytes, label, index, path)``."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if not records:
        raise DataError(f"{desc}: nothing to write")
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    done = manifest.get("shards", {})
    n_shards = (len(records) + shard_size - 1) // shard_size
    counts: Counter = Counter()
    for s in tqdm(range(n_shards), desc=desc, unit="shard"):
        chunk = records[s * shard_size: (s + 1) * shard_size]
        name = f"shard-{s:05d}.parquet"
        path = dest / name
        entry = done.get(name)
        if entry and path.exists() and entry["rows"] == len(chunk) and _sha256(path) == entry["sha256"]:
            counts.update(entry["class_counts"])
            continue
        rows = [encode(r) for r in chunk]
        table = pa.table({"image": [r[0] for r in rows], "label": [r[1] for r in rows],
                          "index": [r[2] for r in rows], "path": [r[3] for r in rows]}, schema=SCHEMA)
        tmp = dest / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        shard_counts = Counter(str(r[1]) for r in rows)
        counts.update(shard_counts)
        done[name] = {"rows": len(chunk), "sha256": _sha256(path), "class_counts": dict(shard_counts)}
        manifest = {"classes": classes, "shards": done}
        tmp_m = dest / ".manifest.json.tmp"
        tmp_m.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp_m, manifest_path)  # progress survives a kill
    manifest = {"classes": classes, "total": len(records), "class_counts": dict(sorted(counts.items())), "shards": done}
    tmp_m = dest / ".manifest.json.tmp"
    tmp_m.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp_m, manifest_path)
    return manifest


def shard_dataset(src: str, dest: str, shard_size: int, fmt: str = "imagefolder") -> dict[str, dict]:
    """Shard every split of ``src`` into ``dest/<split>``; returns the manifests."""
    out: dict[str, dict] = {}
    if fmt == "imagefolder":
        splits = [s for s in ("train", "val", "test") if os.path.isdir(os.path.join(src, s))] or [""]
        for split in splits:
            root = os.path.join(src, split) if split else src
            records, classes = _folder_records(root)

            def encode(r, root=root):
                with open(r[0], "rb") as fh:
                    return fh.read(), r[1], stable_index(os.path.relpath(r[0], root)), os.path.relpath(r[0], root)
            out[split or "all"] = write_shards(records, Path(dest) / split, shard_size, encode, classes,
                                               f"shards {split or root}")
    elif fmt in ("cifar10", "cifar100"):
        arrays = load_cifar(src, fmt, 32)
        for split, name in (("train", "train"), ("test", "val")):
            images, labels, index = arrays[split]
            records = list(range(len(labels)))
            encode = (lambda i, im=images, lb=labels, ix=index:
                      (_png_bytes(im[i]), int(lb[i]), int(ix[i]), f"{fmt}/{split}/{int(ix[i])}"))
            out[name] = write_shards(records, Path(dest) / name, shard_size, encode,
                                     [str(c) for c in range(int(labels.max()) + 1)], f"shards {fmt} {split}")
    else:
        raise ValueError(f"--format must be imagefolder, cifar10 or cifar100, got {fmt!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--format", default="imagefolder", choices=["imagefolder", "cifar10", "cifar100"])
    args = p.parse_args(argv)
    try:
        manifests = shard_dataset(args.src, args.dest, args.shard_size, args.format)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, m in manifests.items():
        print(f"{split}: {m['total']} images in {len(m['shards'])} shards -> {os.path.join(args.dest, split if split != 'all' else '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
