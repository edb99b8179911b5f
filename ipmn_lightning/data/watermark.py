"""The owner's watermark image w: a built-in generated logo, a loader for image files, and a check.

The extractor R is judged to have found the watermark when the normalized correlation (NC) of its
output with w exceeds 0.95, and to be clean when it outputs the blank image (all ones by default).
Raw NC is not mean-centred, so a bright watermark correlates strongly with a white blank and a
clean output could pass as a successful extraction. The default watermark is therefore a bright,
saturated emblem on a dark background: its raw NC with the all-ones blank (and with any uniform
grey image, which gives the same value) is 0.59-0.67 at every size from 32 to 512 px (0.593 at 256).
:func:`blank_nc` computes that value for any watermark.
"""

from __future__ import annotations

import colorsys
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["blank_nc", "default_watermark", "load_watermark"]

_PETALS = 8


def _palette(n: int, offset: float, sat: float, val: float) -> np.ndarray:
    return np.array([colorsys.hsv_to_rgb((offset + i / n) % 1.0, sat, val) for i in range(n)], dtype=np.float64)


def default_watermark(image_size: int = 256) -> torch.Tensor:
    """The built-in watermark: a colourful eight-petal flower emblem on a dark navy background.

    Drawn analytically (anti-aliased shapes on a coordinate grid), so it is deterministic and looks
    the same at every size. Raw NC with the all-ones blank image, ``blank_nc(w)``, is 0.593 at
    256 px and between 0.589 (512 px) and 0.665 (32 px) for every size from 32 to 512, well below the
    0.95 success threshold; NC with a uniform grey image is the same value, and ``NC(w, w) = 1``.

    Args:
        image_size: side length S of the square image, in pixels (>= 8).

    Returns:
        The watermark, ``(3, S, S)`` float32 in [0, 1].

    Raises:
        ValueError: if ``image_size`` is smaller than 8.
    """
    if int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    n = int(image_size)
    px = 2.0 / n
    c = (np.arange(n, dtype=np.float64) + 0.5) * px - 1.0
    x, y = np.meshgrid(c, c)  # y downwards
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)
    # Soft one-pixel edges; never sharper than what the image can show.
    aa = max(px, 1e-6)

    def cov(sd: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - sd / aa, 0.0, 1.0)

    def over(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
        img += alpha[None] * (color - img)

    # Dark navy background, slightly lighter in the middle.
    img = np.empty((3, n, n), dtype=np.float64)
    glow = np.clip(1.0 - r, 0.0, 1.0)
    for ch, (edge, centre) in enumerate(((0.02, 0.07), (0.02, 0.06), (0.07, 0.17))):
        img[ch] = edge + (centre - edge) * glow

    def polar_repeat(count: int, phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index of the nearest of `count` spokes and the coordinates along/across that spoke."""
        step = 2 * math.pi / count
        idx = np.round((theta - phase) / step)
        phi = theta - phase - idx * step
        return idx.astype(np.int64) % count, r * np.cos(phi), r * np.sin(phi)

    # Outer gold ring.
    over(img, cov(np.abs(r - 0.88) - 0.035), np.array([0.98, 0.76, 0.18])[:, None, None])
    # Ring of small dots in alternating colours.
    idx, a, b = polar_repeat(16, math.pi / 16)
    dots = np.hypot(a - 0.76, b) - 0.045
    dot_colors = _palette(16, 0.05, 0.75, 1.0)[idx].transpose(2, 0, 1)
    over(img, cov(dots), dot_colors)
    # Eight large rainbow petals: ellipses along each spoke, with a lighter inner vein.
    idx, a, b = polar_repeat(_PETALS, -math.pi / 2)
    k = np.hypot((a - 0.44) / 0.26, b / 0.12)
    petal_colors = _palette(_PETALS, 0.0, 0.9, 1.0)[idx].transpose(2, 0, 1)
    over(img, cov((k - 1.0) * 0.12), petal_colors)
    vein = np.maximum(np.abs(b) - 0.012, np.abs(a - 0.44) - 0.17)
    over(img, cov(vein) * 0.6, np.array([1.0, 1.0, 0.95])[:, None, None])
    # Eight smaller petals in between, in the complementary hues.
    idx, a, b = polar_repeat(_PETALS, -math.pi / 2 + math.pi / _PETALS)
    k = np.hypot((a - 0.34) / 0.15, b / 0.07)
    small_colors = _palette(_PETALS, 0.5, 0.85, 0.9)[idx].transpose(2, 0, 1)
    over(img, cov((k - 1.0) * 0.07), small_colors)
    # Centre: a golden disc with a magenta ring and a dark dot.
    over(img, cov(r - 0.17), np.array([1.0, 0.82, 0.1])[:, None, None])
    over(img, cov(np.abs(r - 0.1) - 0.025), np.array([0.85, 0.1, 0.55])[:, None, None])
    over(img, cov(r - 0.04), np.array([0.1, 0.05, 0.2])[:, None, None])
    return torch.from_numpy(np.clip(img, 0.0, 1.0).astype(np.float32))


def load_watermark(path: str | os.PathLike, image_size: int) -> torch.Tensor:
    """Load a watermark image file (e.g. DMW's ``flower.png``) as an RGB tensor.

    The image is converted to RGB (transparent pixels become black, like the default's dark
    background) and resized to ``image_size`` x ``image_size`` with antialiased bicubic
    resampling; a non-square image is stretched, not cropped, so nothing of the mark is lost.

    Args:
        path: an image file PIL can read (PNG, JPEG, ...).
        image_size: side length S of the output, in pixels (>= 1).

    Returns:
        The watermark, ``(3, S, S)`` float32 in [0, 1].

    Raises:
        FileNotFoundError: if ``path`` does not exist or is not a file.
        ValueError: if ``path`` is not a readable image or ``image_size`` < 1.
    """
    p = Path(path)
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r} (loading {p})")
    if not p.is_file():
        raise FileNotFoundError(f"watermark image {p} does not exist (or is not a file); pass the path of a PNG/JPEG")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                base = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                rgb = Image.alpha_composite(base, rgba).convert("RGB")
            else:
                rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"watermark {p} is not a readable image file ({err}); pass a PNG or JPEG") from err
    size = int(image_size)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
    arr = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def blank_nc(watermark: torch.Tensor, blank_value: float = 1.0) -> float:
    """Raw normalized correlation between a uniform blank image and the watermark.

    ``NC(b, w) = sum(b * w) / sqrt(sum(b^2) * sum(w^2))``. For a constant blank ``b = c`` it equals
    ``sign(c) * mean(w) / sqrt(mean(w^2))``, independent of ``|c|``: an all-ones blank and a uniform
    grey give the same value. A value near or above the 0.95 success threshold means a clean
    extractor output would pass as a successful extraction.

    Args:
        watermark: ``(3, H, W)`` (or any shape) float in [0, 1].
        blank_value: the blank image's constant value (non-zero).

    Returns:
        The NC as a Python float.

    Raises:
        ValueError: if ``blank_value`` is 0 or the watermark is all zeros (NC undefined).
    """
    if blank_value == 0:
        raise ValueError("blank_value must be non-zero: NC with an all-zero blank image is undefined")
    w = watermark.detach().to(torch.float64).reshape(-1)
    energy = w.square().mean()
    if energy <= 0:
        raise ValueError("the watermark is all zeros: its NC with any image is undefined")
    return float(math.copysign(1.0, blank_value) * w.mean() / energy.sqrt())
