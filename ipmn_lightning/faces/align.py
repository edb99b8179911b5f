"""Face alignment: a similarity transform taking a face's 68 landmarks onto a template, and the crop it gives.

A photo's face is brought to the frame the networks were trained on by the least-squares similarity (rotation,
uniform scale, translation; Umeyama 1991) from its inner landmarks (brows, eyes, nose, mouth: dlib's numbering
17-67) to :data:`TEMPLATE`, the mean dlib 68-point shape of tightly aligned face crops. ``margin`` widens the
frame around the face: 1 is the tight crop (the eyes 0.38 of the side apart, as in UTKFace's aligned crops),
about 1.75 is CelebA's centre square (eyes 0.22 apart); our default, :data:`DEFAULT_MARGIN` = 1.3, keeps the
forehead, jaw and a rim of background inside the crop, so the face swap's blend seam (which reaches 4% of the
face width past the jaw) never touches the crop's edge.

Pure numpy and OpenCV (the ``faces`` extra); no torch.
"""

from __future__ import annotations

import math

import numpy as np

from ipmn_lightning.faces.generators.geometry import umeyama

__all__ = [
    "DEFAULT_MARGIN",
    "TEMPLATE",
    "alignment_affine",
    "apply_affine",
    "crop_box",
    "invert_affine",
    "template_points",
    "warp_face",
]

#: Mean dlib 68-point shape of tightly aligned face crops, ``(68, 2)`` as fractions of the crop side (x, y).
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

#: Our default frame around the face (see the module docstring): a little wider than the tight crop.
DEFAULT_MARGIN = 1.3

_INNER = slice(17, 68)  # brows, nose, eyes, mouth: the jaw line moves with the pose, the inner face much less


def template_points(size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The template's 68 points in a ``size`` x ``size`` crop with ``margin`` (1 = tight crop).

    Returns:
        ``(68, 2)`` float64 pixel coordinates ``(x, y)``.
    """
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    # The template's centre (0.5, 0.5) stays at the crop's centre; a larger margin shrinks the face around it.
    return ((TEMPLATE - 0.5) / margin + 0.5) * size


def alignment_affine(landmarks: np.ndarray, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The similarity taking a face's landmarks (photo pixels) onto the template in a ``size``-px crop.

    Args:
        landmarks: ``(68, 2)`` ``(x, y)`` photo pixel coordinates (dlib's numbering).
        size: the crop side in pixels.
        margin: the frame around the face (see :func:`template_points`).

    Returns:
        ``(2, 3)`` float64 affine matrix, photo -> crop (``[x', y'] = A @ [x, y, 1]``).
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    return umeyama(points[_INNER], template_points(size, margin)[_INNER])


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points mapped by a ``(2, 3)`` affine."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(affine)[:, :2].T + np.asarray(affine)[:, 2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """The inverse of a ``(2, 3)`` affine (crop -> photo for an alignment)."""
    full = np.vstack([np.asarray(affine, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def crop_box(affine: np.ndarray, size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The photo pixels the ``size``-px crop of ``affine`` covers: ``(left, top, right, bottom)``, clipped.

    The crop square's four corners are mapped back into the photo; the box is their axis-aligned bounding box
    grown to whole pixels (plus one for the interpolation's reach), so every photo pixel the crop touches lies
    inside it, and ``right``/``bottom`` are exclusive.
    """
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    photo = apply_affine(invert_affine(affine), corners)
    left = max(0, math.floor(photo[:, 0].min()) - 1)
    top = max(0, math.floor(photo[:, 1].min()) - 1)
    right = min(width, math.ceil(photo[:, 0].max()) + 2)
    bottom = min(height, math.ceil(photo[:, 1].max()) + 2)
    return left, top, right, bottom


def warp_face(photo: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """The aligned crop: ``photo`` warped by ``affine`` into ``size`` x ``size``.

    Downscaling faces are first blurred in proportion to the scale (an area-like antialias), so the crop of a
    large face is not aliased; edges outside the photo repeat its border.

    Args:
        photo: ``(H, W, C)`` uint8 or float32 array.
        affine: ``(2, 3)`` photo -> crop.
        size: the crop side.

    Returns:
        ``(size, size, C)`` array of ``photo``'s dtype.
    """
    import cv2

    matrix = np.asarray(affine, np.float64).copy()
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    sigma = 0.5 / scale if scale < 0.5 else 0.0  # the Gaussian that stands in for an area average
    # Work on the window the crop reads (plus the blur's reach), not the whole photo: a 2000-px photo's blur
    # would cost more than the networks.
    height, width = photo.shape[:2]
    pad = math.ceil(3 * sigma) + 2
    left, top, right, bottom = crop_box(matrix, size, width, height)
    left, top = max(0, left - pad), max(0, top - pad)
    right, bottom = min(width, right + pad), min(height, bottom + pad)
    if right <= left or bottom <= top:  # the crop lies outside the photo: sample its nearest border anyway
        left, top, right, bottom = 0, 0, width, height
    source = photo[top:bottom, left:right]
    if sigma > 0:
        source = cv2.GaussianBlur(source, (0, 0), sigma)
    matrix[:, 2] += matrix[:, :2] @ np.array([left, top], np.float64)  # window pixel -> crop coordinates
    return cv2.warpAffine(source, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
