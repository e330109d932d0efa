"""Peak memory of one training run against the size of the training set: ``python -m core.train``
on an ImageFolder of realistic JPEGs (real photographs, ``core.data.photos``) at 112 px with 1,000
and 8,000 training images, in fresh processes; peak RSS of the driver (which runs the loop and the
evaluation with ``num_workers=0``) from ``/usr/bin/time``. Nothing on the path holds the data set,
so the two peaks should differ by features only (a few MB), not by images.

    python benchmarks/memory_vs_size.py             # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from core.data.photos import make_photo_folder


def peak_rss_mib(root: str, train_images: int, out: str) -> tuple[float, float, str]:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "core.train", "data.source=imagefolder", f"data.root={root}",
           "data.image_size=112", f"data.train_limit={train_images}", "optim.epochs=1", "optim.batch_size=64",
           "model.width=8", "eval.probe_epochs=2", "eval.online_knn=false", "eval.few_shot_episodes=20",
           f"storage_path={out}"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    if res.returncode or not match:
        raise SystemExit(f"run with {train_images} images failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    summary = [ln for ln in res.stdout.splitlines() if ln.strip().startswith(("knn_top1", "probe_top1"))]
    return int(match.group(1)) / 1024, wall, "; ".join(s.strip() for s in summary)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    p.add_argument("--root", default=None)
    args = p.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="memjpegs-")
    if not os.path.isdir(os.path.join(root, "train")):
        per_class = -(-max(args.sizes) // 20)
        t0 = time.perf_counter()
        make_photo_folder(root, 20, {"train": per_class, "val": 10}, size=(200, 150), quality=90)
        print(f"made {20 * per_class} train + 200 val JPEGs (200 x 150) in {time.perf_counter() - t0:.0f} s")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for n in args.sizes:
            rss, wall, summary = peak_rss_mib(root, n, out)
            rows.append((n, rss, wall, summary))
            print(f"{n} images: peak RSS {rss:.0f} MiB, {wall:.0f} s ({summary})", flush=True)
    print("\n| train images (112 px) | driver peak RSS | wall |\n|---|---|---|")
    for n, rss, wall, _ in rows:
        print(f"| {n} | {rss:.0f} MiB | {wall:.0f} s |")
    print(f"\ngrowth {rows[0][0]} -> {rows[-1][0]} images: {rows[-1][1] - rows[0][1]:+.0f} MiB "
          f"(goal: at most 100 MiB; the in-memory path measured +631 MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
