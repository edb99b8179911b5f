"""Watermark embedding network H (DMW ``UnetGenerator``).

Upstream: Deep Model Watermarking ("DMW", Zhang et al. AAAI 2020; github.com/ZJZAC/Deep-Model-Watermarking @
129120d), ``models/HidingUNet.py``. The paper names only a U-Net: DMW's depth and widths are our default.
"""

from __future__ import annotations

import torch
from torch import nn

from ipmn_lightning.nets.unet import NormName, UNet, default_num_downs


class WatermarkEmbedder(nn.Module):
    """H: hides the watermark ``w`` in the mask ``x_m`` and returns the watermarked mask ``x_wm``.

    A pix2pix U-Net on ``cat(mask, watermark)`` (6 channels) with a sigmoid output (3 channels). By
    default (DMW, the paper) the output is the watermarked mask itself. With ``residual=True`` the U-Net
    predicts a correction in logit space, ``x_wm = sigmoid(logit(x_m) + U(x_m, w))``: the output stays in
    (0, 1) but starts close to ``x_m``, which trains far faster on a CPU budget (used by the demo configs).

    Args:
        image_size: side of the square images in pixels; sets the default depth.
        ngf: channels of the outermost U-Net level.
        num_downs: U-Net depth; ``None`` derives it from ``image_size`` so that the bottleneck is 2x2
            (256 -> 7, as in DMW). An explicit value must divide ``image_size`` by ``2**num_downs``.
        norm: normalisation layers of the U-Net (DMW uses batch norm).
        use_dropout: dropout in the inner up blocks (DMW: off).
        residual: predict a logit-space correction of the mask instead of the image (not in the paper).
    """

    def __init__(
        self,
        image_size: int = 256,
        ngf: int = 64,
        num_downs: int | None = None,
        norm: NormName = "batch",
        use_dropout: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if num_downs is None:
            num_downs = default_num_downs(image_size, bottleneck=2)
        elif num_downs < 2 or image_size % (2**num_downs):
            raise ValueError(
                f"num_downs={num_downs} does not fit image_size={image_size}: it must be >= 2 and "
                f"image_size must be divisible by 2**num_downs; pass num_downs=None to derive it"
            )
        self.image_size = image_size
        self.num_downs = num_downs
        self.residual = residual
        output = "none" if residual else "sigmoid"
        self.unet = UNet(6, 3, num_downs, ngf=ngf, norm=norm, use_dropout=use_dropout, output=output)

    def forward(self, mask: torch.Tensor, watermark: torch.Tensor) -> torch.Tensor:
        """Embed the watermark.

        Args:
            mask: (B, 3, H, W) float in [0, 1], the mask ``x_m``.
            watermark: (3, H, W) or (B, 3, H, W) float in [0, 1]; a single watermark is shared by the
                whole batch.

        Returns:
            watermarked_mask: (B, 3, H, W) float in [0, 1].
        """
        if watermark.dim() == 3:
            # expand is a view: the shared watermark is not copied per sample
            watermark = watermark.unsqueeze(0).expand(mask.shape[0], -1, -1, -1)
        if watermark.dim() != 4 or watermark.shape[0] != mask.shape[0] or watermark.shape[2:] != mask.shape[2:]:
            raise ValueError(
                f"watermark {tuple(watermark.shape)} does not match mask {tuple(mask.shape)}: expected "
                "(3, H, W) or (B, 3, H, W) with the mask's H and W; resize the watermark to the image size"
            )
        out = self.unet(torch.cat([mask, watermark], dim=1))
        if self.residual:
            # clamping keeps logit finite for saturated pixels; 1e-3 is below one 8-bit step
            return torch.sigmoid(torch.logit(mask.clamp(1e-3, 1 - 1e-3)) + out)
        return out
