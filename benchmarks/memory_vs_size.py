"""Peak memory of one training run against the size of the training set: ``python -m core.train``
on an ImageFolder of realistic JPEGs (real photographs, ``core.data.photos``) at 112 px with 1,000
and 8,000 training images, in fresh processes. The driver runs the loop and the evaluation
(``num_workers=0``); its memory is sampled from ``/proc/PID/status`` every 0.1 s: peak ``VmRSS``
(everything resident, including pages of Ray's shared-memory object store that the driver has
read batches from, bounded by the store's size) and peak ``RssAnon`` (the process's own memory).
Nothing on the path holds the data set, so the peaks should differ by features only.

    python benchmarks/memory_vs_size.py             # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from core.data.photos import make_photo_folder


def _status_kib(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in fh) if v.strip().endswith("kB")}
    except (OSError, ValueError):
        return {}


def peak_rss_mib(root: str, train_images: int, out: str) -> tuple[float, float, float, str]:
    cmd = [sys.executable, "-m", "core.train", "data.source=imagefolder", f"data.root={root}",
           "data.image_size=112", f"data.train_limit={train_images}", "optim.epochs=1", "optim.batch_size=64",
           "model.width=8", "eval.probe_epochs=2", "eval.online_knn=false", "eval.few_shot_episodes=20",
           f"storage_path={out}"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        rss = anon = 0
        while proc.poll() is None:
            st = _status_kib(proc.pid)
            rss, anon = max(rss, st.get("VmRSS", 0)), max(anon, st.get("RssAnon", 0))
            time.sleep(0.1)
        log.seek(0)
        text = log.read()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"run with {train_images} images failed:\n{text[-3000:]}")
    summary = [ln for ln in text.splitlines() if ln.strip().startswith(("knn_top1", "probe_top1"))]
    return rss / 1024, anon / 1024, wall, "; ".join(s.strip() for s in summary)


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
            rss, anon, wall, summary = peak_rss_mib(root, n, out)
            rows.append((n, rss, anon, wall, summary))
            print(f"{n} images: peak VmRSS {rss:.0f} MiB, peak RssAnon {anon:.0f} MiB, {wall:.0f} s ({summary})",
                  flush=True)
    print("\n| train images (112 px) | driver peak VmRSS | driver peak RssAnon (own memory) | wall |\n|---|---|---|---|")
    for n, rss, anon, wall, _ in rows:
        print(f"| {n} | {rss:.0f} MiB | {anon:.0f} MiB | {wall:.0f} s |")
    print(f"\ngrowth {rows[0][0]} -> {rows[-1][0]} images: VmRSS {rows[-1][1] - rows[0][1]:+.0f} MiB, "
          f"RssAnon {rows[-1][2] - rows[0][2]:+.0f} MiB (goal: at most 100 MiB; the in-memory path measured +631 MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
