"""The data path's fixed costs against the data set's size, at ImageNet's layout (1,000 class folders).

For each size (default 10,000, 100,000 and 1,281,167 training images) an ImageFolder tree of tiny
valid JPEGs (one per class, a few hundred bytes, hard-linked under every name of its class: the disk
holds 1.28M of them) and, from it, a parquet shard set written by the platform's own shard writer.
Then, in a fresh process per size (the platform's driver: torch, Ray, the data path):

- ``listing``: ``list_image_folder`` of the tree (walk, stat, sort, stable ids);
- ``shards``: ``write_shards`` (1,000 rows a shard; every file read) and, of it, ``manifest writes``;
- ``check``: ``parquet_rows`` of the set (the manifest read and checked against every shard, the labels read);
- ``plan (folder)`` / ``plan (parquet)``: the first epoch's order and blocks (``rows.epoch(0)``) and its
  stream planned (``epoch_dataset``), split for 2 ranks (``streaming_split``);
- ``first batch``: from the planned epoch to its first decoded batch;
- ``decode``: images/s per core over the epoch (its first ``--decode-images`` at most);
- the driver's peak PSS and the whole tree's (driver, raylet, GCS, Ray workers, object-store pages),
  sampled every 100 ms by the parent.

With ``--s3-images N`` (default 100,000) the N-image tree is also put into a bucket of moto's S3 server
on 127.0.0.1 and listed through ``s3://``. A table, then each cost's growth exponent (the slope of
log cost against log size between the sizes) and the issue's goals beside the figures.

    python benchmarks/scale_data.py                        # about 25 minutes on 2 cores, 1 GB of disk
    python benchmarks/scale_data.py --sizes 10000 100000 --s3-images 0   # a quick look (about 3 minutes)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

CLASSES = 1000
IMAGE_SIZE = 32  # the views' size: the data path's fixed costs, not the pixels' (real photos: memory_vs_size)
SHARD_ROWS = 1000


def tiny_jpeg(c: int) -> bytes:
    """A valid 16 x 16 JPEG (a few hundred bytes), a colour gradient of its own per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(c)
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 60, 16)[None, :, None]
    pixels = np.clip(base[None, None, :] + ramp + ramp.transpose(1, 0, 2), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=60)
    return buf.getvalue()


def make_tree(root: str, images: int) -> float:
    """``root/train/nXXXXXXXX/*.JPEG``: ``images`` names over ``CLASSES`` classes, each a hard link of its
    class's one JPEG (kept in ``root/.src``); seconds taken (0 when already there)."""
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return 0.0
    t0 = time.perf_counter()
    src = os.path.join(root, ".src")
    os.makedirs(src, exist_ok=True)
    for c in range(CLASSES):
        folder = os.path.join(root, "train", f"n{c:08d}")
        os.makedirs(folder, exist_ok=True)
        one = os.path.join(src, f"{c}.JPEG")
        if not os.path.exists(one):
            with open(one, "wb") as fh:
                fh.write(tiny_jpeg(c))
        for i in range(c, images, CLASSES):  # ImageNet's names: nCLASS_IMAGE.JPEG
            name = os.path.join(folder, f"n{c:08d}_{i}.JPEG")
            if not os.path.exists(name):
                os.link(one, name)
    open(done, "w").close()
    return time.perf_counter() - t0


def put_tree_in_s3(root: str, endpoint: str, bucket: str, workers: int = 32) -> float:
    """Every file of ``root/train`` as an object under ``s3://bucket/train/`` (the bucket exists); seconds taken."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing", config=Config(max_pool_connections=workers))
    bodies = {c: open(os.path.join(root, ".src", f"{c}.JPEG"), "rb").read() for c in range(CLASSES)}
    keys = []
    for c in range(CLASSES):
        folder = os.path.join(root, "train", f"n{c:08d}")
        keys += [(f"train/n{c:08d}/{name}", c) for name in os.listdir(folder)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda kc: client.put_object(Bucket=bucket, Key=kc[0], Body=bodies[kc[1]]), keys))
    return time.perf_counter() - t0


# ---- one size, in a fresh process (the platform's driver) -------------------------------------------------


def _timed(out: dict, key: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    out[key] = time.perf_counter() - t0
    return value


def _epoch_costs(out: dict, tag: str, rows, cfg, decode_images: int) -> None:
    """Plan the first epoch (order, blocks, a 2-rank split), then its first batch and decode rate."""
    from core.data.pipeline import epoch_dataset, train_batches

    t0 = time.perf_counter()
    ds = epoch_dataset(rows, cfg, 0)
    split = ds.streaming_split(2, equal=True)
    out[f"plan ({tag})"] = time.perf_counter() - t0
    del split  # planned, not run: two consumers would each need a CPU

    t0 = time.perf_counter()
    seen, first = 0, None
    for batch in train_batches(epoch_dataset(rows, cfg, 0), cfg.optim.batch_size):
        if first is None:
            first = time.perf_counter() - t0
            t1, seen0 = time.perf_counter(), len(batch["label"])
        seen += len(batch["label"])
        if seen >= decode_images:
            break
    out[f"first batch ({tag})"] = first
    out[f"decode img/s/core ({tag})"] = (seen - seen0) / max(time.perf_counter() - t1, 1e-9) / (os.cpu_count() or 1)


def one_size(root: str, images: int, decode_images: int, s3: str | None) -> dict:
    import core.train.trainer  # noqa: F401  (registers every source, model and loss, as the driver has)
    from core.config import RunConfig
    from core.data import shard
    from core.data.budget import run_store_bytes
    from core.data.folders import list_image_folder
    from core.data.sources import FolderRows, parquet_rows
    from core.runtime import start_ray

    out: dict = {"images": images}
    listing = _timed(out, "listing", list_image_folder, os.path.join(root, "train"))
    assert len(listing.paths) == images, (len(listing.paths), images)
    if s3:
        from core.tools.cluster import S3_BUCKET

        os.environ.update(_aws_env(s3))
        s3_listing = _timed(out, "listing (s3)", list_image_folder, f"s3://{S3_BUCKET}/train")
        assert len(s3_listing.paths) == images
        del s3_listing

    writes = [0.0]
    write_manifest = shard.write_manifest

    def timed_write(*args):
        t0 = time.perf_counter()
        write_manifest(*args)
        writes[0] += time.perf_counter() - t0

    shard.write_manifest = timed_write
    dest = os.path.join(root, "shards", "train")
    subprocess.run(["rm", "-rf", dest], check=True)
    with open(os.devnull, "w") as quiet:  # the writer's progress bar
        stderr, sys.stderr = sys.stderr, quiet
        try:
            source = shard.folder_source(os.path.join(root, "train"))
            _timed(out, "shards", shard.write_shards, source, dest, SHARD_ROWS)
        finally:
            sys.stderr = stderr
    out["manifest writes"] = writes[0]
    prows, _, _ = _timed(out, "check", parquet_rows, dest, None)

    cfg = RunConfig().with_overrides(["data.source=imagefolder", f"data.root={root}", f"data.image_size={IMAGE_SIZE}",
                                      "optim.batch_size=256", "model.width=4"])
    t0 = time.perf_counter()
    start_ray(num_cpus=2, log_to_driver=False, object_store_memory=run_store_bytes(cfg))
    from core.data.pipeline import quiet_ray_data

    quiet_ray_data()
    out["ray start"] = time.perf_counter() - t0
    rows = FolderRows.of(listing)
    del listing
    _epoch_costs(out, "folder", rows, cfg, decode_images)
    _epoch_costs(out, "parquet", prows, cfg, decode_images)
    return out


# ---- the parent: trees, one process per size, memory sampled, the table --------------------------------------


def _sampled(cmd: list[str]) -> tuple[str, float, float]:
    """Run ``cmd``; (its stdout, the driver's peak PSS, the tree's peak PSS), MiB, sampled every 100 ms."""
    from benchmarks.memory_vs_size import _pss_kib, tree_pss_mib

    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        driver = tree = 0.0
        while proc.poll() is None:
            driver = max(driver, _pss_kib(proc.pid).get("Pss", 0) / 1024)
            tree = max(tree, tree_pss_mib(proc.pid)[0])
            time.sleep(0.1)
        log.seek(0)
        text = log.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{text[-4000:]}")
    return text, driver, tree


def _start_moto(state: str) -> tuple[int, str]:
    """moto's S3 server with the bucket ``S3_BUCKET``, as ``core.tools.cluster local up --s3`` starts it:
    (pid, endpoint)."""
    from pathlib import Path

    from core.tools.cluster import _start_s3

    started = _start_s3(Path(state))
    return started["s3_pid"], started["s3_endpoint"]


def _aws_env(endpoint: str) -> dict[str, str]:
    from core.tools.cluster import LocalCluster, s3_env

    return s3_env(LocalCluster("", "", "", "", (), s3_endpoint=endpoint))


COSTS = ["listing", "listing (s3)", "shards", "manifest writes", "check", "plan (folder)", "plan (parquet)",
         "first batch (folder)", "first batch (parquet)", "listing + planning (folder)", "listing + planning (parquet)",
         "driver PSS MiB", "tree PSS MiB"]


def exponents(rows: list[dict], key: str, size: str = "images") -> list[float | None]:
    """The slope of log cost against log size (``row[size]``) between consecutive sizes."""
    out = []
    for a, b in zip(rows, rows[1:]):
        if a.get(key) and b.get(key) and a[key] > 0 and b[key] > 0:
            out.append(math.log(b[key] / a[key]) / math.log(b[size] / a[size]))
        else:
            out.append(None)
    return out


def report(rows: list[dict]) -> str:
    lines = ["| cost | " + " | ".join(f"{r['images']:,}" for r in rows) + " | growth exponent(s) |",
             "|---|" + "---|" * len(rows) + "---|"]
    for key in [*COSTS, "decode img/s/core (folder)", "decode img/s/core (parquet)"]:
        if not any(key in r for r in rows):
            continue
        unit = "" if "MiB" in key or "img/s" in key else " s"
        cells = [f"{r[key]:,.2f}{unit}" if isinstance(r.get(key), (int, float)) else "-" for r in rows]
        slopes = ", ".join("-" if e is None else f"{e:.2f}" for e in exponents(rows, key))
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {slopes} |")
    big = rows[-1]
    lines += ["", f"goals at {big['images']:,} images: listing + planning {big['listing + planning (folder)']:.1f} s "
              f"(ImageFolder), {big['listing + planning (parquet)']:.1f} s (parquet shards; goal < 60 s each); "
              f"driver peak PSS {big['driver PSS MiB']:,.0f} MiB (goal < 1,536 MiB); "
              f"every exponent <= 1.1 (linear, with noise): "
              + ("yes" if all(e is None or e <= 1.1 for k in COSTS for e in exponents(rows, k)) else "no")]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_281_167])
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "scale_data"))
    p.add_argument("--s3-images", type=int, default=100_000,
                   help="the size whose tree is also listed from S3 (0: none)")
    p.add_argument("--decode-images", type=int, default=100_000, help="images decoded for the rate, at most")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--s3", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_size(os.path.join(args.root, str(args.one)), args.one, args.decode_images,
                                              args.s3)), flush=True)
        return 0
    rows = []
    for n in args.sizes:
        tree = os.path.join(args.root, str(n))
        print(f"{n:,} images: tree made in {make_tree(tree, n):.0f} s", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--one", str(n), "--root", args.root,
               "--decode-images", str(args.decode_images)]
        moto = None
        if n == args.s3_images:
            from core.tools.cluster import S3_BUCKET

            moto, endpoint = _start_moto(tree)
            print(f"  put in moto's S3 in {put_tree_in_s3(tree, endpoint, S3_BUCKET):.0f} s", flush=True)
            cmd += ["--s3", endpoint]
        try:
            text, driver, whole = _sampled(cmd)
        finally:
            if moto:
                os.kill(moto, signal.SIGKILL)
                os.waitpid(moto, 0)
        row = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])
        row.update({"driver PSS MiB": driver, "tree PSS MiB": whole,
                    "listing + planning (folder)": row["listing"] + row["plan (folder)"],
                    "listing + planning (parquet)": row["check"] + row["plan (parquet)"]})
        print("  " + ", ".join(f"{k} {v:,.2f}" for k, v in row.items() if k != "images"), flush=True)
        rows.append(row)
    print()
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
