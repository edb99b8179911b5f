"""``pairs.csv``: the mask store's triplet table, how triplets are chosen, and the store's error.

:func:`make_pairs` pairs every image with a replacement face of the same split, :func:`write_pairs`
writes the records atomically (escaping cells a spreadsheet would read as formulas) and
:func:`read_pairs` parses them back, listing every malformed row. :class:`MaskStoreError` is the one
error of the mask store; it lives here because reading ``pairs.csv`` is where it first arises.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.data.images import SPLITS

__all__ = [
    "MASK_DIR",
    "PAIRS_FILE",
    "PAIRS_HEADER",
    "MaskStoreError",
    "PairRecord",
    "make_pairs",
    "read_pairs",
    "write_pairs",
]

PAIRS_FILE = "pairs.csv"
PAIRS_HEADER: tuple[str, ...] = ("split", "protected", "replacement", "mask")
MASK_DIR = "masks"
_MAX_LISTED = 20


@dataclass(frozen=True)
class PairRecord:
    """One training triplet.

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"``.
        protected: x_p, POSIX path relative to the image folder.
        replacement: x_r (the identity source of the swap), relative to the image folder.
        mask: x_m, POSIX path relative to the store folder, e.g. ``"masks/000001.png"``.
    """

    split: str
    protected: str
    replacement: str
    mask: str


class MaskStoreError(IPMNError):
    """A mask store is malformed or does not match its images.

    Args:
        problems: every problem found, one human-readable line each (the message lists the first 20
            and the count of the rest).
        store: the store folder, for the message.
        root: the dataset root, for the ``ipmn masks check`` command in the message.
        hint: a specific fix to print before the generic one.

    Attributes:
        problems: the problems passed in.
    """

    def __init__(
        self,
        problems: Sequence[str] | str,
        store: str | os.PathLike[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        hint: str | None = None,
    ) -> None:
        if isinstance(problems, str):
            # Re-created from its message (pickling, DataLoader workers): keep the message as is.
            self.problems = [problems]
            super().__init__(problems)
            return
        self.problems = list(problems)
        count = len(self.problems)
        where = f" {store}" if store is not None else ""
        lines = [f"Mask store{where} has {count} problem{'s' if count != 1 else ''}:"]
        lines += [f"  - {p}" for p in self.problems[:_MAX_LISTED]]
        if count > _MAX_LISTED:
            lines.append(f"  ... and {count - _MAX_LISTED} more")
        if hint:
            lines.append(f"Fix: {hint}.")
        lines.append(
            ("Then list" if hint else "Fix: repair or regenerate the listed files (or the store), then list")
            + " what is left with "
            f"`ipmn masks check --root {root if root is not None else '...'} "
            f"--store {store if store is not None else '...'}`."
        )
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------------------- pairing


def _split_seed(seed: int, split: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{split}".encode()).digest()[:8], "big")


def _mask_path(mask_dir: str, protected: str) -> str:
    name = PurePosixPath(protected).with_suffix(".png").as_posix()
    return f"{mask_dir}/{name}" if mask_dir else name


def make_pairs(
    splits: Mapping[str, Sequence[str]],
    identities: Mapping[str, int] | None = None,
    seed: int = 0,
    mask_dir: str = MASK_DIR,
    root: str | os.PathLike[str] | None = None,
) -> list[PairRecord]:
    """Pair every image with a replacement face from the same split.

    Each image is the protected face x_p of exactly one record. Its replacement x_r is another image
    of the same split (never itself) and, where both identities are known, of a different identity.
    The pairing is a seeded random cycle (x_r of one image is the next image in a shuffled order, moving
    further along only to skip same-identity images), so it is deterministic for a given seed and
    every image is also used as a replacement about once.

    Args:
        splits: ``{split: [image path relative to the image folder, ...]}``, splits among
            ``train``/``val``/``test``; empty splits are allowed.
        identities: ``{image path: identity id}`` (CelebA's ``identity_CelebA.txt``); images missing
            from it count as an identity of their own.
        seed: pairing seed.
        mask_dir: folder inside the store for the masks; the mask of ``a/b.jpg`` is
            ``f"{mask_dir}/a/b.png"``.
        root: the image folder the paths are relative to; when given, two paths naming one real file (a
            link and its target, in one split or two) are refused, so a file is never paired with itself
            nor in two splits. Paths that do not exist are not compared.

    Returns:
        Records grouped by split (train, val, test), in each split's file order.

    Raises:
        ValueError: an unknown split, a split of exactly one image, a split whose images all share
            one identity, an image listed twice (by name, or with ``root`` as one real file), or two images
            that would share one mask file.
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"make_pairs: unknown split name(s) {unknown}; use {list(SPLITS)}.")
    mask_dir = mask_dir.strip("/")
    if PurePosixPath(mask_dir).is_absolute() or ".." in PurePosixPath(mask_dir).parts:
        raise ValueError(f"make_pairs: mask_dir must be a relative folder inside the store, got {mask_dir!r}.")
    if root is not None:
        _refuse_one_file_twice(splits, Path(root))
    records: list[PairRecord] = []
    owner: dict[str, str] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        files = list(splits.get(split, ()))
        for f in files:
            if f in seen:
                raise ValueError(f"make_pairs: {f} is listed twice (in {seen[f]} and {split}).")
            seen[f] = split
        n = len(files)
        if n == 0:
            continue
        if n == 1:
            raise ValueError(
                f"make_pairs: split {split!r} has a single image ({files[0]}), so it has no other image to "
                "use as its replacement face; give the split at least 2 images (e.g. a larger fraction)."
            )
        ids = [identities.get(f) if identities is not None else None for f in files]
        order = list(range(n))
        random.Random(_split_seed(seed, split)).shuffle(order)
        replacement = [0] * n
        for k, i in enumerate(order):
            for step in range(1, n):
                j = order[(k + step) % n]
                if ids[i] is None or ids[j] is None or ids[i] != ids[j]:
                    replacement[i] = j
                    break
            else:
                raise ValueError(
                    f"make_pairs: every image of split {split!r} has identity {ids[i]}, so {files[i]} has no "
                    "replacement face of another identity; add images of other people to the split."
                )
        for i, f in enumerate(files):
            mask = _mask_path(mask_dir, f)
            if mask in owner:
                raise ValueError(
                    f"make_pairs: {owner[mask]} and {f} would share the mask file {mask}; rename one of them."
                )
            owner[mask] = f
            records.append(PairRecord(split, f, files[replacement[i]], mask))
    return records


def _refuse_one_file_twice(splits: Mapping[str, Sequence[str]], root: Path) -> None:
    """Refuse two listed paths that are one real file (by device and inode: links, symlink loops)."""
    first: dict[tuple[int, int], tuple[str, str]] = {}
    for split in SPLITS:
        for f in splits.get(split, ()):
            try:
                stat = (root / f).stat()
            except OSError:
                continue  # a missing file is reported where it is read, not here
            key = (stat.st_dev, stat.st_ino)
            if key in first:
                other, other_split = first[key]
                raise ValueError(
                    f"make_pairs: {other} ({other_split}) and {f} ({split}) are the same file under {root} (a link "
                    "or a symlink loop); a file would be paired with itself or land in two splits. List each "
                    "file once (data.folder.list_images does)."
                )
            first[key] = (f, split)


# ------------------------------------------------------------------------------------- pairs.csv


def write_pairs(store: str | os.PathLike[str], records: Iterable[PairRecord]) -> Path:
    """Write ``store/pairs.csv`` atomically.

    A path starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or ``'`` is written with a
    leading ``'`` so that a spreadsheet opening the file never reads it as a formula (CSV injection);
    :func:`read_pairs` removes it again, so paths round-trip unchanged.

    Args:
        store: the store folder (created if needed).
        records: the triplets.

    Returns:
        The path of ``pairs.csv``.

    Raises:
        MaskStoreError: the records are inconsistent (the same checks as :func:`read_pairs`).
    """
    rows = list(records)
    # Row i will be on line i + 2 (after the header).
    where = f"{Path(store) / PAIRS_FILE} (being written)"
    problems = _structure_problems(rows, [i + 2 for i in range(len(rows))], where)
    if problems:
        raise MaskStoreError(problems, store)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PAIRS_HEADER)
    for r in rows:
        writer.writerow((r.split, *(_escape_cell(v) for v in (r.protected, r.replacement, r.mask))))
    return atomic_write_text(Path(store) / PAIRS_FILE, buf.getvalue())


def read_pairs(store: str | os.PathLike[str]) -> list[PairRecord]:
    """Read ``store/pairs.csv``.

    Args:
        store: the store folder.

    Returns:
        The records in file order.

    Raises:
        MaskStoreError: ``pairs.csv`` is missing, or has a bad header, a malformed row, an unknown
            split, an absolute or escaping path, or a duplicate; every problem is listed with its line.
    """
    path = Path(store) / PAIRS_FILE
    if not path.is_file():
        raise MaskStoreError([_missing_pairs_message(path)], store)
    records, _, problems = _parse_pairs(path)
    if problems:
        raise MaskStoreError(problems, store)
    return records


def _missing_pairs_message(path: Path) -> str:
    return (
        f"{path} is missing (a mask store is a folder with pairs.csv, header "
        f"'{','.join(PAIRS_HEADER)}', and the mask images)"
    )


#: First characters that make a spreadsheet read a cell as a formula (CSV injection), plus the quote that
#: escapes them: such a path is written with a leading ``'``, which :func:`read_pairs` removes again.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def _escape_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _unescape_cell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def _bad_path(value: str, field: str) -> str | None:
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or "\\" in value:
        return "must be a relative path with '/' separators"
    if ".." in PurePosixPath(value).parts:
        folder = "store folder" if field == "mask" else "image folder"
        return f"must stay inside the {folder} (no '..')"
    return None


def _parse_pairs(path: Path) -> tuple[list[PairRecord], list[int], list[str]]:
    """Parse pairs.csv leniently: returns the good records, their line numbers and every problem."""
    problems: list[str] = []
    records: list[PairRecord] = []
    lines: list[int] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        return [], [], [f"{path} cannot be read: {err}"]
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return [], [], [f"{path} is empty (expected the header '{','.join(PAIRS_HEADER)}')"]
    if tuple(h.strip() for h in header) != PAIRS_HEADER:
        return [], [], [f"{path} line 1: header is {','.join(header)!r}, expected {','.join(PAIRS_HEADER)!r}"]
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(PAIRS_HEADER):
            problems.append(f"{path} line {line}: expected 4 fields ({','.join(PAIRS_HEADER)}), got {len(row)}")
            continue
        split = row[0].strip()
        protected, replacement, mask = (_unescape_cell(cell.strip()) for cell in row[1:])
        bad = False
        if split not in SPLITS:
            problems.append(f"{path} line {line}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
            bad = True
        for field, value in (("protected", protected), ("replacement", replacement), ("mask", mask)):
            if not value:
                problems.append(f"{path} line {line}: empty {field} field")
                bad = True
                continue
            why = _bad_path(value, field)
            if why:
                problems.append(f"{path} line {line}: {field} {value!r} {why}")
                bad = True
        if not bad:
            records.append(PairRecord(split, protected, replacement, mask))
            lines.append(line)
    problems += _structure_problems(records, lines, str(path))
    return records, lines, problems


def _structure_problems(records: Sequence[PairRecord], lines: Sequence[int], where: str) -> list[str]:
    """Duplicates and cross-row conflicts: duplicate rows, protected twice, shared masks, split leaks."""
    problems: list[str] = []
    first_row: dict[PairRecord, int] = {}
    first_protected: dict[tuple[str, str], int] = {}
    protected_split: dict[str, tuple[str, int]] = {}
    mask_owner: dict[str, int] = {}
    for r, line in zip(records, lines):
        if r.split not in SPLITS:
            problems.append(f"{where} line {line}: unknown split {r.split!r} (expected one of {', '.join(SPLITS)})")
        if r in first_row:
            problems.append(f"{where} line {line}: duplicate row (same as line {first_row[r]})")
            continue
        first_row[r] = line
        if r.protected == r.replacement:
            problems.append(f"{where} line {line}: {r.protected} is its own replacement face")
        key = (r.split, r.protected)
        if key in first_protected:
            problems.append(
                f"{where} line {line}: protected image {r.protected} appears again in split {r.split!r} "
                f"(first on line {first_protected[key]})"
            )
            continue
        first_protected[key] = line
        if r.protected in protected_split:
            other, other_line = protected_split[r.protected]
            problems.append(
                f"{where} line {line}: protected image {r.protected} is in split {r.split!r} and in split "
                f"{other!r} (line {other_line}); a face must belong to one split"
            )
        else:
            protected_split[r.protected] = (r.split, line)
        if r.mask in mask_owner:
            problems.append(f"{where} line {line}: mask {r.mask} is also the mask of line {mask_owner[r.mask]}")
        else:
            mask_owner[r.mask] = line
    return problems
