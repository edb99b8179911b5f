"""guided-diffusion -> diffusers conversion of DiffFace's UNet, checked against a plain ADM forward
(tests/fakes/adm_reference.py, written from the structure of DiffFace, github.com/hxngiee/DiffFace @ b7bef83, and of
our port to diffusers' UNet2DModel)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from ipmn_lightning.diffface.convert import (
    DiffFaceWeightsError,
    convert_diffface_file,
    convert_guided_diffusion,
    load_diffface,
)
from ipmn_lightning.diffface.unet import DiffFaceUNet
from tests.fakes.adm_reference import (
    TINY,
    _attn,
    _inputs,
    _mlp,
    _res,
    _timestep_embedding,
    adm_forward,
    make_adm_state_dict,
)

# ---------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("order", ["legacy", "new"])
def test_converted_unet_equals_the_reference_forward(order):
    sd = make_adm_state_dict(TINY)
    net = DiffFaceUNet(**TINY).double()
    net.load_state_dict(convert_guided_diffusion(sd, TINY, attention_order=order))  # strict: every key mapped
    x, t, identity = _inputs(TINY)
    with torch.no_grad():
        ours = net(x, t, identity)
    ref = adm_forward(sd, TINY, x, t, identity, order=order)
    assert ours.shape == (2, 6, 16, 16)
    assert ref.abs().mean() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_the_qkv_order_matters():
    # Reading a legacy checkpoint with the plain chunk(3) split gives another network.
    sd = make_adm_state_dict(TINY)
    net = DiffFaceUNet(**TINY).double()
    net.load_state_dict(convert_guided_diffusion(sd, TINY, attention_order="new"))
    x, t, identity = _inputs(TINY)
    with torch.no_grad():
        wrong = net(x, t, identity)
    assert not torch.allclose(wrong, adm_forward(sd, TINY, x, t, identity, order="legacy"), atol=1e-4)


def test_single_layers_match():
    # A first-block check that localises a failure: conv_in + the first ResBlock and the first attention.
    sd = make_adm_state_dict(TINY)
    net = DiffFaceUNet(**TINY).double()
    net.load_state_dict(convert_guided_diffusion(sd, TINY))
    x, t, identity = _inputs(TINY)
    with torch.no_grad():
        emb = net.unet.time_embedding(net.unet.time_proj(t).double()) + net.id_mlp(identity)
        h = net.unet.conv_in(x)
        ours = net.unet.down_blocks[0].resnets[0](h, emb)
        temb = _timestep_embedding(t, TINY["model_channels"]).double()
        ref_emb = _mlp(sd, "time_embed", temb) + _mlp(sd, "id_embed", identity)
        torch.testing.assert_close(emb, ref_emb)
        torch.testing.assert_close(ours, _res(sd, "input_blocks.1.0", h, ref_emb))
        feats = torch.randn(2, 64, 8, 8, dtype=torch.float64)
        torch.testing.assert_close(
            net.unet.down_blocks[1].attentions[0](feats), _attn(sd, "input_blocks.4.1", feats, 16, "legacy")
        )


def test_convert_file_round_trip_and_errors(tmp_path):
    sd = {k: v.float() for k, v in make_adm_state_dict(TINY).items()}
    model = tmp_path / "Model.pt"
    torch.save(sd, model)
    out = convert_diffface_file(model, tmp_path / "diffface.safetensors", config=TINY)
    net, encoder = load_diffface(out)
    assert encoder == "arcface" and net.config["channel_mult"] == (1, 2, 2)
    direct, _ = load_diffface(model, config=TINY)  # a Model.pt is converted on the fly
    x, t, identity = (z.float() for z in _inputs(TINY))
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, identity), direct(x, t, identity))
    with pytest.raises(DiffFaceWeightsError, match="channel_mult"):
        convert_guided_diffusion(sd, {**TINY, "channel_mult": (1, 2, 2, 2)})
    with pytest.raises(DiffFaceWeightsError, match="no file"):
        convert_diffface_file(tmp_path / "missing.pt", tmp_path / "x.safetensors")
