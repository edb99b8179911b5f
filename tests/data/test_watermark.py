from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ipmn_lightning.data.watermark import blank_nc, default_watermark, load_watermark


def _nc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("size", [32, 64, 100])
def test_default_watermark_shape_and_range(size: int) -> None:
    w = default_watermark(size)
    assert w.shape == (3, size, size)
    assert w.dtype == torch.float32
    assert w.min() >= 0.0 and w.max() <= 1.0
    assert torch.equal(w, default_watermark(size))
    # colourful: channels differ substantially somewhere
    assert (w.max(dim=0).values - w.min(dim=0).values).max() > 0.5


def test_blank_nc_matches_numpy() -> None:
    w = default_watermark(48)
    arr = w.numpy()
    assert blank_nc(w) == pytest.approx(_nc(np.ones_like(arr), arr), abs=1e-9)
    # any uniform grey gives the same raw NC as the white blank
    assert blank_nc(w, 0.5) == pytest.approx(_nc(np.full_like(arr, 0.5), arr), abs=1e-9)
    assert blank_nc(w, 0.5) == pytest.approx(blank_nc(w), abs=1e-9)
    # NC(w, w) = 1
    assert _nc(arr, arr) == pytest.approx(1.0)
    rand = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert blank_nc(rand) == pytest.approx(_nc(np.ones((3, 16, 16)), rand.numpy()), abs=1e-9)


@pytest.mark.parametrize("size", [32, 64, 128, 256, 512])
def test_default_watermark_is_far_from_blank(size: int) -> None:
    nc = blank_nc(default_watermark(size))
    assert 0.0 < nc <= 0.75


def test_blank_nc_errors() -> None:
    with pytest.raises(ValueError, match="blank_value"):
        blank_nc(default_watermark(16), 0.0)
    with pytest.raises(ValueError, match="all zeros"):
        blank_nc(torch.zeros(3, 8, 8))


def test_load_watermark_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    path = tmp_path / "mark.png"
    Image.fromarray(pixels).save(path)
    w = load_watermark(path, 32)
    assert w.shape == (3, 32, 32) and w.dtype == torch.float32
    assert w.min() >= 0.0 and w.max() <= 1.0
    square = tmp_path / "square.png"
    Image.fromarray(pixels[:, :24]).save(square)
    exact = load_watermark(str(square), 24)
    assert torch.allclose(exact, torch.from_numpy(pixels[:, :24].transpose(2, 0, 1) / 255.0).float())


def test_load_watermark_transparent_becomes_black(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:4, :, 3] = 255  # top half opaque white, bottom half transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    w = load_watermark(path, 8)
    assert torch.all(w[:, :4] == 1.0)
    assert torch.all(w[:, 4:] == 0.0)


def test_load_watermark_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_watermark(missing, 32)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_watermark(tmp_path, 32)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(str(text))):
        load_watermark(text, 32)
