"""The platform's whole training epoch against a plain PyTorch loop, on the same real-photo JPEGs.

Ours: ``python -m core.train`` (Ray Train in-process loop, Ray Data reading and decoding the JPEGs,
crops cut at decode time, the photometric part on the training device, SupCon, SGD), from an
ImageFolder and from parquet shards of it. The baseline: SupContrast's recipe, torchvision
``ImageFolder`` + ``TwoCropTransform`` (RandomResizedCrop, flip, colour jitter, grayscale) +
``DataLoader(num_workers=2)``, with the same model, loss, batch, image size and torch threads. Each
runs in a fresh process for 2 epochs; the second epoch's time and views/s are compared (the first
pays start-up), with the peak PSS of each whole process tree (Ray's processes or the DataLoader's
workers included). Both run with torch's transparent huge pages for large CPU blocks (the platform
sets ``THP_MEM_ALLOC_ENABLE=1``; the baseline imports ``core`` for the model and gets it too), and
both again without them (torch's default). Last, Ray's fixed cost: the tree of a driver that starts the
same private instance and runs one small dataset, then idles; and each peak's PSS by process.

    python benchmarks/end_to_end_cpu.py               # ~20 minutes on 2 cores
    python benchmarks/end_to_end_cpu.py --quick       # ImageFolder rows only, ~13 minutes
    python benchmarks/end_to_end_cpu.py --no-small-pages   # huge-page rows only, ~13 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from memory_vs_size import tree_pss_mib  # noqa: E402

SIZE, BATCH, WIDTH, EPOCHS = 112, 64, 32, 2
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
    from core.losses import build_loss
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
    model = build_model(cfg, len(data.classes))
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


def measure(cmd: list[str], epochs_from: str, huge_pages: bool = True) -> dict:
    """One fresh process: its second epoch's time and views/s, and the tree's peak PSS. ``huge_pages``:
    torch's transparent huge pages for large CPU blocks (the platform's default, ``core/__init__.py``)."""
    t0 = time.perf_counter()
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if huge_pages else "0"}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        peak, kinds = peak_while_running(proc)
        log.seek(0)
        text = log.read()
    if proc.returncode:
        raise SystemExit(f"{cmd} failed:\n{text[-3000:]}")
    if epochs_from == "stdout":
        rows = [json.loads(line) for line in text.splitlines() if line.startswith('{"epoch"')]
    else:
        run_dir = next(os.path.join(epochs_from, d) for d in os.listdir(epochs_from))
        rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
        subprocess.run(["rm", "-rf", run_dir])
    last = rows[-1]
    return {"wall": time.perf_counter() - t0, "epoch_seconds": last["epoch_seconds"],
            "views_per_s": last["views_per_s"], "peak_pss": peak, "by_kind": kinds,
            "data_wait": last.get("data_wait_seconds", float("nan"))}


def ray_floor(seconds: float = 20.0) -> dict:
    """Ray's fixed cost: the tree PSS of a driver that starts the private instance a run gets
    (``run_cpus(0)`` logical CPUs) and runs one small Ray Data dataset (its stats and autoscaling
    actors start then), then idles; no torch, no model, no images."""
    code = ("import time, ray, core\nfrom core.runtime import start_ray, run_cpus\n"
            "start_ray(num_cpus=run_cpus(0), log_to_driver=False)\n"
            "ray.data.range(1000, override_num_blocks=4).map_batches(lambda b: b).materialize()\n"
            f"print('ready', flush=True)\ntime.sleep({seconds})\nray.shutdown()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", "the Ray floor's driver did not start"
    peak, kinds = peak_while_running(proc)
    return {"peak_pss": peak, "by_kind": kinds}


def breakdown(kinds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images-per-class", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="ImageFolder rows only (ours and the baseline)")
    p.add_argument("--no-small-pages", action="store_true", help="skip the rows without huge pages")
    p.add_argument("--baseline", default=None, help=argparse.SUPPRESS)  # internal: run the plain loop on ROOT
    args = p.parse_args()
    if args.baseline:
        baseline(args.baseline)
        return 0
    from core.data.photos import make_photo_folder
    from core.data.shard import shard_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = make_photo_folder(os.path.join(tmp, "photos"), 20, {"train": args.images_per_class, "val": 8})
        shard_dataset(root, os.path.join(tmp, "shards"), 256)
        runs = os.path.join(tmp, "runs")
        common = [f"data.image_size={SIZE}", f"optim.batch_size={BATCH}", f"model.width={WIDTH}",
                  f"optim.epochs={EPOCHS}", "eval.probe_epochs=1", "eval.online_knn=false", "eval.few_shot_episodes=0",
                  "augment.min_crop_area=0.2", f"storage_path={runs}"]
        ours = [sys.executable, "-m", "core.train", "data.source=imagefolder", f"data.root={root}", *common]
        plain = [sys.executable, __file__, "--baseline", root]
        results = {"ours, ImageFolder": measure(ours, runs), BASELINE: measure(plain, "stdout")}
        if not args.no_small_pages:
            results["ours, ImageFolder, 4 KiB pages (THP_MEM_ALLOC_ENABLE=0)"] = measure(ours, runs, huge_pages=False)
            results["baseline, 4 KiB pages (torch's default)"] = measure(plain, "stdout", huge_pages=False)
        if not args.quick:
            results["ours, ImageFolder, photometric part in Ray Data tasks"] = measure(
                [*ours, "data.augment_in=ray_data"], runs)
            results["ours, parquet shards"] = measure(
                [sys.executable, "-m", "core.train", "data.source=parquet", f"data.root={os.path.join(tmp, 'shards')}",
                 *common], runs)
    n = 20 * args.images_per_class
    floor = ray_floor()
    print(f"\n{n} real-photo JPEGs (500 x 375) -> 2 x {SIZE} px views, batch {BATCH}, small CNN width {WIDTH}, "
          f"SupCon; epoch {EPOCHS} of {EPOCHS}\n")
    print("| pipeline | epoch s | views/s | vs baseline | data wait s | peak tree PSS | process wall s |")
    print("|---|---|---|---|---|---|---|")
    base = results[BASELINE]["views_per_s"]
    for name, r in results.items():
        print(f"| {name} | {r['epoch_seconds']:.1f} | {r['views_per_s']:.0f} | {r['views_per_s'] / base:.2f}x | "
              f"{r['data_wait']:.1f} | {r['peak_pss']:.0f} MiB | {r['wall']:.0f} |")
    print(f"| Ray alone: a private instance, one small dataset, an idle driver | - | - | - | - | "
          f"{floor['peak_pss']:.0f} MiB | - |")
    print("\nPSS by process at each peak (MiB):")
    for name, r in [*results.items(), ("Ray alone", floor)]:
        print(f"- {name}: {breakdown(r['by_kind'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
