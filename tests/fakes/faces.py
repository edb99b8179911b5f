"""Fakes for the face tests: a landmark provider and a recogniser that need no dlib, and tiny face folders.

Run as a script it fills a mask store slowly (``python tests/fakes/faces.py ROOT STORE DELAY``), so a test can
kill it midway.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ipmn_lightning.core.files import atomic_save_image
from ipmn_lightning.data.folder import split_of
from ipmn_lightning.data.synthetic import render_face, sample_identity, sample_scene
from ipmn_lightning.faces.align import TEMPLATE
from ipmn_lightning.faces.analysis import FaceAnalyzer, IdentityEncoder
from ipmn_lightning.faces.generators import LandmarkMaskGenerator


class FakeAnalyzer(FaceAnalyzer):
    """The template in the middle 60% of the image, shifted and stretched by the image's mean colour (so two
    images get different landmarks); a nearly black image has no face."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if image.mean() < 10:
            return None
        h, w = image.shape[:2]
        r, g, b = image.reshape(-1, 3).mean(0) / 255
        pts = (TEMPLATE - 0.5) * np.array([0.6 + 0.1 * r, 0.6 + 0.1 * g]) + 0.5 + 0.03 * (b - 0.5)
        return pts * np.array([w - 1, h - 1])


class FakeEncoder(IdentityEncoder):
    """Embedding = the mean colour; no face in a nearly black image; same person below 0.05."""

    threshold = 0.05

    def embed_arrays(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        emb = np.stack([im.reshape(-1, 3).mean(0) / 255 for im in images]).astype(np.float64)
        found = np.array([im.mean() >= 10 for im in images])
        emb[~found] = np.nan
        return emb, found


def face_folder(
    root: Path,
    size: int = 48,
    per_split: tuple[int, int, int] = (4, 2, 2),
    black: int = 0,
    accept: Callable[[torch.Tensor], bool] | None = None,
) -> list[str]:
    """Write synthetic faces (PNG) whose names fall in train/val/test as asked, plus ``black`` all-black
    images (no face) in train; ``accept`` skips faces it rejects. Returns the file names, the black ones
    last."""
    root.mkdir(parents=True, exist_ok=True)
    want = dict(zip(("train", "val", "test"), per_split))
    want["train"] += black
    faces: list[str] = []
    blacks: list[str] = []
    i = 0
    while any(want.values()):
        name = f"face_{i:03d}.png"
        split = split_of(name)
        if want[split]:
            want[split] -= 1
            rng = np.random.default_rng(i)
            img = render_face(sample_identity(rng), sample_scene(rng), size)
            if accept is not None and not accept(img):
                want[split] += 1
                i += 1
                continue
            if split == "train" and want["train"] < black:
                img = img * 0
                blacks.append(name)
            else:
                faces.append(name)
            atomic_save_image(root / name, img)
        i += 1
    return faces + blacks


if __name__ == "__main__":
    from ipmn_lightning.workflows.masks import generate_masks

    root, store, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    generate_masks(root, "folder", store, LandmarkMaskGenerator(analyzer=FakeAnalyzer(delay)), 48, progress=False)
