"""Writing masks into a mask store and reading (x_p, x_r, x_m) triplets back for training."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from ipmn_lightning.core.files import atomic_save_image
from ipmn_lightning.data.images import load_image
from ipmn_lightning.data.mask_store.pairs import PairRecord, read_pairs

__all__ = ["FaceSwapPairsDataset", "save_mask"]


def save_mask(store: str | os.PathLike[str], record: PairRecord, mask: torch.Tensor | Image.Image) -> Path:
    """Write one record's mask x_m into the store (atomic, lossless PNG).

    Args:
        store: the store folder.
        record: the triplet the mask belongs to; its ``mask`` path is used.
        mask: ``(3, H, W)`` float in [0, 1], or a PIL image.

    Returns:
        The mask file path.
    """
    return atomic_save_image(Path(store) / record.mask, mask)


class FaceSwapPairsDataset(Dataset):
    """Triplets (x_p, x_r, x_m) from an image folder and a mask store.

    Items are dicts: ``"protected"``, ``"replacement"``, ``"mask"`` -> ``(3, S, S)`` float32 in
    [0, 1] (read with :func:`~ipmn_lightning.data.images.load_image`, so all three get the same centre
    crop), and ``"index"`` -> the item's index (int). Files are not checked here: run
    :func:`check_store` (or :func:`validate_store`) before training; a file that still fails to read
    raises :class:`~ipmn_lightning.data.images.ImageReadError` naming it.

    Args:
        image_root: the folder ``protected``/``replacement`` paths are relative to.
        store: the mask store folder.
        records: the triplets to serve (e.g. one split's rows); None reads all of ``pairs.csv``.
        image_size: output side ``S`` in pixels.
        crop: passed to :func:`~ipmn_lightning.data.images.load_image`.
    """

    def __init__(
        self,
        image_root: str | os.PathLike[str],
        store: str | os.PathLike[str],
        records: Sequence[PairRecord] | None,
        image_size: int,
        crop: Literal["center", "none"] = "center",
    ) -> None:
        self.image_root = Path(image_root)
        self.store = Path(store)
        self.records: list[PairRecord] = list(records) if records is not None else read_pairs(store)
        self.image_size = image_size
        self.crop = crop

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        r = self.records[index]
        size, crop = self.image_size, self.crop
        return {
            "protected": load_image(self.image_root / r.protected, size, crop),
            "replacement": load_image(self.image_root / r.replacement, size, crop),
            "mask": load_image(self.store / r.mask, size, crop),
            "index": int(index),
        }
