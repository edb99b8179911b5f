"""Phase 1's losses, eqs. 10-18 (ipmn_lightning/losses/watermark.py), on hand-computed values."""

import pytest
import torch

from ipmn_lightning import losses


def test_scaled_mse_hand_value():
    a = torch.tensor([[[[0.0, 1.0]]]])
    b = torch.tensor([[[[1.0, 1.0]]]])
    assert losses.scaled_mse(a, b, 10.0).item() == pytest.approx(5.0)  # mean of (1, 0) * 10


def test_sum_mse_hand_value():
    a = torch.zeros(2, 1, 1, 2)
    b = torch.full((2, 1, 1, 2), 0.5)
    assert losses.sum_mse(a, b).item() == pytest.approx(4 * 0.25)


def test_gan_losses_hand_values():
    real = torch.full((2, 1, 2, 2), 0.5)
    fake = torch.full((2, 1, 2, 2), 0.25)
    assert losses.generator_adversarial_loss(fake, "lsgan").item() == pytest.approx(0.75**2)
    assert losses.discriminator_loss(real, fake, "lsgan").item() == pytest.approx(0.5 * (0.25 + 0.0625))
    logit = torch.zeros(1, 1, 1, 1)  # sigmoid 0.5 -> BCE = log 2
    assert losses.generator_adversarial_loss(logit, "bce").item() == pytest.approx(0.693147, rel=1e-5)
    assert losses.discriminator_loss(logit, logit, "bce").item() == pytest.approx(0.693147, rel=1e-5)


def test_consistency_pairs_halves_and_rejects_odd():
    x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])  # halves differ by 1 everywhere
    assert losses.consistency_loss(x, 3.0).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="even batch"):
        losses.consistency_loss(torch.zeros(3, 1, 2, 2))


def test_watermark_losses_weighted_sums():
    w = torch.full((3, 2, 2), 0.5)
    blank = torch.ones(3, 2, 2)
    wm_out = torch.zeros(2, 3, 2, 2)
    clean_out = torch.ones(2, 3, 2, 2)
    ext = losses.watermark_extracting_loss(
        wm_out, clean_out, w, blank, mse_scale=2.0, lambda_wm=3.0, lambda_clean=5.0, lambda_cst=7.0
    )
    assert ext["wm"].item() == pytest.approx(2 * 0.25)
    assert ext["clean"].item() == pytest.approx(0.0)
    assert ext["wext"].item() == pytest.approx(3 * 0.5)
    x_m = torch.zeros(2, 3, 2, 2)
    x_wm = torch.full((2, 3, 2, 2), 0.1)
    emb = losses.watermark_embedding_loss(
        x_wm,
        x_m,
        torch.ones(2, 1, 1, 1),
        None,
        mse_scale=100.0,
        lambda_bs=2.0,
        lambda_vgg=1.0,
        lambda_adv=0.5,
    )
    assert emb["bs"].item() == pytest.approx(1.0)
    assert emb["adv"].item() == pytest.approx(0.0)
    assert emb["wemd"].item() == pytest.approx(2.0)
