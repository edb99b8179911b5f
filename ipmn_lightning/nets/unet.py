"""pix2pix U-Net generator, shared by the watermark embedder H and the ``unet`` stealing model.

The structure follows the pix2pix ``UnetGenerator`` used by Deep Model Watermarking
(github.com/ZJZAC/Deep-Model-Watermarking @ 129120d, ``models/HidingUNet.py``): every level halves the resolution
with a 4x4 stride-2 convolution and the decoder mirrors it with 4x4 stride-2 transposed convolutions, concatenating
the encoder activation of the same level (skip).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

NormName = Literal["batch", "instance", "none"]
OutputName = Literal["sigmoid", "tanh", "none"]

_NORMS = ("batch", "instance", "none")
_OUTPUTS = ("sigmoid", "tanh", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Return the 2-D normalisation layer named ``norm`` for ``channels`` channels.

    Instance norm has no affine parameters and no running statistics (the modern pix2pix choice).
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm={norm!r} is not one of {_NORMS}")


def _make_output(output: str) -> nn.Module:
    if output == "sigmoid":
        return nn.Sigmoid()
    if output == "tanh":
        return nn.Tanh()
    if output == "none":
        return nn.Identity()
    raise ValueError(f"output={output!r} is not one of {_OUTPUTS}")


def default_num_downs(image_size: int, bottleneck: int = 2) -> int:
    """Number of U-Net levels that brings ``image_size`` down to ``bottleneck`` pixels.

    Examples: 256 -> 7, 128 -> 6, 64 -> 5 with the default bottleneck of 2 (DMW's H); with
    ``bottleneck=1``, 256 -> 8 (pix2pix ``unet_256``).

    Args:
        image_size: side of the square input image in pixels.
        bottleneck: side of the innermost feature map in pixels.

    Raises:
        ValueError: when ``image_size`` is not ``bottleneck * 2**k`` with ``k >= 2``.
    """
    if bottleneck < 1:
        raise ValueError(f"bottleneck={bottleneck} must be >= 1")
    ratio, rest = divmod(image_size, bottleneck)
    if image_size < 1 or rest or ratio & (ratio - 1):
        raise ValueError(
            f"image_size={image_size} must be bottleneck ({bottleneck}) times a power of two for a U-Net; "
            "use a size such as 64, 128 or 256, or pass num_downs explicitly"
        )
    num_downs = ratio.bit_length() - 1
    if num_downs < 2:
        raise ValueError(
            f"image_size={image_size} is too small for a U-Net with a {bottleneck}-pixel bottleneck "
            f"(needs at least {4 * bottleneck} pixels)"
        )
    return num_downs


class _SkipBlock(nn.Module):
    """One U-Net level: down path, the inner levels, up path, and (except outermost) the skip concat."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int,
        submodule: nn.Module | None,
        *,
        outermost: bool,
        norm: str,
        use_dropout: bool,
        output: str,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        # BatchNorm has its own shift, so the conv bias would be redundant; without norm it is needed.
        use_bias = norm != "batch"
        down_conv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        if outermost:
            down = [down_conv]
            up = [nn.ReLU(), nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1), _make_output(output)]
        elif submodule is None:  # innermost: no norm on the bottleneck, no skip input to the up conv
            down = [nn.LeakyReLU(0.2), down_conv]
            up = [
                nn.ReLU(),
                nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=use_bias),
                make_norm(norm, outer_nc),
            ]
        else:
            down = [nn.LeakyReLU(0.2), down_conv, make_norm(norm, inner_nc)]
            up = [
                nn.ReLU(),
                nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=use_bias),
                make_norm(norm, outer_nc),
            ]
            if use_dropout:
                up.append(nn.Dropout(0.5))
        middle = [] if submodule is None else [submodule]
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run this level; non-outermost levels return ``cat(x, f(x))``."""
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UNet(nn.Module):
    """pix2pix U-Net generator with concatenation skips.

    Level ``i`` (0 = outermost) has ``ngf * min(2**i, 8)`` channels: ngf, 2ngf, 4ngf, 8ngf, 8ngf, ...
    Dropout (p=0.5), when enabled, sits in the up path of the 8ngf->8ngf middle levels, as in pix2pix.
    Unlike pix2pix (whose in-place LeakyReLU also rectifies the skip tensor), the skip carries the
    encoder activation unchanged.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        num_downs: number of stride-2 levels (>= 2); H and W must be divisible by ``2**num_downs``.
        ngf: channels of the outermost level.
        norm: normalisation after each conv except the outermost down and the innermost down.
        use_dropout: dropout in the inner up blocks.
        output: output activation (``sigmoid`` -> [0, 1], ``tanh`` -> [-1, 1], ``none`` -> raw).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_downs: int,
        ngf: int = 64,
        norm: NormName = "batch",
        use_dropout: bool = False,
        output: OutputName = "sigmoid",
    ) -> None:
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"num_downs={num_downs} must be >= 2")
        if norm not in _NORMS:
            raise ValueError(f"norm={norm!r} is not one of {_NORMS}")
        if output not in _OUTPUTS:
            raise ValueError(f"output={output!r} is not one of {_OUTPUTS}")
        self.in_channels = in_channels
        self.num_downs = num_downs

        def width(level: int) -> int:
            return ngf * min(2**level, 8)

        block: nn.Module | None = None
        for level in reversed(range(1, num_downs)):
            dropout = use_dropout and block is not None and level >= 4
            block = _SkipBlock(
                width(level - 1),
                width(level),
                width(level - 1),
                block,
                outermost=False,
                norm=norm,
                use_dropout=dropout,
                output=output,
            )
        self.model = _SkipBlock(
            out_channels, ngf, in_channels, block, outermost=True, norm=norm, use_dropout=False, output=output
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x: (B, in_channels, H, W)`` to ``(B, out_channels, H, W)``.

        Raises:
            ValueError: when the channels differ from ``in_channels`` or H, W are not divisible by
                ``2**num_downs``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2**self.num_downs
        h, w = x.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(
                f"UNet with num_downs={self.num_downs} needs H and W divisible by {factor}, got {h}x{w}; "
                "resize the images or choose a smaller num_downs"
            )
        return self.model(x)
