"""Loss families: pure functions plus thin modules; :func:`build_loss` maps a LossConfig to one."""

from __future__ import annotations

from torch import nn

from core.config import LossConfig
from core.losses.cross_entropy import CrossEntropyLoss, cross_entropy_loss
from core.losses.supcon import SimCLRLoss, SupConLoss, simclr_loss, supcon_loss
from core.losses.varcon import VarConLoss, varcon_loss, varcon_loss_views
from core.losses.vcl import (VCLLoss, normalized_gaussian_kl, posterior_log_det, projected_normal_sample,
                             vcl_loss)

__all__ = [
    "build_loss", "supcon_loss", "simclr_loss", "varcon_loss", "varcon_loss_views", "vcl_loss",
    "cross_entropy_loss", "normalized_gaussian_kl", "posterior_log_det", "projected_normal_sample",
    "SupConLoss", "SimCLRLoss", "VarConLoss", "VCLLoss", "CrossEntropyLoss",
]


def build_loss(cfg: LossConfig) -> nn.Module:
    """The loss module a config names."""
    if cfg.name == "supcon":
        return SupConLoss(cfg.temperature, cfg.supcon_variant, cfg.contrast_mode, cfg.base_temperature)
    if cfg.name == "simclr":
        return SimCLRLoss(cfg.temperature)
    if cfg.name == "varcon":
        return VarConLoss(cfg.temperature, cfg.epsilon, cfg.kl_weight, cfg.adaptive_temperature,
                          cfg.centroid_stop_grad)
    if cfg.name in ("vsimclr", "vsupcon"):
        return VCLLoss(cfg.beta, cfg.temperature, supervised=cfg.name == "vsupcon")
    if cfg.name == "cross_entropy":
        return CrossEntropyLoss()
    raise ValueError(f"unknown loss {cfg.name!r}")
