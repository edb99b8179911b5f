"""The DiffFace guided sampler at tiny widths on random weights."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from ipmn_lightning.diffface.sampler import DiffFaceSampler
from ipmn_lightning.diffface.unet import GaussianDiffusion, space_timesteps
from tests.helpers.diffface import FAST, TinyParser, TinyRecogniser, tiny_batch, tiny_net


def test_space_timesteps_matches_guided_diffusion_spacing():
    steps = space_timesteps(1000, 100)
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 999 and steps[1] == 10
    d = GaussianDiffusion.linear(1000, 100)
    full = GaussianDiffusion.linear(1000)
    # the respaced cumulative products are the original ones at the kept steps
    torch.testing.assert_close(d.alphas_cumprod, full.alphas_cumprod[steps])


@pytest.mark.parametrize("guided", [False, True])
def test_shapes_range_and_exact_outside_face(guided):
    protected, mask, identity = tiny_batch()
    kwargs = dict(FAST, background_weight=50.0 if guided else 0.0)
    if guided:
        kwargs.update(identity_model=TinyRecogniser(), face_parser=TinyParser(), augmentations=2)
    sampler = DiffFaceSampler(tiny_net(), **kwargs)
    assert sampler.guided is guided
    out = sampler.sample(protected, mask, identity, replacement=torch.rand(2, 3, 24, 24))
    assert out.shape == protected.shape and out.min() >= 0 and out.max() <= 1
    outside = (mask == 0).expand_as(protected)
    assert torch.equal(out[outside], protected[outside])  # bit for bit
    assert not torch.allclose(out[~outside], protected[~outside])  # the face did change


def test_deterministic_under_a_seed():
    protected, mask, identity = tiny_batch()
    sampler = DiffFaceSampler(tiny_net(), **FAST, background_weight=50.0)
    a = sampler.sample(protected, mask, identity, generator=torch.Generator().manual_seed(7))
    b = sampler.sample(protected, mask, identity, generator=torch.Generator().manual_seed(7))
    c = sampler.sample(protected, mask, identity, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_guidance_changes_the_sample_and_conditioning_alone_works():
    protected, mask, identity = tiny_batch()
    net = tiny_net()
    plain = DiffFaceSampler(net, **FAST, background_weight=0.0)
    guided = DiffFaceSampler(net, **FAST, background_weight=0.0, identity_model=TinyRecogniser(), augmentations=2)
    r = torch.rand(2, 3, 16, 16)
    a = plain.sample(protected, mask, identity, r, torch.Generator().manual_seed(1))
    b = guided.sample(protected, mask, identity, r, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    # a NaN identity (no face) samples unconditionally instead of failing
    c = plain.sample(protected, mask, torch.full_like(identity, float("nan")), None, torch.Generator().manual_seed(1))
    assert torch.isfinite(c).all()
