from __future__ import annotations

import torch

from ipmn_lightning.nets.discriminator import PatchDiscriminator
from ipmn_lightning.nets.init import init_normal_


def test_patch_shape_and_unbounded_scores():
    d = PatchDiscriminator(widths=(8, 8, 16, 16))
    out = d(torch.rand(2, 3, 64, 32))
    assert out.shape == (2, 1, 4, 2)
    norms = [m for m in d.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 3  # none on the first block


def test_init_normal_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(64, 64, 3), torch.nn.BatchNorm2d(4096), torch.nn.InstanceNorm2d(8, affine=True)
    )
    assert init_normal_(net) is net
    conv_w = net[0].weight
    assert abs(conv_w.mean().item()) < 0.002 and abs(conv_w.std().item() - 0.02) < 0.002
    assert torch.all(net[0].bias == 0)
    bn = net[1]
    assert abs(bn.weight.mean().item() - 1) < 0.002 and abs(bn.weight.std().item() - 0.02) < 0.003
    assert torch.all(bn.bias == 0) and torch.all(net[2].bias == 0)


def test_init_normal_skips_non_affine_norm():
    net = torch.nn.Sequential(torch.nn.InstanceNorm2d(4), torch.nn.ConvTranspose2d(4, 4, 4))
    init_normal_(net, std=0.5)
    assert abs(net[1].weight.std().item() - 0.5) < 0.1
