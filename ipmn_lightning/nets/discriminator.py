"""Discriminator D (DMW ``Discriminator``).

Upstream: Deep Model Watermarking ("DMW", Zhang et al. AAAI 2020; github.com/ZJZAC/Deep-Model-Watermarking @
129120d), ``models/Discriminator.py``. The paper gives no layout for D: DMW's patch discriminator is our default.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """D: scores each image patch as real (clean mask) or fake (watermarked mask).

    One block per entry of ``widths``: Conv3x3 stride 2 pad 1 -> InstanceNorm (not on the first
    block) -> LeakyReLU(0.2); then a Conv3x3 to one channel. With the default four blocks a
    (B, 3, 256, 256) input gives a (B, 1, 16, 16) map.

    Args:
        in_channels: input channels.
        widths: output channels of each stride-2 block.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one block width")
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            layers.append(nn.Conv2d(prev, width, 3, stride=2, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            prev = width
        layers.append(nn.Conv2d(prev, 1, 3, padding=1))
        self.model = nn.Sequential(*layers)
        self.downsampling = 2 ** len(widths)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Score patches.

        Args:
            image: (B, in_channels, H, W) float in [0, 1].

        Returns:
            (B, 1, ceil(H / 2**n), ceil(W / 2**n)) raw scores (no sigmoid; LSGAN or BCE-with-logits),
            n = ``len(widths)``.
        """
        return self.model(image)
