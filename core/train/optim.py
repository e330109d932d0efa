"""Optimisers (SGD momentum, LARS, AdamW) and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch

from core.config import OptimConfig
from core.models import ContrastiveModel


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al. 2017), as in SimCLR/SupCon.

    Biases and normalisation parameters (1-D tensors) get neither weight decay nor adaptation.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    p_norm, d_norm = torch.norm(p), torch.norm(d)
                    trust = torch.where((p_norm > 0) & (d_norm > 0),
                                        group["trust_coefficient"] * p_norm / d_norm, torch.ones_like(p_norm))
                    d = d.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.clone(d).detach()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def param_groups(model: ContrastiveModel, cfg: OptimConfig) -> list[dict]:
    """Parameter groups, each with an ``lr_mult`` the schedule multiplies in: the log-variance layer
    of a variational head (``model.variance_parameters()``) gets ``cfg.variance_lr_mult``, everything else 1.
    With ``cfg.exclude_norm_bias_decay`` the 1-D parameters (normalisation weights, biases) of each
    group go in a twin group without weight decay."""
    variance = model.variance_parameters()
    chosen = {id(p) for p in variance}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    lr = cfg.effective_lr()
    groups = []
    for params, mult in ((rest, 1.0), (variance, cfg.variance_lr_mult)):
        decayed = [p for p in params if not (cfg.exclude_norm_bias_decay and p.ndim <= 1)]
        exempt = [p for p in params if cfg.exclude_norm_bias_decay and p.ndim <= 1]
        for group, decay in ((decayed, cfg.weight_decay), (exempt, 0.0)):
            if group or not groups:  # the first group always exists (an optimiser needs one)
                groups.append({"params": group, "lr": lr * mult, "lr_mult": mult, "weight_decay": decay})
    return groups


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's LR times each group's ``lr_mult``."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)


def build_optimizer(model: ContrastiveModel, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups, lr = param_groups(model, cfg), cfg.effective_lr()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr_ratio: float) -> float:
    """Linear warm-up from 0 to ``base_lr`` then cosine decay to ``base_lr * min_lr_ratio``."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    low = base_lr * min_lr_ratio
    return low + 0.5 * (base_lr - low) * (1 + math.cos(math.pi * min(1.0, progress)))
