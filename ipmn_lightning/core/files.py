"""Atomic file writes: every file the library writes goes through here.

The bytes land in a temporary file next to the target and are renamed over it with :func:`os.replace`, so a
crash or a failing writer never leaves a half-written target behind (mask images, ``pairs.csv``, checkpoints,
bundles, reports), and readers see either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from ipmn_lightning.core.images import tensor_to_pil

__all__ = ["atomic_folder", "atomic_path", "atomic_save_image", "atomic_write_bytes", "atomic_write_text"]


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


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden, empty folder next to ``path`` and rename it to ``path`` when the block succeeds.

    For outputs that are a whole folder (an audit's challenge or answers): readers see the complete folder or
    none. If the block raises, the temporary folder and everything in it are removed. ``path`` must not exist
    (the rename would fail); missing parents are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
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
