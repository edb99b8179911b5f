"""Faces without a mask store: one split of a face folder (or CelebA) as single images.

Used by ``FaceSwapDataModule(faces_only=True)`` for models that learn faces rather than swaps (the DiffFace
DDPM, ``configs/diffface.yaml``): no ``pairs.csv`` and no masks are needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ipmn_lightning.data.images import load_image

__all__ = ["FaceImagesDataset"]


class FaceImagesDataset(Dataset):
    """Face images of one split.

    Items are dicts: ``"protected"`` -> the face ``(3, S, S)`` float32 in [0, 1] (centre crop, as every reader
    of the library), ``"index"`` -> the item's index, ``"key"`` -> its path relative to ``image_root`` (stable
    across runs: caches such as DiffFace's identity embeddings are keyed by it).

    Args:
        image_root: the folder the paths are relative to.
        paths: the split's relative paths.
        image_size: output side ``S``.
    """

    def __init__(self, image_root: str | os.PathLike[str], paths: Sequence[str], image_size: int) -> None:
        self.image_root = Path(image_root)
        self.paths = list(paths)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | str]:
        path = self.paths[index]
        return {
            "protected": load_image(self.image_root / path, self.image_size, "center"),
            "index": int(index),
            "key": path,
        }
