"""Loss-kernel benchmark: forward+backward time (and peak memory on GPU) of our SupCon, SimCLR and
VarCon against pytorch-metric-learning (SupConLoss, NTXentLoss) and a naive reference in the style
of the original SupContrast code, measured in the same run; prints ratios and checks values agree.

    python benchmarks/loss_kernels.py                      # CPU, M = 512, 2048, 8192
    python benchmarks/loss_kernels.py --device cuda --sizes 8192 32768

On CPU the "MiB" column is the peak resident memory added by one forward+backward, measured in a
fresh process per (loss, implementation, M) so one kernel's high-water mark cannot hide another's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from core.losses import simclr_loss, supcon_loss, varcon_loss

D = 128


def naive_supcon(flat: torch.Tensor, labels: torch.Tensor, t: float) -> torch.Tensor:
    """Reference written from the L_out formula, as SupContrast does it (exp, masks, log of sums)."""
    m = flat.shape[0]
    logits = flat @ flat.T / t
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    logits_mask = 1 - torch.eye(m, device=flat.device)
    mask = (labels[:, None] == labels[None, :]).float() * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    return -((mask * log_prob).sum(1) / mask.sum(1).clamp_min(1)).mean()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, device: str, reps: int) -> tuple[float, float, float]:
    """Median seconds of forward+backward, peak extra MiB (GPU only, else nan), loss value."""
    x = z.clone().requires_grad_(True)
    value = fn(x).item()  # warm-up
    fn(x).backward()
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(reps):
        x.grad = None
        _sync(device)
        t0 = time.perf_counter()
        fn(x).backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else float("nan")
    return statistics.median(times), peak, value


def make_cases(m: int, classes: int, dev: str, pml) -> tuple[torch.Tensor, dict[str, dict[str, Callable]]]:
    """Seeded unit embeddings (view-major flat [2N, D]) and every (loss, implementation) on them."""
    g = torch.Generator(device="cpu").manual_seed(0)
    flat = F.normalize(torch.randn(m, D, generator=g), dim=1).to(dev)
    labels = torch.randint(0, classes, (m,), generator=g).to(dev)
    n = m // 2
    # view-major flat layout [view0 of all images; view1 of all images] <-> features [N, 2, D]
    as_views = lambda x: x.reshape(2, n, D).transpose(0, 1)  # noqa: E731
    img_labels = labels[:n]
    flat_labels = img_labels.repeat(2)
    inst = torch.arange(n, device=dev).repeat(2)
    cases: dict[str, dict[str, Callable]] = {
        "supcon": {"ours": lambda x: supcon_loss(as_views(x), img_labels, 0.1),
                   "naive": lambda x: naive_supcon(x, flat_labels, 0.1)},
        "simclr": {"ours": lambda x: simclr_loss(as_views(x), 0.1),
                   "naive": lambda x: naive_supcon(x, inst, 0.1)},
        "varcon": {"ours": lambda x: varcon_loss(x, flat_labels, 0.1, 0.02)},
    }
    if pml is not None:
        cases["supcon"]["pml"] = lambda x, f=pml.SupConLoss(temperature=0.1): f(x, flat_labels)
        cases["simclr"]["pml"] = lambda x, f=pml.NTXentLoss(temperature=0.1): f(x, inst)
    return flat, cases


def _child_peak_mib(loss: str, impl: str, m: int, classes: int, threads: int) -> None:
    """(In a fresh process) print the peak RSS added by one forward+backward."""
    if threads:
        torch.set_num_threads(threads)
    try:
        from pytorch_metric_learning import losses as pml
    except ImportError:
        pml = None
    flat, cases = make_cases(m, classes, "cpu", pml)
    x = flat.clone().requires_grad_(True)
    base = _peak_rss_kib()
    cases[loss][impl](x).backward()
    print((_peak_rss_kib() - base) / 1024)


def _peak_rss_kib() -> int:
    """This process's resident high-water mark (VmHWM: per address space, so unlike ru_maxrss it
    does not inherit the parent's peak across fork+exec)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def cpu_peak_mib(loss: str, impl: str, m: int, classes: int, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", loss, impl, str(m), str(classes), str(threads)],
                         capture_output=True, text=True, timeout=600)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")  # e.g. killed for memory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        loss, impl, m, classes, threads = args.child
        return _child_peak_mib(loss, impl, int(m), int(classes), int(threads))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from pytorch_metric_learning import losses as pml
    except ImportError:
        pml = None
        print("pytorch-metric-learning not installed (pip install -e '.[bench]'): skipping that baseline")
    dev = args.device
    print(f"device={dev} torch={torch.__version__} threads={torch.get_num_threads()} D={D} classes={args.classes}")
    print(f"{'M':>6} {'loss':<8} {'impl':<10} {'ms':>9} {'MiB':>8} {'value':>10} {'ratio vs ours':>14}")
    for m in args.sizes:
        flat, cases = make_cases(m, args.classes, dev, pml)
        for loss_name, impls in cases.items():
            ours_t = None
            ref_value = None
            for impl, fn in impls.items():
                try:
                    sec, mib, value = measure(fn, flat, dev, args.reps)
                except RuntimeError as exc:  # out of memory for the naive/PML kernels at large M
                    print(f"{m:>6} {loss_name:<8} {impl:<10} {'failed':>9}  {str(exc)[:60]}")
                    if dev == "cuda":
                        torch.cuda.empty_cache()
                    continue
                if dev == "cpu":
                    mib = cpu_peak_mib(loss_name, impl, m, args.classes, torch.get_num_threads())
                ours_t = sec if impl == "ours" else ours_t
                ref_value = value if impl == "ours" else ref_value
                ratio = f"{sec / ours_t:.2f}x" if ours_t else ""
                agree = "" if ref_value is None or abs(value - ref_value) <= 1e-5 * max(1, abs(ref_value)) else " VALUE MISMATCH"
                print(f"{m:>6} {loss_name:<8} {impl:<10} {sec * 1e3:>9.2f} {mib:>8.1f} {value:>10.5f} {ratio:>14}{agree}")
    # VarCon vs SupCon cost as the class count grows
    print("\nVarCon vs SupCon as classes grow (ms fwd+bwd):")
    for m in args.sizes[-2:]:
        for c in (10, 100, 1000):
            g = torch.Generator().manual_seed(1)
            flat = F.normalize(torch.randn(m, D, generator=g), dim=1).to(dev)
            labels = torch.randint(0, c, (m // 2,), generator=g).to(dev)
            sv, _, _ = measure(lambda x: supcon_loss(x.reshape(2, m // 2, D).transpose(0, 1), labels, 0.1), flat, dev, args.reps)
            vv, _, _ = measure(lambda x: varcon_loss(x, labels.repeat(2), 0.1, 0.02), flat, dev, args.reps)
            print(f"  M={m:>6} classes={c:>5}: supcon {sv * 1e3:8.2f}  varcon {vv * 1e3:8.2f}  varcon/supcon {vv / sv:.2f}")


if __name__ == "__main__":
    main()
