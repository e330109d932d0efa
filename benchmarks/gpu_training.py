"""GPU training-step throughput (views/s) of SupCon/VarCon pretraining: plain fp32 eager (the
baseline) vs bf16 autocast + channels_last, vs that plus torch.compile; measured in one run.
Synthetic on-device images (augmentation excluded), SGD momentum, one optimiser step per batch.
Also checks the bf16 losses against fp32 on CUDA. Skips cleanly without a GPU.

    python benchmarks/gpu_training.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from core.config import RunConfig
from core.losses import build_loss, head_of, supcon_loss, varcon_loss
from core.models import build_model


def step_fn(model, loss_fn, opt, loss_name, x, labels, v, bf16):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        z = model(x).z
    b = labels.shape[0]
    loss = loss_fn(z.reshape(b, v, -1), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def bench(backbone: str, stem: str, size: int, batch: int, loss_name: str, mode: str, steps: int) -> float:
    cfg = RunConfig().with_overrides([f"model.backbone={backbone}", f"model.stem={stem}", f"loss.name={loss_name}",
                                      "model.proj_hidden=2048" if backbone == "resnet50" else "model.proj_hidden=512"])
    torch.manual_seed(0)
    model = build_model(cfg, 100, head_of(cfg)).cuda()
    bf16 = mode != "fp32"
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    v = 2
    x = torch.randn(batch * v, 3, size, size, device="cuda")
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 100, (batch,), device="cuda")
    fn = step_fn
    if mode == "bf16+cl+compile":
        model = torch.compile(model)
    for _ in range(3):  # warm-up (and compilation)
        fn(model, loss_fn, opt, loss_name, x, labels, v, bf16)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = fn(model, loss_fn, opt, loss_name, x, labels, v, bf16)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert torch.isfinite(loss), f"non-finite loss in {mode}"
    return batch * v * steps / dt


def check_bf16_losses() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(4096, 2, 128, device="cuda", generator=g), dim=-1)
    y = torch.randint(0, 100, (4096,), device="cuda", generator=g)
    for name, fn in (("supcon", lambda f: supcon_loss(f, y, 0.1)),
                     ("varcon", lambda f: varcon_loss(f.reshape(-1, 128), y.repeat_interleave(2), 0.1, 0.02))):
        ref = fn(z).item()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = fn(z.bfloat16()).item()
        print(f"bf16 check {name}: fp32 {ref:.5f} bf16-autocast {got:.5f} rel.diff {abs(got - ref) / ref:.2e}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="skip torch.compile for ResNet-50")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: GPU benchmark skipped")
        return 0
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__}")
    check_bf16_losses()
    setups = [("resnet18", "cifar", 32, 512), ("resnet50", "imagenet", 224, 128)]
    print(f"{'model':<22} {'loss':<7} {'mode':<17} {'views/s':>9} {'vs fp32 eager':>14}")
    for backbone, stem, size, batch in setups:
        for loss_name in ("supcon", "varcon"):
            base = None
            for mode in ("fp32", "bf16+cl", "bf16+cl+compile"):
                if mode.endswith("compile") and (loss_name == "varcon" or (args.quick and backbone == "resnet50")):
                    continue
                try:
                    vps = bench(backbone, stem, size, batch, loss_name, mode, args.steps)
                except Exception as exc:  # report and continue (e.g. compile unavailable)
                    print(f"{backbone}-{size}px b{batch:<5} {loss_name:<7} {mode:<17} failed: {str(exc)[:80]}")
                    continue
                base = base or vps
                print(f"{backbone + f'-{size}px b{batch}':<22} {loss_name:<7} {mode:<17} {vps:>9.0f} {vps / base:>13.2f}x",
                      flush=True)
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
