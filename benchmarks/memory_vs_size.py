"""Peak memory of one training run against the size of the training set, as the whole process tree's
PSS: ``python -m core.train`` on an ImageFolder of realistic JPEGs (real photographs,
``core.tools.photos``) at 112 px, 1 epoch, ``model.width=16``, with 1,000 and 8,000 training images
(and any ``--sizes``), in fresh processes. ``--settings`` picks the evaluation: ``benchmark`` (a 2-epoch
probe, 20 few-shot episodes: this benchmark's first settings) or ``command`` (the command users run:
``eval.probe_epochs=5 eval.online_knn=false``, every other evaluation setting at its default). Every 10 ms (the driver) and 100 ms (every process under it) the proportional set
size of the driver and its children (Ray's GCS, raylet, workers and Data actors, whose object-store
pages are shared memory) is summed from ``/proc/PID/smaps_rollup``; the peak is reported, with the
median of the repeats. Then the throughput of a 1-epoch run with the platform's object-store budget
against an unbounded one, in ``--repeats`` unsampled pairs (sampling slows the run it measures), with
each side's data wait: the budget can slow training only by making it wait for data.

    python benchmarks/memory_vs_size.py                    # about 30 minutes on 2 cores
    python benchmarks/memory_vs_size.py --settings command --sizes 1000 8000 16000 --throughput-images 0
    python benchmarks/memory_vs_size.py --sizes 500 2000 --repeats 1   # a quick look
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

import psutil

from core.tools.photos import make_photo_folder
from core.train.loop import EVALUATING


def _pss_kib(pid: int) -> dict[str, int]:
    """Pss and Pss_Shmem (kB) of one process, or zeros when it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            out = {}
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Pss", "Pss_Shmem", "Pss_Anon"):
                    out[key] = int(rest.split()[0])
            return out
    except (OSError, ValueError):
        return {}


def process_kind(p: psutil.Process) -> str:
    """A short name for a process of a run's tree (what it runs, not its pid)."""
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    text = " ".join(cmd)
    for key in ("core.train", "raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
        if key in text:
            return key
    return "ray::" + (p.name().split("::")[-1] or "worker") if text.startswith("ray::") else p.name()


def tree_processes(pid: int, skip_root: bool = False) -> list[psutil.Process]:
    """``pid`` and all its descendants (or the descendants only); empty once ``pid`` has exited."""
    try:
        return [*([] if skip_root else [psutil.Process(pid)]), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_pss_mib(pid: int, skip_root: bool = False) -> tuple[float, float, int, dict[str, float]]:
    """(total PSS, shared-memory PSS, processes, PSS by process kind) of ``pid`` and all its
    descendants (or the descendants only), MiB."""
    procs = tree_processes(pid, skip_root)
    if not procs:
        return 0.0, 0.0, 0, {}
    rows = [_pss_kib(p.pid) for p in procs]
    kinds: dict[str, float] = {}
    for p, r in zip(procs, rows):
        # the loop's main process apart from its loader workers
        name = ("root: " if p.pid == pid else "") + process_kind(p)
        kinds[name] = kinds.get(name, 0) + r.get("Pss", 0) / 1024
    return (sum(r.get("Pss", 0) for r in rows) / 1024, sum(r.get("Pss_Shmem", 0) for r in rows) / 1024, len(procs),
            kinds)


SETTINGS = {"benchmark": ["eval.probe_epochs=2", "eval.online_knn=false", "eval.few_shot_episodes=20"],
            "command": ["eval.probe_epochs=5", "eval.online_knn=false"]}  # the second: issue #38's command


def _says(log, text: str) -> bool:
    """Whether the run's log (a file being written) holds ``text`` yet."""
    log.flush()
    with open(f"/proc/self/fd/{log.fileno()}") as fh:
        return text in fh.read()


def run(root: str, images: int, out: str, extra: list[str], sample: bool = True, settings: str = "benchmark") -> dict:
    """One fresh ``core.train`` process; its peak tree PSS when ``sample`` (reading smaps_rollup costs the
    kernel ~55 ms per large process: the sampling slows the run it measures, so the throughput pair
    below runs unsampled), and where the peak fell (training or evaluation, by the epoch's end)."""
    cmd = [sys.executable, "-m", "core.train", "data.source=imagefolder", f"data.root={root}", "data.image_size=112",
           f"data.train_limit={images}", "optim.epochs=1", "optim.batch_size=64", "model.width=16",
           *SETTINGS[settings], f"storage_path={out}", *extra]
    peak = shmem = 0.0
    procs, kinds = 0, {}
    others: tuple[float, float, int, dict[str, float]] = (0.0, 0.0, 0, {})
    phase_peak = {"training": 0.0, "evaluation": 0.0}
    phase = "training"
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        tick = 0
        # the driver every 10 ms (an evaluation chunk's activations live well under a second), the
        # rest of the tree every 100 ms: a short spike is caught at every data-set size
        while proc.poll() is None and not sample:
            time.sleep(0.1)
        while proc.poll() is None:
            if tick % 10 == 0:
                others = tree_pss_mib(proc.pid, skip_root=True)
                if phase == "training" and _says(log, f"; {EVALUATING} the frozen encoder"):
                    phase = "evaluation"
            own = _pss_kib(proc.pid)
            pss = others[0] + own.get("Pss", 0) / 1024
            phase_peak[phase] = max(phase_peak[phase], pss)
            if pss > peak:
                peak, shmem, procs = pss, others[1] + own.get("Pss_Shmem", 0) / 1024, others[2] + 1
                kinds = {**others[3], "core.train": own.get("Pss", 0) / 1024}
            tick += 1
            time.sleep(0.01)
        log.seek(0)
        text = log.read()
    if proc.returncode:
        raise SystemExit(f"run with {images} images failed:\n{text[-3000:]}")
    run_dir = next(os.path.join(out, d) for d in os.listdir(out))
    metrics = json.loads(open(os.path.join(run_dir, "summary.json")).read())
    last_epoch = json.loads(open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()[-1])
    subprocess.run(["rm", "-rf", run_dir])
    return {"images": images, "peak_pss": peak, "shmem_at_peak": shmem, "processes": procs, "by_kind": kinds,
            "peak_training": phase_peak["training"], "peak_evaluation": phase_peak["evaluation"],
            "wall": time.perf_counter() - t0, "views_per_s": metrics["views_per_s"],
            "data_wait": last_epoch["data_wait_seconds"], "epoch_seconds": last_epoch["epoch_seconds"],
            "knn": metrics.get("knn_top1"), "probe": metrics.get("probe_top1")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--throughput-images", type=int, default=2000)
    p.add_argument("--root", default=None)
    p.add_argument("--settings", choices=sorted(SETTINGS), default="benchmark",
                   help="the evaluation settings: this benchmark's or the plain command's (see the docstring)")
    args = p.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="memjpegs-")
    if not os.path.isdir(os.path.join(root, "train")):
        per_class = -(-max(args.sizes) // 20)
        t0 = time.perf_counter()
        make_photo_folder(root, 20, {"train": per_class, "val": 5 if args.settings == "command" else 10},
                          size=(200, 150), quality=90)
        print(f"made {20 * per_class} train + 200 val JPEGs (200 x 150) in {time.perf_counter() - t0:.0f} s",
              flush=True)
    peaks: dict[int, list[float]] = {n: [] for n in args.sizes}
    phases: dict[int, list[tuple[float, float]]] = {n: [] for n in args.sizes}
    with tempfile.TemporaryDirectory() as out:
        for rep in range(args.repeats):
            for n in args.sizes:
                r = run(root, n, out, [], settings=args.settings)
                peaks[n].append(r["peak_pss"])
                phases[n].append((r["peak_training"], r["peak_evaluation"]))
                print(f"repeat {rep + 1}: {n} images: peak tree PSS {r['peak_pss']:.0f} MiB ({r['shmem_at_peak']:.0f} "
                      f"shared, {r['processes']} processes; training {r['peak_training']:.0f}, evaluation "
                      f"{r['peak_evaluation']:.0f}), {r['wall']:.0f} s, {r['views_per_s']:.0f} views/s, "
                      f"kNN {r['knn']:.1f} probe {r['probe']:.1f}\n    at the peak: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["by_kind"].items(), key=lambda kv: -kv[1])),
                      flush=True)
        medians = {n: statistics.median(v) for n, v in peaks.items()}
        lo, hi = min(args.sizes), max(args.sizes)
        print(f"\nsettings {args.settings}: median peak tree PSS: "
              + ", ".join(f"{n} images {m:.0f} MiB" for n, m in medians.items())
              + f"; growth {lo} -> {hi}: {medians[hi] - medians[lo]:+.0f} MiB (goal: at most +100 MiB from 1,000 to "
                f"8,000); per 1,000 images {1000 * (medians[hi] - medians[lo]) / (hi - lo):+.1f} MiB")
        print("median peak by phase: " + "; ".join(
            f"{n} images training {statistics.median(t for t, _ in v):.0f} evaluation "
            f"{statistics.median(e for _, e in v):.0f} MiB" for n, v in phases.items()))
        n = args.throughput_images
        if not n:
            return 0
        pairs = []
        for rep in range(args.repeats):
            pair = (run(root, n, out, [], sample=False),
                    run(root, n, out, ["data.object_store_mb=100000"], sample=False))
            pairs.append(pair)
            sides = [f"{name} {r['views_per_s']:.0f} views/s, epoch {r['epoch_seconds']:.1f} s of which data wait "
                     f"{r['data_wait']:.1f} s" for name, r in zip(("budget", "unbounded"), pair)]
            print(f"throughput, 1 epoch of {n} images, unsampled, pair {rep + 1}: " + "; ".join(sides), flush=True)
        # the budget can slow training only by making it wait for data: the data wait is its direct measure
        # (this machine's epoch time moved 1.7x between identical runs, for both)
        ratio = statistics.median(b["views_per_s"] / u["views_per_s"] for b, u in pairs)
        waits = [statistics.median(r["data_wait"] for r in side) for side in zip(*pairs)]
        print(f"median views/s ratio budget / unbounded {ratio:.2f}; median data wait {waits[0]:.1f} vs "
              f"{waits[1]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
