"""The alignment of photo mode: template, similarity, crop box and warp."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("cv2")

from ipmn_lightning.faces.align import (
    TEMPLATE,
    alignment_affine,
    apply_affine,
    crop_box,
    invert_affine,
    template_points,
    warp_face,
)


def similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def test_the_alignment_undoes_a_similarity() -> None:
    size = 64
    crop_to_photo = similarity(0.3, 4.0, (500.0, 200.0))
    landmarks = apply_affine(crop_to_photo, template_points(size))  # the template's face, placed in a photo
    affine = alignment_affine(landmarks, size)
    assert np.allclose(apply_affine(affine, landmarks), template_points(size), atol=1e-6)
    assert np.allclose(invert_affine(affine), crop_to_photo, atol=1e-6)


def test_a_larger_margin_shrinks_the_face_around_the_centre() -> None:
    tight, wide = template_points(100, 1.0), template_points(100, 2.0)
    assert np.allclose(tight, TEMPLATE * 100)
    assert np.allclose(wide - 50, (tight - 50) / 2)
    with pytest.raises(ValueError):
        template_points(100, 0)


def test_the_crop_box_holds_the_whole_crop_and_is_clipped() -> None:
    affine = invert_affine(similarity(0.5, 3.0, (100.0, 80.0)))
    left, top, right, bottom = crop_box(affine, 32, 1000, 800)
    corners = apply_affine(invert_affine(affine), np.array([[0, 0], [32, 0], [0, 32], [32, 32]]))
    assert left <= corners[:, 0].min() and right >= corners[:, 0].max()
    assert top <= corners[:, 1].min() and bottom >= corners[:, 1].max()
    assert crop_box(affine, 32, 120, 90)[2:] == (120, 90)


def test_warp_face_reads_the_face_at_the_crop_size() -> None:
    photo = np.zeros((400, 600, 3), dtype=np.uint8)
    photo[100:300, 200:400] = 255  # a white square where the crop will be
    affine = invert_affine(similarity(0.0, 200 / 64, (200.0, 100.0)))
    crop = warp_face(photo, affine, 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert crop[8:56, 8:56].min() == 255  # the inside is the square (blurred only at its edge)
