"""One CIFAR-10 training epoch: the platform against SupContrast's loop and against the bare step.

Real CIFAR-10 (50,000 images, 32 px, two views each), SupCon, batch 256, SGD, for each model asked for
(the small CNN at width 32 and a CIFAR-stem ResNet-18 at a width that fits 2 cores):

- **platform**: ``python -m core.train data.source=cifar10 ...`` (the images decoded once and held as
  arrays; each batch gathered from them, cropped, flipped and coloured as batched tensor ops on the
  training device);
- **SupContrast**: its ``main_supcon.py`` data path, in-memory CIFAR as PIL images, ``TwoCropTransform``
  (RandomResizedCrop(32, scale=(0.2, 1)), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2,
  ToTensor), ``DataLoader(num_workers=2)``, with the same model, loss, batch and optimiser;
- **bare step**: the same model, loss and optimiser on ready tensors (the ceiling: no data path at all), in a
  process set up as the platform's is (``import core``: transparent huge pages, large blocks from the heap).

SupContrast's loop runs as it ships, without those two allocator settings; ``--tuned-loop`` runs it with them
too, to separate the data path's gain from the allocator's.

Each variant runs one epoch in a fresh process; the variants run in rotating order ``--pairs`` times and
the medians are compared (views/s: each variant's epoch time, ``epoch_seconds``, from its first to its
last step). The process tree's peak PSS is sampled every 5 seconds over the whole process (Ray's services
and the loader's workers included), and Ray's own fixed cost (a private instance reading a tiny dataset,
``end_to_end_cpu.ray_floor``) is measured once. Goals (issue #47): platform >= 0.85 of the bare step and
>= 1.2x SupContrast's loop; memory at most the loop's plus Ray's fixed services.

    python benchmarks/cifar_epoch.py --root ../shared/data/cifar10             # ~45 minutes on 2 cores
    python benchmarks/cifar_epoch.py --root ../shared/data/cifar10 --images 2048 --pairs 1   # a dry run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from end_to_end_cpu import ray_floor  # noqa: E402
from memory_vs_size import tree_pss_mib  # noqa: E402

BATCH, LR = 256, 0.05
# reading a process tree's PSS walks each process's page tables under its mmap lock (about 10 ms a process): once
# a second it slowed the 12-process platform tree more than the 3-process loop's; the epoch's plateau is long
SAMPLE_EVERY_S = 5.0
VARIANTS = ("platform", "supcontrast", "bare")
PLATFORM = "platform: python -m core.train (arrays decoded once, augmentation batched on the training device)"


def model_overrides(model: str) -> list[str]:
    """``small_cnn:32`` / ``resnet18:16`` -> config overrides."""
    name, width = model.split(":")
    return [f"model.backbone={name}", "model.stem=cifar",
            f"model.{'resnet_width' if name.startswith('resnet') else 'width'}={width}"]


def _setup(root: str, model: str, images: int):
    """The config, model, loss and optimiser every variant shares (the platform builds its own from the
    same config), and the training arrays."""
    import torch

    import core.data.sources  # noqa: F401  (registers the sources)
    import core.losses  # noqa: F401
    from core.config import RunConfig, layered
    from core.data.sources import load_source
    from core.losses import build_loss, head_of
    from core.models import build_model

    cfg = layered(RunConfig(), overrides=["data.source=cifar10", f"data.root={root}", f"optim.lr={LR}",
                                          f"data.train_limit={images}", *model_overrides(model)])
    torch.manual_seed(0)
    net = build_model(cfg, 10, head_of(cfg))
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    rows = load_source(cfg.data).train_rows
    return cfg, net, build_loss(cfg.loss), opt, rows


def _step(net, loss_fn, opt, views, labels) -> None:
    b = labels.shape[0]
    z = net(views).z  # [2B, D]: SupContrast's layout, the two crops of a batch one after the other
    loss = loss_fn(torch_stack(z, b), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()


def torch_stack(z, b: int):
    import torch

    return torch.stack(torch.split(z, [b, b]), dim=1)


def supcontrast(root: str, model: str, images: int) -> dict:
    """SupContrast's main_supcon.py data path over in-memory CIFAR, one epoch."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms

    cfg, net, loss_fn, opt, rows = _setup(root, model, images)
    data, targets = np.array(rows.images), np.asarray(rows.labels)  # in memory, as torchvision's CIFAR10 holds it

    class TwoCropTransform:
        def __init__(self, transform):
            self.transform = transform

        def __call__(self, x):
            return [self.transform(x), self.transform(x)]

    augment = transforms.Compose([
        transforms.RandomResizedCrop(32, scale=(0.2, 1.0)), transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2), transforms.ToTensor()])  # the model normalises, as the platform's does

    class CIFAR(torch.utils.data.Dataset):  # torchvision.datasets.CIFAR10's __getitem__
        def __len__(self):
            return len(targets)

        def __getitem__(self, i):
            return TwoCropTransform(augment)(Image.fromarray(data[i])), int(targets[i])

    loader = torch.utils.data.DataLoader(CIFAR(), batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True)
    t0, steps = time.perf_counter(), 0
    for views, labels in loader:
        _step(net, loss_fn, opt, torch.cat(views), labels)
        steps += 1
    return {"epoch_seconds": time.perf_counter() - t0, "views": 2 * BATCH * steps}


def bare(root: str, model: str, images: int) -> dict:
    """The step alone: the same model, loss and optimiser on ready views."""
    import torch

    cfg, net, loss_fn, opt, rows = _setup(root, model, images)
    steps = len(rows.labels) // BATCH
    views, labels = torch.rand(2 * BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(net, loss_fn, opt, views, labels)
    return {"epoch_seconds": time.perf_counter() - t0, "views": 2 * BATCH * steps}


def measure(variant: str, root: str, model: str, images: int) -> dict:
    """One variant's epoch in a fresh process, with the peak PSS of its process tree."""
    with tempfile.TemporaryDirectory() as runs:
        if variant == "platform":
            cmd = [sys.executable, "-m", "core.train", "data.source=cifar10", f"data.root={root}", "optim.epochs=1",
                   f"optim.batch_size={BATCH}", f"optim.lr={LR}", f"data.train_limit={images}", f"storage_path={runs}",
                   "eval.online_knn=false", "eval.probe_epochs=1", "eval.few_shot_episodes=0", "eval.test_limit=100",
                   *model_overrides(model)]
        else:
            cmd = [sys.executable, __file__, "--worker", variant.removesuffix("_tuned"), "--root", root, "--models",
                   model, "--images", str(images)]
        log = os.path.join(runs, "log")
        # SupContrast's loop as it ships: without the CPU allocator settings importing `core` makes (the platform's
        # own; the bare step keeps them, being the ceiling of the platform's process)
        env = {**os.environ, **({"THP_MEM_ALLOC_ENABLE": "0", "CONTRASTIVE_MALLOC_TUNING": "0"}
                                if variant == "supcontrast" else {})}
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=env)
            peak = 0.0
            while proc.poll() is None:
                peak = max(peak, tree_pss_mib(proc.pid)[0])
                time.sleep(SAMPLE_EVERY_S)
        text = open(log).read()
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
        if variant == "platform":
            (run,) = [d for d in os.listdir(runs) if d != "log"]
            row = json.loads(open(os.path.join(runs, run, "metrics.jsonl")).readline())
            out = {"epoch_seconds": row["epoch_seconds"], "views": row["views_per_s"] * row["epoch_seconds"]}
        else:
            out = json.loads(text.strip().splitlines()[-1])
    return {**out, "views_per_s": out["views"] / out["epoch_seconds"], "peak_pss": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/cifar10", help="CIFAR-10 (either layout)")
    parser.add_argument("--models", nargs="+", default=["small_cnn:32", "resnet18:16"], help="backbone:width")
    parser.add_argument("--images", type=int, default=50_000, help="training images in the epoch")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the three variants, order rotating")
    parser.add_argument("--tuned-loop", action="store_true",
                        help="also run SupContrast's loop with the platform's allocator settings (a fourth variant)")
    parser.add_argument("--worker", choices=("supcontrast", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps((supcontrast if args.worker == "supcontrast" else bare)(args.root, args.models[0],
                                                                                   args.images)), flush=True)
        return 0
    print(f"CIFAR-10 from {args.root}: {args.images:,} images x 2 views of 32 px, batch {BATCH}, SupCon, SGD; "
          f"{args.pairs} rounds, order rotating; {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}\n", flush=True)
    floor = ray_floor(20.0)
    print(f"Ray's fixed cost (a private instance reading a tiny dataset): peak tree PSS {floor['peak_pss']:.0f} MiB\n",
          flush=True)
    variants = VARIANTS + (("supcontrast_tuned",) if args.tuned_loop else ())
    for model in args.models:
        results: dict[str, list[dict]] = {v: [] for v in variants}
        for r in range(args.pairs):
            for variant in variants[r % len(variants):] + variants[:r % len(variants)]:
                res = measure(variant, args.root, model, args.images)
                results[variant].append(res)
                print(f"  {model} round {r + 1} {variant:<17} epoch {res['epoch_seconds']:6.1f} s, "
                      f"{res['views_per_s']:5.0f} views/s, peak tree PSS {res['peak_pss']:5.0f} MiB", flush=True)
        report(model, results, floor["peak_pss"])
    return 0


def report(model: str, results: dict[str, list[dict]], ray_mib: float) -> None:
    med = {v: statistics.median(r["views_per_s"] for r in rs) for v, rs in results.items()}
    pss = {v: max(r["peak_pss"] for r in rs) for v, rs in results.items()}
    rounds = list(zip(*(results[v] for v in VARIANTS)))
    vs_bare = [p["views_per_s"] / b["views_per_s"] for p, _, b in rounds]
    vs_loop = [p["views_per_s"] / s["views_per_s"] for p, s, _ in rounds]
    print(f"\n{model}: median views/s over {len(rounds)} rounds\n")
    print("| variant | views/s (median) | epoch s (median) | peak tree PSS, MiB (max) |\n|---|---|---|---|")
    for v in results:
        print(f"| {v} | {med[v]:.0f} | {statistics.median(r['epoch_seconds'] for r in results[v]):.1f} | {pss[v]:.0f} |")
    print(f"\nplatform / bare step: {med['platform'] / med['bare']:.3f} (rounds: "
          f"{', '.join(f'{x:.3f}' for x in vs_bare)}; goal >= 0.85)")
    print(f"platform / SupContrast's loop: {med['platform'] / med['supcontrast']:.2f}x (rounds: "
          f"{', '.join(f'{x:.2f}' for x in vs_loop)}; goal >= 1.2x)")
    if "supcontrast_tuned" in med:
        print(f"platform / SupContrast's loop with the platform's allocator settings: "
              f"{med['platform'] / med['supcontrast_tuned']:.2f}x")
    print(f"memory: platform {pss['platform']:.0f} MiB vs the loop's {pss['supcontrast']:.0f} + Ray's fixed "
          f"{ray_mib:.0f} = {pss['supcontrast'] + ray_mib:.0f} MiB (goal: at most that)\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
