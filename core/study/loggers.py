"""Where a study's trial metrics go (Tune's logger callbacks) and its console progress line."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ray import tune
from ray.tune.logger import LoggerCallback

from core.errors import ConfigError
from core.results import RunStatus
from core.study.spec import trial_point
from core.study.studydir import MLRUNS

LOGGERS = ("tensorboard", "mlflow", "wandb")


class TensorBoardLogger(LoggerCallback):
    """Tune's TensorBoard logger (event files in every trial's directory under the study's ``tune/``),
    wrapped so that Tune does not also print its local staging directory as the TensorBoard path (the
    study prints one path, the one the files end up in), and given only what TensorBoard can show:
    numbers and lists of numbers (a list of node ids made it warn "invalid value")."""

    def __init__(self) -> None:
        from ray.tune.logger import TBXLoggerCallback

        self._inner = TBXLoggerCallback()

    def log_trial_start(self, trial) -> None:
        self._inner.log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        self._inner.log_trial_result(iteration, trial, {k: v for k, v in result.items() if _loggable(v)})

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self._inner.log_trial_end(trial, failed)


def _loggable(value) -> bool:
    """A number, a list of numbers or a dict (Tune flattens it); not strings or lists of them."""
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return not isinstance(value, str)


def _mlflow(study_name: str, results: Path, mlflow_uri: str | None):
    try:
        import mlflow  # noqa: F401
        from ray.air.integrations.mlflow import MLflowLoggerCallback
    except ImportError:
        raise ConfigError("--logger mlflow needs MLflow: pip install -e '.[trackers]'") from None
    uri = mlflow_uri or (results / MLRUNS).as_uri()
    if uri.startswith("file:"):  # MLflow 3 asks for an opt-in to its file store (kept: no server, no DB)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=study_name)


def _wandb(study_name: str, results: Path):
    try:
        import wandb  # noqa: F401
        from ray.air.integrations.wandb import WandbLoggerCallback
    except ImportError:
        raise ConfigError("--logger wandb needs wandb: pip install -e '.[trackers]'") from None
    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return WandbLoggerCallback(project=study_name, mode=mode, dir=str(results))


def logger_callbacks(names: list[str], study_name: str, results: Path, mlflow_uri: str | None = None) -> list:
    """Tune logger callbacks for ``--logger`` names (plus Tune's CSV and JSON logs, always)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    callbacks: list = [CSVLoggerCallback(), JsonLoggerCallback()]
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            callbacks.append(TensorBoardLogger())
        elif name == "mlflow":
            callbacks.append(_mlflow(study_name, results, mlflow_uri))
        elif name == "wandb":
            callbacks.append(_wandb(study_name, results))
        else:
            raise ConfigError(f"unknown --logger {name!r} (choose from {list(LOGGERS)})")
    return callbacks


class Progress(tune.Callback):
    """One short console line per finished trial: how far the study is, what this trial gave, and the best
    so far only when it changes."""

    def __init__(self, total: int, metric: str, mode: str = "max") -> None:
        self.total, self.metric, self.mode, self.done, self.failed, self.stopped, self.best = \
            total, metric, mode, 0, 0, 0, None
        self.t0 = time.perf_counter()

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: D401
        print(self.line(trials, trial), flush=True)

    def line(self, trials, trial) -> str:
        self.done += 1
        r = trial.last_result or {}
        status = RunStatus.of_trial(r.get("status"))
        self.stopped += status == RunStatus.STOPPED_EARLY
        self.failed += status not in (RunStatus.FINISHED, RunStatus.STOPPED_EARLY)
        point = {k: v for k, v in trial_point(trial.config).items() if "point" in trial.config or k != "seed"}
        value = r.get(self.metric)
        improved = isinstance(value, (int, float)) and (self.best is None or (
            value > self.best[0] if self.mode == "max" else value < self.best[0]))
        if improved:
            self.best = (value, point)
        running = sum(t.status == "RUNNING" and t is not trial for t in trials)  # this one is still RUNNING here
        queued = sum(t.status == "PENDING" for t in trials)
        elapsed = time.perf_counter() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        shown = "" if value is None else f" {self.metric} {value:.2f}"
        tail = f" | best so far ({self.mode})" if improved else ""
        counts = "".join(f", {n} {what}" for n, what in ((self.stopped, "stopped early"), (self.failed, "failed")) if n)
        return (f"[{_clock(elapsed)}] {self.done}/{self.total} done ({running} running, {queued} queued{counts}; "
                f"about {_clock(left)} left) | {status}: {_short_point(point)}{shown}{tail}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.on_trial_complete(iteration, trials, trial)


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _short_point(point: dict) -> str:
    """``loss.name=supcon augment.strength=0.3 seed=1`` as ``supcon strength=0.3 seed=1``: a value whose key
    says nothing more (a name) stands alone."""
    parts = []
    for key, value in point.items():
        leaf = key.rsplit(".", 1)[-1]
        parts.append(str(value) if leaf in ("name", "policy", "variant") else f"{leaf}={value}")
    return " ".join(parts)
