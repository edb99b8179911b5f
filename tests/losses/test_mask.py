"""Phase 2's privacy loss, eqs. 19-22 (ipmn_lightning/losses/mask.py), on hand-computed values."""

import pytest
import torch

from ipmn_lightning import losses


def test_privacy_loss_eq19():
    x_p = torch.zeros(1, 3, 2, 2)
    out = losses.privacy_loss(
        x_p, x_p + 0.5, x_p, x_p + 1.0, x_p + 0.1, lambda_recover=3, lambda_guide=1, lambda_distortion=1
    )
    assert out["recover"].item() == pytest.approx(12 * 0.25)
    assert out["guide"].item() == pytest.approx(12.0)
    assert out["distortion"].item() == pytest.approx(12 * 0.01)
    assert out["fp"].item() == pytest.approx(3 * 3.0 + 12.0 + 0.12)
    with pytest.raises(ValueError, match="LL"):
        losses.privacy_loss(x_p, x_p, x_p, x_p, x_p, lambda_low=1.0)
