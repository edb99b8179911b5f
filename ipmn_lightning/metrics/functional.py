"""The paper's watermark and image measures as plain tensor functions (§4); no torchmetrics, so inference loads fast.

The accumulating ``torchmetrics.Metric`` versions used in training are in :mod:`ipmn_lightning.metrics.collections`.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["NC_THRESHOLD", "normalized_correlation", "quantize_8bit", "rgb_to_y"]

NC_THRESHOLD = 0.95
"""An extraction succeeds when NC exceeds this value (paper §4)."""


def normalized_correlation(extracted: Tensor, watermark: Tensor, centered: bool = False) -> Tensor:
    """Per-image normalized correlation NC = Σ w·w' / sqrt(Σ w² · Σ w'²) (paper §4).

    Args:
        extracted: (B, C, H, W) extracted watermarks w'.
        watermark: (C, H, W) or (B, C, H, W) reference watermark w.
        centered: subtract each image's mean first (Pearson correlation). Raw NC between an all-white
            blank and a bright watermark can be high; the centred variant does not flatter such outputs.

    Returns:
        (B,) NC per image, in [-1, 1] (in [0, 1] for non-negative images). An all-zero image gives 0.
    """
    extracted = extracted.flatten(1).double()
    watermark = watermark.reshape(-1, extracted.shape[1]).double().expand_as(extracted)
    if centered:
        extracted = extracted - extracted.mean(dim=1, keepdim=True)
        watermark = watermark - watermark.mean(dim=1, keepdim=True)
    num = (extracted * watermark).sum(dim=1)
    den = (extracted.square().sum(dim=1) * watermark.square().sum(dim=1)).sqrt()
    return (num / den.clamp_min(1e-12)).float()


def rgb_to_y(image: Tensor) -> Tensor:
    """BT.601 luma as the HiNet/IMN evaluation scripts compute it, rescaled to [0, 1].

    Not kornia's or torchvision's grey conversion: the paper's Y-channel numbers use this studio-range Y
    (offset 16/255, scale 219/255), which gives different PSNR/SSIM than full-range luma.

    Args:
        image: (B, 3, H, W) RGB in [0, 1].

    Returns:
        (B, 1, H, W) Y in [16/255, 235/255].
    """
    weights = image.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255.0
    return (image * weights).sum(dim=1, keepdim=True) + 16.0 / 255.0


def quantize_8bit(image: Tensor) -> Tensor:
    """What a receiver gets from an 8-bit PNG: clamp to [0, 1] and round to multiples of 1/255."""
    return image.clamp(0, 1).mul(255).round().div(255)
