"""The synthetic face-swap dataset: deterministic (protected, replacement, mask) triplets, no files."""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.data import Dataset

from ipmn_lightning.data.synthetic.identity import SPLIT_CODES, sample_triplet_params
from ipmn_lightning.data.synthetic.render import render_face

__all__ = ["SyntheticFaceSwapDataset"]


class SyntheticFaceSwapDataset(Dataset):
    """Deterministic (protected, replacement, mask) triplets of synthetic faces.

    Sample ``index`` draws ``(id_a, scene_a, id_b, scene_b)`` from
    ``numpy.random.default_rng([seed, split_code, index])`` (see :data:`SPLIT_CODES`) and returns
    ``protected = render(id_a, scene_a)``, ``replacement = render(id_b, scene_b)`` and the true face
    swap ``mask = render(id_b, scene_a)``: the protected image's background, hair, pose, lighting
    and expression with the replacement's identity. Samples depend only on ``(seed, split, index)``,
    so they are identical in every process and DataLoader worker; the object holds no state beyond
    its arguments and pickles trivially.

    Args:
        length: number of samples.
        image_size: side length S of the square images, in pixels.
        seed: dataset seed (>= 0).
        split: ``"train"``, ``"val"`` or ``"test"``; the splits use disjoint random streams.
    """

    def __init__(
        self,
        length: int,
        image_size: int = 64,
        seed: int = 0,
        split: Literal["train", "val", "test"] = "train",
    ) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if split not in SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
        self.length = int(length)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.split = split

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        """Return sample ``index``.

        Returns:
            ``{"protected": (3, S, S), "replacement": (3, S, S), "mask": (3, S, S), "index": int}``,
            images float32 in [0, 1].

        Raises:
            IndexError: if ``index`` is out of range (negative indices count from the end).
        """
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        id_a, scene_a, id_b, scene_b = sample_triplet_params(self.seed, self.split, index)
        size = self.image_size
        return {
            "protected": render_face(id_a, scene_a, size),
            "replacement": render_face(id_b, scene_b, size),
            "mask": render_face(id_b, scene_a, size),
            "index": index,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(length={self.length}, image_size={self.image_size}, "
            f"seed={self.seed}, split={self.split!r})"
        )
