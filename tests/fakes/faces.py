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
from ipmn_lightning.faces.analysis import FaceAnalyzer, IdentityEncoder
from ipmn_lightning.faces.generators import LandmarkMaskGenerator

# Mean dlib 68-point shape of aligned face crops, as fractions of the crop side.
TEMPLATE = np.array(
    [[0.063, 0.301], [0.065, 0.414], [0.075, 0.526], [0.094, 0.638], [0.134, 0.742], [0.198, 0.835],
     [0.281, 0.911], [0.377, 0.969], [0.489, 0.982], [0.6, 0.968], [0.696, 0.91], [0.778, 0.834],
     [0.842, 0.742], [0.882, 0.637], [0.902, 0.526], [0.914, 0.414], [0.917, 0.301], [0.139, 0.213],
     [0.192, 0.166], [0.268, 0.154], [0.344, 0.166], [0.416, 0.197], [0.561, 0.196], [0.633, 0.167],
     [0.71, 0.155], [0.785, 0.168], [0.839, 0.214], [0.489, 0.285], [0.489, 0.36], [0.488, 0.435],
     [0.489, 0.511], [0.399, 0.557], [0.442, 0.573], [0.488, 0.587], [0.535, 0.573], [0.578, 0.558],
     [0.222, 0.294], [0.269, 0.268], [0.325, 0.27], [0.374, 0.306], [0.321, 0.315], [0.266, 0.313],
     [0.602, 0.307], [0.652, 0.271], [0.707, 0.27], [0.754, 0.296], [0.71, 0.315], [0.655, 0.316],
     [0.311, 0.688], [0.376, 0.665], [0.442, 0.655], [0.489, 0.665], [0.537, 0.655], [0.602, 0.666],
     [0.667, 0.688], [0.605, 0.753], [0.54, 0.782], [0.488, 0.787], [0.437, 0.782], [0.372, 0.754],
     [0.336, 0.693], [0.441, 0.693], [0.489, 0.697], [0.537, 0.692], [0.641, 0.693], [0.538, 0.725],
     [0.489, 0.73], [0.44, 0.725]]
)  # fmt: skip


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
