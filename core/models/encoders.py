"""Encoders: a small CNN for the embedded data and torchvision ResNets with CIFAR/ImageNet stems."""

from __future__ import annotations

import torchvision
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Three conv blocks (conv-BN-ReLU, pool) and global average pooling; for small images."""

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2) if i < 2 else nn.AdaptiveAvgPool2d(1))
        self.body = nn.Sequential(*layers)
        self.feature_dim = chans[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)


def resnet(depth: int, stem: str = "cifar") -> nn.Module:
    """torchvision ResNet-18/50 without its classifier (``feature_dim`` = 512 / 2048).

    ``stem="cifar"`` replaces the 7x7 stride-2 conv + max-pool by a 3x3 stride-1 conv and no
    pool, as in SupContrast/VarContrast for 32x32 inputs.
    """
    builders = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}
    if depth not in builders:
        raise ValueError(f"ResNet depth must be 18 or 50, got {depth}")
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
    net = builders[depth](weights=None)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.feature_dim = net.fc.in_features  # type: ignore[assignment]
    net.fc = nn.Identity()
    return net


def build_encoder(backbone: str, stem: str = "cifar", width: int = 32, in_channels: int = 3) -> nn.Module:
    """Encoder by name; every encoder exposes ``feature_dim``."""
    if backbone == "small_cnn":
        return SmallCNN(in_channels, width)
    if backbone == "resnet18":
        return resnet(18, stem)
    if backbone == "resnet50":
        return resnet(50, stem)
    raise ValueError(f"unknown backbone {backbone!r} (known: small_cnn, resnet18, resnet50)")
