"""Encoders and heads; :class:`ContrastiveModel` ties them together for every loss family."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.config import RunConfig
from core.models.backbones import build_backbone, check_input, load_weights
from core.models.encoders import SmallCNN
from core.models.heads import ProjectionHead, VariationalHead, projected_normal_sample

__all__ = ["ContrastiveModel", "ModelOutput", "build_model", "build_backbone", "SmallCNN", "ProjectionHead",
           "VariationalHead", "projected_normal_sample", "check_backbone"]


@dataclass
class ModelOutput:
    """What a forward pass gives: ``z`` (normalised embedding, or logits for cross-entropy) and,
    for variational heads, the posterior parameters; :meth:`ContrastiveModel.encode` adds the
    encoder ``features``."""

    z: Tensor
    mu: Tensor | None = None
    logvar: Tensor | None = None
    features: Tensor | None = None


class ContrastiveModel(nn.Module):
    """Encoder + one head: ``projection`` (normalised z), ``variational`` (projected-normal
    sample while training, mu/||mu|| in eval) or ``linear`` (class logits, cross-entropy)."""

    def __init__(self, encoder: nn.Module, head: str, proj_dim: int = 128, proj_hidden: int | None = None,
                 num_classes: int | None = None, mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.25,)
                 ) -> None:
        super().__init__()
        self.encoder, self.head_kind = encoder, head
        # input normalisation of [0, 1] images, part of the model (not of its state: an exported encoder's
        # normalisation is stated in model.json)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        dim = encoder.feature_dim
        if head == "projection":
            self.head: nn.Module = ProjectionHead(dim, proj_hidden, proj_dim)
        elif head == "variational":
            self.head = VariationalHead(dim, proj_hidden, proj_dim)
        elif head == "linear":
            if not num_classes:
                raise ValueError("a linear (cross-entropy) head needs num_classes")
            self.head = nn.Linear(dim, num_classes)
        else:
            raise ValueError(f"unknown head {head!r}")

    def normalize(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images in [0, 1] -> the backbone's input."""
        return (x - self.mean) / self.std

    def features(self, x: Tensor) -> Tensor:
        """Encoder representation (what probes and kNN use) of images in [0, 1]."""
        return self.encoder(self.normalize(x))

    def encode(self, x: Tensor) -> ModelOutput:
        """One pass giving the encoder features and the head's output: in eval mode ``z`` is the
        deterministic embedding (``mu/||mu||`` for a variational head), in train mode a sample."""
        h = self.encoder(self.normalize(x))
        if self.head_kind == "variational":
            mu, logvar = self.head(h)
            z = projected_normal_sample(mu, logvar) if self.training else F.normalize(mu, dim=-1)
            return ModelOutput(z, mu, logvar, features=h)
        return ModelOutput(self.head(h), features=h)

    def forward(self, x: Tensor) -> ModelOutput:
        return self.encode(x)

    def variance_parameters(self) -> list[nn.Parameter]:
        """The variational head's log-variance layer (its own LR multiplier; empty for other heads)."""
        return list(self.head.logvar.parameters()) if isinstance(self.head, VariationalHead) else []


def build_model(cfg: RunConfig, num_classes: int, head: str) -> ContrastiveModel:
    """The model a run config asks for (``model.weights`` loaded into its backbone), with the head its loss
    family needs (``projection``, ``variational`` or ``linear``: ``core.losses.head_of(cfg)``)."""
    encoder = build_backbone(cfg.model.backbone, cfg.model.stem, cfg.model.base_width())
    if cfg.model.weights:
        load_weights(encoder, cfg.model.weights, cfg.model.backbone)
    return ContrastiveModel(encoder, head, cfg.model.proj_dim, cfg.model.proj_hidden,
                            num_classes, cfg.data.mean, cfg.data.std)


def check_backbone(cfg: RunConfig) -> None:
    """Before any training: the backbone builds, takes ``data.image_size`` inputs and its weights fit."""
    encoder = build_backbone(cfg.model.backbone, cfg.model.stem, cfg.model.base_width())
    if cfg.model.weights:
        load_weights(encoder, cfg.model.weights, cfg.model.backbone)
    check_input(encoder, cfg.model.backbone, cfg.data.image_size)
