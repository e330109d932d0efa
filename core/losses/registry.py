"""The loss-family registry: one :class:`LossFamily` object per family, registered by the file that
implements it (``core/losses/<family>.py``); nothing else in the code base names a family.

A family owns: the head its model needs (``projection``, ``variational`` or ``linear``), the
``LossConfig`` fields it reads, how its module is built from the config, how it is called on a
model output (gathering the global batch across workers where it needs one), extra validation of
a run config, and its own search-space knobs for ``studies/search.py``.

The table itself is :data:`core.registry.LOSSES` (a building block, so the config checks
``loss.name`` without importing any loss); this module gives its entries their type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from core.registry import LOSSES

if TYPE_CHECKING:  # type names only
    from torch import Tensor, nn

HEADS = ("projection", "variational", "linear")


@dataclass(frozen=True)
class LossFamily:
    """Everything the platform needs to know about one loss family."""

    name: str
    head: str  # "projection" (normalised z), "variational" (mu, logvar, projected-normal z) or "linear" (logits)
    fields: tuple[str, ...]  # LossConfig fields this family reads (the others are ignored)
    build: Callable[[Any, int | None], "nn.Module"]  # (LossConfig, the data set's class count or None) -> module
    # (loss module, model output with .z [B*V, D] (.mu/.logvar for variational heads), labels [B], B, V) -> loss
    objective: Callable[["nn.Module", Any, "Tensor", int, int], "Tensor"]
    summary: str = ""
    min_views: int = 1  # e.g. SimCLR needs a second view as the positive
    validate: Callable[[Any], None] | None = None  # RunConfig -> None, raises ConfigError naming the field
    search_space: Callable[[Any], None] | None = None  # Optuna trial -> suggests this family's own knobs

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"loss family {self.name!r}: head must be one of {list(HEADS)}, got {self.head!r}")

    @property
    def variational(self) -> bool:
        return self.head == "variational"


def register(family: LossFamily) -> LossFamily:
    """Add a family (its defining module calls this once, at import)."""
    return LOSSES.register(family.name, family)


def loss_family(name: str) -> LossFamily:
    """The registered family called ``name`` (a ConfigError naming ``loss.name`` otherwise)."""
    return LOSSES.get(name)


def family_names() -> tuple[str, ...]:
    return LOSSES.names()
