"""The geometry and colour helpers of the landmark-based generators (NumPy and OpenCV, imported on use).

A similarity fit (Umeyama), Delaunay triangles and dense piecewise-affine maps for ``cv2.remap``, the face
region (the landmark hull), and the colour matching and masked blur of the ``landmark`` swap. Images are
``(H, W, 3)`` uint8 RGB, landmarks ``(68, 2)`` pixel coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["face_region", "umeyama"]


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
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
