from __future__ import annotations

import inspect

import pytest
import torch

from ipmn_lightning.nets.stealing import ResnetStealer, UNetStealer, build_stealer

NAMES = ["cnet", "res9", "res16", "unet", "attn"]


def _tiny(name):
    return build_stealer(name, image_size=32, ngf=4)


@pytest.mark.parametrize("name", NAMES)
def test_shape_range_and_signature(name):
    net = _tiny(name)
    out = net(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1
    assert list(inspect.signature(net.forward).parameters) == ["protected", "replacement"]


@pytest.mark.parametrize("name", NAMES)
def test_training_step_reduces_l2(name):
    torch.manual_seed(0)
    net = _tiny(name)
    protected, replacement = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    target = (protected + replacement) / 2
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.mse_loss(net(protected, replacement), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_resnet_block_variants_and_depth():
    two = ResnetStealer(n_blocks=9, ngf=4)
    single = ResnetStealer(n_blocks=16, ngf=4, block="dmw_single_conv")

    def convs(block):
        return sum(isinstance(m, torch.nn.Conv2d) for m in block.modules())

    blocks_two = [m for m in two.body if type(m).__name__ == "ResnetBlock"]
    blocks_single = [m for m in single.body if type(m).__name__ == "ResnetBlock"]
    assert len(blocks_two) == 9 and len(blocks_single) == 16
    assert convs(blocks_two[0]) == 2 and convs(blocks_single[0]) == 1


def test_unet_stealer_depth():
    assert UNetStealer(image_size=256, ngf=1).body.num_downs == 8
    assert UNetStealer(image_size=64, ngf=1).body.num_downs == 6


def test_errors():
    with pytest.raises(ValueError, match="stealer name"):
        build_stealer("vgg")
    with pytest.raises(ValueError, match="divisible by 4"):
        build_stealer("res9", image_size=30)
    net = _tiny("res9")
    with pytest.raises(ValueError, match="same shape"):
        net(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.rand(1, 3, 30, 30), torch.rand(1, 3, 30, 30))
