"""Reading face images from disk into ``(3, S, S)`` float tensors in [0, 1].

One function, :func:`load_image`, is used for every image the data pipeline reads (protected faces,
replacement faces and precomputed masks), so all three get exactly the same centre crop and resize
and stay pixel-aligned.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, ImageOps

from ipmn_lightning.core.images import center_square_box, pil_to_tensor, rgb_image

__all__ = [
    "SPLITS",
    "DatasetLayoutError",
    "ImageReadError",
    "center_square_box",
    "load_image",
]

#: Split names, in the order the library iterates them.
SPLITS: tuple[str, ...] = ("train", "val", "test")

_EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    """An image file is missing, truncated, corrupt or not an image."""


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the layout its reader expects."""


def load_image(
    path: str | os.PathLike[str],
    image_size: int,
    crop: Literal["center", "none"] = "center",
    use_draft: bool = True,
) -> torch.Tensor:
    """Read an image file as an RGB ``(3, S, S)`` float32 tensor in [0, 1].

    The image is converted to RGB (alpha dropped), rotated by its EXIF orientation, centre-cropped
    to a square (``crop="center"``) or squashed to a square (``crop="none"``), and resized to
    ``image_size`` with Lanczos (antialiased) resampling. JPEGs at least twice as large as needed are
    decoded at a reduced scale first (libjpeg's DCT scaling, PIL ``Image.draft``), which is several
    times faster and visually the same.

    Args:
        path: the image file.
        image_size: the output side ``S`` in pixels.
        crop: ``"center"`` keeps the central square (face datasets are centred); ``"none"`` resizes
            the whole image to ``S x S``, changing the aspect ratio.
        use_draft: allow reduced-scale JPEG decoding; turn off only to compare with a full decode.

    Returns:
        ``(3, S, S)`` float32 in [0, 1].

    Raises:
        ImageReadError: the file is missing or cannot be decoded; the message names the file.
        ValueError: ``image_size`` is not a positive integer or ``crop`` is unknown.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"load_image: image_size must be a positive int, got {image_size!r}.")
    if crop not in ("center", "none"):
        raise ValueError(f"load_image: crop must be 'center' or 'none', got {crop!r}.")
    file = Path(path)
    try:
        with Image.open(file) as img:
            full_w, full_h = img.size
            scale = 1.0
            if use_draft and img.format == "JPEG":
                # draft picks the largest 1/2, 1/4 or 1/8 reduction keeping both sides >= image_size,
                # so the centre crop still has at least image_size pixels per side. It returns the
                # original image's extent on the reduced grid, which gives the exact scale.
                drafted = img.draft("RGB", (image_size, image_size))
                if drafted is not None and drafted[1][2] > 0:
                    scale = full_w / drafted[1][2]
            img.load()
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation != 1:
                img = ImageOps.exif_transpose(img)
                if orientation in (5, 6, 7, 8):  # these orientations swap width and height
                    full_w, full_h = full_h, full_w
            rgb = rgb_image(img)  # 16-bit and float greyscale scaled, not clipped
            out = _crop_resize(rgb, image_size, crop, (full_w, full_h), scale)
    except FileNotFoundError as err:
        raise ImageReadError(
            f"Image file {file} does not exist. Check the dataset root, or regenerate the split/mask "
            "store that refers to it (`ipmn masks check --root ... --store ...` lists every missing file)."
        ) from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # PIL raises UnidentifiedImageError (an OSError) for non-images, OSError for truncated
        # files, and occasionally SyntaxError/ValueError for malformed headers.
        raise ImageReadError(
            f"Cannot read image {file}: {err}. The file is truncated, corrupt or not an image; "
            "re-download or regenerate it, or remove it from the dataset "
            "(`ipmn masks check --root ... --store ...` lists every unreadable file)."
        ) from err
    return pil_to_tensor(out)


def _crop_resize(img: Image.Image, size: int, crop: str, full_size: tuple[int, int], scale: float) -> Image.Image:
    """Crop and resize ``img``, a decode of a ``full_size`` image reduced by ``scale`` (1 = full)."""
    full_w, full_h = full_size
    if crop == "center":
        # The crop is chosen on the full-resolution grid, so a drafted decode crops the same region.
        left, top, right, bottom = center_square_box(full_w, full_h)
    else:
        left, top, right, bottom = 0, 0, full_w, full_h
    box = (left / scale, top / scale, right / scale, bottom / scale)
    # Crop first (to whole pixels enclosing the box) so the resampling filter never reaches pixels
    # outside the crop, as with a plain crop-then-resize; the fractional rest of the box (only
    # present after a drafted decode) goes to resize, so drafted and full decodes stay aligned.
    whole = (
        max(0, math.floor(box[0])),
        max(0, math.floor(box[1])),
        min(img.size[0], math.ceil(box[2])),
        min(img.size[1], math.ceil(box[3])),
    )
    if whole != (0, 0, img.size[0], img.size[1]):
        img = img.crop(whole)
    inner = (box[0] - whole[0], box[1] - whole[1], box[2] - whole[0], box[3] - whole[1])
    if img.size == (size, size) and inner == (0.0, 0.0, float(size), float(size)):
        return img
    return img.resize((size, size), Image.Resampling.LANCZOS, box=inner)
