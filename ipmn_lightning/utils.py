"""Small shared helpers: atomic file writes and tensor <-> PIL image conversion.

Every file the library writes (mask images, ``pairs.csv``, checkpoints, bundles) goes through the
atomic helpers here: the bytes land in a temporary file next to the target and are renamed over it
with :func:`os.replace`, so a crash or a failing writer never leaves a half-written target behind,
and readers see either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torchvision.models import WeightsEnum

__all__ = [
    "atomic_path",
    "atomic_save_image",
    "atomic_write_bytes",
    "atomic_write_text",
    "center_square_box",
    "pil_to_tensor",
    "rgb_image",
    "tensor_to_pil",
]


def _umask_mode() -> int:
    # mkstemp creates files with mode 0o600; give the final file the mode a plain open() would.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` and move it onto ``path`` when the block succeeds.

    For writers that take a file name (``torch.save``, ``safetensors.torch.save_file``,
    ``PIL.Image.save``). The temporary file lives in the target's directory (so the final
    :func:`os.replace` is an atomic rename on the same file system), is hidden (its name starts with
    a dot) and keeps the target's suffix (so writers that pick a format from the suffix still work).
    If the block raises, the temporary file is removed and the target is left untouched.
    Missing parent directories are created.

    Args:
        path: the final file path.

    Yields:
        The temporary path to write to. It exists (empty) when the block starts.

    Example:
        >>> with atomic_path("model.pt") as tmp:  # doctest: +SKIP
        ...     torch.save(state, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + rename).

    Args:
        path: the final file path; parent directories are created.
        data: the file contents.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; no newline translation is applied.

    Args:
        path: the final file path; parent directories are created.
        text: the file contents.
        encoding: the text encoding.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_save_image(path: str | os.PathLike[str], image: torch.Tensor | Image.Image, **save_kwargs: object) -> Path:
    """Save an image atomically; the format follows the suffix (use ``.png`` for lossless).

    Args:
        path: the final file path, e.g. ``masks/000001.png``; parent directories are created.
        image: a PIL image, or a tensor ``(3, H, W)`` (or ``(1, H, W)`` / ``(H, W)`` grey) float in
            [0, 1] (values outside are clamped, then rounded to 8 bits).
        **save_kwargs: passed to :meth:`PIL.Image.Image.save`, e.g. ``quality=95`` for JPEG.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: the suffix is not an image format PIL can write.
    """
    target = Path(path)
    fmt = Image.registered_extensions().get(target.suffix.lower())
    if fmt is None:
        raise ValueError(f"atomic_save_image: cannot tell the image format of {target}; use a .png suffix.")
    pil = tensor_to_pil(image) if isinstance(image, torch.Tensor) else image
    with atomic_path(target) as tmp:
        pil.save(tmp, format=fmt, **save_kwargs)
    return target


def hub_cache_file(weights: WeightsEnum) -> Path:
    """Where torchvision caches a pretrained ``weights`` file (``<torch hub dir>/checkpoints/``); never downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


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
        if img.mode == "F":
            if not np.isfinite(arr).all() or arr.min(initial=0) < -1e-6 or arr.max(initial=0) > 1 + 1e-6:
                raise ValueError(
                    "a 32-bit float image must hold values in [0, 1] "
                    f"(this one spans {arr.min(initial=0):g} to {arr.max(initial=0):g}); save it as 8- or 16-bit"
                )
            scaled = arr
        else:
            if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
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
