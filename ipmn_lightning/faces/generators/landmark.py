"""``landmark``: an offline, deterministic face swap on a CPU, and the dlib-landmarks base of the generators.

The ``landmark`` backend, per pair:

1. 68 landmarks of both faces (:class:`~ipmn_lightning.faces.analysis.FaceAnalyzer`, dlib by default).
2. Target landmarks: x_r's landmarks aligned onto x_p by a similarity (Procrustes on the brows, eyes,
   nose and mouth), then mixed with x_p's: ``t = p + shape * (aligned_r - p)``; ``shape`` = 1 for the
   inner features keeps x_r's face *shape* (eye spacing, nose length, mouth width: what a recogniser
   uses), ``jaw_shape`` (default 0.5) does the same for the outline, half way so the cheek contour
   stays near x_p's and the blend seam falls on skin.
3. A piecewise-affine warp of x_r onto the target landmarks (Delaunay triangles over the 68 points and
   the image border, which is mapped by the similarity alone).
4. Colour correction: x_r's warped face times the ratio of locally averaged colours of x_p and of the
   warped face inside the face region (a masked Gaussian of a fifth of the face width), so skin tone
   and lighting follow x_p.
5. Poisson blending (OpenCV ``seamlessClone``) of the face region, the convex hull of x_p's and the
   target landmarks (brows to chin) cut to x_p's hull grown by 4% of the face width; every pixel outside
   it is x_p's.

Pure Procrustes (``shape = jaw_shape = 1``) moves identity most but leaves x_p's cheeks visible beside
a narrower x_r face; a plain triangle warp onto x_p's landmarks (``shape = jaw_shape = 0``) keeps x_p's
geometry, and with it much of the identity; ``benchmarks/masks.py`` compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ipmn_lightning.faces.analysis import FaceAnalyzer, require_faces_extra, to_uint8_array
from ipmn_lightning.faces.generators.base import MaskGenerator, MaskOutcome
from ipmn_lightning.faces.generators.geometry import (
    _apply,
    _border_points,
    _delaunay,
    _invert,
    _is_grey,
    _masked_blur,
    _match_lab,
    _piecewise_affine_maps,
    face_region,
    umeyama,
)

__all__ = ["LandmarkMaskGenerator"]

_INNER = slice(17, 68)  # brows, nose, eyes, mouth
_JAW = slice(0, 17)


class _DlibLandmarksGenerator(MaskGenerator):
    """A generator that finds faces with a :class:`FaceAnalyzer` (dlib's by default, built on first use)."""

    analyzer: FaceAnalyzer | None = None

    def _analyzer(self) -> FaceAnalyzer:
        if self.analyzer is None:
            from ipmn_lightning.faces.analysis import DlibFaceAnalyzer

            self.analyzer = DlibFaceAnalyzer()
        return self.analyzer

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """See :meth:`MaskGenerator.landmarks`."""
        return self._analyzer().landmarks(image)


class LandmarkMaskGenerator(_DlibLandmarksGenerator):
    """The ``landmark`` face swap (see the module docstring).

    Deterministic; CPU; a few milliseconds per pair at 128 px once the landmarks are known.

    Args:
        shape: how much of x_r's inner-face geometry (brows, eyes, nose, mouth) to keep, in [0, 1]
            (1: x_r's shape under a similarity; 0: x_p's landmark positions).
        jaw_shape: the same for the jaw line.
        blend: ``"poisson"`` (``cv2.seamlessClone``, seamless) or ``"feather"`` (alpha blend with a
            blurred edge).
        color: colour correction before blending: ``"lab"`` matches the mean and spread of x_p's face in
            CIELAB; ``"local"`` multiplies by the ratio of locally averaged colours (x_p over warped x_r).
        color_sigma: the ``"local"`` correction's blur, as a fraction of the face width.
        analyzer: landmark provider; None builds a :class:`~ipmn_lightning.faces.analysis.DlibFaceAnalyzer`
            on first use (so an unused generator needs no dlib, and a pickled one rebuilds it).

    Raises:
        FacesExtraMissingError: OpenCV (the ``faces`` extra) is missing.
    """

    name = "landmark"

    def __init__(
        self,
        shape: float = 1.0,
        jaw_shape: float = 0.5,
        blend: Literal["poisson", "feather"] = "poisson",
        color: Literal["lab", "local"] = "lab",
        color_sigma: float = 0.2,
        analyzer: FaceAnalyzer | None = None,
    ) -> None:
        require_faces_extra("the landmark mask generator")
        self.shape = float(shape)
        self.jaw_shape = float(jaw_shape)
        self.blend = blend
        self.color = color
        self.color_sigma = float(color_sigma)
        self.analyzer = analyzer

    def generate(
        self,
        protected: Tensor,
        replacement: Tensor,
        protected_landmarks: Sequence[np.ndarray | None] | None = None,
        replacement_landmarks: Sequence[np.ndarray | None] | None = None,
    ) -> list[MaskOutcome]:
        """See :meth:`MaskGenerator.generate`."""
        outcomes = []
        for i in range(protected.shape[0]):
            p, r = to_uint8_array(protected[i]), to_uint8_array(replacement[i])
            lp = protected_landmarks[i] if protected_landmarks is not None else self.landmarks(p)
            lr = replacement_landmarks[i] if replacement_landmarks is not None else self.landmarks(r)
            if lp is None or lr is None:
                which = "protected" if lp is None else "replacement"
                outcomes.append(
                    MaskOutcome(None, f"no face found in the {which} image", lp is not None, lr is not None)
                )
                continue
            out = self.swap(p, r, np.asarray(lp, np.float64), np.asarray(lr, np.float64))
            mask = torch.from_numpy(out).permute(2, 0, 1).float().div(255)
            outcomes.append(MaskOutcome(mask, None, True, True))
        return outcomes

    def target_landmarks(self, lp: np.ndarray, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where x_r's landmarks go in x_p's frame.

        Args:
            lp: ``(68, 2)`` landmarks of x_p.
            lr: ``(68, 2)`` landmarks of x_r.

        Returns:
            ``(68, 2)`` target landmarks and the ``(2, 3)`` similarity taking x_r's frame to x_p's.
        """
        sim = umeyama(lr[_INNER], lp[_INNER])
        aligned = _apply(sim, lr)
        weight = np.full((68, 1), self.shape)
        weight[_JAW] = self.jaw_shape
        return lp + weight * (aligned - lp), sim

    def swap(self, p: np.ndarray, r: np.ndarray, lp: np.ndarray, lr: np.ndarray) -> np.ndarray:
        """Swap one pair.

        Args:
            p: x_p ``(H, W, 3)`` uint8 RGB.
            r: x_r ``(H', W', 3)`` uint8 RGB.
            lp: ``(68, 2)`` landmarks of x_p.
            lr: ``(68, 2)`` landmarks of x_r.

        Returns:
            x_m ``(H, W, 3)`` uint8 RGB; equal to x_p outside the face region.
        """
        import cv2

        h, w = p.shape[:2]
        target, sim = self.target_landmarks(lp, lr)
        target = np.clip(target, 0, [w - 1, h - 1])
        border = _border_points(w, h)
        inv = _invert(sim)
        dst_pts = np.concatenate([target, border])
        src_pts = np.concatenate([lr, _apply(inv, border)])
        tris = _delaunay(dst_pts, w, h)
        map_x, map_y = _piecewise_affine_maps(dst_pts, src_pts, tris, inv, w, h)
        warped = cv2.remap(r, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

        # Brows to chin of both faces, but never further than 4% of the face width outside x_p's own face:
        # a tall x_r must not paint over x_p's hair or background.
        region = face_region([lp, target], h, w) & face_region([lp], h, w, dilate=0.04)
        face_w = float(lp[:, 0].max() - lp[:, 0].min())
        pf, wf = p.astype(np.float32), warped.astype(np.float32)
        if self.color == "local":
            # x_p's local mean colour inside the face (the masked blurs keep the background out).
            weight = region.astype(np.float32)
            sigma = max(1.0, self.color_sigma * face_w)
            gain = (_masked_blur(pf, weight, sigma) + 1.0) / (_masked_blur(wf, weight, sigma) + 1.0)
            corrected = np.clip(wf * np.clip(gain, 0.25, 4.0), 0, 255).astype(np.uint8)
        else:
            corrected = _match_lab(warped, p, region)
        if _is_grey(p):
            # A black-and-white photo stays one: colour from x_r would be a giveaway.
            corrected = cv2.cvtColor(cv2.cvtColor(corrected, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)

        if self.blend == "feather":
            k = max(1.0, 0.06 * face_w)
            inner = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, round(k)))
            alpha = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), k)[..., None] * region[..., None]
            out = alpha * corrected + (1 - alpha) * pf
            return np.clip(np.round(out), 0, 255).astype(np.uint8)
        # seamlessClone needs the region away from the border: pad, clone, crop.
        pad = max(4, h // 8)
        pp = cv2.copyMakeBorder(p, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        cp = cv2.copyMakeBorder(corrected, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        mp = cv2.copyMakeBorder(region.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        x, y, bw, bh = cv2.boundingRect(mp)
        center = (x + bw // 2, y + bh // 2)
        cloned = cv2.seamlessClone(cp, pp, mp, center, cv2.NORMAL_CLONE)[pad : pad + h, pad : pad + w]
        # Outside the region the result is exactly x_p (seamlessClone may touch a 1-px rim).
        return np.where(region[..., None], cloned, p)
