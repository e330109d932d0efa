"""VarCon: variational supervised contrastive loss (official ziwenwang28/VarContrast formulation).

For flat normalised embeddings z ``[M, D]`` with labels y ``[M]`` and the C_b classes present:

    w_r      = stopgrad(normalise(mean_{i: y_i=r} z_i))           (batch class centroids)
    log p    = log_softmax(z . w / t1)                            ([M, C_b])
    conf     = p(y|z)                                             (NOT detached)
    t2       = clamp((t1 - eps) + 2 eps conf, min=1e-6)
    q(y|z)   = e^{1/t2} / (e^{1/t2} + C_b - 1),  others 1 / (e^{1/t2} + C_b - 1)
    L        = mean_i [ kl_weight * KL(q || p) - log p(y|z) ]

q is computed in log space so a tiny t2 cannot overflow. The classes present are found on the labels'
device with no host synchronisation (``torch.unique`` copies its size to the host: a stall per GPU step):
with the data set's class count K the labels index K columns, else dense ids index M; absent columns are
masked out of the softmax, the KL and C_b. Cost O(M * K * D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import ConfigError
from core.losses.dist import global_batch
from core.losses.ops import dense_label_ids, upcast
from core.losses.registry import LossFamily, register


def varcon_loss(
    z: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    epsilon: float = 0.02,
    *,
    kl_weight: float = 1.0,
    adaptive_temperature: bool = True,
    centroid_stop_grad: bool = True,
    num_classes: int | None = None,
) -> Tensor:
    """VarCon loss on flat normalised embeddings ``z [M, D]`` and labels ``[M]``.

    ``adaptive_temperature=False`` fixes t2 = t1 and ``centroid_stop_grad=False`` lets gradients
    flow into the centroids; both exist only for ablations (defaults = official).
    """
    if z.dim() != 2:
        raise ValueError(f"z must be [M, D], got shape {tuple(z.shape)}")
    if labels.dim() != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(f"labels must be [M] with M={z.shape[0]}, got shape {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= epsilon < temperature:
        raise ValueError(f"epsilon must be in [0, temperature={temperature}), got {epsilon}")
    z = upcast(z)
    ids, width = (labels, num_classes) if num_classes else (dense_label_ids(labels), z.shape[0])
    one_hot = torch.zeros(z.shape[0], width, dtype=z.dtype, device=z.device).scatter_(1, ids[:, None], 1.0)  # [M, K]
    count = one_hot.sum(0)  # [K]
    present = count > 0
    num_present = present.sum()  # C_b, a tensor: no host sync
    centroids = F.normalize(one_hot.T @ z / count.clamp_min(1)[:, None], dim=1)  # an absent class: a zero row
    if centroid_stop_grad:
        centroids = centroids.detach()

    log_p = F.log_softmax((z @ centroids.T / temperature).masked_fill(~present, float("-inf")), dim=1)
    log_p_y = log_p.gather(1, ids[:, None]).squeeze(1)
    if adaptive_temperature:
        t2 = ((temperature - epsilon) + 2 * epsilon * log_p_y.exp()).clamp_min(1e-6)
    else:
        t2 = torch.full_like(log_p_y, temperature)
    inv_t2 = 1.0 / t2
    # log(e^{1/t2} + C_b - 1), with log(0) = -inf when only one class is present
    log_norm = torch.logaddexp(inv_t2, torch.log((num_present - 1).double()).to(z.dtype).expand_as(inv_t2))
    log_q = (inv_t2[:, None] * one_hot) - log_norm[:, None]  # [M, K]
    # absent classes hold no mass: masked before the product (inf - inf there would make the gradient nan)
    kl = (log_q.exp() * torch.where(present, log_q - log_p, 0.0)).sum(1)
    return (kl_weight * kl - log_p_y).mean()


def varcon_loss_views(features: Tensor, labels: Tensor, **kwargs) -> Tensor:
    """:func:`varcon_loss` on ``[N, V, D]`` features and ``[N]`` labels (all views count)."""
    n, v, d = features.shape
    return varcon_loss(features.reshape(n * v, d), labels.repeat_interleave(v), **kwargs)


class VarConLoss(nn.Module):
    """Module wrapper of :func:`varcon_loss_views`."""

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.02, kl_weight: float = 1.0,
                 adaptive_temperature: bool = True, centroid_stop_grad: bool = True,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.kwargs = dict(temperature=temperature, epsilon=epsilon, kl_weight=kl_weight,
                           adaptive_temperature=adaptive_temperature, centroid_stop_grad=centroid_stop_grad,
                           num_classes=num_classes)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return varcon_loss_views(features, labels, **self.kwargs)


def _validate(cfg) -> None:
    if cfg.loss.epsilon >= cfg.loss.temperature:
        raise ConfigError(f"loss.epsilon must be < loss.temperature (t1={cfg.loss.temperature}) for VarCon, "
                          f"got {cfg.loss.epsilon!r}")


def _space(trial) -> None:
    trial.suggest_float("loss.temperature", 0.03, 0.5, log=True)
    trial.suggest_float("loss.kl_weight", 0.0, 2.0)


VARCON = register(LossFamily(
    name="varcon", head="projection", summary="VarCon: variational class-posterior contrastive loss (NeurIPS 2025)",
    fields=("temperature", "epsilon", "kl_weight", "adaptive_temperature", "centroid_stop_grad"),
    build=lambda c, k: VarConLoss(c.temperature, c.epsilon, c.kl_weight, c.adaptive_temperature,
                                  c.centroid_stop_grad, num_classes=k),
    objective=lambda fn, out, y, b, v: fn(*global_batch(out.z.reshape(b, v, -1), y)),
    validate=_validate, search_space=_space))
