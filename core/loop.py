"""The training loop's pieces, each testable without Ray: choosing the state to resume from,
counting undecodable images, detecting divergence, and one epoch of training steps.

``core.train`` composes them inside a Ray Train worker (or in-process); nothing here starts Ray.
The step keeps its running sums on the device and checks for a non-finite loss every
``FINITE_CHECK_EVERY`` steps, so a GPU step never waits for the host.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from core.config import RunConfig
from core.data.decode import split_undecodable
from core.distributed import is_distributed
from core.losses.registry import LossFamily
from core.optim import VARIANCE_PREFIX, set_lr
from core.results import EpochStats, RunStatus

FINITE_CHECK_EVERY = 16  # steps between host checks of the device-side "loss stayed finite" flag


# -- resume ---------------------------------------------------------------------------------------

@dataclass
class ResumePoint:
    """Where a run continues: the first epoch to train, the step counter and the epochs already
    recorded; ``final`` is set when there is nothing left to do (finished or diverged earlier)."""

    start_epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    final: dict | None = None
    state: dict | None = None  # model/optimizer/RNG to load when training continues


def load_state_file(candidates: list, device: torch.device) -> dict | None:
    """The first readable checkpoint of ``candidates`` (newest first), loaded with
    ``weights_only=True`` (no arbitrary pickle from shared storage). An unreadable one is named in a
    warning and skipped; if every existing one is unreadable the run stops naming them."""
    existing = [str(p) for p in candidates if os.path.exists(p)]
    errors = []
    for path in existing:
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # truncated, corrupt, or not a plain state file
            errors.append(f"{path}: {type(exc).__name__}: {str(exc)[:120]}")
            warnings.warn(f"unreadable checkpoint {path!r} ({type(exc).__name__}); trying an older one")
    if errors:
        raise RuntimeError("no readable checkpoint: " + "; ".join(errors) + " (delete them to start the run afresh)")
    return None


def choose_state(states: Iterable[dict | None]) -> dict | None:
    """The most advanced of several saved states (e.g. the run directory's and Tune's copies).
    A diverged run's state is final and wins; otherwise the highest epoch wins."""
    found = [s for s in states if s]
    return max(found, key=lambda st: st.get("epoch", float("inf")) if st.get("status") != RunStatus.DIVERGED
               else float("inf"), default=None)


def resume_point(state: dict | None, cfg: RunConfig) -> ResumePoint:
    """What a saved state means for this config; refuses another config's state."""
    if not state:
        return ResumePoint()
    if state["config_hash"] != cfg.config_hash():
        raise RuntimeError(f"checkpoint belongs to config {state['config_hash']}, not {cfg.config_hash()}")
    if state.get("status") == RunStatus.DIVERGED:
        return ResumePoint(final=state["final"])
    start = state["epoch"] + 1
    if start >= cfg.optim.epochs:  # already finished: nothing to redo
        return ResumePoint(start, state["step"], state["history"], final=state["final"])
    return ResumePoint(start, state["step"], state["history"], state=state)


# -- bad images -----------------------------------------------------------------------------------

class BadImageCounter:
    """Skips undecodable images (rows with ``ok=False``), warns naming each file, and fails the run
    once more than ``max_fraction`` of the images seen this epoch were bad."""

    def __init__(self, max_fraction: float) -> None:
        self.max_fraction = max_fraction
        self.seen, self.bad = 0, []

    def filter(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen += len(batch["label"])
        batch, newly_bad, _ = split_undecodable(batch)
        for p in newly_bad:
            warnings.warn(f"skipping undecodable image {p!r}")
        self.bad += newly_bad
        if len(self.bad) > self.max_fraction * self.seen:
            raise RuntimeError(f"{len(self.bad)} of {self.seen} images undecodable (> data.max_bad_fraction="
                               f"{self.max_fraction}); first: {self.bad[:5]}")
        return batch


# -- divergence -----------------------------------------------------------------------------------

class Diverged(Exception):
    """The loss became non-finite at ``step`` of ``epoch``."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"diverged at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


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


def diverged_record(cfg: RunConfig, exc: Diverged) -> dict[str, Any]:
    """The final metrics row of a diverged run."""
    return {"status": RunStatus.DIVERGED, "diverged_at": str(exc), "epoch": exc.epoch, "config_hash": cfg.config_hash()}


# -- one epoch ------------------------------------------------------------------------------------

POSTERIOR_STATS = ("logvar_mean", "logdet_spread", "mu_norm", "logvar_grad_norm")


@dataclass
class Stepper:
    """Everything a training step needs. ``make_views(batch, epoch) -> [B, V, C, H, W]`` float views
    on ``device``; ``lr_at(step) -> float``."""

    net: nn.Module  # the model, DDP-wrapped with several workers
    model: nn.Module  # the bare model (parameters, clipping)
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
    _variance_params: list | None = None

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
        """Device sums of a variational head's diagnostics (no host sync): mean log sigma^2, spread of
        the log-det across inputs, ||mu||, and the log-variance layer's gradient norm."""
        if self._variance_params is None:  # looked up once, not every step
            self._variance_params = [p for n, p in self.model.named_parameters() if n.startswith(VARIANCE_PREFIX)]
        grads = [p.grad for p in self._variance_params if p.grad is not None]
        logdet = logvar.float().sum(-1)
        row = torch.stack([logvar.float().mean(), logdet.std(), mu.float().norm(dim=-1).mean(),
                           torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                           if grads else logdet.new_zeros(())])
        self.posterior_sum = row if self.posterior_sum is None else self.posterior_sum + row
        self.posterior_steps += 1

    def posterior_stats(self) -> dict[str, float]:
        """Means over the steps since the last call (empty for heads without a posterior); resets."""
        if self.posterior_sum is None:
            return {}
        values = (self.posterior_sum / max(self.posterior_steps, 1)).tolist()
        self.posterior_sum, self.posterior_steps = None, 0
        return dict(zip(POSTERIOR_STATS, values))


def train_epoch(stepper: Stepper, batches: Iterable[dict[str, np.ndarray]], epoch: int, step: int,
                bad: BadImageCounter) -> tuple[EpochStats, int, np.ndarray]:
    """Train over one epoch's batches. Returns the epoch's stats, the step counter after it and the
    sample indices this rank trained on. Raises :class:`Diverged` on a non-finite loss."""
    dev = stepper.device
    loss_sum, grad_sum = torch.zeros((), device=dev), torch.zeros((), device=dev)
    guard = FiniteGuard(dev)
    steps = samples = n_views = 0
    classes: list[int] = []
    seen_index: list[np.ndarray] = []
    wait = 0.0
    t0 = time.perf_counter()
    it = iter(batches)
    while True:
        t_wait = time.perf_counter()
        batch = next(it, None)
        wait += time.perf_counter() - t_wait
        if batch is None:
            break
        batch = bad.filter(batch)
        if len(batch["label"]) == 0:
            continue
        labels_np = np.asarray(batch["label"])
        classes.append(len(np.unique(labels_np)))
        seen_index.append(np.asarray(batch["index"]))
        views = stepper.make_views(batch, epoch)
        labels = torch.from_numpy(np.require(labels_np, np.int64, "W")).to(dev, non_blocking=True)
        loss, grad_norm = stepper.step(views, labels, step)
        guard.update(loss, step)
        loss_sum += loss
        grad_sum += grad_norm
        b, v = views.shape[:2]
        n_views += b * v * stepper.world
        samples += b
        step += 1
        steps += 1
        if steps % FINITE_CHECK_EVERY == 0:
            guard.check(epoch)
    guard.check(epoch)
    seconds = time.perf_counter() - t0
    denom = max(steps, 1)
    stats = EpochStats(epoch=epoch, loss=float(loss_sum) / denom if steps else float("nan"),
                       lr=stepper.lr_at(max(step - 1, 0)), views_per_s=n_views / max(seconds, 1e-9),
                       epoch_seconds=seconds, grad_norm=float(grad_sum) / denom if steps else float("nan"),
                       bad_images=len(bad.bad), classes_per_batch=float(np.mean(classes)) if classes else 0.0,
                       steps=steps, samples=samples, data_wait_seconds=wait, **stepper.posterior_stats())
    index = np.concatenate(seen_index) if seen_index else np.zeros(0, np.int64)
    return stats, step, index
