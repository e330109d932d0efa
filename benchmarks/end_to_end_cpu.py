"""The platform's whole training epoch against a plain PyTorch loop, on the same real-photo JPEGs.

Ours: ``python -m core.train`` (Ray Train in-process loop, Ray Data reading and decoding the JPEGs,
crops cut at decode time, the photometric part on the training device, SupCon, SGD), from an
ImageFolder and from parquet shards of it. The baseline: SupContrast's recipe, torchvision
``ImageFolder`` + ``TwoCropTransform`` (RandomResizedCrop, flip, colour jitter, grayscale) +
``DataLoader(num_workers=2)``, with the same model, loss, batch, image size and torch threads. Each
runs in a fresh process for 3 epochs; the middle epoch (after start-up, before the platform's final
evaluation, which the loop does not have) is compared: its time and views/s, the CPU seconds the whole
process tree spent in it per 1,000 views, and the tree's peak PSS in it (Ray's processes or the
DataLoader's workers included), besides the whole run's peak. The ImageFolder pair runs ``--pairs``
times back to back, the order alternating, and the ratios' median is printed: on this machine one
configuration's epoch time moves 1.5-2.7x between identical runs. Both run with torch's transparent
huge pages for large CPU blocks (the platform sets ``THP_MEM_ALLOC_ENABLE=1``; the baseline imports
``core`` for the model and gets it too), and both again without them (torch's default). Last, Ray's
fixed cost: the tree of a driver that starts the same private instance and reads a small dataset at
a training step's pace, its peak PSS and its CPU by process; and each epoch peak's PSS by process.

    python benchmarks/end_to_end_cpu.py               # ~35 minutes on 2 cores
    python benchmarks/end_to_end_cpu.py --quick --pairs 5   # 5 ImageFolder pairs only, ~30 minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil

sys.path.insert(0, os.path.dirname(__file__))
from memory_vs_size import process_kind, tree_processes, tree_pss_mib  # noqa: E402

SIZE, BATCH, WIDTH, EPOCHS = 112, 64, 32, 3
BASELINE = "baseline: ImageFolder + DataLoader(num_workers=2)"
# Reading a 2-3 GiB process's /proc/PID/smaps_rollup takes ~55 ms of kernel time (a page-table walk
# under the process's mmap lock), a whole tree ~120 ms: sampled every 0.1 s it took most of a core from
# the run it measured, Ray's 14-process tree more than the loop's 3. The peak here is the training
# steady state, which once a second catches.
SAMPLE_EVERY_S = 1.0


def baseline(root: str) -> None:
    """SupContrast's training loop (its main_supcon.py data path), one process plus 2 loader workers."""
    import torch
    from torchvision import datasets, transforms

    from core.config import RunConfig
    from core.losses import build_loss, head_of
    from core.models import build_model

    class TwoCropTransform:
        def __init__(self, transform):
            self.transform = transform

        def __call__(self, x):
            return [self.transform(x), self.transform(x)]

    torch.manual_seed(0)
    augment = transforms.Compose([
        transforms.RandomResizedCrop(SIZE, scale=(0.2, 1.0)), transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2), transforms.ToTensor()])  # the model normalises, as ours does
    data = datasets.ImageFolder(os.path.join(root, "train"), transform=TwoCropTransform(augment))
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True,
                                         persistent_workers=True)
    cfg = RunConfig().with_overrides([f"model.width={WIDTH}", f"data.image_size={SIZE}"])
    model = build_model(cfg, len(data.classes), head_of(cfg))
    loss_fn = build_loss(cfg.loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for epoch in range(EPOCHS):
        t0, views = time.perf_counter(), 0
        for images, labels in loader:
            x = torch.cat(images)  # [2B, C, H, W]: SupContrast's layout
            z = model(x).z
            b = labels.shape[0]
            loss = loss_fn(torch.stack(torch.split(z, [b, b]), dim=1), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            views += 2 * b
        seconds = time.perf_counter() - t0
        print(json.dumps({"epoch": epoch, "epoch_seconds": seconds, "views_per_s": views / seconds}), flush=True)


def peak_while_running(proc: subprocess.Popen) -> tuple[float, dict[str, float]]:
    """The peak tree PSS of ``proc`` until it exits, sampled every ``SAMPLE_EVERY_S``, and its PSS by
    process kind at that peak (MiB)."""
    peak, kinds = 0.0, {}
    while proc.poll() is None:
        total, _, _, by_kind = tree_pss_mib(proc.pid)
        if total > peak:
            peak, kinds = total, by_kind
        time.sleep(SAMPLE_EVERY_S)
    return peak, kinds


def tree_cpu_seconds(pid: int) -> list[tuple[psutil.Process, float]]:
    """User + system CPU seconds of ``pid`` and each of its descendants."""
    rows = []
    for p in tree_processes(pid):
        try:
            t = p.cpu_times()
            rows.append((p, t.user + t.system))
        except psutil.Error:
            pass
    return rows


@dataclass
class Watch:
    """What a run's tree did: its peak PSS over the whole run and over the measured epoch (epoch 1,
    between the rows of epochs 0 and 1), and the CPU seconds the tree spent in that epoch."""

    peak_run: float = 0.0
    peak_epoch: float = 0.0
    kinds: dict = field(default_factory=dict)
    cpu_at_row0: dict = field(default_factory=dict)
    cpu_epoch: float = float("nan")


def watch(proc: subprocess.Popen, rows_so_far: Callable[[], int]) -> Watch:
    """Sample ``proc``'s tree every ``SAMPLE_EVERY_S`` until it exits; ``rows_so_far()`` is how many
    epoch rows it has written."""
    w = Watch()
    while proc.poll() is None:
        rows = rows_so_far()
        total, _, _, by_kind = tree_pss_mib(proc.pid)
        w.peak_run = max(w.peak_run, total)
        if rows == 1 and total > w.peak_epoch:
            w.peak_epoch, w.kinds = total, by_kind
        if rows >= 1 and not w.cpu_at_row0:
            w.cpu_at_row0 = {p.pid: seconds for p, seconds in tree_cpu_seconds(proc.pid)}
        if rows >= 2 and math.isnan(w.cpu_epoch):  # not taken yet
            w.cpu_epoch = sum(seconds - w.cpu_at_row0.get(p.pid, 0.0) for p, seconds in tree_cpu_seconds(proc.pid))
        time.sleep(SAMPLE_EVERY_S if rows == 1 else SAMPLE_EVERY_S / 5)
    return w


def _stdout_rows(log) -> list[dict]:
    log.flush()
    with open(log.name) as f:
        return [json.loads(line) for line in f if line.startswith('{"epoch"')]


def _metrics_rows(runs: str) -> list[dict]:
    for d in os.listdir(runs) if os.path.isdir(runs) else ():
        path = os.path.join(runs, d, "metrics.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                return [json.loads(line) for line in f if line.strip()]
    return []


def measure(cmd: list[str], epochs_from: str, huge_pages: bool = True) -> dict:
    """One fresh process: epoch 1's time, views/s, peak tree PSS and tree CPU seconds, and the whole
    run's peak PSS. ``epochs_from``: ``stdout`` or the runs folder whose metrics.jsonl has the rows.
    ``huge_pages``: torch's transparent huge pages for large CPU blocks (``core/__init__.py``)."""
    t0 = time.perf_counter()
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if huge_pages else "0"}
    with tempfile.NamedTemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        rows_of = (lambda: _stdout_rows(log)) if epochs_from == "stdout" else (lambda: _metrics_rows(epochs_from))
        w = watch(proc, lambda: len(rows_of()))
        rows = rows_of()
        log.seek(0)
        text = log.read()
    if proc.returncode or len(rows) < 2:
        raise SystemExit(f"{cmd} failed:\n{text[-3000:]}")
    if epochs_from != "stdout":
        subprocess.run(["rm", "-rf", *[os.path.join(epochs_from, d) for d in os.listdir(epochs_from)]])
    row = rows[1]
    views = row["views_per_s"] * row["epoch_seconds"]
    return {"wall": time.perf_counter() - t0, "epoch_seconds": row["epoch_seconds"], "views_per_s": row["views_per_s"],
            "peak_pss": w.peak_epoch, "peak_run": w.peak_run, "by_kind": w.kinds,
            "cpu_per_kview": 1000 * w.cpu_epoch / views, "data_wait": row.get("data_wait_seconds", float("nan"))}


def ray_floor(seconds: float = 40.0) -> dict:
    """Ray's fixed cost: the tree of a driver that starts the private instance a run gets
    (``run_cpus(0)`` logical CPUs) and reads a small Ray Data dataset at a training step's pace (its
    stats and autoscaling actors start then), no torch, no model, no images. Its peak PSS, and the CPU
    seconds per second each process spends over 30 s of that reading (the driver's own share is the
    dataset's iteration, which a training driver also pays)."""
    code = ("import time, numpy as np, ray, core\nfrom core.runtime import start_ray, run_cpus\n"
            "start_ray(num_cpus=run_cpus(0), log_to_driver=False)\n"
            "ds = ray.data.range(4000, override_num_blocks=40).map_batches(\n"
            "    lambda b: {'x': np.repeat(b['id'][:, None], 20000, 1).astype(np.uint8)})\n"
            "print('ready', flush=True)\nt0 = time.time()\n"
            "for _ in ds.iter_batches(batch_size=64):\n"
            f"    time.sleep(0.6)\n    if time.time() - t0 > {seconds}: break\nray.shutdown()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", "the Ray floor's driver did not start"
    cpu: dict[str, float] = {}

    def cpu_window() -> None:
        time.sleep(5)
        t0, before = time.perf_counter(), _cpu_by_kind(proc.pid)
        time.sleep(30)
        after, wall = _cpu_by_kind(proc.pid), time.perf_counter() - t0
        cpu.update({k: (v - before.get(k, 0.0)) / wall for k, v in after.items()})

    window = threading.Thread(target=cpu_window, daemon=True)
    window.start()
    peak, kinds = peak_while_running(proc)
    window.join()
    return {"peak_pss": peak, "by_kind": kinds, "cpu_per_s": cpu}


def _cpu_by_kind(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s tree by process kind (the root as "root: ...")."""
    out: dict[str, float] = {}
    for p, seconds in tree_cpu_seconds(pid):
        try:
            name = ("root: " if p.pid == pid else "") + process_kind(p)
        except psutil.Error:
            continue
        out[name] = out.get(name, 0.0) + seconds
    return out


def breakdown(kinds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))


def print_table(results: dict[str, dict], floor: dict, pairs: list[float], n: int) -> None:
    print(f"\n{n} real-photo JPEGs (500 x 375) -> 2 x {SIZE} px views, batch {BATCH}, small CNN width {WIDTH}, "
          f"SupCon; epoch 1 of 0-{EPOCHS - 1} (after start-up, before the final evaluation)\n")
    print("| pipeline | epoch s | views/s | vs baseline | tree CPU s per 1k views | data wait s | peak tree PSS, epoch "
          "| peak tree PSS, run | process wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(r["views_per_s"] for name, r in results.items() if name.startswith(BASELINE))
    for name, r in results.items():
        print(f"| {name} | {r['epoch_seconds']:.1f} | {r['views_per_s']:.0f} | {r['views_per_s'] / base:.2f}x | "
              f"{r['cpu_per_kview']:.1f} | {r['data_wait']:.1f} | {r['peak_pss']:.0f} MiB | {r['peak_run']:.0f} MiB | "
              f"{r['wall']:.0f} |")
    print("| Ray alone: a private instance, a driver reading a small dataset at a step's pace | - | - | - | - | - | - "
          f"| {floor['peak_pss']:.0f} MiB | - |")
    if pairs:
        print(f"\nImageFolder pairs, ours / baseline views/s (each pair back to back, order alternating): "
              f"{', '.join(f'{x:.2f}x' for x in pairs)}; median {statistics.median(pairs):.2f}x")
    busy = floor["cpu_per_s"]
    print(f"\nRay alone, CPU while its driver reads a dataset at a step's pace: {sum(busy.values()):.3f} CPU s per s "
          f"({100 * sum(busy.values()) / (os.cpu_count() or 1):.1f}% of this machine's {os.cpu_count()} cores): "
          + ", ".join(f"{k} {v:.3f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 0.001))
    print("\nPSS by process at each epoch's peak (MiB):")
    for name, r in [*results.items(), ("Ray alone", floor)]:
        print(f"- {name}: {breakdown(r['by_kind'])}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images-per-class", type=int, default=64)
    p.add_argument("--pairs", type=int, default=3, help="ImageFolder pairs (ours, baseline), order alternating")
    p.add_argument("--quick", action="store_true", help="ImageFolder pairs only")
    p.add_argument("--no-small-pages", action="store_true", help="skip the rows without huge pages")
    p.add_argument("--baseline", default=None, help=argparse.SUPPRESS)  # internal: run the plain loop on ROOT
    args = p.parse_args()
    if args.pairs < 1:
        p.error("--pairs must be at least 1 (the baseline's views/s is every row's reference)")
    if args.baseline:
        baseline(args.baseline)
        return 0
    from core.data.shard import shard_dataset
    from core.tools.photos import make_photo_folder

    with tempfile.TemporaryDirectory() as tmp:
        root = make_photo_folder(os.path.join(tmp, "photos"), 20, {"train": args.images_per_class, "val": 8})
        shard_dataset(root, os.path.join(tmp, "shards"), 256)
        runs = os.path.join(tmp, "runs")
        common = [f"data.image_size={SIZE}", f"optim.batch_size={BATCH}", f"model.width={WIDTH}",
                  f"optim.epochs={EPOCHS}", "eval.probe_epochs=1", "eval.online_knn=false", "eval.few_shot_episodes=0",
                  "augment.min_crop_area=0.2", f"storage_path={runs}"]
        ours = [sys.executable, "-m", "core.train", "data.source=imagefolder", f"data.root={root}", *common]
        plain = [sys.executable, __file__, "--baseline", root]
        results, pairs = {}, []
        for i in range(args.pairs):
            order = [("ours, ImageFolder", ours, runs), (BASELINE, plain, "stdout")]
            for name, cmd, source in order if i % 2 == 0 else order[::-1]:
                results[f"{name} (pair {i + 1})"] = measure(cmd, source)
                print(f"{name} (pair {i + 1}): {results[f'{name} (pair {i + 1})']['views_per_s']:.1f} views/s",
                      file=sys.stderr, flush=True)
            pairs.append(results[f"ours, ImageFolder (pair {i + 1})"]["views_per_s"]
                         / results[f"{BASELINE} (pair {i + 1})"]["views_per_s"])
        if not args.no_small_pages:
            results["ours, ImageFolder, 4 KiB pages (THP_MEM_ALLOC_ENABLE=0)"] = measure(ours, runs, huge_pages=False)
            results[f"{BASELINE}, 4 KiB pages (torch's default)"] = measure(plain, "stdout", huge_pages=False)
        if not args.quick:
            results["ours, ImageFolder, photometric part in Ray Data tasks"] = measure(
                [*ours, "data.augment_in=ray_data"], runs)
            results["ours, parquet shards"] = measure(
                [sys.executable, "-m", "core.train", "data.source=parquet", f"data.root={os.path.join(tmp, 'shards')}",
                 *common], runs)
    print_table(results, ray_floor(), pairs, 20 * args.images_per_class)
    return 0


if __name__ == "__main__":
    sys.exit(main())
