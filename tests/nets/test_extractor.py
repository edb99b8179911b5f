from __future__ import annotations

import pytest
import torch

from ipmn_lightning.nets.extractor import WatermarkExtractor


def test_extractor_shape_and_nonnegative():
    r = WatermarkExtractor(channels=8, dilations=(2, 4, 1))
    out = r(torch.rand(2, 3, 32, 48))
    assert out.shape == (2, 3, 32, 48)
    assert out.min() >= 0


def test_extractor_default_has_nine_dilated_blocks():
    r = WatermarkExtractor(channels=8)
    assert [b.body[0].dilation[0] for b in r.blocks] == [2, 2, 2, 2, 4, 4, 4, 4, 1]


def test_extractor_rejects_odd_size():
    r = WatermarkExtractor(channels=8, dilations=(1,))
    with pytest.raises(ValueError, match="even"):
        r(torch.rand(1, 3, 33, 32))


def test_extractor_rejects_wrong_channels():
    with pytest.raises(ValueError, match="expects"):
        WatermarkExtractor(channels=8, dilations=(1,))(torch.rand(1, 1, 32, 32))
