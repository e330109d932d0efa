"""The CPU allocator's part in a training epoch: glibc's defaults against large blocks from the heap.

One process per setting (``mallopt`` before torch allocates anything; the setting ``core`` makes on import
is switched off so each is the one named), the platform's training epoch of a CIFAR-stem ResNet-18 (width 16)
on 3,072 real CIFAR-10 images x 2 views, 2 epochs: views/s of each and the process's peak RSS (VmHWM).

    python benchmarks/allocator.py --root ../shared/data/cifar10      # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys

SETTINGS = {"default": {}, "heap (core's)": {"mmap": 256, "trim": 512}, "heap, one arena": {"mmap": 256, "trim": 512,
                                                                                            "arena": 1},
            "heap, trim 64 MiB": {"mmap": 256, "trim": 64}}
CODES = {"mmap": -3, "trim": -1, "arena": -8}  # glibc's M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_ARENA_MAX


def one(root: str, setting: str) -> str:
    libc = ctypes.CDLL("libc.so.6")
    for key, value in SETTINGS[setting].items():
        assert libc.mallopt(CODES[key], value if key == "arena" else value << 20) == 1, key
    os.environ["CONTRASTIVE_MALLOC_TUNING"] = "0"
    import torch

    import core.data.augment  # noqa: F401
    import core.data.sources  # noqa: F401
    import core.losses  # noqa: F401
    import core.models  # noqa: F401
    from core.config import RunConfig, layered
    from core.data.bad_images import BadImages
    from core.data.pipeline import epoch_stream, train_batches
    from core.data.sources import load_source
    from core.train.loop import make_stepper
    from core.train.step import train_epoch

    cfg = layered(RunConfig(), overrides=["data.source=cifar10", f"data.root={root}", "data.train_limit=3072",
                                          "model.backbone=resnet18", "model.resnet_width=16"])
    rows = load_source(cfg.data).train_rows
    torch.use_deterministic_algorithms(True, warn_only=True)  # as the platform's CPU runs
    torch.manual_seed(0)
    stepper = make_stepper(cfg, 10, 3072, 1, torch.device("cpu"))
    rates = []
    for epoch in range(2):
        batches = train_batches(epoch_stream(rows, cfg, epoch), 256)
        stats, _, _ = train_epoch(stepper, batches, epoch, 0, BadImages(0.01, expected=3072))
        rates.append(f"{stats.views_per_s:.0f}")
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
    return f"| {setting} | {' / '.join(rates)} | {int(peak) / 1024:.0f} |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="../shared/data/cifar10")
    p.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.setting:
        print(one(args.root, args.setting), flush=True)
        return 0
    print("| allocator | views/s, epochs 1 / 2 | peak RSS, MiB |\n|---|---|---|")
    for setting in SETTINGS:
        done = subprocess.run([sys.executable, __file__, "--root", args.root, "--setting", setting],
                              capture_output=True, text=True)
        print(done.stdout.strip().splitlines()[-1] if done.returncode == 0 else f"| {setting} | failed | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
