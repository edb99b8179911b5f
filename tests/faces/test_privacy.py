from __future__ import annotations

import pytest
import torch

from ipmn_lightning.faces.privacy import PrivacySuccessRate, RecoveryUtility, table11_attacks
from tests.fakes.faces import FakeEncoder


def _img(value: float) -> torch.Tensor:
    return torch.full((1, 3, 16, 16), value)


def test_srp_counts_recognised_unrecognised_and_no_face() -> None:
    srp = PrivacySuccessRate(encoder=FakeEncoder())
    protected = torch.cat([_img(0.5), _img(0.5), _img(0.5), _img(0.0)])
    # same person, another person, no face, and a reference without a face (left out)
    processed = torch.cat([_img(0.51), _img(0.9), _img(0.0), _img(0.5)])
    srp.update(processed, protected)
    assert srp.compute().item() == pytest.approx(2 / 3)
    assert srp.counts() == {"total": 3, "recognised": 1, "no_face": 1, "reference_missing": 1}
    util = RecoveryUtility(encoder=FakeEncoder())
    util.update(processed, protected)
    assert util.compute().item() == pytest.approx(1 / 3)


def test_srp_accumulates_and_resets() -> None:
    srp = PrivacySuccessRate(encoder=FakeEncoder())
    srp.update(_img(0.9), _img(0.5))
    srp.update(_img(0.5), _img(0.5))
    assert srp.compute().item() == pytest.approx(0.5)
    srp.reset()
    assert srp.counts() == {"total": 0, "recognised": 0, "no_face": 0, "reference_missing": 0}


def test_table11_attacks() -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    attacks = table11_attacks(seed=0)
    assert list(attacks) == ["none", "gaussian_noise", "gaussian_blur", "jpeg"]
    for name, attack in attacks.items():
        y = attack(x)
        assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1, name
    assert torch.equal(attacks["none"](x), x)
    assert (attacks["gaussian_noise"](x) - x).abs().max() < 0.01
    assert (attacks["gaussian_blur"](x) - x).abs().mean() > 0.05  # random pixels are smoothed a lot
    assert (attacks["jpeg"](x) - x).abs().mean() > 0.02
