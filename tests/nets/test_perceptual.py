from __future__ import annotations

import pytest
import torch
from torchvision.models import VGG16_Weights

from ipmn_lightning.core.hub import hub_cache_file
from ipmn_lightning.nets.perceptual import VGGFeatures


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    yield tmp_path
    torch.hub.set_dir(old)


def test_random_weights_build_offline_and_shapes():
    vgg = VGGFeatures(weights=None)
    assert len(vgg.features) == 9
    assert vgg(torch.rand(1, 3, 32, 32)).shape == (1, 128, 16, 16)
    assert VGGFeatures(weights=None, layer="relu1_2")(torch.rand(1, 3, 32, 32)).shape == (1, 64, 32, 32)


def test_full_model_state_dict_file_loads(tmp_path):
    src = VGGFeatures(weights=None, layer="relu3_3")
    # full-model keys, as torchvision's vgg16().state_dict() has them, plus a classifier entry
    state = {f"features.{k}": v for k, v in src.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    loaded = VGGFeatures(weights=str(path), layer="relu2_2")
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), src.features[:9](x))


def test_sliced_state_dict_file_loads(tmp_path):
    src = VGGFeatures(weights=None)
    path = tmp_path / "sliced.pt"
    torch.save(src.features.state_dict(), path)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(VGGFeatures(weights=str(path))(x), src(x))


def test_hub_cache_name_resolution(hub_dir):
    src = VGGFeatures(weights=None)
    expected = hub_cache_file(VGG16_Weights.IMAGENET1K_V1)
    assert expected == hub_dir / "checkpoints" / "vgg16-397923af.pth"
    expected.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in src.features.state_dict().items()}, expected)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(VGGFeatures(weights="IMAGENET1K_V1")(x), src(x))


def test_missing_cache_file_names_argument_and_path(hub_dir):
    with pytest.raises(FileNotFoundError, match="vgg_weights") as info:
        VGGFeatures(weights="IMAGENET1K_FEATURES")
    assert str(hub_dir / "checkpoints" / "vgg16_features-amdegroot-88682ab5.pth") in str(info.value)


def test_unknown_weights_value_error(tmp_path):
    with pytest.raises(ValueError, match="vgg_weights"):
        VGGFeatures(weights=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="vgg_weights"):
        VGGFeatures(weights=str(bad))


def test_gradients_reach_input_not_params():
    vgg = VGGFeatures(weights=None, layer="relu1_2")
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    vgg(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in vgg.parameters())


def test_stays_in_eval_after_parent_train():
    parent = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), VGGFeatures(weights=None, layer="relu1_2"))
    parent.train()
    assert parent[0].training
    assert not parent[1].training and not any(m.training for m in parent[1].modules())
