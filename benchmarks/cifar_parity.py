"""Parity with the papers' own training loop: the platform's run of the CIFAR-10 laptop recipe against
SupContrast's ``main_supcon.py`` / ``main_ce.py`` then ``main_linear.py``, written here as plain PyTorch,
with the same backbone, epochs, batch, learning rate and training images, 3 seeds each.

- **platform**: ``python -m core.train --config configs/cifar10_laptop.yaml data.root=ROOT loss.name=L seed=S``
  (its own evaluation: weighted kNN and the linear probe on frozen features).
- **SupContrast**: in-memory CIFAR as PIL images, ``TwoCropTransform`` (SupCon) or one crop (CE) of
  RandomResizedCrop(32, scale=(0.2, 1)), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2,
  ``DataLoader(num_workers=2, shuffle=True)``, SGD (momentum 0.9, weight decay 1e-4) with SupContrast's
  per-epoch cosine to lr x 1e-3 (``util.adjust_learning_rate``), the same model (the platform's module,
  normalising inside) and loss; then ``main_linear.py``: the frozen encoder in eval mode, a linear layer
  trained on RandomResizedCrop + flip views with SGD (momentum 0.9, no weight decay) for ``--linear-epochs``,
  its final-epoch test top-1 (SupContrast prints the best epoch's; both are recorded).

Both encoders are scored alike three ways (the platform's weighted kNN, its linear probe on frozen features,
and ``main_linear``), so a difference lies in the training loop, not in a protocol; each side's own linear
evaluation is shown beside them. Top-1 on all 10,000 test images; per loss and metric, the mean over seeds with
its 95% interval and the difference platform - SupContrast with Welch's 95% interval. Parity holds when that
interval contains 0 or lies above it, for each of the three. VarCon: VarContrast's public recipe is SupContrast's (the same two crops, optimiser and
``main_linear``), so ``--losses varcon`` runs the same loop with its loss.

    python benchmarks/cifar_parity.py --root ../shared/data/cifar10            # ~45 minutes on 2 cores
    python benchmarks/cifar_parity.py --root ../shared/data/cifar10 --seeds 0 --epochs 1 --images 1024  # dry run
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cifar10_laptop.yaml"


def recipe(root: str, loss: str, seed: int, extra: list[str]):
    """The laptop recipe's config for one run (the platform's own layering: source defaults, the file, overrides)."""
    import core.data.augment  # noqa: F401  (register the components the config names)
    import core.data.sources  # noqa: F401
    import core.eval.corrupted  # noqa: F401
    import core.losses  # noqa: F401
    import core.models  # noqa: F401
    from core.config import RunConfig, layered

    return layered(RunConfig(), [CONFIG], [f"data.root={root}", f"loss.name={loss}", f"seed={seed}", *extra])


def _arrays(cfg):
    from core.data.sources import load_source

    src = load_source(cfg.data)
    train, test = src.train_rows, src.test
    import numpy as np

    return (np.array(train.images), np.asarray(train.labels)), (np.array(test.images), np.asarray(test.labels))


def _loader(images, labels, transform, batch: int, shuffle: bool, seed: int, drop_last: bool):
    import torch
    from PIL import Image

    class CIFAR(torch.utils.data.Dataset):  # torchvision.datasets.CIFAR10's __getitem__ on in-memory arrays
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i])), int(labels[i])

    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(CIFAR(), batch_size=batch, shuffle=shuffle, num_workers=2, drop_last=drop_last,
                                       generator=g, persistent_workers=True)


def _crop_flip():
    from torchvision import transforms

    return [transforms.RandomResizedCrop(32, scale=(0.2, 1.0)), transforms.RandomHorizontalFlip()]


def supcontrast_train(cfg, train):
    """main_supcon.py (SupCon, VarCon) or main_ce.py (cross-entropy): the encoder, trained."""
    import torch
    from torchvision import transforms

    from core.losses import build_loss, head_of
    from core.losses.registry import loss_family
    from core.models import build_model

    torch.manual_seed(cfg.seed)
    augment = transforms.Compose([*_crop_flip(), transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)],
                                                                        p=0.8),
                                  transforms.RandomGrayscale(p=0.2), transforms.ToTensor()])
    ce = cfg.loss.name == "cross_entropy"
    two = (lambda x: [augment(x), augment(x)]) if not ce else augment  # main_ce.py: one crop per image
    loader = _loader(*train, two, cfg.optim.batch_size, True, cfg.seed, drop_last=True)
    model = build_model(cfg, 10, head_of(cfg))
    loss_fn, family = build_loss(cfg.loss), loss_family(cfg.loss.name)
    base_lr, epochs = cfg.optim.lr, cfg.optim.epochs
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    low = base_lr * cfg.optim.min_lr_ratio
    for epoch in range(1, epochs + 1):
        for group in opt.param_groups:  # util.adjust_learning_rate (--cosine)
            group["lr"] = low + (base_lr - low) * (1 + math.cos(math.pi * epoch / epochs)) / 2
        model.train()
        for views, labels in loader:
            b, v = labels.shape[0], 1 if ce else 2
            # the crops in the platform's order (sample-major, [B * V]) so the family's own objective applies; SupCon
            # and VarCon treat every view alike, so this is SupContrast's torch.cat(views) reordered
            x = views if ce else torch.stack(views, 1).flatten(0, 1)
            loss = family.objective(loss_fn, model(x), labels, b, v)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def main_linear(model, cfg, train, test, epochs: int, lr: float) -> dict:
    """main_linear.py: a linear classifier on the frozen encoder (eval mode), trained on crop + flip views."""
    import torch
    from torch import nn
    from torchvision import transforms

    torch.manual_seed(cfg.seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loader = _loader(*train, transforms.Compose([*_crop_flip(), transforms.ToTensor()]), cfg.optim.batch_size, True,
                     cfg.seed, drop_last=False)
    test_loader = _loader(*test, transforms.ToTensor(), 512, False, 0, drop_last=False)
    clf = nn.Linear(model.encoder.feature_dim, 10)
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    milestones = [round(epochs * f) for f in (0.6, 0.75, 0.9)]  # main_linear's 60, 75, 90 of 100, x0.2 each
    accs = []
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * 0.2 ** sum(epoch >= m for m in milestones)
        for images, labels in loader:
            with torch.no_grad():
                feats = model.features(images)
            loss = nn.functional.cross_entropy(clf(feats), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        correct = 0
        with torch.no_grad():
            for images, labels in test_loader:
                correct += int((clf(model.features(images)).argmax(1) == labels).sum())
        accs.append(100.0 * correct / len(test[1]))
    return {"linear_top1": accs[-1], "linear_best_top1": max(accs)}


def platform_protocol(model, cfg, train, test) -> dict:
    """The platform's own evaluation (weighted kNN, linear probe on frozen features) of any encoder."""
    import torch

    from core.data.arrays import ArraySplit
    from core.eval.stage import evaluate

    cfg = cfg.with_(**{"eval.robustness": False})
    torch.manual_seed(cfg.seed)
    tr = ArraySplit(train[0], train[1], __import__("numpy").arange(len(train[1])))
    te = ArraySplit(test[0], test[1], __import__("numpy").arange(len(test[1])))
    s = evaluate(model, cfg, tr, te, 10, torch.device("cpu")).scalars
    return {"knn_top1": s["knn_top1"], "probe_top1": s["probe_top1"]}


def worker(args) -> dict:
    """One seed of one loss, either side, scored both ways."""
    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    cfg = recipe(args.root, args.losses[0], args.seeds[0], args.override)
    train, test = _arrays(cfg)
    t0 = time.perf_counter()
    if args.worker == "supcontrast":
        model = supcontrast_train(cfg, train)
    else:
        from core.losses import head_of
        from core.models import build_model
        from core.runs.checkpoint import model_checkpoint
        from core.runs.rundir import RunDir

        model = build_model(cfg, 10, head_of(cfg))
        model.load_state_dict(model_checkpoint(RunDir(args.run_dir), torch.device("cpu")).model)
    seconds = time.perf_counter() - t0
    own = platform_protocol(model, cfg, train, test)
    linear = main_linear(model, cfg, train, test, args.linear_epochs, args.linear_lr)
    return {**own, **linear, "train_seconds": seconds if args.worker == "supcontrast" else float("nan")}


def run_side(side: str, args, loss: str, seed: int) -> dict:
    """A fresh process per run (threads, memory and the DataLoader's workers as a user's would be)."""
    common = ["--root", args.root, "--losses", loss, "--seeds", str(seed), "--linear-epochs", str(args.linear_epochs),
              "--linear-lr", str(args.linear_lr), *sum((["--override", o] for o in args.override), [])]
    with tempfile.TemporaryDirectory() as runs:
        platform = {}
        if side == "platform":
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "core.train", "--config", str(CONFIG), f"data.root={args.root}",
                   f"loss.name={loss}", f"seed={seed}", "eval.robustness=false", "eval.test_limit=null",
                   f"storage_path={runs}", *args.override]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            (run,) = os.listdir(runs)
            summary = json.loads((Path(runs) / run / "summary.json").read_text())
            platform = {"knn_top1": summary["knn_top1"], "probe_top1": summary["probe_top1"],
                        "train_seconds": sum(json.loads(line)["epoch_seconds"]
                                             for line in open(Path(runs) / run / "metrics.jsonl")),
                        "wall_seconds": time.perf_counter() - t0}
            common += ["--run-dir", str(Path(runs) / run)]
        done = subprocess.run([sys.executable, __file__, "--worker", side, *common], capture_output=True, text=True,
                              cwd=REPO)
        if done.returncode:
            raise SystemExit(f"{side} worker failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        scored = json.loads(done.stdout.strip().splitlines()[-1])
    if side == "platform":  # the platform's own evaluation is its run's; the worker adds main_linear on its encoder
        return {**scored, **platform, "cross_knn_top1": scored["knn_top1"], "cross_probe_top1": scored["probe_top1"]}
    return scored


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean difference a - b and Welch's 95% interval (nan below 2 values a side)."""
    from scipy import stats

    diff = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * se
    return diff, diff - half, diff + half


def mean_ci(values: list[float]) -> str:
    sys.path.insert(0, str(REPO))
    from core.study.stats import mean_ci_text

    return mean_ci_text(values, ".2f")


METRICS = (("knn_top1", "kNN top-1 (the platform's kNN on both encoders)"),
           ("probe_top1", "linear probe (the platform's, on frozen features, on both encoders)"),
           ("linear_top1", "main_linear (SupContrast's, on crop + flip views, on both encoders; final epoch)"),
           ("own", "each side's own linear evaluation (platform: its probe; SupContrast: main_linear)"))


def report(loss: str, rows: dict[str, list[dict]]) -> bool:
    """The side-by-side table of one loss; whether parity holds on the metrics that score both encoders alike
    (kNN and the two linear evaluations): the interval of the difference contains 0 or lies above it."""
    series = {key: {s: [r[key] for r in rows[s]] for s in rows} for key in ("knn_top1", "probe_top1", "linear_top1")}
    series["own"] = {"platform": [r["probe_top1"] for r in rows["platform"]],
                     "supcontrast": [r["linear_top1"] for r in rows["supcontrast"]]}
    print(f"\n{loss}: top-1 on the 10,000 test images, mean [95% interval] over seeds "
          f"{', '.join(str(r['seed']) for r in rows['platform'])}\n")
    print("| metric | platform | SupContrast | platform - SupContrast (Welch 95%) | parity |\n|---|---|---|---|---|")
    ok = True
    for key, label in METRICS:
        p, s = series[key]["platform"], series[key]["supcontrast"]
        d, lo, hi = welch(p, s)
        holds = not math.isfinite(lo) or hi >= 0
        ok &= holds if key != "own" else True
        verdict = "(two protocols)" if key == "own" else "yes" if holds else "NO: SupContrast ahead"
        print(f"| {label} | {mean_ci(p)} | {mean_ci(s)} | {d:+.2f} [{lo:+.2f}, {hi:+.2f}] | {verdict} |")
    best = [r["linear_best_top1"] for r in rows["supcontrast"]]
    print(f"\nSupContrast's own print (main_linear's best epoch, not its final): {mean_ci(best)}; training seconds: "
          f"platform {mean_ci([r['train_seconds'] for r in rows['platform']])}, SupContrast "
          f"{mean_ci([r['train_seconds'] for r in rows['supcontrast']])}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/cifar10")
    parser.add_argument("--losses", nargs="+", default=["supcon", "cross_entropy"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--linear-epochs", type=int, default=10, help="main_linear's epochs (100 in the paper; the "
                        "SupCon paper notes 10 suffice)")
    parser.add_argument("--linear-lr", type=float, default=1.0,
                        help="main_linear's learning rate (its parser's default is 0.1 and its README's SupCon command "
                             "5, for ResNet-50's 2,048 features; on this recipe's 128, 1.0 scored best of the three)")
    parser.add_argument("--override", action="append", default=[], help="a config override for both sides (dry runs)")
    parser.add_argument("--worker", choices=("supcontrast", "platform"), help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return 0
    cfg = recipe(args.root, args.losses[0], 0, args.override)
    print(f"CIFAR-10 laptop recipe ({CONFIG.relative_to(REPO)}): {cfg.model.backbone} width {cfg.model.base_width()}, "
          f"{cfg.optim.epochs} epochs, batch {cfg.optim.batch_size}, lr {cfg.optim.lr}, "
          f"{cfg.data.train_limit or 50000:,} training images; main_linear {args.linear_epochs} epochs at lr "
          f"{args.linear_lr}; {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}", flush=True)
    verdicts = {}
    for loss in args.losses:
        rows: dict[str, list[dict]] = {"platform": [], "supcontrast": []}
        for seed in args.seeds:
            for side in ("platform", "supcontrast") if seed % 2 == 0 else ("supcontrast", "platform"):
                res = {**run_side(side, args, loss, seed), "seed": seed}
                rows[side].append(res)
                print(f"  {loss} seed {seed} {side:<11} kNN {res['knn_top1']:.2f} probe {res['probe_top1']:.2f} "
                      f"main_linear {res['linear_top1']:.2f} (best {res['linear_best_top1']:.2f})", flush=True)
        verdicts[loss] = report(loss, rows)
    print("\nparity (kNN and both linear evaluations, each on both encoders): " + ", ".join(f"{k} {'holds' if v else 'FAILS'}"
                                                                 for k, v in verdicts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
