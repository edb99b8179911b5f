"""Donor identities for photo mode: ``--donors DIR`` and the per-face choice of the farthest donor.

The mask x_m is the protected face with a donor's identity swapped in (paper §3.1: the mask generator is on the
sender's side). With a folder of donors, each face gets the donor that the face recogniser finds *least* like
it (the largest embedding distance, dlib's by default): the swap then moves the identity furthest from the
protected face, which is what SR_P measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the faces package loads torchmetrics (its SR_P metric); inference imports it on use only
    from ipmn_lightning.faces.analysis import IdentityEncoder

__all__ = ["DonorPicker", "load_donors"]


def load_donors(folder: str | Path) -> list[Image.Image]:
    """Every image of ``folder`` (or the one image file ``folder``), upright RGB, sorted by name.

    Raises:
        RoleError: not a file or a folder of images.
    """
    from ipmn_lightning.inference.guards import list_images
    from ipmn_lightning.inference.photos import read_photo

    return [read_photo(file) for file in list_images(str(folder), "donors")]


class DonorPicker:
    """Chooses, per face, the donor farthest from it by a face recogniser.

    Args:
        donors: candidate donor images (each with one clear face).
        encoder: the recogniser; None builds dlib's (:class:`~ipmn_lightning.faces.analysis.DlibIdentityEncoder`).

    Raises:
        ValueError: no donors, or no face found in any donor.
    """

    def __init__(self, donors: Sequence[Image.Image], encoder: IdentityEncoder | None = None) -> None:
        if not donors:
            raise ValueError("DonorPicker needs at least one donor image")
        if encoder is None:
            from ipmn_lightning.faces.analysis import DlibIdentityEncoder

            encoder = DlibIdentityEncoder()
        self.encoder = encoder
        embeddings, found = encoder.embed_arrays([np.asarray(d.convert("RGB")) for d in donors])
        if not found.any():
            raise ValueError("no face found in any donor image; give clear, frontal faces as donors")
        self.donors = [d for d, ok in zip(donors, found) if ok]
        self.embeddings = embeddings[found]

    def __call__(self, face: np.ndarray) -> Image.Image:
        """The donor for one face.

        Args:
            face: the face's aligned crop, ``(S, S, 3)`` uint8 RGB.

        Returns:
            The donor image farthest from ``face`` (the first donor when the recogniser finds no face in it).
        """
        embedding, found = self.encoder.embed_arrays([np.ascontiguousarray(face, dtype=np.uint8)])
        if not found[0]:
            return self.donors[0]
        import torch

        reference = torch.from_numpy(np.repeat(embedding, len(self.donors), axis=0))
        distances = self.encoder.distance(torch.from_numpy(self.embeddings), reference)
        return self.donors[int(torch.nan_to_num(distances, nan=-1.0).argmax())]
