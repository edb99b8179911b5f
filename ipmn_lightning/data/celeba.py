"""Reader for the official CelebA layout (aligned-and-cropped images, evaluation partition, identities).

Expected layout under ``root`` (as downloaded from the CelebA site / Google Drive)::

    root/
      img_align_celeba/000001.jpg ... 202599.jpg
      list_eval_partition.txt      "000001.jpg 0" per line; 0 = train, 1 = val, 2 = test
      identity_CelebA.txt          "000001.jpg 2880" per line (optional)

The Kaggle copy's ``list_eval_partition.csv`` (header ``image_id,partition``) is accepted when the
``.txt`` file is absent.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ipmn_lightning.data.images import SPLITS, DatasetLayoutError

__all__ = [
    "IDENTITY_FILE",
    "IMAGE_DIR",
    "PARTITION_FILE",
    "read_celeba_identities",
    "read_celeba_splits",
]

IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
_PARTITION_CSV = "list_eval_partition.csv"
_PARTITION_IDS = {"0": "train", "1": "val", "2": "test"}

_LAYOUT_HELP = (
    "Expected the official CelebA layout: ROOT/img_align_celeba/000001.jpg..., "
    "ROOT/list_eval_partition.txt ('000001.jpg 0' per line, 0=train 1=val 2=test) and optionally "
    "ROOT/identity_CelebA.txt ('000001.jpg 2880' per line). Pass the folder that holds them as root."
)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise DatasetLayoutError(f"CelebA root {root} is not a folder. {_LAYOUT_HELP}")
    images = root / IMAGE_DIR
    if not images.is_dir():
        raise DatasetLayoutError(f"CelebA image folder {images} is missing. {_LAYOUT_HELP}")
    # The Kaggle zip unpacks to img_align_celeba/img_align_celeba/*.jpg.
    nested = images / IMAGE_DIR
    if nested.is_dir() and not (images / "000001.jpg").exists():
        raise DatasetLayoutError(
            f"CelebA images are nested one level too deep in {nested}; move the .jpg files up into "
            f"{images} (e.g. `mv {nested}/* {images}/ && rmdir {nested}`)."
        )


def read_celeba_splits(root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read CelebA's evaluation partition.

    Image files are not opened or listed here (that is :func:`~ipmn_lightning.data.mask_store.check_store`'s
    job); only the layout and the partition file are checked.

    Args:
        root: the CelebA folder (holding ``img_align_celeba/`` and ``list_eval_partition.txt``).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: file names relative to
        ``root/img_align_celeba`` (e.g. ``"000001.jpg"``), in file order. A split may be empty.

    Raises:
        DatasetLayoutError: a missing folder or partition file, a malformed line (its number is
            given), an unknown partition id or a file listed twice.
    """
    root = Path(root)
    _check_root(root)
    txt = root / PARTITION_FILE
    csv_path = root / _PARTITION_CSV
    if txt.is_file():
        entries = _read_pairs_txt(txt, "partition id (0, 1 or 2)")
    elif csv_path.is_file():
        entries = _read_partition_csv(csv_path)
    else:
        raise DatasetLayoutError(f"CelebA partition file {txt} is missing. {_LAYOUT_HELP}")
    path = txt if txt.is_file() else csv_path
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    seen: dict[str, int] = {}
    for line_no, name, value in entries:
        split = _PARTITION_IDS.get(value)
        if split is None:
            raise DatasetLayoutError(
                f"{path} line {line_no}: unknown partition id {value!r} for {name} "
                "(expected 0 = train, 1 = val or 2 = test)."
            )
        if name in seen:
            raise DatasetLayoutError(f"{path} line {line_no}: {name} is listed again (first on line {seen[name]}).")
        seen[name] = line_no
        splits[split].append(name)
    if not seen:
        raise DatasetLayoutError(f"CelebA partition file {path} lists no images. {_LAYOUT_HELP}")
    return splits


def read_celeba_identities(root: str | os.PathLike[str]) -> dict[str, int] | None:
    """Read CelebA's identity labels, if the file is there.

    Args:
        root: the CelebA folder.

    Returns:
        ``{file name: identity id}``, or ``None`` when ``identity_CelebA.txt`` is absent.

    Raises:
        DatasetLayoutError: a malformed line (its number is given), a non-integer id or a file listed
            twice.
    """
    path = Path(root) / IDENTITY_FILE
    if not path.is_file():
        return None
    identities: dict[str, int] = {}
    lines: dict[str, int] = {}
    for line_no, name, value in _read_pairs_txt(path, "integer identity id"):
        try:
            identity = int(value)
        except ValueError:
            raise DatasetLayoutError(
                f"{path} line {line_no}: identity {value!r} of {name} is not an integer."
            ) from None
        if name in identities:
            raise DatasetLayoutError(f"{path} line {line_no}: {name} is listed again (first on line {lines[name]}).")
        identities[name] = identity
        lines[name] = line_no
    return identities


def _read_pairs_txt(path: Path, what: str) -> list[tuple[int, str, str]]:
    """Parse ``"<file> <value>"`` lines; blank lines are skipped. Returns (line number, file, value)."""
    out: list[tuple[int, str, str]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DatasetLayoutError(
                    f"{path} line {line_no}: expected '<image file> <{what}>', got {line.strip()!r}."
                )
            out.append((line_no, parts[0], parts[1]))
    return out


def _read_partition_csv(path: Path) -> list[tuple[int, str, str]]:
    """Parse Kaggle's ``image_id,partition`` CSV. Returns (line number, file, value)."""
    out: list[tuple[int, str, str]] = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["image_id", "partition"]:
            raise DatasetLayoutError(f"{path} line 1: expected the header 'image_id,partition', got {header!r}.")
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise DatasetLayoutError(
                    f"{path} line {reader.line_num}: expected '<image file>,<partition id>', got {row!r}."
                )
            out.append((reader.line_num, row[0].strip(), row[1].strip()))
    return out
