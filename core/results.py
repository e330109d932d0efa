"""Typed results that travel between the loop, the evaluation stage, the study and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class RunStatus(str, Enum):
    """Where a run (or a study trial) ended up. A ``str`` enum: it is stored and compared as its value."""

    RUNNING = "running"  # an epoch's report; a trial whose last report says this was stopped by the scheduler
    FINISHED = "finished"
    DIVERGED = "diverged"
    STOPPED_EARLY = "stopped early"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass
class EpochStats:
    """What one training epoch measured on this rank (``samples_per_rank`` after gathering)."""

    epoch: int
    loss: float
    lr: float
    views_per_s: float
    epoch_seconds: float
    grad_norm: float
    bad_images: int
    classes_per_batch: float  # mean distinct labels per training batch (class mixing; SupCon/VarCon need many)
    steps: int
    samples: int
    data_wait_seconds: float = 0.0  # time spent waiting for the next batch (the input pipeline's share)
    # variational heads only (VSupCon/VSimCLR), means over the epoch's steps:
    logvar_mean: float | None = None  # mean log sigma^2 over inputs and dimensions
    logdet_spread: float | None = None  # std across inputs of log det = sum_d log sigma^2
    mu_norm: float | None = None  # mean ||mu|| (the projected normal only sees sigma / ||mu||)
    logvar_grad_norm: float | None = None  # gradient norm of the log-variance layer

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class RunResult:
    """Final metrics of a run plus where it lives."""

    metrics: dict[str, Any]
    run_dir: str
    status: RunStatus = field(default=RunStatus.FINISHED)


def scalars(metrics: dict) -> dict:
    """The JSON/Tune-reportable part of a metrics dict (enums as their values)."""
    out: dict = {}
    for k, v in metrics.items():
        if isinstance(v, Enum):
            out[k] = v.value
        elif isinstance(v, bool):
            out[k] = bool(v)
        elif isinstance(v, int):
            out[k] = int(v)
        elif isinstance(v, float):  # numpy float64 too: plain floats load with torch.load(weights_only=True)
            out[k] = float(v)
        elif isinstance(v, str):
            out[k] = str(v)
    return out
