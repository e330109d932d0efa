"""Heads on top of an encoder: projection (MLP, normalised), variational (mu, log-variance), linear."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


def projected_normal_sample(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Reparameterised sample of N(mu, diag exp(logvar)) projected onto the unit sphere (VCL)."""
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return F.normalize(mu + torch.exp(0.5 * logvar) * noise, dim=-1)


class ProjectionHead(nn.Module):
    """MLP in_dim -> hidden -> out_dim, output L2-normalised (SupCon/SimCLR/VarCon)."""

    def __init__(self, in_dim: int, hidden: int | None = None, out_dim: int = 128) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden or in_dim, out_dim)

    def forward(self, h: Tensor) -> Tensor:
        return F.normalize(self.mlp(h), dim=-1)


class VariationalHead(nn.Module):
    """MLP trunk with two linear outputs: posterior mean and log-variance (diagonal)."""

    def __init__(self, in_dim: int, hidden: int | None = None, out_dim: int = 128,
                 logvar_init: float = -4.0) -> None:
        super().__init__()
        hidden = hidden or in_dim
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True))
        self.mu = nn.Linear(hidden, out_dim)
        self.logvar = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, logvar_init)  # start near-deterministic

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        t = self.trunk(h)
        return self.mu(t), self.logvar(t).clamp(-20.0, 10.0)
