"""The platform's own small CNN for the embedded data (every backbone by name: ``core.models.backbones``)."""

from __future__ import annotations

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
