"""Typed results that travel between the loop, the evaluation stage, the study and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any


class RunStatus(str, Enum):
    """Where a run (or a study trial) ended up. A ``str`` enum: it is stored and compared as its value."""

    RUNNING = "running"  # an epoch's report; a trial whose last report says this was stopped by the scheduler
    FINISHED = "finished"
    DIVERGED = "diverged"
    STOPPED_EARLY = "stopped early"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # a study trial that had not ended when the study was interrupted (Ctrl-C)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of_trial(cls, last_status: Any) -> "RunStatus":
        """A trial's final status from its last report: a trial whose last report was an epoch
        (``running``) was stopped by the scheduler; no report at all means it failed."""
        if last_status in (None, ""):
            return cls.FAILED
        status = cls(last_status)
        return cls.STOPPED_EARLY if status == cls.RUNNING else status


@dataclass
class PosteriorStats:
    """A variational head's training diagnostics, means over an epoch's steps (the one place they are named)."""

    logvar_mean: float  # mean log sigma^2 over inputs and dimensions
    logdet_spread: float  # std across inputs of log det = sum_d log sigma^2
    mu_norm: float  # mean ||mu|| (the projected normal only sees sigma / ||mu||)
    logvar_grad_norm: float  # gradient norm of the log-variance layer

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


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
    posterior: PosteriorStats | None = None  # variational heads only (VSupCon/VSimCLR)

    def row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "posterior"}
        return {**row, **(asdict(self.posterior) if self.posterior else {})}


@dataclass
class CorruptionScore:
    """The probe on one corrupted evaluation set."""

    corruption: str
    severity: int
    accuracy: float  # top-1, %
    ece: float  # expected calibration error, %


@dataclass
class Evaluation:
    """The evaluation stage's result: ``scalars`` (the metrics row that Tune, the summary and the table
    hold), ``arrays`` (e.g. the normalised feature spectrum) and one score per corrupted set."""

    scalars: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, list[float]] = field(default_factory=dict)
    corruptions: list[CorruptionScore] = field(default_factory=list)
    logdet_by_corruption: dict[str, float] = field(default_factory=dict)  # Spearman(log-det, severity) per type

    def records(self) -> dict[str, Any]:
        """The non-scalar part as plain lists and dicts (JSON, Tune results, parquet list columns)."""
        out: dict[str, Any] = dict(self.arrays)
        if self.corruptions:
            out["per_corruption"] = [asdict(c) for c in self.corruptions]
        if self.logdet_by_corruption:
            out["logdet_by_corruption"] = [{"corruption": k, "spearman": v}
                                           for k, v in sorted(self.logdet_by_corruption.items())]
        return out


RECORD_KEYS = ("spectrum_features", "per_corruption", "logdet_by_corruption")  # Evaluation.records() keys


@dataclass
class RunResult:
    """Final metrics of a run plus where it lives; ``records`` holds the evaluation's arrays and
    per-corruption scores (see :meth:`Evaluation.records`)."""

    metrics: dict[str, Any]
    run_dir: str
    status: RunStatus = field(default=RunStatus.FINISHED)
    records: dict[str, Any] = field(default_factory=dict)


def _plain(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    for kind in (bool, int, float, str):  # numpy scalars too: plain values load with torch.load(weights_only=True)
        if isinstance(v, kind):
            return kind(v)
    return None


def scalars(metrics: dict) -> dict:
    """The JSON/Tune-reportable part of a metrics dict: scalars (enums as their values) and lists of
    scalars (e.g. ``worker_nodes``); anything else is dropped."""
    out: dict = {}
    for k, v in metrics.items():
        if isinstance(v, (list, tuple)):
            items = [_plain(x) for x in v]
            if all(x is not None for x in items):
                out[k] = items
        elif (plain := _plain(v)) is not None:
            out[k] = plain
    return out
