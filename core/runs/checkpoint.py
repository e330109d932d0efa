"""The checkpoint format: a :class:`TrainState` saved as a plain dict of tensors and builtins, loaded
with ``torch.load(weights_only=True)`` (no arbitrary pickle from shared storage); how a saved state
resumes a run; the newest model checkpoint of a run directory.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import torch

from core.errors import CheckpointError, EvaluationError, StorageError, storage_error
from core.io import write_atomic
from core.results import RunStatus
from core.runs.identity import config_hash, same_run
from core.runs.rundir import PREVIOUS, RunDir


@dataclass
class TrainState:
    """What a checkpoint holds. ``final`` is the run's final metrics row once it has one; a
    ``diverged`` state is final and holds no weights."""

    config_hash: str
    epoch: int = -1
    step: int = 0
    history: list = field(default_factory=list)
    final: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)  # the evaluation's arrays and per-corruption scores
    status: str = RunStatus.RUNNING.value
    model: dict | None = None
    optimizer: dict | None = None
    torch_rng: torch.Tensor | None = None

    @property
    def diverged(self) -> bool:
        return self.status == RunStatus.DIVERGED

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Any, source: str = "checkpoint") -> "TrainState":
        if not isinstance(raw, dict) or "config_hash" not in raw:
            raise CheckpointError(f"{source}: not a checkpoint of this platform (no config_hash)")
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in raw.items() if k in known})
        if state.epoch < 0 and state.final:  # a diverged state records its epoch in the final row
            state.epoch = int(state.final.get("epoch", -1))
        return state


def save_state(path: str | Path, state: TrainState) -> None:
    """Write-then-rename, keeping the previous good state beside it (a torn newest one falls back). A
    write that fails for lack of space (torch reports it as ``RuntimeError ... inline_container``) is a
    StorageError naming the path."""
    path = Path(path)
    if path.exists():
        os.replace(path, str(path) + PREVIOUS)
    try:
        write_atomic(path, partial(torch.save, state.to_dict()))
    except (RuntimeError, OSError) as exc:
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        named = storage_error(exc, path) if isinstance(exc, OSError) else None
        if named is None and free >= 64 << 20:
            raise
        raise named or StorageError(f"cannot write {str(path)!r}: no space left on the device "
                                    f"({free / 2**20:.0f} MiB free)") from None


def load_state(candidates: Iterable[str | Path], device: torch.device) -> TrainState | None:
    """The first readable checkpoint of ``candidates`` (newest first). An unreadable one is named in a
    warning and skipped; if every existing one is unreadable the run stops naming them."""
    errors = []
    for path in (str(p) for p in candidates if os.path.exists(p)):
        try:
            return TrainState.from_dict(torch.load(path, map_location=device, weights_only=True), path)
        except Exception as exc:  # truncated, corrupt, or not a plain state file
            errors.append(f"{path}: {type(exc).__name__}: {str(exc)[:120]}")
            warnings.warn(f"unreadable checkpoint {path!r} ({type(exc).__name__}); trying an older one")
    if errors:
        raise CheckpointError("no readable checkpoint: " + "; ".join(errors)
                              + " (delete them to start the run afresh)")
    return None


def choose_state(states: Iterable[TrainState | None]) -> TrainState | None:
    """The most advanced of several saved states (e.g. the run directory's and Tune's copies).
    A diverged run's state is final and wins; otherwise the highest epoch wins."""
    found = [s for s in states if s]
    return max(found, key=lambda s: float("inf") if s.diverged else s.epoch, default=None)


@dataclass
class ResumePoint:
    """Where a run continues: the first epoch to train, the step counter and the epochs already
    recorded; ``final`` is set when there is nothing left to do (finished or diverged earlier)."""

    start_epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    final: dict | None = None
    records: dict = field(default_factory=dict)
    state: TrainState | None = None  # model/optimizer/RNG to load when training continues


def resume_point(state: TrainState | None, cfg: Any) -> ResumePoint:
    """What a saved state means for the run of ``cfg``; refuses another config's state."""
    if not state:
        return ResumePoint()
    if not same_run(state.config_hash, cfg):
        raise CheckpointError(f"checkpoint belongs to config {state.config_hash}, not {config_hash(cfg)}")
    if state.diverged:
        return ResumePoint(final=state.final)
    start = state.epoch + 1
    if start >= cfg.optim.epochs:  # already finished: nothing to redo
        return ResumePoint(start, state.step, state.history, final=state.final, records=state.records)
    return ResumePoint(start, state.step, state.history, state=state)


def model_checkpoint(run: RunDir, device: torch.device) -> TrainState:
    """The run's newest readable checkpoint, refused unless it holds a model and was written by the run
    its ``config.json`` records (re-scoring and export read weights only through this)."""
    files = run.state_files()
    if not files:
        raise CheckpointError(f"{run.path}: no checkpoint ({run.local_state.name} or epoch=*/state.pt)")
    state = load_state(files, device)
    saved = run.saved_config()
    recorded = saved.config_hash if saved else None
    # the same run under another hash version (a run resumed after an upgrade records the newer one)
    if state is None or not (state.config_hash == recorded or (saved and same_run(state.config_hash,
                                                                                    saved.run_config(run.config)))):
        raise CheckpointError(f"{run.path}: the checkpoint belongs to config {state and state.config_hash}, the run "
                              f"directory to {recorded}; refusing to use another run's weights")
    if not state.model:
        raise EvaluationError(f"{run.path}: the last checkpoint holds no model (status {state.status!r})")
    return state
