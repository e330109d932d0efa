"""Search spaces for ``studies/search.py``: Optuna define-by-run spaces over dotted config keys."""

from __future__ import annotations

from typing import Any

from core.losses.registry import loss_family


class OptunaSpace:
    """Define-by-run Optuna space over temperature, batch size, augmentation strength and the loss's
    KL weight (a class, not a closure: Tune pickles its searcher)."""

    def __init__(self, loss: str, seed: int, batch_sizes: tuple[int, ...] = (64, 128, 256)) -> None:
        self.loss, self.seed, self.batch_sizes = loss, seed, list(batch_sizes)

    def __call__(self, trial) -> dict[str, Any]:
        family = loss_family(self.loss)
        if family.search_space:  # the family's own knobs (temperature, KL weight, ...)
            family.search_space(trial)
        trial.suggest_categorical("optim.batch_size", self.batch_sizes)
        trial.suggest_float("augment.strength", 0.0, 1.0)
        return {"seed": self.seed}
