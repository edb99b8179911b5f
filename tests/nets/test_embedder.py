from __future__ import annotations

import pytest
import torch

from ipmn_lightning.nets.embedder import WatermarkEmbedder
from ipmn_lightning.nets.unet import UNet, default_num_downs


@pytest.mark.parametrize(("size", "bottleneck", "expected"), [(256, 2, 7), (128, 2, 6), (64, 2, 5), (256, 1, 8)])
def test_default_num_downs(size, bottleneck, expected):
    assert default_num_downs(size, bottleneck) == expected


@pytest.mark.parametrize("size", [100, 96, 4, 0])
def test_default_num_downs_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="image_size"):
        default_num_downs(size)


def test_unet_shapes_and_output_ranges():
    x = torch.randn(2, 5, 32, 32)
    for output, lo, hi in [("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0)]:
        for norm in ("batch", "instance", "none"):
            y = UNet(5, 2, num_downs=4, ngf=4, norm=norm, output=output)(x)
            assert y.shape == (2, 2, 32, 32)
            assert y.min() >= lo and y.max() <= hi


def test_unet_channel_widths_and_dropout():
    net = UNet(6, 3, num_downs=8, ngf=2, norm="instance", use_dropout=True)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [2, 4, 8, 16, 16, 16, 16, 16]
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 3  # as pix2pix unet_256


def test_unet_rejects_indivisible_size():
    net = UNet(3, 3, num_downs=4, ngf=4)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.rand(1, 3, 40, 40))


def test_embedder_shape_and_range():
    h = WatermarkEmbedder(image_size=32, ngf=4)
    assert h.num_downs == 4
    out = h(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1


def test_embedder_broadcasts_single_watermark():
    torch.manual_seed(0)
    h = WatermarkEmbedder(image_size=32, ngf=4).eval()
    mask, wm = torch.rand(3, 3, 32, 32), torch.rand(3, 32, 32)
    torch.testing.assert_close(h(mask, wm), h(mask, wm.unsqueeze(0).repeat(3, 1, 1, 1)))


def test_embedder_num_downs_validation():
    assert WatermarkEmbedder(image_size=64, ngf=4, num_downs=3).num_downs == 3
    with pytest.raises(ValueError, match="num_downs=7"):
        WatermarkEmbedder(image_size=64, ngf=4, num_downs=7)
    with pytest.raises(ValueError, match="image_size=48"):
        WatermarkEmbedder(image_size=48, ngf=4)


def test_embedder_rejects_mismatched_watermark():
    h = WatermarkEmbedder(image_size=32, ngf=4)
    with pytest.raises(ValueError, match="watermark"):
        h(torch.rand(2, 3, 32, 32), torch.rand(3, 64, 64))
