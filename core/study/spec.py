"""What a study declares: its question, base config, trials (a grid, named variants or a search)
and the claims it tests. Everything here is data; ``core.study.runner`` runs it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from core.config import RunConfig
from core.metrics import config_column, require
from core.study.claims import Claim


@dataclass(frozen=True)
class Grid:
    """Full-factorial blocks of dotted config keys -> values; several blocks are the union of their factorials."""

    blocks: tuple[dict[str, list], ...]

    def __init__(self, *blocks: dict[str, list]) -> None:
        object.__setattr__(self, "blocks", tuple(blocks) or ({},))

    def points(self, seeds: list[int]) -> list[dict[str, Any]]:
        out = []
        for block in self.blocks:
            keys = list(block)
            for combo in itertools.product(*(block[k] for k in keys), seeds):
                out.append({**dict(zip(keys, combo[:-1])), "seed": combo[-1]})
        return out


@dataclass(frozen=True)
class Variants:
    """Named one-factor variations (ablations); the first is the reference. A point carries its name as ``variant``."""

    variants: dict[str, dict[str, Any]]

    def points(self, seeds: list[int]) -> list[dict[str, Any]]:
        return [{**overrides, "variant": name, "seed": seed} for name, overrides in self.variants.items()
                for seed in seeds]


@dataclass(frozen=True)
class Search:
    """A Tune search algorithm (e.g. OptunaSearch over dotted keys), or a factory of one called when the
    study runs (its ``reset()``, if any, runs on ``--overwrite``), with an optional scheduler."""

    search_alg: Any
    num_samples: int = 8
    scheduler: Any = None
    objectives: tuple = ()  # core.study.space.Objective: what the searcher optimises, in which direction

    def points(self, seeds: list[int]) -> list[dict[str, Any]]:
        return []  # the searcher proposes them

    def searcher(self) -> Any:
        alg = self.search_alg
        return alg() if callable(alg) and not hasattr(alg, "suggest") else alg

    def reset(self) -> None:
        getattr(self.search_alg, "reset", lambda: None)()


@dataclass
class Study:
    """A study: the question, the base config, its trials and the claims tested on their table."""

    name: str
    question: str
    base: RunConfig
    trials: Grid | Variants | Search = field(default_factory=Grid)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    claims: list[Claim] = field(default_factory=list)
    summary_metrics: list[str] = field(default_factory=lambda: ["probe_top1", "knn_top1"])
    plots: Callable[[pd.DataFrame, Path], list[Path]] | None = None
    tables: Callable[[pd.DataFrame], list[str]] | None = None  # extra markdown sections for the report
    group: str = config_column("loss.name")  # column the summary table groups by

    def __post_init__(self) -> None:
        require(self.summary_metrics, f"study {self.name}: summary_metrics")
    origins: dict[str, str] = field(default_factory=dict)  # where each value of ``base`` came from (--print-config)

    @property
    def search(self) -> Search | None:
        return self.trials if isinstance(self.trials, Search) else None

    def points(self) -> list[dict[str, Any]]:
        """Every trial's overrides (seed included) of a grid or variants study; none for a search."""
        return self.trials.points(self.seeds)

    def total(self) -> int:
        return self.search.num_samples if self.search else len(self.points())


def trial_point(tune_config: dict) -> dict[str, Any]:
    """A trial's overrides from its Tune config: grid and variant trials carry ``{"point": {...}}``,
    a searcher's trials flat dotted keys."""
    return dict(tune_config.get("point", tune_config))


def trial_config(base: RunConfig, point: dict[str, Any], **extra: Any) -> RunConfig:
    """The config of one trial: base + the point's overrides (its ``variant`` label is not a field)."""
    return base.with_(**{k: v for k, v in point.items() if k != "variant"}, **extra)


def grid_study_defaults(epochs: int) -> RunConfig:
    """Base config shared by the grid studies on the embedded data: robustness metrics on, no
    per-epoch kNN (no scheduler reads it), a 24-wide CNN (same accuracy as 32, ~1.5x faster here)."""
    return RunConfig().with_overrides([f"optim.epochs={epochs}", "model.width=24", "eval.robustness=true",
                                       "eval.probe_epochs=50", "eval.online_knn=false"])


def question(doc: str) -> str:
    """A study's question: the first two paragraphs of its script's docstring."""
    return "\n\n".join(doc.strip().split("\n\n")[:2])
