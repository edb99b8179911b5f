"""Reader for any folder of face images, with a deterministic, stable train/val/test split.

Every image under the root (recursively; suffixes in
torchvision's ``IMG_EXTENSIONS``) belongs to one split, decided by a hash of its
relative path and the seed alone. Adding or removing files therefore never moves an existing file to
another split, which keeps precomputed mask stores and earlier evaluations valid.

Skipped while scanning: hidden files and folders (names starting with ``.``, which also covers the
temporary files of interrupted atomic writes) and any folder holding a ``pairs.csv`` (a mask store
kept inside the image folder: its masks are not faces to train on).

Links are followed, but each real file is listed once: a folder link that leads back to a folder already
being scanned (``again -> .``) or to one already scanned is not entered again, and several names of one file
(links) collapse into one, with a note on stderr saying how many were collapsed. The name kept is the file's
own path under the root when it lies under it (so the split, a hash of that name, is decided by the real
file, not by whichever link was met first), else the shortest of its names.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path, PurePosixPath

from ipmn_lightning.data.celeba import read_celeba_identities, read_celeba_splits
from ipmn_lightning.data.images import IMAGE_EXTENSIONS, SPLITS, DatasetLayoutError

__all__ = ["dataset_layout", "folder_splits", "list_images", "split_of"]

_STORE_MARKER = "pairs.csv"


def list_images(root: str | os.PathLike[str]) -> list[str]:
    """List the image files under ``root``, recursively, each real file once (see the module docstring).

    Args:
        root: the image folder.

    Returns:
        Paths relative to ``root`` in POSIX form (``"person_1/a.jpg"``), sorted.

    Raises:
        DatasetLayoutError: ``root`` is not a folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise DatasetLayoutError(
            f"Image folder {base} does not exist or is not a folder; pass the folder of face images as root."
        )
    real_base = Path(os.path.realpath(base))
    names: dict[str, list[str]] = {}  # real file -> the names it was found under
    entered: set[str] = {str(real_base)}
    skipped_folders = 0
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        here = Path(dirpath)
        if here != base and _STORE_MARKER in filenames:
            dirnames[:] = []
            continue
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            real = os.path.realpath(here / d)
            if real in entered:  # a loop (again -> .) or a second way into a folder already scanned
                skipped_folders += 1
                continue
            entered.add(real)
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            rel = (here / name).relative_to(base).as_posix()
            names.setdefault(os.path.realpath(here / name), []).append(rel)
    found = [_canonical(Path(real), rels, real_base) for real, rels in names.items()]
    collapsed = sum(len(rels) - 1 for rels in names.values())
    if collapsed or skipped_folders:
        print(
            f"note: {base}: each real image is listed once: collapsed {collapsed} duplicate name(s) of a file "
            f"and skipped {skipped_folders} folder link(s) into a folder already scanned (links loop or repeat)",
            file=sys.stderr,
        )
    found.sort()
    return found


def _canonical(real: Path, rels: list[str], real_base: Path) -> str:
    """The name of one real file: its own path under the root when visible there, else its shortest name."""
    try:
        own = PurePosixPath(real.relative_to(real_base).as_posix())
    except ValueError:  # the file lies outside the root, reached through a link
        own = None
    if own is not None and not any(part.startswith(".") for part in own.parts) and not _in_store(real, real_base):
        return own.as_posix()
    return min(rels, key=lambda rel: (len(PurePosixPath(rel).parts), rel))


def _in_store(real: Path, real_base: Path) -> bool:
    """Whether a folder between ``real_base`` (excluded) and the file holds a mask store's ``pairs.csv``."""
    folder = real.parent
    while folder != real_base and real_base in folder.parents:
        if (folder / _STORE_MARKER).exists():
            return True
        folder = folder.parent
    return False


def split_of(relative_path: str, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> str:
    """The split a file belongs to; depends only on its relative path, the fractions and the seed.

    Args:
        relative_path: POSIX path relative to the image folder.
        val_fraction: expected share of images in ``"val"``.
        test_fraction: expected share of images in ``"test"``.
        seed: changes the assignment of every file.

    Returns:
        ``"train"``, ``"val"`` or ``"test"``.
    """
    digest = hashlib.sha256(f"{seed}\0{relative_path}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def folder_splits(
    root: str | os.PathLike[str], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[str]]:
    """Split a folder of face images into train/val/test.

    The assignment is a hash of each file's relative path and ``seed`` (see :func:`split_of`), so the
    shares are only approximately ``val_fraction`` / ``test_fraction`` on small folders, and a tiny
    folder may leave a split empty.

    Args:
        root: the image folder (searched recursively).
        val_fraction: expected share of validation images, in [0, 1).
        test_fraction: expected share of test images, in [0, 1).
        seed: split seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: sorted POSIX paths relative to ``root``.

    Raises:
        DatasetLayoutError: ``root`` is missing or holds no images.
        ValueError: the fractions are negative or leave nothing for training.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"folder_splits: {name} must be in [0, 1), got {value}.")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"folder_splits: val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
            "training images; keep their sum below 1."
        )
    files = list_images(root)
    if not files:
        raise DatasetLayoutError(
            f"No images found under {root} (searched recursively for {', '.join(IMAGE_EXTENSIONS)}; "
            "hidden files and mask-store folders are skipped). Pass the folder that holds the face images."
        )
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for rel in files:
        splits[split_of(rel, val_fraction, test_fraction, seed)].append(rel)
    return splits


def dataset_layout(source: str, root: Path) -> tuple[Path, dict[str, list[str]], dict[str, int] | None]:
    """The image folder, the splits and (CelebA) the identities of a dataset of layout ``source``."""
    if source == "celeba":
        return root / "img_align_celeba", read_celeba_splits(root), read_celeba_identities(root)
    return root, folder_splits(root), None
