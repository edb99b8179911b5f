"""Checking a mask store against its images before training: every problem, listed at once.

:func:`check_store` (also ``ipmn masks check``) probes each file's header once (decoding only JPEGs that
look cut off) and returns one line per problem; :func:`validate_store` raises them as a
:class:`~ipmn_lightning.data.mask_store.pairs.MaskStoreError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ipmn_lightning.data.images import SPLITS
from ipmn_lightning.data.mask_store.pairs import (
    PAIRS_FILE,
    MaskStoreError,
    PairRecord,
    _missing_pairs_message,
    _parse_pairs,
    read_pairs,
)

__all__ = ["check_store", "validate_store"]


@dataclass(frozen=True)
class _Probe:
    size: tuple[int, int] | None
    error: str | None


def _jpeg_ends_cleanly(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        length = f.tell()
        f.seek(max(0, length - 64))
        tail = f.read().rstrip(b"\x00")
    return tail.endswith(b"\xff\xd9")


def _probe(path: Path) -> _Probe:
    """Header size and readability, without decoding pixels except for a JPEG that looks truncated."""
    if not path.is_file():
        return _Probe(None, "is missing")
    try:
        with Image.open(path) as img:
            size = img.size
            fmt = img.format
            img.verify()  # PNG: checks every chunk's CRC; other formats: header only
        if fmt == "JPEG" and not _jpeg_ends_cleanly(path):
            # No end-of-image marker: usually a cut-off download. Decode to be sure.
            with Image.open(path) as img:
                img.load()
    except Exception as err:  # PIL raises many types for broken files; all mean "unreadable"
        return _Probe(None, f"is unreadable ({type(err).__name__}: {err})")
    return _Probe(size, None)


def check_store(
    store: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    image_size: int | None = None,
    progress: bool = False,
) -> list[str]:
    """List every problem of a mask store; an empty list means it is ready for training.

    Checked: ``pairs.csv`` exists and parses (header, fields, split names, relative paths,
    duplicate rows, a protected face listed twice or in two splits, shared masks, a face that is
    its own replacement), every split has rows, every protected, replacement and mask file exists
    and is readable (PIL ``verify``, plus a full decode of JPEGs missing their end marker), and every
    mask fits its protected image: the same size when ``image_size`` is None; otherwise the same
    size or square, and at least ``image_size`` on its shorter side. Files are only opened lazily
    (headers), so a check is fast; each file is checked once however many rows use it.

    Args:
        store: the store folder.
        image_root: the folder ``protected``/``replacement`` paths are relative to
            (``ROOT/img_align_celeba`` for CelebA, the folder itself for an image folder).
        image_size: the training image size, or None to require masks the size of their protected
            images.
        progress: show a tqdm progress bar over the rows.

    Returns:
        One human-readable line per problem.
    """
    store = Path(store)
    image_root = Path(image_root)
    if not store.is_dir():
        return [f"mask store folder {store} does not exist"]
    csv_path = store / PAIRS_FILE
    if not csv_path.is_file():
        return [_missing_pairs_message(csv_path)]
    if not image_root.is_dir():
        return [f"image folder {image_root} does not exist (pass the folder the paths in {csv_path} are relative to)"]
    records, lines, problems = _parse_pairs(csv_path)
    if problems and not records:
        return problems
    present = {r.split for r in records}
    problems += [f"split {s!r} has no rows in {csv_path}" for s in SPLITS if s not in present]

    probes: dict[Path, _Probe] = {}
    reported: set[Path] = set()

    def probe(path: Path, role: str, line: int) -> _Probe:
        result = probes.get(path)
        if result is None:
            result = probes[path] = _probe(path)
        if result.error is not None and path not in reported:
            reported.add(path)
            problems.append(f"{csv_path} line {line}: {role} {path} {result.error}")
        return result

    rows: Iterable[tuple[PairRecord, int]] = zip(records, lines)
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(list(rows), desc=f"checking {store}", unit="row")
    for r, line in rows:
        p = probe(image_root / r.protected, "protected image", line)
        probe(image_root / r.replacement, "replacement image", line)
        m = probe(store / r.mask, "mask", line)
        if p.size is None or m.size is None:
            continue
        (mw, mh), (pw, ph) = m.size, p.size
        if image_size is None:
            if m.size != p.size:
                problems.append(
                    f"{csv_path} line {line}: mask {store / r.mask} is {mw}x{mh} but its protected image "
                    f"{r.protected} is {pw}x{ph}; masks must be made from (and the size of) their "
                    "protected image"
                )
            continue
        if m.size != p.size and mw != mh:
            problems.append(
                f"{csv_path} line {line}: mask {store / r.mask} is {mw}x{mh}: neither square nor the size "
                f"of its protected image {r.protected} ({pw}x{ph}), so it cannot be aligned with the "
                "centre-cropped face"
            )
        if min(mw, mh) < image_size:
            problems.append(
                f"{csv_path} line {line}: mask {store / r.mask} is {mw}x{mh}, smaller than image_size "
                f"{image_size}; regenerate the masks at >= {image_size} px or train at a smaller image_size"
            )
    return problems


def validate_store(
    store: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    image_size: int | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> list[PairRecord]:
    """Run :func:`check_store` and return the records, or raise listing every problem.

    Args:
        store: the store folder.
        image_root: the folder image paths are relative to.
        image_size: the training image size (see :func:`check_store`).
        root: the dataset root to show in the error's ``ipmn masks check`` command (default:
            ``image_root``).
        progress: show a progress bar.

    Returns:
        The records of ``pairs.csv``.

    Raises:
        MaskStoreError: with every problem and the command to list them again.
    """
    problems = check_store(store, image_root, image_size, progress=progress)
    if problems:
        raise MaskStoreError(problems, store, root if root is not None else image_root)
    return read_pairs(store)
