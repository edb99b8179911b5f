"""The loss of phase 2, eqs. 19-22: the privacy loss ℓ_fp of the invertible mask network.

Sum-reduced MSE as in the code the INN comes from: HiNet (github.com/TomTomTommi/HiNet @ 5c2682a) and IMN
(github.com/coriverchen/IMN @ f5e5190), both ``MSELoss(size_average=False)``.
"""

from __future__ import annotations

from torch import Tensor

from ipmn_lightning.losses.watermark import sum_mse

__all__ = ["privacy_loss"]


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
