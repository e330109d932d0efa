"""Variational contrastive learning (VCL, arXiv 2506.10159): VSimCLR and VSupCon.

A variational head (``core.models.heads.VariationalHead``) gives mu and log sigma^2 (diagonal). A sample u = mu + sigma * eps is
projected to the sphere, z = u / ||u|| (a projected-normal sample), and the contrastive loss
(SimCLR or SupCon) runs on the samples. The regulariser is the normalised Gaussian KL

    KL(N(mu, diag sigma^2) || N(0, I)) / D = 0.5 * sum_d (sigma^2 + mu^2 - 1 - log sigma^2) / D,

an upper bound of KL(projected normal || uniform on the sphere). L = L_con + beta * mean KL.
"""

from __future__ import annotations

from torch import Tensor, nn

from core.losses.dist import global_batch
from core.losses.ops import upcast
from core.losses.registry import LossFamily, register
from core.losses.supcon import simclr_loss, supcon_loss


def normalized_gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) / D per sample (last dim reduced), in float32."""
    mu, logvar = upcast(mu), upcast(logvar)
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).mean(-1)


def posterior_log_det(logvar: Tensor) -> Tensor:
    """Uncertainty score per input: log det of the diagonal covariance = sum log sigma^2."""
    return upcast(logvar).sum(-1)


def vcl_loss(
    z: Tensor,
    labels: Tensor | None,
    mu: Tensor,
    logvar: Tensor,
    *,
    beta: float = 1e-3,
    temperature: float = 0.1,
    supervised: bool = True,
) -> Tensor:
    """VSupCon (``supervised=True``) or VSimCLR loss.

    ``z`` are projected-normal samples ``[N, V, D]`` (possibly gathered across workers, with
    ``labels [N]``); ``mu``/``logvar`` are this worker's ``[n, V, D]`` posterior parameters. The KL
    is averaged over this worker's samples and views, so DDP's gradient averaging yields the
    global mean.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar shapes differ: {tuple(mu.shape)} vs {tuple(logvar.shape)}")
    if supervised:
        if labels is None:
            raise ValueError("VSupCon needs labels")
        con = supcon_loss(z, labels, temperature)
    else:
        con = simclr_loss(z, temperature)
    return con + beta * normalized_gaussian_kl(mu, logvar).mean()


class VCLLoss(nn.Module):
    """Module wrapper of :func:`vcl_loss` (VSupCon when ``supervised`` else VSimCLR)."""

    def __init__(self, beta: float = 1e-3, temperature: float = 0.1, supervised: bool = True) -> None:
        super().__init__()
        self.beta, self.temperature, self.supervised = beta, temperature, supervised

    def forward(self, z: Tensor, labels: Tensor | None, mu: Tensor, logvar: Tensor) -> Tensor:
        return vcl_loss(z, labels, mu, logvar, beta=self.beta, temperature=self.temperature,
                        supervised=self.supervised)


def _objective(loss_fn: nn.Module, out, labels: Tensor, b: int, v: int) -> Tensor:
    """Samples and labels gathered across workers; the KL on this worker's posteriors."""
    z, y = global_batch(out.z.reshape(b, v, -1), labels)
    return loss_fn(z, y, out.mu.reshape(b, v, -1), out.logvar.reshape(b, v, -1))



def _space(trial) -> None:
    trial.suggest_float("loss.temperature", 0.03, 0.5, log=True)
    trial.suggest_float("loss.beta", 1e-4, 1e-1, log=True)


VSUPCON = register(LossFamily(
    name="vsupcon", head="variational", summary="VSupCon: SupCon on projected-normal samples + beta * KL/D (VCL)",
    fields=("temperature", "beta"), build=lambda c, k: VCLLoss(c.beta, c.temperature, supervised=True),
    objective=_objective, search_space=_space))

VSIMCLR = register(LossFamily(
    name="vsimclr", head="variational", summary="VSimCLR: SimCLR on projected-normal samples + beta * KL/D (VCL)",
    fields=("temperature", "beta"), build=lambda c, k: VCLLoss(c.beta, c.temperature, supervised=False),
    objective=_objective, min_views=2, search_space=_space))
