"""ArcFace and BiSeNet in DiffFace's checkpoint layouts: key names, weights-only strict loading, sampler options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ipmn_lightning.diffface.arcface import IRSEBackbone, IRSEResNet, load_arcface
from ipmn_lightning.diffface.bisenet import BiSeNet
from ipmn_lightning.diffface.face_weights import FaceWeightsError
from ipmn_lightning.diffface.facenets import FaceNetModule, load_face_parser, load_identity_model


def _randomise_bn(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


def test_insightface_ir_se50_keys_load_and_embed(tmp_path):
    torch.manual_seed(0)
    net = _randomise_bn(IRSEBackbone(50, 0.6, "ir_se"), 1)
    sd = net.state_dict()
    # InsightFace_Pytorch's key names: 3 + 4 + 14 + 3 units, SE as 1x1 convs, no shortcut weights where widths match
    assert {"input_layer.0.weight", "input_layer.2.weight", "body.0.res_layer.5.fc1.weight",
            "body.3.shortcut_layer.0.weight", "body.23.res_layer.4.running_var", "output_layer.3.weight",
            "output_layer.4.running_mean"} <= set(sd)  # fmt: skip
    assert not any(k.startswith(("body.0.shortcut_layer", "body.24.")) for k in sd)
    assert sd["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    path = tmp_path / "model_ir_se50.pth"
    torch.save(sd, path)
    model = load_identity_model(path)
    assert isinstance(model, FaceNetModule) and not model.training
    x = torch.rand(1, 3, 96, 96, requires_grad=True)
    emb = model(x)
    assert emb.shape == (1, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1))
    # InsightFace_Pytorch's pre-processing: 112 px, (x - 0.5) / 0.5
    with torch.no_grad():
        ref = net(nn.functional.interpolate(x, size=(112, 112), mode="bilinear") * 2 - 1)
    torch.testing.assert_close(emb.detach(), ref)
    emb.sum().backward()  # differentiable with respect to the image (the identity guidance)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffface_arcface_resnet_layout_from_a_dataparallel_state_dict(tmp_path):
    torch.manual_seed(0)
    net = _randomise_bn(IRSEResNet((3, 4, 6, 3), use_se=True), 2)
    sd = net.state_dict()
    assert {"conv1.weight", "prelu.weight", "layer1.0.bn0.weight", "layer1.0.se.fc.1.weight",
            "layer2.0.downsample.0.weight", "layer4.2.bn2.running_var", "fc.weight",
            "bn3.running_mean"} <= set(sd)  # fmt: skip
    assert "layer1.0.downsample.0.weight" not in sd and sd["fc.weight"].shape == (512, 512 * 7 * 7)
    path = tmp_path / "arcface_state_dict.tar"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)  # saved from DataParallel
    loaded, layout = load_arcface(path)
    assert layout == "diffface" and isinstance(loaded, IRSEResNet)
    model = load_identity_model(path)
    x = torch.rand(1, 3, 112, 112)
    emb = model(x)
    assert emb.shape == (1, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():  # DiffFace's pre-processing: ImageNet normalisation, then F.normalize
        torch.testing.assert_close(emb, nn.functional.normalize(net((x - mean) / std), dim=1))
    # another depth is read from the keys
    torch.save(IRSEResNet((2, 2, 2, 2), use_se=False).state_dict(), tmp_path / "r18.pth")
    small, _ = load_arcface(tmp_path / "r18.pth")
    assert len(small.layer3) == 2 and small.layer1[0].se is None


def test_bisenet_keys_load_and_parse(tmp_path):
    torch.manual_seed(0)
    net = _randomise_bn(BiSeNet(n_classes=19), 3)
    sd = net.state_dict()
    assert {"cp.resnet.conv1.weight", "cp.resnet.layer2.0.downsample.1.running_var", "cp.arm16.conv.conv.weight",
            "cp.arm32.bn_atten.bias", "cp.conv_head32.bn.weight", "cp.conv_avg.conv.weight", "ffm.convblk.conv.weight",
            "ffm.conv1.weight", "ffm.conv2.weight", "conv_out.conv_out.weight", "conv_out16.conv.bn.bias",
            "conv_out32.conv_out.weight"} <= set(sd)  # fmt: skip
    assert sd["conv_out.conv_out.weight"].shape == (19, 256, 1, 1)
    assert not any("bias" in k and ("conv_out.weight" in k or k.endswith("conv.bias")) for k in sd)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 19, 64, 64)
        aux = BiSeNet(19, aux=True).eval()(torch.rand(1, 3, 64, 64))
    assert len(aux) == 3 and all(o.shape == (1, 19, 64, 64) for o in aux)
    path = tmp_path / "79999_iter.pth"
    torch.save(sd, path)
    parser = load_face_parser(path)
    with torch.no_grad():
        logits = parser(torch.rand(2, 3, 24, 24))  # run at 512 px, resized back
    assert logits.shape == (2, 19, 24, 24) and torch.isfinite(logits).all()


def test_wrong_keys_fail_with_a_clear_message(tmp_path):
    sd = IRSEResNet((2, 2, 2, 2)).state_dict()
    arc = tmp_path / "arc.pth"
    torch.save(sd, arc)
    # an ArcFace file given as the face parser
    with pytest.raises(FaceWeightsError, match=r"--generator\.face_parser.*not a BiSeNet.*missing key"):
        load_face_parser(arc)
    # an ArcFace file with a key renamed and one of the wrong shape
    broken = dict(sd)
    broken["fc.weight"] = torch.zeros(512, 10)
    broken["layer1.0.conv1.weightx"] = broken.pop("layer1.0.conv1.weight")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(
        FaceWeightsError, match=r"identity_model.*missing key.*layer1\.0\.conv1\.weight.*unexpected.*shape"
    ):
        load_identity_model(tmp_path / "broken.pth")
    # neither ArcFace layout
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(FaceWeightsError, match=r"identity_model.*input_layer"):
        load_identity_model(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match=r"identity_model.*nope\.pth"):
        load_identity_model(tmp_path / "nope.pth")
    with pytest.raises(FaceWeightsError, match=r"\.pth, \.pt, \.tar"):
        (tmp_path / "arc.bin").write_bytes(arc.read_bytes())
        load_identity_model(tmp_path / "arc.bin")


def test_a_pickled_model_fails_weights_only_with_the_resave_command(tmp_path):
    # DiffFace's Arcface.tar: {"model": DataParallel(ResNet)}, a whole pickled model
    path = tmp_path / "Arcface.tar"
    torch.save({"model": nn.DataParallel(nn.Sequential(nn.Linear(2, 2)))}, path)
    with pytest.raises(FaceWeightsError, match=r"--generator\.identity_model.*weights-only.*state_dict"):
        load_identity_model(path)
    torch.save(nn.Sequential(nn.Conv2d(3, 19, 1)), tmp_path / "parser.pth")
    with pytest.raises(FaceWeightsError, match=r"--generator\.face_parser.*weights-only.*state_dict"):
        load_face_parser(tmp_path / "parser.pth")


def test_torchscript_still_loads_from_a_pt_file(tmp_path):
    class Tiny(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)).repeat(1, 4)

    path = tmp_path / "arcface.pt"
    torch.jit.save(torch.jit.script(Tiny()), path)
    emb = load_identity_model(path)(torch.rand(2, 3, 32, 32))
    assert emb.shape == (2, 12)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_the_generator_takes_state_dict_files(tmp_path):
    pytest.importorskip("diffusers")
    from ipmn_lightning.diffface.convert import save_diffface
    from ipmn_lightning.diffface.generator import DiffFaceMaskGenerator
    from ipmn_lightning.diffface.unet import DiffFaceUNet
    from tests.fakes.faces import FakeAnalyzer

    tiny = {"image_size": 16, "model_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1,
            "attention_resolutions": (8,), "num_head_channels": 32, "id_dim": 512}  # fmt: skip
    torch.manual_seed(0)
    ckpt = save_diffface(tmp_path / "arc.safetensors", DiffFaceUNet(**tiny), identity_encoder="arcface")
    torch.manual_seed(0)
    torch.save(IRSEResNet((1, 1, 1, 1)).state_dict(), tmp_path / "arcface.pth")
    parser = BiSeNet(19)
    with torch.no_grad():  # a parser that calls every pixel skin, so the mask is the whole image
        parser.conv_out.conv.bn.weight.zero_()
        parser.conv_out.conv.bn.bias.fill_(1.0)
        parser.conv_out.conv_out.weight.zero_()
        parser.conv_out.conv_out.weight[1] = 1.0
    torch.save(parser.state_dict(), tmp_path / "FaceParser.pth")
    fast = {"timestep_respacing": 8, "skip_timesteps": 2, "masking_threshold": 3}
    kw = dict(fast, identity_weight=0.0, parsing_weight=0.0, background_weight=0.0, device="cpu")
    gen = DiffFaceMaskGenerator(
        str(ckpt), identity_model=str(tmp_path / "arcface.pth"), face_parser=str(tmp_path / "FaceParser.pth"), **kw
    )
    gen._analyzer = FakeAnalyzer()
    p = torch.rand(1, 3, 24, 24)
    out = gen.generate(p, torch.rand(1, 3, 24, 24))[0]
    assert out.mask is not None and out.mask.shape == (3, 24, 24) and not torch.equal(out.mask, p[0])
    assert isinstance(gen._state["identity"].net, IRSEResNet) and isinstance(gen._state["parser"].net, BiSeNet)
    with pytest.raises(FileNotFoundError, match=r"--generator\.face_parser"):
        DiffFaceMaskGenerator(str(ckpt), face_parser=str(tmp_path / "none.pth"), **kw)
    with pytest.raises(ValueError, match=r"--generator\.parser_normalization"):
        DiffFaceMaskGenerator(str(ckpt), parser_normalization="bgr", **kw)
