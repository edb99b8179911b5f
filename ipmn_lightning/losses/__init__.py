"""Loss functions of the IPMN paper, eqs. 10-26.

Reductions follow the public code the paper builds on (see ``methods.md`` §5.4 and §1.4): the
watermark phases (1 and 3b) use *mean* MSE scaled by ``mse_scale`` (1e4 in the DMW code), the
invertible phase (2) uses *sum*-reduced MSE (HiNet/IMN ``size_average=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

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


def privacy_loss(
    protected: Tensor,
    recovered_face: Tensor,
    watermarked_mask: Tensor,
    recovered_mask: Tensor,
    masked_face: Tensor,
    *,
    lambda_recover: float = 3.0,
    lambda_guide: float = 1.0,
    lambda_distortion: float = 1.0,
    lambda_low: float = 0.0,
    masked_face_ll: Tensor | None = None,
    watermarked_mask_ll: Tensor | None = None,
) -> dict[str, Tensor]:
    """ℓ_fp = λ1 ℓ_recover + λ2 ℓ_guide + λ3 ℓ_id, eqs. 19-22 (sum-reduced MSE).

    Args:
        protected: x_p, (B, 3, H, W).
        recovered_face: x'_p (eq. 20).
        watermarked_mask: x_wm.
        recovered_mask: x'_wm (eq. 21, the guide loss).
        masked_face: x_wmf (eq. 22, the image distortion loss).
        lambda_recover: λ1 (3, IMN).
        lambda_guide: λ2.
        lambda_distortion: λ3.
        lambda_low: weight of HiNet's optional low-frequency term (not in eq. 19; 0 by default).
        masked_face_ll: LL subband of x_wmf, needed when ``lambda_low`` > 0.
        watermarked_mask_ll: LL subband of x_wm, needed when ``lambda_low`` > 0.

    Returns:
        ``{"recover", "guide", "distortion", "low", "fp"}``.
    """
    recover = sum_mse(recovered_face, protected)
    guide = sum_mse(recovered_mask, watermarked_mask)
    distortion = sum_mse(masked_face, watermarked_mask)
    total = lambda_recover * recover + lambda_guide * guide + lambda_distortion * distortion
    low = protected.new_zeros(())
    if lambda_low > 0:
        if masked_face_ll is None or watermarked_mask_ll is None:
            raise ValueError("lambda_low > 0 needs the LL subbands of the masked face and the watermarked mask")
        low = sum_mse(masked_face_ll, watermarked_mask_ll)
        total = total + lambda_low * low
    return {"recover": recover, "guide": guide, "distortion": distortion, "low": low, "fp": total}


def enhanced_extracting_loss(
    extracted_watermarked: Sequence[Tensor],
    extracted_clean: Sequence[Tensor],
    watermark: Tensor,
    blank: Tensor,
    *,
    mse_scale: float,
    lambda_wm: float,
    lambda_clean: float,
    lambda_cst: float,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """ℓ'_wext = λ'_wm ℓ'_wm + λ'_clean ℓ'_clean + λ'_cst ℓ'_cst, eqs. 23-26.

    Args:
        extracted_watermarked: R outputs on the watermarked sources {x'_wm, x_sm, x_wmf} (eq. 24), each
            (B, 3, H, W); a source may appear several times (one per stealing model).
        extracted_clean: R outputs on the clean sources {x_m, x_p, x'_p} (eq. 25).
        watermark: w, (3, H, W).
        blank: x_clean, (3, H, W).
        mse_scale: scale of every MSE term.
        lambda_wm: λ'_wm.
        lambda_clean: λ'_clean.
        lambda_cst: λ'_cst.
        generator: draws the random pairs of eq. 26 (x, y from the mixed watermarked set).

    Returns:
        ``{"wm", "clean", "cst", "wext"}``.
    """
    wm = sum(scaled_mse(out, watermark, mse_scale) for out in extracted_watermarked)
    clean = sum(scaled_mse(out, blank, mse_scale) for out in extracted_clean)
    mixed = torch.cat(list(extracted_watermarked))
    perm = torch.randperm(mixed.shape[0], generator=generator).to(mixed.device)
    cst = scaled_mse(mixed, mixed[perm], mse_scale)
    return {
        "wm": wm,
        "clean": clean,
        "cst": cst,
        "wext": lambda_wm * wm + lambda_clean * clean + lambda_cst * cst,
    }
