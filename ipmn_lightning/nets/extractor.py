"""Watermark extractor network R (DMW ``HidingRes``, the "CEILNet-like" net).

Upstream: Deep Model Watermarking ("DMW", Zhang et al. AAAI 2020; github.com/ZJZAC/Deep-Model-Watermarking @
129120d), ``models/HidingRes.py``, whose layout follows CEILNet (github.com/fqnchina/CEILNet @ 80e4695). The paper
gives no layout for R: DMW's is our default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_in_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.InstanceNorm2d(channels, affine=True), nn.ReLU())


class DilatedResidualBlock(nn.Module):
    """Two dilated 3x3 convs with instance norm and a post-addition ReLU: ``relu(x + f(x))``.

    Args:
        channels: input and output channels.
        dilation: dilation (and padding) of both convolutions.
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()

        def conv() -> nn.Conv2d:
            return nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)

        self.body = nn.Sequential(
            conv(),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(),
            conv(),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; shape is preserved."""
        return F.relu(x + self.body(x))


class WatermarkExtractor(nn.Module):
    """R: extracts the watermark from a watermarked image, or a blank (white) image from a clean one.

    Layout (DMW ``HidingRes``): conv1, conv2 (3x3) and conv3 (3x3, stride 2), each followed by
    InstanceNorm(affine) and ReLU; one dilated residual block per entry of ``dilations``; a 4x4
    stride-2 transposed conv, a 3x3 conv (each with IN and ReLU); a 1x1 conv to ``out_channels``; a
    final ReLU, so the output is >= 0 (not clamped above).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        channels: width of every hidden layer (DMW: 128).
        dilations: dilation of each residual block (DMW: nine blocks, 2,2,2,2,4,4,4,4,1).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: int = 128,
        dilations: tuple[int, ...] = (2, 2, 2, 2, 4, 4, 4, 4, 1),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        c = channels
        self.head = nn.Sequential(
            _conv_in_relu(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), c),
            _conv_in_relu(nn.Conv2d(c, c, 3, padding=1, bias=False), c),
            _conv_in_relu(nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False), c),
        )
        self.blocks = nn.Sequential(*(DilatedResidualBlock(c, d) for d in dilations))
        self.tail = nn.Sequential(
            _conv_in_relu(nn.ConvTranspose2d(c, c, 4, stride=2, padding=1, bias=False), c),
            _conv_in_relu(nn.Conv2d(c, c, 3, padding=1, bias=False), c),
            nn.Conv2d(c, out_channels, 1),
            nn.ReLU(),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Extract.

        Args:
            image: (B, in_channels, H, W) float in [0, 1], H and W even.

        Returns:
            (B, out_channels, H, W) float >= 0, the extracted watermark (or blank).
        """
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"WatermarkExtractor expects (B, {self.in_channels}, H, W), got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(f"WatermarkExtractor needs even H and W (one stride-2 level), got {h}x{w}; resize or crop")
        return self.tail(self.blocks(self.head(image)))
