"""Stealing models SM: the attacker's imitations of the black-box mask network.

The stealers follow Deep Model Watermarking's surrogate-model attack ("DMW";
github.com/ZJZAC/Deep-Model-Watermarking @ 129120d: ``SR attack/``, built on DeblurGAN and pix2pix); where the paper
names a stealer without its layout (``cnet``, the block of ``res9`` and ``res16``), our default is said at the
class.

Each stealer maps ``cat(protected, replacement)`` (6 channels) to an imitation of the watermarked
masked face. Following the DMW surrogate code, the network works on data in [-1, 1] and ends in a
tanh; the wrapper maps the inputs from [0, 1] to [-1, 1] and the output back with ``(t + 1) / 2``
(which equals ``sigmoid(2z)``), so callers see images in [0, 1] only.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ipmn_lightning.nets.unet import UNet, default_num_downs

StealerName = Literal["cnet", "res9", "res16", "unet", "attn"]
BlockName = Literal["two_conv", "dmw_single_conv"]


class _Stealer(nn.Module):
    """Base: ``forward(protected, replacement)`` around a body working in [-1, 1] with a tanh output."""

    body: nn.Module
    size_multiple: int = 1

    def forward(self, protected: torch.Tensor, replacement: torch.Tensor) -> torch.Tensor:
        """Imitate the target model.

        Args:
            protected: (B, 3, H, W) float in [0, 1], the protected face ``x_p``.
            replacement: (B, 3, H, W) float in [0, 1], the replacement face ``x_r``.

        Returns:
            stolen: (B, 3, H, W) float in [0, 1], the simulated mask ``x_sm``.
        """
        if protected.shape != replacement.shape:
            raise ValueError(
                f"protected {tuple(protected.shape)} and replacement {tuple(replacement.shape)} must have "
                "the same shape"
            )
        h, w = protected.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"{type(self).__name__} needs H and W divisible by {self.size_multiple}, got {h}x{w}")
        x = torch.cat([protected, replacement], dim=1) * 2 - 1
        return (torch.tanh(self.body(x)) + 1) / 2


class CNet(_Stealer):
    """``cnet``: a plain stack of 3x3 convs (our own definition; the papers never publish one).

    ``depth`` x [Conv3x3(width) -> ReLU] then Conv3x3 -> 3; no downsampling, no normalisation.

    Args:
        width: channels of the hidden convs.
        depth: number of hidden conv + ReLU layers.
    """

    def __init__(self, width: int = 64, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 6
        for _ in range(depth):
            layers += [nn.Conv2d(prev, width, 3, padding=1), nn.ReLU()]
            prev = width
        layers.append(nn.Conv2d(prev, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)


class ResnetBlock(nn.Module):
    """Residual block at constant width with reflection padding and instance norm.

    ``two_conv``: pad-conv-IN-ReLU-[dropout]-pad-conv-IN plus the skip (CycleGAN/pix2pix).
    ``dmw_single_conv``: the single-conv block the DMW/DeblurGAN code ends up with (pad-conv-IN,
    plus ReLU-dropout when dropout is on), plus the skip.

    Args:
        channels: input and output channels.
        block: which variant.
        use_dropout: dropout p=0.5 inside the block.
    """

    def __init__(self, channels: int, block: BlockName = "two_conv", use_dropout: bool = False) -> None:
        super().__init__()

        def pad_conv_norm() -> list[nn.Module]:
            return [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels)]

        dropout = [nn.Dropout(0.5)] if use_dropout else []
        if block == "two_conv":
            layers = [*pad_conv_norm(), nn.ReLU(), *dropout, *pad_conv_norm()]
        elif block == "dmw_single_conv":
            layers = [*pad_conv_norm(), *([nn.ReLU(), *dropout] if use_dropout else [])]
        else:
            raise ValueError(f"block={block!r} is not one of ('two_conv', 'dmw_single_conv')")
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + f(x)``; shape is preserved."""
        return x + self.body(x)


class ResnetStealer(_Stealer):
    """``res9`` / ``res16``: the ResNet generator of CycleGAN/DeblurGAN (IPMN's Res9, Res16).

    ReflectionPad3 -> Conv7x7(ngf) -> IN -> ReLU; 2 x [Conv3x3 stride 2 -> IN -> ReLU] (to 4ngf);
    ``n_blocks`` ResnetBlocks at 4ngf; 2 x [ConvT3x3 stride 2, output_padding 1 -> IN -> ReLU];
    ReflectionPad3 -> Conv7x7 -> 3. H and W must be divisible by 4.

    Args:
        n_blocks: residual blocks (9 for res9, 16 for res16).
        ngf: channels of the first conv.
        block: residual block variant (see :class:`ResnetBlock`).
        use_dropout: dropout in the residual blocks (DMW default on; ours off).
    """

    size_multiple = 4

    def __init__(
        self, n_blocks: int = 9, ngf: int = 64, block: BlockName = "two_conv", use_dropout: bool = False
    ) -> None:
        super().__init__()

        def in_relu(ch: int) -> list[nn.Module]:
            return [nn.InstanceNorm2d(ch), nn.ReLU()]

        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(6, ngf, 7), *in_relu(ngf)]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                *in_relu(ngf * mult * 2),
            ]
        layers += [ResnetBlock(ngf * 4, block, use_dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            up = nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1)
            layers += [up, *in_relu(ngf * mult // 2)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7)]
        self.body = nn.Sequential(*layers)


class UNetStealer(_Stealer):
    """``unet``: the pix2pix U-Net with instance norm down to a 1x1 bottleneck (``unet_256`` at 256).

    Args:
        image_size: side of the square images; sets the depth (256 -> 8, 64 -> 6).
        ngf: channels of the outermost level.
        use_dropout: dropout in the inner up blocks (pix2pix default on; ours off).
    """

    def __init__(self, image_size: int = 256, ngf: int = 64, use_dropout: bool = False) -> None:
        super().__init__()
        num_downs = default_num_downs(image_size, bottleneck=1)
        self.size_multiple = 2**num_downs
        # the U-Net's raw output goes through the shared tanh of the base class
        self.body = UNet(6, 3, num_downs, ngf=ngf, norm="instance", use_dropout=use_dropout, output="none")


class _AttentionBody(nn.Module):
    """Conv stem at full resolution, a transformer over 4 x 4 patches, pixel-shuffle back, a conv head on both."""

    def __init__(self, image_size: int, ngf: int, patch: int, depth: int, heads: int) -> None:
        super().__init__()
        dim = ngf * 4
        self.stem = nn.Sequential(nn.Conv2d(6, ngf, 3, padding=1), nn.GELU())
        self.embed = nn.Conv2d(ngf, dim, patch, stride=patch)
        side = image_size // patch
        self.position = nn.Parameter(torch.zeros(1, side * side, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.up = nn.Sequential(nn.Conv2d(dim, ngf * patch * patch, 1), nn.PixelShuffle(patch))
        self.head = nn.Sequential(nn.Conv2d(2 * ngf, ngf, 3, padding=1), nn.GELU(), nn.Conv2d(ngf, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W) in [-1, 1] -> (B, 3, H, W) pre-tanh."""
        local = self.stem(x)
        tokens = self.embed(local)
        b, c, h, w = tokens.shape
        mixed = self.encoder(tokens.flatten(2).transpose(1, 2) + self.position)
        up = self.up(mixed.transpose(1, 2).reshape(b, c, h, w))
        return self.head(torch.cat([local, up], dim=1))


class AttentionStealer(_Stealer):
    """``attn``: an image-to-image transformer, a kind of stealer the paper does not try (issue 24).

    A ViT-style body (our own small design, in the spirit of Restormer/Uformer's attention restoration
    networks): Conv3x3(ngf) stem, 4 x 4 patch embedding to 4ngf, ``depth`` pre-norm transformer encoder layers
    with global self-attention over the patches (learned position embedding), a 1x1 conv and pixel shuffle back
    to full resolution, and a conv head on the stem's and the transformer's features. H and W must equal
    ``image_size`` (the position embedding) and be divisible by 4.

    Args:
        image_size: side of the square images.
        ngf: stem width; the transformer works at 4ngf.
        depth: transformer layers.
        heads: attention heads.
    """

    size_multiple = 4

    def __init__(self, image_size: int = 64, ngf: int = 16, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size={image_size} must be divisible by 4 for the attn stealer")
        self.body = _AttentionBody(image_size, ngf, 4, depth, heads)


def build_stealer(name: StealerName, image_size: int = 256, ngf: int = 64, **kwargs: Any) -> nn.Module:
    """Build a stealing model by name.

    Args:
        name: ``cnet``, ``res9``, ``res16``, ``unet`` or ``attn``.
        image_size: side of the square images (sets the U-Net depth; checked for the others).
        ngf: base width (the hidden width of ``cnet``).
        **kwargs: extra constructor arguments (``depth`` for cnet; ``block``, ``use_dropout`` for
            res9/res16; ``use_dropout`` for unet).

    Returns:
        A module with ``forward(protected, replacement) -> stolen (B, 3, H, W) in [0, 1]``.
    """
    if name == "cnet":
        return CNet(width=ngf, **kwargs)
    if name in ("res9", "res16"):
        if image_size % 4:
            raise ValueError(f"image_size={image_size} must be divisible by 4 for the {name} stealer")
        return ResnetStealer(n_blocks=9 if name == "res9" else 16, ngf=ngf, **kwargs)
    if name == "unet":
        return UNetStealer(image_size=image_size, ngf=ngf, **kwargs)
    if name == "attn":
        return AttentionStealer(image_size=image_size, ngf=ngf, **kwargs)
    raise ValueError(f"stealer name={name!r} is not one of ('cnet', 'res9', 'res16', 'unet', 'attn')")
