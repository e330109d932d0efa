"""Loss families: pure functions plus thin modules, one file per family. Every module in this
package that defines a family registers it (:mod:`core.losses.registry`); importing the package
imports them all, so adding a family is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from core.losses.registry import LossFamily, family_names, loss_family, register

# SupCon, the reference family, registers first (it leads the choices an error lists), then the others by name
for _name in sorted((m.name for m in pkgutil.iter_modules(__path__)), key=lambda n: (n != "supcon", n)):
    if _name not in ("registry", "dist", "ops"):
        importlib.import_module(f"{__name__}.{_name}")

from core.losses.cross_entropy import CrossEntropyLoss, cross_entropy_loss  # noqa: E402
from core.losses.supcon import SimCLRLoss, SupConLoss, simclr_loss, supcon_loss  # noqa: E402
from core.losses.varcon import VarConLoss, varcon_loss, varcon_loss_views  # noqa: E402
from core.losses.vcl import VCLLoss, normalized_gaussian_kl, posterior_log_det, vcl_loss  # noqa: E402

__all__ = [
    "build_loss", "head_of", "loss_family", "family_names", "register", "LossFamily",
    "supcon_loss", "simclr_loss", "varcon_loss", "varcon_loss_views", "vcl_loss",
    "cross_entropy_loss", "normalized_gaussian_kl", "posterior_log_det",
    "SupConLoss", "SimCLRLoss", "VarConLoss", "VCLLoss", "CrossEntropyLoss",
]


def head_of(cfg) -> str:
    """The head kind the model of a run config needs: its loss family's."""
    return loss_family(cfg.loss.name).head


def build_loss(cfg, num_classes: int | None = None) -> nn.Module:
    """The loss module a ``LossConfig`` names; ``num_classes`` (the data set's) lets a family size its
    per-class buffers without looking at the batch (VarCon's centroids: no host sync)."""
    return loss_family(cfg.name).build(cfg, num_classes)
