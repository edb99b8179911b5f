"""The loss of phase 3b, eqs. 23-26: R's enhanced extracting loss ℓ'_wext against the stealing models.

Mean MSE scaled by ``mse_scale``, as in phase 1 (Deep Model Watermarking's ``--betamse``,
github.com/ZJZAC/Deep-Model-Watermarking @ 129120d).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ipmn_lightning.losses.watermark import scaled_mse

__all__ = ["enhanced_extracting_loss"]


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
