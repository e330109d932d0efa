"""Supervised contrastive loss (Khosla et al. 2020), L_out and L_in, and SimCLR/NT-Xent.

Notation: N images, V views, features ``[N, V, D]`` L2-normalised, labels ``[N]``.
For anchor i, A(i) = all other contrast embeddings, P(i) = those in A(i) with i's label.

    L_out_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/t) / sum_{a in A(i)} exp(z_i.z_a/t) )
    L_in_i  = -log( 1/|P(i)| sum_{p in P(i)} exp(z_i.z_p/t) / sum_{a in A(i)} exp(z_i.z_a/t) )

Anchors with no positive contribute nothing and are excluded from the mean; a batch in which
no anchor has a positive raises instead of returning a silent 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.losses.dist import global_batch
from core.losses.ops import dense_label_ids, upcast
from core.losses.registry import LossFamily, register


def _check_features(features: Tensor, labels: Tensor | None) -> None:
    if features.dim() != 3:
        raise ValueError(f"features must be [N, V, D], got shape {tuple(features.shape)}")
    if labels is not None and (labels.dim() != 1 or labels.shape[0] != features.shape[0]):
        raise ValueError(f"labels must be [N] with N={features.shape[0]}, got shape {tuple(labels.shape)}")


def supcon_loss(
    features: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    *,
    variant: str = "out",
    contrast_mode: str = "all",
    base_temperature: float | None = None,
) -> Tensor:
    """SupCon loss on ``[N, V, D]`` normalised features; see the module docstring.

    ``contrast_mode="one"`` uses only the first view as anchors (all views are still contrasted).
    ``base_temperature`` multiplies the loss by ``t / base_t`` (off by default: it confounds a
    temperature sweep with the learning rate). Similarity logits are computed in float32 even
    under bf16 autocast.
    """
    _check_features(features, labels)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if variant not in ("out", "in"):
        raise ValueError(f"variant must be 'out' or 'in', got {variant!r}")
    if contrast_mode not in ("all", "one"):
        raise ValueError(f"contrast_mode must be 'all' or 'one', got {contrast_mode!r}")
    n, v, d = features.shape
    contrast = features.transpose(0, 1).reshape(n * v, d)  # view-major, as SupContrast
    contrast_labels = labels.repeat(v)
    if contrast_mode == "all":
        anchor, anchor_labels = contrast, contrast_labels
    else:  # anchors are the first n rows of `contrast` (view 0) in both modes
        anchor, anchor_labels = contrast[:n], labels

    if variant == "out":
        per_anchor, has_pos = _supcon_out(anchor, contrast, contrast_labels, temperature)
    else:
        per_anchor, has_pos = _supcon_in(anchor, anchor_labels, contrast, contrast_labels, temperature)
    # with V >= 2 every anchor has its other view as a positive: the check (a host sync) is needed for V=1 only
    if v == 1 and not bool(has_pos.any()):
        raise ValueError("no anchor in the batch has a positive (every label is unique and V=1); "
                         "SupCon is undefined for this batch")
    loss = (per_anchor * has_pos).sum() / has_pos.sum().clamp_min(1)  # mean over anchors with a positive
    if base_temperature is not None:
        loss = loss * (temperature / base_temperature)
    return loss


def _masked_logits(anchor: Tensor, contrast: Tensor, temperature: float) -> Tensor:
    """logits [A, M] with the self-similarity (diagonal; anchors are the first rows of contrast) at -inf."""
    logits = upcast(anchor @ contrast.T) / temperature
    logits.diagonal().fill_(float("-inf"))
    return logits


def _supcon_out(anchor: Tensor, contrast: Tensor, contrast_labels: Tensor, temperature: float
                ) -> tuple[Tensor, Tensor]:
    """L_out per anchor. The positive term is linear in z_p, so it comes from per-class sums:
    (1/|P_i|) sum_p z_i.z_p/t = z_i.(S_{y_i} - z_i) / (t |P_i|), in O(M D); only the log-denominator
    needs the [A, M] similarity matrix (one matmul + one logsumexp)."""
    inverse = dense_label_ids(contrast_labels)
    contrast_up = upcast(contrast)
    m = contrast.shape[0]
    class_sum = torch.zeros(m, contrast.shape[1], dtype=contrast_up.dtype, device=contrast.device)
    class_sum = class_sum.index_add(0, inverse, contrast_up)
    class_count = torch.zeros(m, dtype=torch.long, device=contrast.device).index_add_(0, inverse,
                                                                                     torch.ones_like(inverse))
    anchor_class = inverse[: anchor.shape[0]]  # anchors are the first rows of contrast, same labels
    anchor_up = upcast(anchor)
    pos_count = class_count[anchor_class] - 1
    pos_sum = ((class_sum[anchor_class] - anchor_up) * anchor_up).sum(1) / temperature
    log_denominator = torch.logsumexp(_masked_logits(anchor, contrast, temperature), dim=1)
    has_pos = pos_count > 0
    return log_denominator - pos_sum / pos_count.clamp_min(1), has_pos


def _supcon_in(anchor: Tensor, anchor_labels: Tensor, contrast: Tensor, contrast_labels: Tensor,
               temperature: float) -> tuple[Tensor, Tensor]:
    """L_in per anchor: the sum over positives sits inside the log, so it needs a masked logsumexp."""
    logits = _masked_logits(anchor, contrast, temperature)
    log_denominator = torch.logsumexp(logits, dim=1)
    pos_mask = anchor_labels[:, None] == contrast_labels[None, :]
    pos_mask.diagonal().fill_(False)
    pos_count = pos_mask.sum(1)
    has_pos = pos_count > 0
    pos_logits = logits.masked_fill(~pos_mask, float("-inf"))
    # rows without positives would be all -inf (NaN gradient through logsumexp): zero them
    pos_logits = torch.where(has_pos[:, None], pos_logits, torch.zeros_like(pos_logits))
    log_pos = torch.logsumexp(pos_logits, dim=1)
    return -(log_pos - torch.log(pos_count.clamp_min(1).to(log_pos.dtype)) - log_denominator), has_pos


def simclr_loss(features: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR / NT-Xent: SupCon L_out with each image its own class."""
    _check_features(features, None)
    if features.shape[1] < 2:
        raise ValueError("SimCLR needs at least 2 views per image")
    labels = torch.arange(features.shape[0], device=features.device)
    return supcon_loss(features, labels, temperature)


class SupConLoss(nn.Module):
    """Module wrapper of :func:`supcon_loss`."""

    def __init__(self, temperature: float = 0.1, variant: str = "out", contrast_mode: str = "all",
                 base_temperature: float | None = None) -> None:
        super().__init__()
        self.temperature, self.variant = temperature, variant
        self.contrast_mode, self.base_temperature = contrast_mode, base_temperature

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(features, labels, self.temperature, variant=self.variant,
                           contrast_mode=self.contrast_mode, base_temperature=self.base_temperature)


class SimCLRLoss(nn.Module):
    """Module wrapper of :func:`simclr_loss`; labels are ignored (instance discrimination)."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        return simclr_loss(features, self.temperature)



def _temperature_space(trial) -> None:
    trial.suggest_float("loss.temperature", 0.03, 0.5, log=True)


def _global(loss_fn: nn.Module, out, labels: Tensor, b: int, v: int) -> Tensor:
    return loss_fn(*global_batch(out.z.reshape(b, v, -1), labels))


SUPCON = register(LossFamily(
    name="supcon", head="projection", summary="SupCon L_out (default) or L_in, Khosla et al. 2020",
    fields=("temperature", "supcon_variant", "contrast_mode", "base_temperature"),
    build=lambda c, k: SupConLoss(c.temperature, c.supcon_variant, c.contrast_mode, c.base_temperature),
    objective=_global, search_space=_temperature_space))

SIMCLR = register(LossFamily(
    name="simclr", head="projection", summary="SimCLR / NT-Xent (each image its own class)",
    fields=("temperature",), build=lambda c, k: SimCLRLoss(c.temperature), objective=_global,
    min_views=2, search_space=_temperature_space))
