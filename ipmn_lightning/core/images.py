"""Tensor <-> PIL image conversion (8-bit rounding, high-bit-depth greyscale) and the centred square crop."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["center_square_box", "pil_to_tensor", "rgb_image", "tensor_to_pil"]


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Convert an image tensor to a PIL image (8 bits, rounded to nearest).

    Not torchvision's ``to_pil_image``, which truncates (``mul(255).byte()``): rounding makes a saved image read
    back as :func:`ipmn_lightning.metrics.quantize_8bit` of the tensor, which the 8-bit metrics assume.

    Args:
        x: ``(3, H, W)`` float in [0, 1] -> RGB image; ``(1, H, W)`` or ``(H, W)`` -> greyscale
            ("L"). Values outside [0, 1] are clamped.

    Returns:
        The PIL image.

    Raises:
        ValueError: ``x`` has another shape (a batch, for instance).
    """
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(
            f"tensor_to_pil expects a (3, H, W) or (1, H, W) image tensor, got shape {tuple(x.shape)}; "
            "index a batch first (x[0])."
        )
    arr = x.detach().to("cpu", torch.float32).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0].numpy())
    return Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy())


def rgb_image(img: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB, scaling high-bit-depth greyscale correctly.

    PIL's own ``convert("RGB")`` clips 16-bit and float pixels to 0-255, which turns a 16-bit greyscale PNG
    white and a float TIFF black. Here ``I;16*`` (16-bit) and ``I`` (32-bit integer, as some readers open
    16-bit PNGs; values must be in 0-65535) are scaled by 1/65535, ``F`` (32-bit float) must hold values in
    [0, 1]; every other mode goes through ``convert("RGB")`` (alpha dropped).

    Args:
        img: any PIL image.

    Returns:
        The RGB image (``img`` itself when already RGB).

    Raises:
        ValueError: an ``I`` image with values outside 0-65535, or an ``F`` image with values outside [0, 1]
            or not finite.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        # the image's own range (not min(initial=0), which reported a constant 3.0 image as "0 to 3")
        low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if img.mode == "F":
            if not np.isfinite(arr).all():
                raise ValueError("a 32-bit float image must hold finite values in [0, 1] (this one has NaN or inf)")
            if low < -1e-6 or high > 1 + 1e-6:
                raise ValueError(
                    f"a 32-bit float image must hold values in [0, 1] (this one spans {low:g} to {high:g}); "
                    "rescale it to [0, 1] or save it as 8- or 16-bit"
                )
            scaled = arr
        else:
            if low < 0 or high > 65535:
                raise ValueError(
                    f"a 32-bit integer image must hold 16-bit values 0-65535 (this one spans {arr.min():g} to "
                    f"{arr.max():g}); save it as 8- or 16-bit"
                )
            scaled = arr / 65535.0
        grey = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return img.convert("RGB")


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """Convert a PIL image to an RGB float tensor.

    Args:
        img: any PIL image; it is converted to RGB with :func:`rgb_image` (alpha dropped, 16-bit and float
            greyscale scaled correctly).

    Returns:
        ``(3, H, W)`` float32 in [0, 1].

    Raises:
        ValueError: a float image outside [0, 1] or an integer image outside 16 bits (see :func:`rgb_image`).
    """
    img = rgb_image(img)
    arr = np.array(img, dtype=np.uint8, copy=True)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def center_square_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square inside a ``width`` x ``height`` image.

    Args:
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        ``(left, top, right, bottom)`` in pixels; an odd leftover pixel goes to the right/bottom.
    """
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side
