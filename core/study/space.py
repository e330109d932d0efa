"""What a search optimises and over which space.

- :class:`Objective`: a metric and its direction, ``probe_top1:max``, ``corruption_error:min`` or just
  ``corruption_error`` (the direction the glossary gives).
- :class:`SearchSpace`: any config field, from a YAML file validated against the config's types
  before Ray starts::

      loss.temperature: {float: [0.05, 0.5], log: true}
      optim.lr: {float: [0.01, 1.0], log: true}
      optim.batch_size: {categorical: [64, 128, 256]}
      model.width: {int: [8, 32]}

- :class:`OptunaSpace`: the default space (the loss family's own knobs, batch size, augmentation strength).
Both are define-by-run Optuna spaces (classes, not closures: Tune pickles its searcher).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import RunConfig, field_hint
from core.config_loader import load_yaml
from core.errors import ConfigError
from core.losses.registry import loss_family
from core.metrics import metric


@dataclass(frozen=True)
class Objective:
    name: str
    mode: str  # "max" or "min"

    @classmethod
    def parse(cls, text: str) -> "Objective":
        name, _, mode = text.partition(":")
        entry = metric(name)
        if entry is None:
            raise ConfigError(f"--objectives: unknown metric {name!r} (the glossary: python -m core.metrics)")
        if mode and mode not in ("max", "min"):
            raise ConfigError(f"--objectives {text}: the direction must be max or min")
        if not mode and not entry.better:
            raise ConfigError(f"--objectives {name}: the glossary gives it no better side; write {name}:max or :min")
        return cls(name, mode or entry.mode)

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is better than ``b``."""
        return a > b if self.mode == "max" else a < b


class OptunaSpace:
    """Define-by-run Optuna space over temperature, batch size, augmentation strength and the loss's
    KL weight."""

    def __init__(self, loss: str, seed: int, batch_sizes: tuple[int, ...] = (64, 128, 256)) -> None:
        self.loss, self.seed, self.batch_sizes = loss, seed, list(batch_sizes)

    def __call__(self, trial) -> dict[str, Any]:
        family = loss_family(self.loss)
        if family.search_space:  # the family's own knobs (temperature, KL weight, ...)
            family.search_space(trial)
        trial.suggest_categorical("optim.batch_size", self.batch_sizes)
        trial.suggest_float("augment.strength", 0.0, 1.0)
        return {"seed": self.seed}


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str  # "float", "int" or "categorical"
    values: tuple  # (low, high) or the choices
    log: bool = False

    def suggest(self, trial) -> None:
        if self.kind == "float":
            trial.suggest_float(self.key, *self.values, log=self.log)
        elif self.kind == "int":
            trial.suggest_int(self.key, *self.values, log=self.log)
        else:
            trial.suggest_categorical(self.key, list(self.values))


class SearchSpace:
    """A search space over any config fields (see the module docstring), each value checked against the
    base config."""

    def __init__(self, dimensions: list[Dimension], seed: int) -> None:
        self.dimensions, self.seed = dimensions, seed

    def __call__(self, trial) -> dict[str, Any]:
        for d in self.dimensions:
            d.suggest(trial)
        return {"seed": self.seed}

    @classmethod
    def from_yaml(cls, path: str | Path, base: RunConfig, seed: int) -> "SearchSpace":
        raw = load_yaml(path)
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f"--space {path}: must map config fields to ranges ({{float: [lo, hi]}}, ...)")
        return cls([_dimension(str(key), spec, base, f"--space {path}") for key, spec in raw.items()], seed)


def _dimension(key: str, spec: Any, base: RunConfig, where: str) -> Dimension:
    hint = field_hint(key)
    if hint is None or key == "seed":
        raise ConfigError(f"{where}: {key!r} is not a config field one can search")
    if not isinstance(spec, dict) or len(set(spec) & {"float", "int", "categorical"}) != 1 \
            or set(spec) - {"float", "int", "categorical", "log"}:
        raise ConfigError(f"{where}: {key} must be one of {{float: [lo, hi], log: bool}}, {{int: [lo, hi]}} or "
                          f"{{categorical: [...]}}, got {spec!r}")
    kind = next(k for k in ("float", "int", "categorical") if k in spec)
    values = spec[kind]
    if not isinstance(values, list) or not values or (kind != "categorical" and len(values) != 2):
        raise ConfigError(f"{where}: {key}: {kind} takes {'[lo, hi]' if kind != 'categorical' else 'a list'}, "
                          f"got {values!r}")
    declared = {t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)}
    if kind == "float" and float not in declared or kind == "int" and not declared & {int, float}:
        raise ConfigError(f"{where}: {key} is declared {hint}, not searchable as {kind}")
    if kind != "categorical" and not values[0] < values[1]:
        raise ConfigError(f"{where}: {key}: the range [{values[0]}, {values[1]}] is empty")
    for value in values:  # each end (or choice) must make a valid config
        try:
            base.with_(**{key: value})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {key}={value!r}: {exc}") from None
    return Dimension(key, kind, tuple(values), bool(spec.get("log", False)))
