"""The one image reader: image files and PIL images into ``(3, S, S)`` RGB at the model's size.

Every image the library reads goes through here: the datasets of training and evaluation (protected faces,
replacement faces and precomputed masks, :func:`load_image`), the ``ipmn protect``/``recover``/``verify``
commands (:func:`read_image`, :func:`image_size_of`) and the ``IPMN`` facade (:func:`fit_image` for PIL images,
:func:`fit_batch` for tensors). So a file gives the same pixels whichever door it comes in by:

- EXIF orientation is applied (a portrait phone JPEG stored sideways is read upright);
- transparent pixels (RGBA, LA, PA, and P/L/RGB with a transparent colour) are composited onto white
  (:data:`BACKGROUND`), so a transparent area never shows the colour hidden under it;
- any PIL mode becomes 8-bit RGB, 16-bit and float greyscale scaled correctly
  (:func:`~ipmn_lightning.core.images.rgb_image`); a float image outside [0, 1] is refused with its real range;
- one crop policy: the centred largest square (``crop="center"``) or the whole image squashed
  (``crop="none"``), then a Lanczos resize to ``S x S``;
- large JPEGs are decoded at 1/2 to 1/8 scale when that still leaves ``S`` pixels (libjpeg's DCT scaling), and
  images over PIL's decompression-bomb limit are refused with a message that says so.

What the inference side refuses (:func:`size_problem`, used by the role commands and the facade; training
reads any size): an image whose shorter side is below :func:`minimum_side` (16 px, or a quarter of the
bundle's side when that is larger: below it the face would be invented by the upscaling, not carried over),
or whose sides differ by more than :data:`MAX_ASPECT` to 1 (the centre square would keep under a quarter of
it, or squashing it would distort it beyond recognition). Smaller images above the minimum are upscaled, and
the callers say so on stderr.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.core.images import center_square_box, pil_to_tensor, rgb_image

__all__ = [
    "BACKGROUND",
    "IMAGE_EXTENSIONS",
    "MAX_ASPECT",
    "MIN_SIDE",
    "SPLITS",
    "UNSUPPORTED_IMAGE_EXTENSIONS",
    "DatasetLayoutError",
    "ImageReadError",
    "center_square_box",
    "fit_batch",
    "fit_image",
    "image_size_of",
    "load_image",
    "minimum_side",
    "read_image",
    "size_problem",
]

#: Split names, in the order the library iterates them.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Image file suffixes the readers take: torchvision's ``IMG_EXTENSIONS``, copied so that listing image files
#: does not import torchvision (seconds of start-up for ``ipmn protect``).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: Suffixes of image formats that PIL may open but the readers do not take (animated or multi-page, camera
#: raw, vector, ...): the role commands refuse them by name instead of skipping them.
UNSUPPORTED_IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".gif", ".apng", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".ico", ".icns", ".tga", ".psd",
    ".svg", ".dng", ".cr2", ".nef", ".arw", ".xcf", ".pcx", ".dds",
)  # fmt: skip

#: The colour under transparent pixels (our default: white, the usual page behind a transparent image).
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

#: The smallest side the inference side takes, in pixels (see :func:`minimum_side`).
MIN_SIDE = 16

#: The largest ratio of the long side to the short side the inference side takes.
MAX_ASPECT = 4.0

Crop = Literal["center", "none"]

_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees


class ImageReadError(IPMNError):
    """An image file is missing, truncated, corrupt, too large or not an image."""


class DatasetLayoutError(IPMNError):
    """A dataset folder does not have the layout its reader expects."""


def _check_args(image_size: int, crop: str) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"load_image: image_size must be a positive int, got {image_size!r}.")
    if crop not in ("center", "none"):
        raise ValueError(f"load_image: crop must be 'center' or 'none', got {crop!r}.")


def _read_error(file: Path, err: BaseException) -> ImageReadError:
    """The error for a file PIL cannot open or decode, naming the file and what to do."""
    if isinstance(err, FileNotFoundError):
        return ImageReadError(
            f"Image file {file} does not exist. Check the dataset root, or regenerate the split/mask "
            "store that refers to it (`ipmn masks check --root ... --store ...` lists every missing file)."
        )
    if isinstance(err, Image.DecompressionBombError):
        return ImageReadError(
            f"image {file} is too large to read safely ({err}); downscale it first (PIL's limit is "
            f"{Image.MAX_IMAGE_PIXELS * 2} pixels)"
        )
    return ImageReadError(
        f"Cannot read image {file}: {err}. The file is truncated, corrupt or not an image; "
        "re-download or regenerate it, or remove it (for a dataset, "
        "`ipmn masks check --root ... --store ...` lists every unreadable file)."
    )


def minimum_side(image_size: int) -> int:
    """The smallest image side the inference side takes for a bundle of side ``image_size``.

    Our default: :data:`MIN_SIDE` (16 px) or a quarter of ``image_size`` if larger, never above ``image_size``
    (an image at the bundle's size is always taken); below it, more than 4x upscaling would invent the face.
    """
    return min(image_size, max(MIN_SIDE, math.ceil(image_size / 4)))


def size_problem(width: int, height: int, image_size: int) -> str | None:
    """Why a ``width`` x ``height`` image is refused for a bundle of side ``image_size``, or ``None``."""
    short, long = min(width, height), max(width, height)
    if short < minimum_side(image_size):
        return (
            f"{width}x{height} is too small: its shorter side is under {minimum_side(image_size)} px (a quarter "
            f"of the bundle's {image_size} px, at least {MIN_SIDE} px), so the face would be invented by upscaling"
        )
    if long > MAX_ASPECT * short:
        return f"{width}x{height} is too elongated (more than {MAX_ASPECT:g}:1); crop it to the face first"
    return None


def _orientation(img: Image.Image) -> int:
    return int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)


def image_size_of(path: str | os.PathLike[str]) -> tuple[int, int]:
    """The ``(width, height)`` of an image file as displayed (EXIF orientation applied), from its header only.

    Raises:
        ImageReadError: the file is missing, not an image, unreadable or too large (decompression bomb).
    """
    file = Path(path)
    try:
        with Image.open(file) as img:
            width, height = img.size
            # PIL finds a PNG's eXIf chunk stored after the pixel data only by decoding them all; the header
            # check skips it (it only changes the size reported, and the read applies it).
            header_only = img.format == "PNG" and "exif" not in img.info
            if not header_only and _orientation(img) in _SWAPS_SIDES:
                width, height = height, width
    except Exception as err:  # PIL raises many types for broken files (OSError, EOFError, SyntaxError, ...)
        raise _read_error(file, err) from err
    return width, height


def read_image(
    path: str | os.PathLike[str],
    image_size: int,
    crop: Crop = "center",
    use_draft: bool = True,
) -> Image.Image:
    """Read an image file as an RGB ``S x S`` PIL image (see the module docstring for the policy).

    Args:
        path: the image file.
        image_size: the output side ``S`` in pixels.
        crop: ``"center"`` keeps the central square (face datasets are centred); ``"none"`` resizes
            the whole image to ``S x S``, changing the aspect ratio.
        use_draft: allow reduced-scale JPEG decoding; turn off only to compare with a full decode.

    Returns:
        The 8-bit RGB image, ``image_size`` x ``image_size``.

    Raises:
        ImageReadError: the file is missing, cannot be decoded, is too large, or holds 16-bit/float pixels
            outside their range; the message names the file.
        ValueError: ``image_size`` is not a positive integer or ``crop`` is unknown.
    """
    _check_args(image_size, crop)
    file = Path(path)
    try:
        with Image.open(file) as opened:
            full_size = opened.size
            scale = 1.0
            if use_draft and opened.format == "JPEG":
                # draft picks the largest 1/2, 1/4 or 1/8 reduction keeping both sides >= image_size,
                # so the centre crop still has at least image_size pixels per side. It returns the
                # original image's extent on the reduced grid, which gives the exact scale.
                drafted = opened.draft("RGB", (image_size, image_size))
                if drafted is not None and drafted[1][2] > 0:
                    scale = full_size[0] / drafted[1][2]
            opened.load()
            try:
                out = _fit(opened, image_size, crop, full_size, scale)
            except ValueError as err:  # rgb_image: 16-bit or float pixels outside their range
                raise ImageReadError(f"Cannot read image {file}: {err}") from err
            if out is opened:  # closing the file would take the pixels with it
                out = out.copy()
    except ImageReadError:
        raise
    except Exception as err:  # PIL raises many types for broken files (OSError, EOFError, SyntaxError, ...)
        raise _read_error(file, err) from err
    return out


def load_image(
    path: str | os.PathLike[str],
    image_size: int,
    crop: Crop = "center",
    use_draft: bool = True,
) -> torch.Tensor:
    """Read an image file as an RGB ``(3, S, S)`` float32 tensor in [0, 1]: :func:`read_image`, as a tensor.

    The image is rotated by its EXIF orientation, converted to RGB (transparency composited onto white;
    16-bit and float greyscale scaled), centre-cropped to a square (``crop="center"``) or squashed to a square
    (``crop="none"``), and resized to ``image_size`` with Lanczos (antialiased) resampling. JPEGs at least
    twice as large as needed are decoded at a reduced scale first (libjpeg's DCT scaling, PIL
    ``Image.draft``), which is several times faster and visually the same.

    Args:
        path: the image file.
        image_size: the output side ``S`` in pixels.
        crop: ``"center"`` or ``"none"`` (see :func:`read_image`).
        use_draft: allow reduced-scale JPEG decoding; turn off only to compare with a full decode.

    Returns:
        ``(3, S, S)`` float32 in [0, 1].

    Raises:
        ImageReadError: the file is missing or cannot be decoded; the message names the file.
        ValueError: ``image_size`` is not a positive integer or ``crop`` is unknown.
    """
    return pil_to_tensor(read_image(path, image_size, crop, use_draft))


def fit_image(img: Image.Image, image_size: int, crop: Crop = "center") -> Image.Image:
    """An image already in memory (e.g. from ``Image.open``) as RGB ``S x S``, as :func:`read_image` reads files.

    Args:
        img: any PIL image; it is not modified.
        image_size: the output side ``S`` in pixels.
        crop: ``"center"`` or ``"none"`` (see :func:`read_image`).

    Returns:
        The 8-bit RGB image (``img`` itself when it is already RGB, upright and ``S x S``).

    Raises:
        ValueError: bad ``image_size``/``crop``, or 16-bit/float pixels outside their range.
    """
    _check_args(image_size, crop)
    return _fit(img, image_size, crop, img.size, 1.0)


def fit_batch(batch: torch.Tensor, image_size: int) -> torch.Tensor:
    """Tensors: the same centred largest square as :func:`read_image`, resized to ``S x S``.

    Float tensors are resized bilinearly with antialiasing (PIL's Lanczos works on 8-bit pixels, and
    rounding a float input to 8 bits first would change it).

    Args:
        batch: ``(B, C, H, W)`` float.
        image_size: the output side ``S`` in pixels.

    Returns:
        ``(B, C, S, S)``, ``batch`` itself when it is already ``S x S``.
    """
    height, width = batch.shape[-2:]
    if height != width:
        left, top, right, bottom = center_square_box(width, height)
        batch = batch[..., top:bottom, left:right]
    if batch.shape[-2:] != (image_size, image_size):
        size = (image_size, image_size)
        batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    return batch


def _fit(img: Image.Image, size: int, crop: str, full_size: tuple[int, int], scale: float) -> Image.Image:
    """Orient, convert and crop/resize ``img``, a decode of a ``full_size`` image reduced by ``scale`` (1 = full)."""
    orientation = _orientation(img)
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
        if orientation in _SWAPS_SIDES:
            full_size = (full_size[1], full_size[0])
    _check_float_range(img)
    return _crop_resize(rgb_image(_flatten(img)), size, crop, full_size, scale)


def _flatten(img: Image.Image) -> Image.Image:
    """Composite transparent pixels onto :data:`BACKGROUND` (an opaque image is returned unchanged).

    ``convert("RGB")`` would drop the alpha channel and show whatever colour the transparent pixels hold
    (often black, or leftovers of an edit); compositing first also keeps that colour out of the resize.
    """
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")  # a palette entry or one colour marked transparent (PNG tRNS, GIF)
    if img.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return img
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _check_float_range(img: Image.Image) -> None:
    """Refuse a 32-bit float image outside [0, 1], naming its real range (min to max) and the fix."""
    if img.mode != "F":
        return
    arr = np.asarray(img, dtype=np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError("a 32-bit float image must hold values in [0, 1] (this one holds NaN or infinity)")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError(
            f"a 32-bit float image must hold values in [0, 1] (this one spans {arr.min():g} to {arr.max():g}); "
            "rescale it to [0, 1] (divide by 255 if it holds 0-255 values, else by its maximum), or save it as "
            "8- or 16-bit"
        )


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
