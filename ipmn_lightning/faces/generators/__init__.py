"""Mask generators x_m = MG(x_p, x_r), and ``landmark``: an offline, deterministic face swap on a CPU.

Roles follow DiffFace (methods §4.2): the replacement face x_r gives the identity, the protected face
x_p everything else (scene, pose, expression, hair, background). A generator works on a batch, so a GPU
backend (the DiffFace port) can implement the same :class:`MaskGenerator` interface and run in
Lightning's predict loop; ``ipmn masks generate`` only needs :meth:`MaskGenerator.generate`.

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

The ``mosaic`` backend (:class:`MosaicMaskGenerator`, :func:`mosaic`) is the privacy baseline of You et
al. (paper ref. [36], Table 11): x_m = x_p with its face region pixelated, x_r ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ipmn_lightning.faces.analysis import FaceAnalyzer, require_faces_extra, to_uint8_array

__all__ = [
    "GENERATORS",
    "MOSAIC_BLOCK",
    "MOSAIC_DILATE",
    "LandmarkMaskGenerator",
    "MaskGenerator",
    "MaskOutcome",
    "MosaicMaskGenerator",
    "face_region",
    "make_mask_generator",
    "mosaic",
    "mosaic_block_size",
    "pixelate",
]

#: Names accepted by :func:`make_mask_generator` (and ``ipmn masks generate --generator``).
GENERATORS: tuple[str, ...] = ("landmark", "mosaic")

_INNER = slice(17, 68)  # brows, nose, eyes, mouth
_JAW = slice(0, 17)


@dataclass
class MaskOutcome:
    """One pair's result.

    Attributes:
        mask: x_m ``(3, H, W)`` float in [0, 1], or None when it failed.
        reason: why it failed (``"no face found in the protected image"``, ...), None on success.
        protected_found: a face was found in x_p (None if not looked at).
        replacement_found: a face was found in x_r (None if not looked at).
    """

    mask: Tensor | None
    reason: str | None = None
    protected_found: bool | None = None
    replacement_found: bool | None = None


class MaskGenerator(ABC):
    """x_m = MG(x_p, x_r): x_p's scene with x_r's identity."""

    #: The ``--generator`` name.
    name: str = ""

    @abstractmethod
    def generate(
        self,
        protected: Tensor,
        replacement: Tensor,
        protected_landmarks: Sequence[np.ndarray | None] | None = None,
        replacement_landmarks: Sequence[np.ndarray | None] | None = None,
    ) -> list[MaskOutcome]:
        """Make the masks of a batch of pairs.

        Args:
            protected: x_p ``(B, 3, H, W)`` float in [0, 1].
            replacement: x_r ``(B, 3, H', W')`` float in [0, 1].
            protected_landmarks: precomputed ``(68, 2)`` landmarks of each x_p (None entries: no face),
                for generators that use them; others ignore them.
            replacement_landmarks: the same for x_r.

        Returns:
            One outcome per pair; a failed pair never falls back to a copy of x_p.
        """

    def __call__(self, protected: Tensor, replacement: Tensor) -> Tensor:
        """x_m for a batch, raising if any pair fails.

        Args:
            protected: x_p ``(B, 3, H, W)`` float in [0, 1].
            replacement: x_r ``(B, 3, H', W')`` float in [0, 1].

        Returns:
            x_m ``(B, 3, H, W)`` float in [0, 1].

        Raises:
            ValueError: a pair failed (e.g. no face found), naming its index and the reason.
        """
        outcomes = self.generate(protected, replacement)
        bad = [f"pair {i}: {o.reason}" for i, o in enumerate(outcomes) if o.mask is None]
        if bad:
            raise ValueError(f"{type(self).__name__} failed on {len(bad)} pair(s): {'; '.join(bad)}")
        return torch.stack([o.mask for o in outcomes])  # type: ignore[misc]

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks this generator would use for an ``(H, W, 3)`` uint8 image (None: no face).

        ``ipmn masks generate`` calls it once per image to re-pair faces that are not found; a
        generator that needs no landmarks returns an empty array for every image.
        """
        return np.zeros((0, 2))


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` to ``dst``: (2, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rot = u @ d @ vt
    var_s = (s0**2).sum() / len(src)
    scale = np.trace(np.diag(sig) @ d) / max(var_s, 1e-12)
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _invert(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :2])
    return np.concatenate([a, -(a @ m[:, 2])[:, None]], axis=1)


def _border_points(w: int, h: int) -> np.ndarray:
    xs, ys = [0.0, (w - 1) / 2, w - 1.0], [0.0, (h - 1) / 2, h - 1.0]
    return np.array([(x, y) for x in xs for y in ys if not (x == xs[1] and y == ys[1])])


def _delaunay(points: np.ndarray, w: int, h: int) -> np.ndarray:
    """Triangles (T, 3) of point indices; points must lie in the image rectangle (after clipping)."""
    import cv2

    sub = cv2.Subdiv2D((-1, -1, w + 2, h + 2))
    lookup: dict[tuple[float, float], int] = {}
    for i, (x, y) in enumerate(points):
        key = (float(np.float32(x)), float(np.float32(y)))
        if key in lookup:
            continue
        lookup[key] = i
        sub.insert(key)
    tris = []
    for t in sub.getTriangleList():
        ids = [lookup.get((float(np.float32(t[k])), float(np.float32(t[k + 1])))) for k in (0, 2, 4)]
        if None not in ids:
            tris.append(ids)
    return np.array(tris, dtype=np.int64).reshape(-1, 3)


def _piecewise_affine_maps(
    dst_pts: np.ndarray, src_pts: np.ndarray, tris: np.ndarray, fallback: np.ndarray, w: int, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dense backward maps (for ``cv2.remap``) taking each target pixel to its source position."""
    import cv2

    index = np.zeros((h, w), dtype=np.int32)  # 0: no triangle -> fallback similarity
    affines = [fallback]
    for k, tri in enumerate(tris):
        d, s = dst_pts[tri].astype(np.float32), src_pts[tri].astype(np.float32)
        e1, e2 = d[1] - d[0], d[2] - d[0]
        if abs(float(e1[0] * e2[1] - e1[1] * e2[0])) < 1e-6:
            continue
        affines.append(cv2.getAffineTransform(d, s).astype(np.float64))
        cv2.fillConvexPoly(index, np.round(d).astype(np.int32), len(affines) - 1)
        del k
    a = np.stack(affines)[index]  # (h, w, 2, 3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    map_x = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
    map_y = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def face_region(landmarks: Sequence[np.ndarray], height: int, width: int, dilate: float = 0.0) -> np.ndarray:
    """The face region: the convex hull of one or more 68-point landmark sets (brows to chin).

    Args:
        landmarks: ``(68, 2)`` arrays in pixel coordinates; their points are pooled.
        height: image height.
        width: image width.
        dilate: grow the hull by this fraction of its width (0: the hull itself).

    Returns:
        ``(H, W)`` bool.
    """
    import cv2

    pts = np.concatenate([np.asarray(p, dtype=np.float64) for p in landmarks])
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    region = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(region, hull, 1)
    if dilate > 0:
        r = max(1, round(dilate * (pts[:, 0].max() - pts[:, 0].min())))
        region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return region.astype(bool)


def _is_grey(image: np.ndarray, tol: float = 4.0) -> bool:
    """Whether an ``(H, W, 3)`` uint8 image is (nearly) black and white."""
    f = image.astype(np.int16)
    return float(np.abs(f - f.mean(axis=2, keepdims=True)).mean()) < tol


def _match_lab(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Give ``source`` the per-channel mean and spread of ``target`` in CIELAB inside ``region`` (Reinhard)."""
    import cv2

    s = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    t = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    sr, tr = s[region], t[region]
    if len(sr) < 2:
        return source
    # Bounded spreads: a washed-out or noisy x_r would otherwise get its colour noise amplified into rainbow
    # blotches (chroma) or its shading flattened (lightness).
    scale = np.clip(tr.std(0) / np.maximum(sr.std(0), 1.0), [0.5, 0.5, 0.5], [2.0, 1.25, 1.25])
    out = (s - sr.mean(0)) * scale + tr.mean(0)
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _masked_blur(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    num = cv2.GaussianBlur(image * weight[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(weight, (0, 0), sigma)[..., None]
    return num / np.maximum(den, 1e-6)


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
        sim = _umeyama(lr[_INNER], lp[_INNER])
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


def make_mask_generator(name: str = "landmark", **kwargs: object) -> MaskGenerator:
    """Build a generator by its ``--generator`` name.

    Args:
        name: one of :data:`GENERATORS`.
        **kwargs: the generator's constructor arguments.

    Raises:
        ValueError: an unknown name.
    """
    if name == "landmark":
        return LandmarkMaskGenerator(**kwargs)  # type: ignore[arg-type]
    if name == "mosaic":
        return MosaicMaskGenerator(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown mask generator {name!r}; choose one of {list(GENERATORS)}")
