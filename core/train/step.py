"""One epoch of training steps, testable without Ray: the :class:`Stepper` (model, loss, optimiser,
schedule), the device-side divergence guard and :func:`train_epoch`.

The step keeps its running sums on the device and checks for a non-finite loss every
``FINITE_CHECK_EVERY`` steps, so a GPU step never waits for the host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from core.data.bad_images import BadImages
from core.data.block_ops import owned
from core.losses.dist import is_distributed
from core.losses.registry import LossFamily
from core.models import ContrastiveModel
from core.results import EpochStats, PosteriorStats
from core.train.optim import set_lr

FINITE_CHECK_EVERY = 16  # steps between host checks of the device-side "loss stayed finite" flag


class Diverged(Exception):
    """The loss (or, after an epoch, a weight) became non-finite at ``step`` of ``epoch``."""

    def __init__(self, epoch: int, step: int, cause: str = "non-finite loss") -> None:
        super().__init__(f"diverged at epoch {epoch}, step {step}" + ("" if cause == "non-finite loss" else f" ({cause})"))
        self.epoch, self.step, self.cause = epoch, step, cause


def check_weights(model: nn.Module, epoch: int, step: int) -> None:
    """One host sync per epoch: a step can leave inf/NaN weights behind a finite loss (``optim.lr=1e30``
    on the epoch's last step); the run then diverged, it must not go on to an evaluation of garbage."""
    if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        raise Diverged(epoch, step - 1, "non-finite weights")


class FiniteGuard:
    """Device-side record of the first step whose loss was not finite; ``check`` syncs with the host
    (and, with several workers, agrees across them) and raises :class:`Diverged`."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def update(self, loss: Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, step), self.first_bad)

    def check(self, epoch: int) -> None:
        flag = self.first_bad.clone()
        if is_distributed():  # every rank must stop together: take the earliest bad step of any rank
            flag = torch.where(flag < 0, torch.full_like(flag, 2**62), flag)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            flag = torch.where(flag == 2**62, torch.full_like(flag, -1), flag)
        first = int(flag.item())
        if first >= 0:
            raise Diverged(epoch, first)


@dataclass
class Stepper:
    """Everything a training step needs. ``make_views(batch, epoch) -> [B, V, C, H, W]`` float views
    on ``device``; ``lr_at(step) -> float``."""

    net: nn.Module  # the model, DDP-wrapped with several workers
    model: ContrastiveModel  # the bare model (parameters, clipping, the variational head)
    loss_fn: nn.Module
    family: LossFamily
    optimizer: torch.optim.Optimizer
    device: torch.device
    make_views: Callable[[dict, int], Tensor]
    lr_at: Callable[[int], float]
    grad_clip: float | None = None
    precision: str = "fp32"
    world: int = 1
    channels_last: bool = False
    posterior_sum: Tensor | None = None
    posterior_steps: int = 0
    _variance_params: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._variance_params = self.model.variance_parameters()

    def step(self, views: Tensor, labels: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """One optimiser step; returns the (device) loss and gradient norm without syncing."""
        set_lr(self.optimizer, self.lr_at(step))
        b, v = views.shape[:2]
        x = views.flatten(0, 1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.net(x)
        loss = self.family.objective(self.loss_fn, out, labels, b, v)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if getattr(out, "logvar", None) is not None:
            self._track_posterior(out.mu.detach(), out.logvar.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip or float("inf"))
        self.optimizer.step()
        return loss.detach().float(), grad_norm.detach().float()

    def _track_posterior(self, mu: Tensor, logvar: Tensor) -> None:
        """Device sums of a variational head's diagnostics (no host sync), in :class:`PosteriorStats`'
        field order: mean log sigma^2, spread of the log-det across inputs, ||mu||, and the
        log-variance layer's gradient norm."""
        grads = [p.grad for p in self._variance_params if p.grad is not None]
        logdet = logvar.float().sum(-1)
        row = torch.stack([logvar.float().mean(), logdet.std(), mu.float().norm(dim=-1).mean(),
                           torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                           if grads else logdet.new_zeros(())])
        self.posterior_sum = row if self.posterior_sum is None else self.posterior_sum + row
        self.posterior_steps += 1

    def posterior_stats(self) -> PosteriorStats | None:
        """Means over the steps since the last call (None for heads without a posterior); resets."""
        if self.posterior_sum is None:
            return None
        values = (self.posterior_sum / max(self.posterior_steps, 1)).tolist()
        self.posterior_sum, self.posterior_steps = None, 0
        return PosteriorStats(*values)


@dataclass
class _Sums:
    """An epoch's running totals (the loss and gradient sums stay on the device)."""

    loss: Tensor
    grad: Tensor
    steps: int = 0
    samples: int = 0
    views: int = 0
    wait: float = 0.0
    classes: list = field(default_factory=list)
    index: list = field(default_factory=list)


def train_epoch(stepper: Stepper, batches: Iterable[dict[str, np.ndarray]], epoch: int, step: int,
                bad: BadImages) -> tuple[EpochStats, int, np.ndarray]:
    """Train over one epoch's batches. Returns the epoch's stats, the step counter after it and the
    sample indices this rank trained on. Raises :class:`Diverged` on a non-finite loss."""
    dev = stepper.device
    sums = _Sums(torch.zeros((), device=dev), torch.zeros((), device=dev))
    guard = FiniteGuard(dev)
    t0 = time.perf_counter()
    it = iter(batches)
    while True:
        t_wait = time.perf_counter()
        batch = next(it, None)
        sums.wait += time.perf_counter() - t_wait
        if batch is None:
            break
        batch = bad.keep(batch)
        if len(batch["label"]) == 0:
            continue
        _one_step(stepper, batch, epoch, step, guard, sums)
        step += 1
        if sums.steps % FINITE_CHECK_EVERY == 0:
            guard.check(epoch)
    guard.check(epoch)
    bad.finish()
    return _epoch_stats(stepper, sums, epoch, step, time.perf_counter() - t0, len(bad.paths)), step, \
        (np.concatenate(sums.index) if sums.index else np.zeros(0, np.int64))


def _one_step(stepper: Stepper, batch: dict[str, np.ndarray], epoch: int, step: int, guard: FiniteGuard,
              sums: _Sums) -> None:
    labels_np = np.asarray(batch["label"])
    sums.classes.append(len(np.unique(labels_np)))
    sums.index.append(owned(batch["index"]))  # a view would pin the batch's block all epoch
    views = stepper.make_views(batch, epoch)
    labels = torch.from_numpy(np.require(labels_np, np.int64, "W")).to(stepper.device, non_blocking=True)
    loss, grad_norm = stepper.step(views, labels, step)
    guard.update(loss, step)
    sums.loss += loss
    sums.grad += grad_norm
    b, v = views.shape[:2]
    sums.views += b * v * stepper.world
    sums.samples += b
    sums.steps += 1


def _epoch_stats(stepper: Stepper, sums: _Sums, epoch: int, step: int, seconds: float, bad: int) -> EpochStats:
    denom = max(sums.steps, 1)
    return EpochStats(epoch=epoch, loss=float(sums.loss) / denom if sums.steps else float("nan"),
                      lr=stepper.lr_at(max(step - 1, 0)), views_per_s=sums.views / max(seconds, 1e-9),
                      epoch_seconds=seconds, grad_norm=float(sums.grad) / denom if sums.steps else float("nan"),
                      bad_images=bad, classes_per_batch=float(np.mean(sums.classes)) if sums.classes else 0.0,
                      steps=sums.steps, samples=sums.samples, data_wait_seconds=sums.wait,
                      posterior=stepper.posterior_stats())
