"""``mosaic``: the privacy baseline of You et al. (paper ref. [36], Table 11), x_m = x_p with its face pixelated.

:func:`pixelate` averages blocks inside a region, :func:`mosaic` applies it to the face region of an image,
and :class:`MosaicMaskGenerator` fills a mask store with it (x_r ignored).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ipmn_lightning.faces.analysis import FaceAnalyzer, require_faces_extra, to_uint8_array
from ipmn_lightning.faces.generators.base import MaskOutcome
from ipmn_lightning.faces.generators.geometry import face_region
from ipmn_lightning.faces.generators.landmark import _DlibLandmarksGenerator

__all__ = ["MOSAIC_BLOCK", "MOSAIC_DILATE", "MosaicMaskGenerator", "mosaic", "mosaic_block_size", "pixelate"]


MOSAIC_BLOCK = 0.125
"""Default mosaic block side as a fraction of the face width: 8 blocks across the face.

You et al. (ICME 2021) cover the face with a coarse, plainly visible mosaic (paper Fig. 9) but the IPMN
paper gives no block size; an eighth of the face width (about 12 px on a 128 px UTKFace crop, 6 px at
64 px) leaves the head's outline and skin tone and no readable facial feature.
"""
MOSAIC_DILATE = 0.05
"""Default growth of the landmark hull (fraction of the face width), so the jaw contour is covered too."""


def pixelate(image: np.ndarray, region: np.ndarray, block: int) -> np.ndarray:
    """Pixelate the pixels of ``region``: one colour per block.

    The grid of ``block`` × ``block`` cells starts at the top-left corner of the region's bounding box; each
    cell's region pixels take the (rounded) mean of the cell's region pixels, so no colour from outside
    the region leaks in.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        region: ``(H, W)`` bool, the pixels to pixelate.
        block: the cell side in pixels (>= 1).

    Returns:
        A new ``(H, W, 3)`` uint8 array, equal to ``image`` outside ``region``.
    """
    if block < 1:
        raise ValueError(f"the mosaic block must be at least 1 pixel, got {block}")
    out = image.copy()
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return out
    rows, cols = (ys - ys.min()) // block, (xs - xs.min()) // block
    cell = rows * (int(cols.max()) + 1) + cols
    n = int(cell.max()) + 1
    count = np.maximum(np.bincount(cell, minlength=n), 1)[:, None]
    values = image[ys, xs].astype(np.float64)
    sums = np.stack([np.bincount(cell, weights=values[:, c], minlength=n) for c in range(values.shape[1])], 1)
    out[ys, xs] = np.clip(np.round(sums / count), 0, 255).astype(image.dtype)[cell]
    return out


def mosaic_block_size(landmarks: np.ndarray, block: float = MOSAIC_BLOCK, block_px: int | None = None) -> int:
    """The mosaic cell side in pixels.

    Args:
        landmarks: ``(68, 2)`` landmarks of the face.
        block: the cell side as a fraction of the face width (the landmarks' horizontal extent).
        block_px: the cell side in pixels; overrides ``block`` when given.
    """
    if block_px is not None:
        return max(1, int(block_px))
    pts = np.asarray(landmarks, dtype=np.float64)
    return max(1, round(block * float(pts[:, 0].max() - pts[:, 0].min())))


def mosaic(
    image: np.ndarray,
    landmarks: np.ndarray,
    block: float = MOSAIC_BLOCK,
    block_px: int | None = None,
    dilate: float = MOSAIC_DILATE,
) -> np.ndarray:
    """You et al.'s visible mosaic: pixelate the face region of an image.

    The face region is :func:`face_region` of the landmarks (the convex hull from brows to chin, grown by
    ``dilate``); every pixel outside it is unchanged.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        landmarks: ``(68, 2)`` landmarks of the face in ``image``.
        block: the cell side as a fraction of the face width (default :data:`MOSAIC_BLOCK`).
        block_px: the cell side in pixels; overrides ``block``.
        dilate: grow the landmark hull by this fraction of the face width.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    h, w = image.shape[:2]
    region = face_region([landmarks], h, w, dilate=dilate)
    return pixelate(image, region, mosaic_block_size(landmarks, block, block_px))


class MosaicMaskGenerator(_DlibLandmarksGenerator):
    """The ``mosaic`` baseline (You et al.): x_m = :func:`mosaic` (x_p); the replacement face is ignored.

    Deterministic; CPU. It fills a mask store like any generator (``ipmn masks generate --generator
    mosaic``), which lets the pipeline train on it or ``ipmn evaluate`` compare against it.

    Args:
        block: the cell side as a fraction of the face width.
        block_px: the cell side in pixels (overrides ``block``).
        dilate: growth of the face region (fraction of the face width).
        analyzer: landmark provider; None builds a :class:`~ipmn_lightning.faces.analysis.DlibFaceAnalyzer`
            on first use.

    Raises:
        FacesExtraMissingError: OpenCV (the ``faces`` extra) is missing.
    """

    name = "mosaic"

    def __init__(
        self,
        block: float = MOSAIC_BLOCK,
        block_px: int | None = None,
        dilate: float = MOSAIC_DILATE,
        analyzer: FaceAnalyzer | None = None,
    ) -> None:
        require_faces_extra("the mosaic mask generator")
        self.block = float(block)
        self.block_px = block_px
        self.dilate = float(dilate)
        self.analyzer = analyzer

    def generate(
        self,
        protected: Tensor,
        replacement: Tensor,
        protected_landmarks: Sequence[np.ndarray | None] | None = None,
        replacement_landmarks: Sequence[np.ndarray | None] | None = None,
    ) -> list[MaskOutcome]:
        """See :meth:`MaskGenerator.generate`; ``replacement`` and its landmarks are ignored."""
        outcomes = []
        for i in range(protected.shape[0]):
            p = to_uint8_array(protected[i])
            lp = protected_landmarks[i] if protected_landmarks is not None else self.landmarks(p)
            if lp is None:
                outcomes.append(MaskOutcome(None, "no face found in the protected image", False, None))
                continue
            out = mosaic(p, np.asarray(lp, np.float64), self.block, self.block_px, self.dilate)
            outcomes.append(MaskOutcome(torch.from_numpy(out).permute(2, 0, 1).float().div(255), None, True, None))
        return outcomes
