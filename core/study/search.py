"""A search's machinery: Optuna through Ray Tune's ``OptunaSearch`` (TPE, or its multi-objective
sampler for several objectives), ASHA early stopping on a metric every epoch reports, the Optuna
storage for optuna-dashboard, and the Pareto front of a multi-objective search. ``studies/search.py``
declares what is searched; this module builds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.losses.registry import family_names, loss_family
from core.results import RunStatus
from core.study.space import Objective
from core.study.spec import Search

PER_EPOCH = ("knn_top1",)  # metrics every epoch reports (what ASHA can read)


def searchable_losses() -> list[str]:
    """Loss families with a search space of their own (the choices of ``--loss``)."""
    return [name for name in family_names() if loss_family(name).search_space]


def optuna_storage(spec: str | None):
    """An Optuna storage from ``sqlite:///file.db`` or a journal file path ``*.log``; None for in-memory."""
    if not spec:
        return None
    import optuna

    if spec.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(spec))
    return optuna.storages.RDBStorage(spec)


class OptunaSearcher:
    """Builds the OptunaSearch when the study runs (after ``--overwrite`` has deleted the old Optuna
    study: OptunaSearch loads an existing one as it is built)."""

    def __init__(self, space, objectives: list[Objective], seed: int, name: str, storage: str | None) -> None:
        self.space, self.objectives, self.seed, self.name, self.storage = space, objectives, seed, name, storage

    def __call__(self):
        multi = len(self.objectives) > 1
        return _OptunaSearch(self.space, metric=[o.name for o in self.objectives] if multi else self.objectives[0].name,
                            mode=[o.mode for o in self.objectives] if multi else self.objectives[0].mode,
                            seed=self.seed, study_name=self.name, storage=optuna_storage(self.storage))

    def reset(self) -> None:
        """Delete this search's Optuna study from its storage (``--overwrite``)."""
        import optuna

        if self.storage is None:
            return
        storage = optuna_storage(self.storage)
        if self.name in [s.study_name for s in optuna.get_all_study_summaries(storage)]:
            optuna.delete_study(study_name=self.name, storage=storage)


def _optuna_search_class():
    from ray.tune.search.optuna import OptunaSearch

    class FailureTolerantOptunaSearch(OptunaSearch):
        """OptunaSearch that takes a failed trial's row (its reason, no objective): Ray's own indexes the
        objective and so would end the whole search. Optuna records such a trial as pruned, which TPE
        ranks below every finished one (a failing region is not proposed again and again)."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if isinstance(self.metric, list) or self.metric in result:
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            names = self.metric if isinstance(self.metric, list) else [self.metric]
            complete = result is not None and all(result.get(n) is not None for n in names)
            super().on_trial_complete(trial_id, result if complete else None, error)

    return FailureTolerantOptunaSearch


def _OptunaSearch(*args, **kwargs):
    return _optuna_search_class()(*args, **kwargs)


def parse_objectives(texts: list[str]) -> list[Objective]:
    """``metric[:max|:min]`` each, checked against the glossary before any trial runs."""
    objectives = [Objective.parse(o) for o in texts]
    if len({o.name for o in objectives}) != len(objectives):
        raise ConfigError(f"--objectives {' '.join(texts)}: an objective is given twice")
    return objectives


def optuna_search(space, objectives: list[Objective], *, seed: int, name: str, storage: str | None,
                  num_samples: int, epochs: int, grace_period: int) -> Search:
    """Optuna over ``space`` for ``objectives``, with ASHA stopping trials early when there is one
    objective that every epoch reports (schedulers take one metric)."""
    single = objectives[0] if len(objectives) == 1 else None
    scheduler = None
    if single and single.name in PER_EPOCH:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(metric=single.name, mode=single.mode, time_attr="training_iteration",
                                  max_t=epochs + 1, grace_period=grace_period)
    return Search(OptunaSearcher(space, objectives, seed, name, storage), num_samples=num_samples,
                  scheduler=scheduler, objectives=tuple(objectives))


def pareto_front(values: np.ndarray, objectives: list[Objective]) -> list[int]:
    """Rows of ``values`` ([n, k]) that no other row beats on every objective (each in its direction)."""
    signed = values * np.array([1.0 if o.mode == "max" else -1.0 for o in objectives])
    # a row's dominators all come before it in descending lexicographic order, and if any does, one on the
    # front does: one pass against the front so far, O(n x front) where comparing all pairs was O(n^2)
    front: list[int] = []
    for i in np.lexsort(signed.T[::-1])[::-1]:
        ahead = signed[front]
        if not ((ahead >= signed[i]).all(1) & (ahead > signed[i]).any(1)).any():
            front.append(int(i))
    return sorted(front)


def pareto_plot(df: pd.DataFrame, out: Path, objectives: list[Objective]) -> list[Path]:
    """The finished trials on the first two objectives, their Pareto front drawn (``pareto_front.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o.name for o in objectives[:2]]
    ok = df[(df["status"] == RunStatus.FINISHED)].dropna(subset=names) if set(names) <= set(df) else df.iloc[0:0]
    if len(objectives) < 2 or ok.empty:
        return []
    values = ok[names].to_numpy(float)
    front = pareto_front(values, objectives[:2])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(values[:, 0], values[:, 1], alpha=0.5, label="trials")
    fx, fy = zip(*sorted(zip(values[front, 0], values[front, 1])))
    ax.plot(fx, fy, "r-o", label="Pareto front")
    ax.set_xlabel(f"{names[0]} ({objectives[0].mode})")
    ax.set_ylabel(f"{names[1]} ({objectives[1].mode})")
    ax.legend()
    fig.tight_layout()
    path = out / "pareto_front.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def search_plots(objectives: list[Objective]) -> Any:
    """A study's ``plots`` hook drawing the Pareto front of ``objectives``."""
    return lambda df, out: pareto_plot(df, out, objectives)
