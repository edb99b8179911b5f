"""The losses of phase 1, eqs. 10-18: the terms of ℓ_IP = λ_wemd ℓ_wemd + λ_wext ℓ_wext (eq. 10).

The weighted sum of eq. 10 itself is formed by ``WatermarkPretrainModule``. Reductions follow the public code
the paper builds on: the watermark phases (1 and 3b) use *mean* MSE scaled by ``mse_scale`` (Deep Model
Watermarking's ``--betamse``, 1e4 in its ``main.py``; github.com/ZJZAC/Deep-Model-Watermarking @ 129120d, "DMW"
below); the invertible phase (2) uses *sum*-reduced MSE (:func:`sum_mse`, the ``MSELoss(size_average=False)``
of HiNet, github.com/TomTomTommi/HiNet @ 5c2682a, and IMN, github.com/coriverchen/IMN @ f5e5190).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GanMode",
    "consistency_loss",
    "discriminator_loss",
    "generator_adversarial_loss",
    "scaled_mse",
    "sum_mse",
    "watermark_embedding_loss",
    "watermark_extracting_loss",
]

GanMode = Literal["lsgan", "bce"]


def scaled_mse(prediction: Tensor, target: Tensor, scale: float = 1.0) -> Tensor:
    """Mean squared error times ``scale``; the ‖·‖₂ of eqs. 12, 16, 17 and 18.

    ``target`` may broadcast against ``prediction`` (e.g. a (3, H, W) watermark against a batch).
    """
    return scale * F.mse_loss(prediction, target.expand_as(prediction))


def sum_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Sum-reduced squared error, the ‖·‖₂ of eqs. 20-22 (HiNet/IMN reduction)."""
    return F.mse_loss(prediction, target, reduction="sum")


def generator_adversarial_loss(fake_scores: Tensor, mode: GanMode = "lsgan") -> Tensor:
    """H's side of the adversarial loss ℓ_adv, eq. 14: make D score x_wm as real.

    Args:
        fake_scores: D(x_wm), (B, 1, h, w) patch scores (logits for ``bce``).
        mode: ``lsgan`` (least squares, the DMW code) or ``bce`` (the log form written in eq. 14).
    """
    target = torch.ones_like(fake_scores)
    if mode == "lsgan":
        return F.mse_loss(fake_scores, target)
    return F.binary_cross_entropy_with_logits(fake_scores, target)


def discriminator_loss(real_scores: Tensor, fake_scores: Tensor, mode: GanMode = "lsgan") -> Tensor:
    """D's side of eq. 14: E[log D(x_m)] + E[log(1 - D(x_wm))], or its least-squares form.

    Args:
        real_scores: D(x_m), (B, 1, h, w).
        fake_scores: D(x_wm.detach()), (B, 1, h, w).
        mode: ``lsgan`` or ``bce``.

    Returns:
        Half the sum of the real and fake terms (the DMW code's 0.5 weighting).
    """
    ones, zeros = torch.ones_like(real_scores), torch.zeros_like(fake_scores)
    if mode == "lsgan":
        return 0.5 * (F.mse_loss(real_scores, ones) + F.mse_loss(fake_scores, zeros))
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_scores, ones) + F.binary_cross_entropy_with_logits(fake_scores, zeros)
    )


def consistency_loss(extracted: Tensor, scale: float = 1.0) -> Tensor:
    """ℓ_cst, eq. 18: the watermarks extracted from two halves of a batch should agree.

    Args:
        extracted: (B, C, H, W) R outputs on watermarked images; B must be even.
        scale: the MSE scale.

    Raises:
        ValueError: if the batch size is odd (the halves cannot be paired).
    """
    batch = extracted.shape[0]
    if batch % 2:
        raise ValueError(
            f"the consistency loss (eq. 18) pairs the two halves of a batch, but the batch has {batch} images; "
            "use an even batch size (drop_last=True keeps the last training batch even)"
        )
    half = batch // 2
    return scaled_mse(extracted[:half], extracted[half:], scale)


def watermark_embedding_loss(
    watermarked_mask: Tensor,
    mask: Tensor,
    fake_scores: Tensor | None,
    vgg_features: tuple[Tensor, Tensor] | None,
    *,
    mse_scale: float,
    lambda_bs: float,
    lambda_vgg: float,
    lambda_adv: float,
    gan_mode: GanMode = "lsgan",
) -> dict[str, Tensor]:
    """ℓ_wemd = λ_bs ℓ_bs + λ_vgg ℓ_vgg + λ_adv ℓ_adv, eqs. 11-14.

    Args:
        watermarked_mask: x_wm = H(x_m, w), (B, 3, H, W) in [0, 1].
        mask: x_m, (B, 3, H, W) in [0, 1].
        fake_scores: D(x_wm) or None when λ_adv is 0.
        vgg_features: (VGG_k(x_wm), VGG_k(x_m)) or None when λ_vgg is 0.
        mse_scale: scale of the pixel MSE (1e4 in the DMW code).
        lambda_bs: weight of ℓ_bs (eq. 12).
        lambda_vgg: weight of ℓ_vgg (eq. 13).
        lambda_adv: weight of ℓ_adv (eq. 14).
        gan_mode: ``lsgan`` or ``bce``.

    Returns:
        ``{"bs", "vgg", "adv", "wemd"}``, the weighted sum under ``wemd``.
    """
    zero = watermarked_mask.new_zeros(())
    bs = scaled_mse(watermarked_mask, mask, mse_scale)
    vgg = F.mse_loss(*vgg_features) if vgg_features is not None else zero
    adv = generator_adversarial_loss(fake_scores, gan_mode) if fake_scores is not None else zero
    return {"bs": bs, "vgg": vgg, "adv": adv, "wemd": lambda_bs * bs + lambda_vgg * vgg + lambda_adv * adv}


def watermark_extracting_loss(
    extracted_watermarked: Tensor,
    extracted_clean: Tensor,
    watermark: Tensor,
    blank: Tensor,
    *,
    mse_scale: float,
    lambda_wm: float,
    lambda_clean: float,
    lambda_cst: float,
) -> dict[str, Tensor]:
    """ℓ_wext = λ_wm ℓ_wm + λ_clean ℓ_clean + λ_cst ℓ_cst, eqs. 15-18.

    Args:
        extracted_watermarked: R(x_wm), (B, 3, H, W).
        extracted_clean: R(x_m), (B, 3, H, W).
        watermark: w, (3, H, W) in [0, 1].
        blank: x_clean, (3, H, W) (all ones by default).
        mse_scale: scale of every MSE term.
        lambda_wm: weight of ℓ_wm (eq. 16).
        lambda_clean: weight of ℓ_clean (eq. 17).
        lambda_cst: weight of ℓ_cst (eq. 18).

    Returns:
        ``{"wm", "clean", "cst", "wext"}``.
    """
    wm = scaled_mse(extracted_watermarked, watermark, mse_scale)
    clean = scaled_mse(extracted_clean, blank, mse_scale)
    cst = consistency_loss(extracted_watermarked, mse_scale)
    return {
        "wm": wm,
        "clean": clean,
        "cst": cst,
        "wext": lambda_wm * wm + lambda_clean * clean + lambda_cst * cst,
    }
