"""Phase 3b's enhanced extracting loss, eqs. 23-26 (ipmn_lightning/losses/enhance.py)."""

import pytest
import torch

from ipmn_lightning import losses


def test_enhanced_loss_eqs_24_26():
    w = torch.full((3, 2, 2), 0.5)
    blank = torch.ones(3, 2, 2)
    good = torch.full((2, 3, 2, 2), 0.5)
    bad = torch.zeros(2, 3, 2, 2)
    out = losses.enhanced_extracting_loss(
        [good, good, bad],
        [torch.ones(2, 3, 2, 2)] * 3,
        w,
        blank,
        mse_scale=1.0,
        lambda_wm=1.0,
        lambda_clean=1.0,
        lambda_cst=0.0,
    )
    assert out["wm"].item() == pytest.approx(0.25)  # only the bad source is off, by 0.5
    assert out["clean"].item() == pytest.approx(0.0)
    same = losses.enhanced_extracting_loss(
        [good, good],
        [blank.expand(2, 3, 2, 2)],
        w,
        blank,
        mse_scale=1.0,
        lambda_wm=1.0,
        lambda_clean=1.0,
        lambda_cst=1.0,
    )
    assert same["cst"].item() == pytest.approx(0.0)
