"""The face renderer: draws a :class:`FaceIdentity` in a :class:`FaceScene` as an RGB image.

Shapes are soft (linear coverage of an approximate signed distance over one pixel, i.e. anti-aliased)
and each part is evaluated only on the pixel window it can touch, so the renderer is plain vectorised
numpy with no per-pixel Python loops and works at any square size. Parts are painted back to front:
background, back hair, neck and clothes, ears, face, blush, nose, mouth, eyes, brows, shading, front hair.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ipmn_lightning.data.synthetic.identity import Color, FaceIdentity, FaceScene

__all__ = ["render_face"]


def _col(c: Color | tuple[float, ...], scale: float = 1.0) -> np.ndarray:
    return np.array([c[0] * scale, c[1] * scale, c[2] * scale], dtype=np.float32).reshape(3, 1, 1)


def _cov(sd: np.ndarray, aa: float) -> np.ndarray:
    """Coverage of a shape from its (approximate) signed distance: a one-pixel linear ramp."""
    a = 0.5 - sd * (1.0 / aa)
    np.clip(a, 0.0, 1.0, out=a)
    return a


class _Canvas:
    """An image plus the head's coordinate frame; parts are drawn on the pixel window they touch."""

    def __init__(self, size: int, scene: FaceScene) -> None:
        self.size = size
        self.px = 2.0 / size
        self.coords = ((np.arange(size, dtype=np.float32) + 0.5) * np.float32(self.px) - 1.0).astype(np.float32)
        self.img = np.empty((3, size, size), dtype=np.float32)
        self.cx, self.cy, self.s = scene.head_x, scene.head_y, scene.head_scale
        self.cos, self.sin = math.cos(scene.head_tilt), math.sin(scene.head_tilt)
        self.aa = self.px / self.s  # one pixel in head units

    def _pixel_range(self, lo: float, hi: float) -> tuple[int, int]:
        i0 = max(0, math.floor((lo + 1.0) / self.px) - 1)
        i1 = min(self.size, math.ceil((hi + 1.0) / self.px) + 1)
        return i0, i1

    def global_window(
        self, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """Pixel window of an image-space box and the (1, w) x and (h, 1) y coordinates on it."""
        j0, j1 = self._pixel_range(x0, x1)
        i0, i1 = self._pixel_range(y0, y1)
        if i0 >= i1 or j0 >= j1:
            return None
        return (slice(i0, i1), slice(j0, j1)), self.coords[None, j0:j1], self.coords[i0:i1, None]

    def head_window(
        self, u0: float, u1: float, v0: float, v1: float
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """Pixel window of a head-space box and the head coordinates (u, v) on it, each (h, w)."""
        xs, ys = [], []
        for u in (u0, u1):
            for v in (v0, v1):
                xs.append(self.cx + self.s * (u * self.cos - v * self.sin))
                ys.append(self.cy + self.s * (u * self.sin + v * self.cos))
        win = self.global_window(min(xs), max(xs), min(ys), max(ys))
        if win is None:
            return None
        sl, x, y = win
        inv = 1.0 / self.s
        dx = (x - self.cx) * inv
        dy = (y - self.cy) * inv
        u = dx * self.cos + dy * self.sin
        v = dy * self.cos - dx * self.sin
        return sl, u, v

    def paint(self, sl: tuple[slice, slice], alpha: np.ndarray, color: np.ndarray) -> None:
        view = self.img[:, sl[0], sl[1]]
        view += alpha * (color - view)


def _draw_background(cv: _Canvas, sc: FaceScene) -> None:
    x = cv.coords[None, :]
    y = cv.coords[:, None]
    ca, cb = math.cos(sc.bg_angle), math.sin(sc.bg_angle)
    t = (x * (0.5 * ca) + y * (0.5 * cb)) + 0.5  # (S, S) in [-0.2, 1.2]
    np.clip(t, 0.0, 1.0, out=t)
    a, b = _col(sc.bg_color_a), _col(sc.bg_color_b)
    np.multiply(t, b - a, out=cv.img)
    cv.img += a
    if sc.bg_pattern == "plain":
        return
    f = sc.pattern_freq
    pc, ps = math.cos(sc.pattern_angle), math.sin(sc.pattern_angle)
    if sc.bg_pattern == "stripes":
        p = np.sin((x * pc + y * ps) * f)
    elif sc.bg_pattern == "dots":
        p = np.sin((x * pc + y * ps) * f) * np.sin((y * pc - x * ps) * f) * 2.0 - 0.8
    elif sc.bg_pattern == "checks":
        p = np.sin((x * pc + y * ps) * (0.5 * f)) * np.sin((y * pc - x * ps) * (0.5 * f))
    else:  # rings around an off-centre point
        p = np.sin(np.sqrt((x - pc) ** 2 + (y - ps) ** 2) * f)
    # Sharpen the periodic field into soft-edged bands (about one pixel of transition per period).
    alpha = np.clip(p * (0.25 * cv.size / f) + 0.5, 0.0, 1.0) * sc.pattern_strength
    cv.paint((slice(None), slice(None)), alpha, _col(sc.pattern_color))


def _rounded_box_sd(u: np.ndarray, v: np.ndarray, hw: float, hh: float, r: float) -> np.ndarray:
    qx = np.abs(u) - (hw - r)
    qy = np.abs(v) - (hh - r)
    out = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    out += np.minimum(np.maximum(qx, qy), 0.0)
    out -= r
    return out


def _hair_texture(u: np.ndarray, v: np.ndarray, color: np.ndarray, light: tuple[float, float, float]) -> np.ndarray:
    """Hair colour per pixel: faint wavy strands plus the same directional light as the face."""
    lx, ly, k = light
    # Strands fan out from a point above the crown, with a gentle wave.
    fan = u / np.maximum(v + 1.7, 0.3)
    mult = 1.0 + 0.08 * np.sin(fan * 40.0 + np.sin(v * 6.0) * 1.5) + (0.6 * k) * (u * lx + v * ly)
    return color * mult


def _draw_hair_back(cv: _Canvas, ident: FaceIdentity, sc: FaceScene, light: tuple[float, float, float]) -> None:
    style = sc.hair_style
    w, h = ident.face_width, ident.face_height
    vol = sc.hair_volume
    color = _col(sc.hair_color, 0.85)  # the back of the hair is in the head's shadow
    if style in ("long", "bob"):
        bottom = sc.hair_length if style == "long" else 0.55 + 0.25 * vol
        hw = w * (1.18 + 0.2 * vol)
        top = -h * (1.06 + 0.12 * vol)
        cy, hh = 0.5 * (top + bottom), 0.5 * (bottom - top)
        win = cv.head_window(-hw - 0.2, hw + 0.2, top - 0.05, bottom + 0.05)
        if win is None:
            return
        sl, u, v = win
        # Long hair flares out a little towards the ends.
        flare = 1.0 + 0.15 * np.clip((v - 0.3) / max(bottom, 0.5), 0.0, 1.0) if style == "long" else 1.0
        sd = _rounded_box_sd(u / flare, v - cy, hw, hh, min(hw, hh) * 0.9 if style == "long" else hw * 0.95)
        cv.paint(sl, _cov(sd, cv.aa), _hair_texture(u, v, color, light))
    elif style == "curly":
        r0 = max(w, h) * (1.2 + 0.25 * vol)
        c = -0.15 * h
        win = cv.head_window(-r0 * 1.1, r0 * 1.1, c - r0 * 1.1, c + r0 * 1.1)
        if win is None:
            return
        sl, u, v = win
        dv = v - c
        r = np.sqrt(u * u + dv * dv)
        # Bumpy outline: a ring of curls.
        bump = 0.06 * r0 * np.abs(np.sin(np.arctan2(dv, u) * (7.0 + 2.0 * round(4 * vol))))
        sd = r - r0 * np.where(dv > 0.55 * h, 0.0, 1.0) - bump
        cv.paint(sl, _cov(sd, cv.aa), _hair_texture(u, v, color, light))
    elif style == "bun":
        rb = 0.32 + 0.1 * vol
        c = -h * 1.08 - rb * 0.55
        win = cv.head_window(-rb - 0.05, rb + 0.05, c - rb - 0.05, c + rb + 0.05)
        if win is None:
            return
        sl, u, v = win
        sd = np.sqrt(u * u + (v - c) ** 2) - rb
        cv.paint(sl, _cov(sd, cv.aa), _hair_texture(u, v, _col(sc.hair_color), light))


def _draw_neck_and_clothes(cv: _Canvas, ident: FaceIdentity, sc: FaceScene) -> None:
    s = cv.s
    nw = 0.4 * ident.face_width * s  # neck half-width in image units
    neck_x = sc.head_x + math.sin(sc.head_tilt) * 0.5 * s  # follow the head's roll a little
    shoulder_top = sc.head_y + 1.05 * s  # scene-only, so clothes survive a swap unchanged
    # Neck: a vertical band from the head centre to the bottom, in shadow under the jaw.
    win = cv.global_window(neck_x - nw - 0.05, neck_x + nw + 0.05, sc.head_y, 1.0)
    if win is not None:
        sl, x, y = win
        sd = np.maximum(np.abs(x - neck_x) - nw, sc.head_y - y)
        cv.paint(sl, _cov(sd, cv.px), _col(ident.skin, 0.82))
    # Shoulders: a wide ellipse, with the neckline cut out (so the neck shows through it).
    sw = sc.shoulder_width
    hh = 0.62
    cyb = shoulder_top + 0.08 + hh
    win = cv.global_window(-1.0, 1.0, shoulder_top, 1.0)
    if win is None:
        return
    sl, x, y = win
    dx = x - sc.head_x
    k = np.sqrt((dx * (1.0 / sw)) ** 2 + ((y - cyb) * (1.0 / hh)) ** 2)
    sd = (k - 1.0) * hh
    if sc.neckline == "round":
        cut = np.sqrt((x - neck_x) ** 2 + ((y - shoulder_top - 0.03) * 1.2) ** 2) - nw * 1.7
        sd = np.maximum(sd, -cut)
    elif sc.neckline == "v":
        depth = 0.22
        cut = np.maximum(np.abs(x - neck_x) * (depth / (nw * 1.6)) + (y - shoulder_top) - depth, shoulder_top - y)
        sd = np.maximum(sd, -cut * 0.7)
    else:  # turtleneck: the top also covers the lower neck
        collar = np.maximum(np.abs(x - neck_x) - nw * 1.12, shoulder_top - 0.1 - y)
        sd = np.minimum(sd, collar)
    alpha = _cov(sd, cv.px)
    # A soft fold shadow gives the clothes some volume.
    shade = 1.0 - 0.18 * np.clip(np.abs(dx) * (1.0 / sw), 0.0, 1.0) ** 2
    cv.paint(sl, alpha, _col(sc.clothes_color) * shade)


def _face_sd(u: np.ndarray, v: np.ndarray, ident: FaceIdentity) -> np.ndarray:
    w, h = ident.face_width, ident.face_height
    vn = v * (1.0 / h)
    a = w * (1.0 - ident.jaw * np.clip(vn, 0.0, 1.0) ** ident.chin)
    k = np.sqrt((u / a) ** 2 + vn * vn)
    return (k - 1.0) * (w * 0.9)


def _draw_ears(cv: _Canvas, ident: FaceIdentity, light: tuple[float, float, float]) -> None:
    w, es = ident.face_width, ident.ear_size
    ex, ey = w * 0.97, 0.02
    ew = es * 0.55
    win = cv.head_window(-ex - ew - 0.05, ex + ew + 0.05, ey - es - 0.05, ey + es + 0.05)
    if win is None:
        return
    sl, u, v = win
    du = np.abs(u) - ex
    dv = v - ey
    outer = np.sqrt((du * (1.0 / ew)) ** 2 + (dv * (1.0 / es)) ** 2)
    # The ear facing the light is brighter.
    lit = 0.93 + (0.8 * light[0] * light[2]) * np.where(u >= 0.0, np.float32(1.0), np.float32(-1.0))
    cv.paint(sl, _cov((outer - 1.0) * ew, cv.aa), _col(ident.skin) * lit)
    inner = np.sqrt(((du - ew * 0.15) * (1.0 / (ew * 0.5))) ** 2 + (dv * (1.0 / (es * 0.62))) ** 2)
    cv.paint(sl, _cov((inner - 1.0) * ew * 0.5, cv.aa * 2.0) * 0.6, _col(ident.skin, 0.72))


def _draw_eyes(cv: _Canvas, ident: FaceIdentity, sc: FaceScene) -> None:
    ex, ey, a = ident.eye_spacing, ident.eye_y, ident.eye_width
    b = a * ident.eye_height * sc.eyes_open
    win = cv.head_window(-ex - a - 0.06, ex + a + 0.06, ey - a - 0.06, ey + a * 0.8 + 0.05)
    if win is None:
        return
    sl, u, v = win
    aa = cv.aa
    sgn = np.where(u >= 0.0, np.float32(1.0), np.float32(-1.0))
    eu = np.abs(u) - ex  # mirrored: both eyes at once, outer corners at eu = +a
    ev = v - ey + ident.eye_tilt * eu  # positive tilt lifts the outer corners
    t = np.clip(1.0 - (eu * (1.0 / a)) ** 2, 0.0, 1.0)
    top = -b * np.sqrt(t)
    bot = (0.75 * b) * t
    sclera_sd = np.maximum(np.maximum(top - ev, ev - bot), np.abs(eu) - a)
    sclera = _cov(sclera_sd, aa)
    dark = _col(ident.brow_color, 0.6)
    if b > 0.25 * aa:
        cv.paint(sl, sclera, _col((0.97, 0.96, 0.94)))
        r = a * ident.iris_size
        ix = eu - sgn * (sc.gaze_x * 0.35 * a)
        iy = ev - sc.gaze_y * 0.25 * b
        d = np.sqrt(ix * ix + iy * iy)
        ring = np.clip(d * (1.0 / r), 0.0, 1.0)
        iris_rgb = _col(ident.iris_color) * (1.15 - 0.45 * ring * ring)
        cv.paint(sl, _cov(d - r, aa) * sclera, iris_rgb)
        cv.paint(sl, _cov(d - r * 0.45, aa) * sclera, _col((0.03, 0.03, 0.04)))
        # Catch-light: the same side of both eyes, so it is not mirrored.
        hx = ix + sgn * (0.35 * r)
        hy = iy + 0.35 * r
        cv.paint(sl, _cov(np.sqrt(hx * hx + hy * hy) - r * 0.2, aa) * sclera, _col((1.0, 1.0, 1.0)))
    # Upper lid / lash line, thicker towards the outer corner; a closed eye is just this line.
    lw = 0.012 + 0.012 * np.clip(eu * (1.0 / a) + 0.5, 0.0, 1.5)
    lid = np.maximum(np.abs(ev - top) - lw, np.abs(eu) - a * 1.05)
    cv.paint(sl, _cov(lid, aa), dark)
    # Lid crease above the eye.
    crease = np.maximum(np.abs(ev - (top * 1.1 - 0.045 - 0.25 * a * (1 - sc.eyes_open))) - 0.006, np.abs(eu) - a * 0.8)
    cv.paint(sl, _cov(crease, aa) * 0.35, _col(ident.skin, 0.6))


def _draw_brows(cv: _Canvas, ident: FaceIdentity, sc: FaceScene) -> None:
    bx = ident.eye_spacing + 0.15 * ident.eye_width
    by = ident.eye_y - ident.brow_gap - sc.brow_raise
    L, th = ident.brow_length, ident.brow_thickness
    win = cv.head_window(-bx - L - 0.05, bx + L + 0.05, by - 0.12 - L * 0.3, by + 0.1 + L * 0.3)
    if win is None:
        return
    sl, u, v = win
    bu = np.abs(u) - bx
    un = np.clip(bu * (1.0 / L), -1.0, 1.0)
    centre = by - ident.brow_arch * (1.0 - un * un) - ident.brow_tilt * bu
    thick = th * (1.0 - 0.55 * (un * 0.5 + 0.5))  # taper towards the outer end
    sd = np.maximum(np.abs(v - centre) - thick, np.abs(bu) - L)
    cv.paint(sl, _cov(sd, cv.aa) * 0.95, _col(ident.brow_color))


def _draw_nose(cv: _Canvas, ident: FaceIdentity, light: tuple[float, float, float]) -> None:
    nw, tip = ident.nose_width, ident.eye_y + ident.nose_length
    top = ident.eye_y + 0.05
    win = cv.head_window(-nw * 1.8, nw * 1.8, top, tip + nw * 0.8)
    if win is None:
        return
    sl, u, v = win
    aa = cv.aa
    skin = ident.skin
    lx = light[0]
    side = -1.0 if lx > 0 else 1.0  # the bridge's shadow falls away from the light
    # Bridge shadow: a soft band along one side, widening towards the tip.
    t = np.clip((v - top) * (1.0 / (tip - top)), 0.0, 1.0)
    bridge = np.maximum(np.abs(u - side * nw * (0.3 + 0.45 * t)) - 0.012 * (0.5 + t), np.maximum(top - v, v - tip))
    cv.paint(sl, _cov(bridge, aa * 3.0) * 0.4, _col(skin, 0.62))
    # Tip highlight.
    hl = np.sqrt((u * (1.0 / (0.55 * nw))) ** 2 + ((v - tip + 0.04) * (1.0 / (0.45 * nw))) ** 2) - 1.0
    cv.paint(sl, _cov(hl * 0.45 * nw, aa * 3.0) * 0.35, _col(skin, 1.1))
    # Underside contour: a shallow "U" under the tip.
    ring = np.sqrt(u * u + ((v - tip + 0.015) * 1.6) ** 2)
    contour = np.maximum(np.abs(ring - nw * 0.65) - 0.012, tip - 0.03 - v)
    cv.paint(sl, _cov(contour, aa) * 0.8, _col(skin, 0.5))
    # Nostrils.
    nu = np.abs(u) - nw * 0.5
    nv = v - tip - 0.012
    nostril = np.sqrt((nu * (1.0 / (0.3 * nw))) ** 2 + (nv * (1.0 / (0.2 * nw))) ** 2) - 1.0
    cv.paint(sl, _cov(nostril * 0.2 * nw, aa) * 0.9, _col(skin, 0.3))


def _draw_mouth(cv: _Canvas, ident: FaceIdentity, sc: FaceScene) -> None:
    mw, my = ident.mouth_width, ident.mouth_y
    lift = 0.09 * sc.smile
    gap = sc.mouth_open * 0.07
    win = cv.head_window(
        -mw - 0.05, mw + 0.05, my - abs(lift) - ident.upper_lip - 0.05, my + gap + ident.lower_lip + 0.08
    )
    if win is None:
        return
    sl, u, v = win
    aa = cv.aa
    un = u * (1.0 / mw)
    t = np.clip(1.0 - un * un, 0.0, 1.0)
    mid = my - lift * (un * un) + 0.3 * lift  # corners rise when smiling
    g = gap * t
    upper_edge = mid - g - ident.upper_lip * np.sqrt(t) * (1.0 - 0.25 * np.exp(-((un * 6.0) ** 2)))
    lower_edge = mid + g + ident.lower_lip * t**0.7
    lips = np.maximum(np.maximum(upper_edge - v, v - lower_edge), np.abs(u) - mw)
    lip_rgb = _col(ident.lip_color) * (1.0 + 0.12 * np.clip((v - mid) * (1.0 / max(ident.lower_lip, 1e-3)), -1, 1))
    cv.paint(sl, _cov(lips, aa), lip_rgb)
    if gap > 0:
        inner = np.maximum(np.maximum(mid - g - v, v - mid - g), np.abs(u) - mw * 0.92)
        inside = _cov(inner, aa)
        cv.paint(sl, inside, _col((0.30, 0.06, 0.08)))
        teeth = np.maximum(v - (mid - g + 0.045), -1.0)
        cv.paint(sl, _cov(teeth, aa) * inside, _col((0.96, 0.95, 0.9)))
    # The line between the lips keeps the mouth readable at small sizes.
    line = np.maximum(np.abs(v - mid + g) - 0.008 - 0.004 * t, np.abs(u) - mw * 1.02)
    cv.paint(sl, _cov(line, aa) * 0.8, _col(ident.lip_color, 0.45))


def _draw_blush(cv: _Canvas, ident: FaceIdentity) -> None:
    if ident.blush <= 0:
        return
    cx, cyy = ident.eye_spacing + 0.05, ident.eye_y + ident.nose_length * 0.85
    rx, ry = 0.16, 0.09
    win = cv.head_window(-cx - rx, cx + rx, cyy - ry, cyy + ry)
    if win is None:
        return
    sl, u, v = win
    k = ((np.abs(u) - cx) * (1.0 / rx)) ** 2 + ((v - cyy) * (1.0 / ry)) ** 2
    cv.paint(sl, np.clip(1.0 - k, 0.0, 1.0) * ident.blush, _col((0.95, 0.35, 0.40)))


def _draw_hair_front(cv: _Canvas, ident: FaceIdentity, sc: FaceScene, light: tuple[float, float, float]) -> None:
    style = sc.hair_style
    if style == "bald":
        return
    w, h = ident.face_width, ident.face_height
    vol = sc.hair_volume
    if style == "buzz":
        ew, eh, ec = w * 1.02, h * 1.02, 0.0
    elif style == "curly":
        ew, eh, ec = w * (1.15 + 0.2 * vol), h * (1.08 + 0.15 * vol), -0.1 * h
    else:
        ew, eh, ec = w * (1.06 + 0.14 * vol), h * (1.0 + 0.14 * vol), -0.06 * h
    spiky = style == "spiky"
    top = ec - eh - (0.22 if spiky else 0.0)
    bottom = {"long": 0.85, "bob": 0.55, "fringe": 0.3}.get(style, 0.15) * h
    win = cv.head_window(-ew - 0.05, ew + 0.05, top - 0.05, bottom + 0.05)
    if win is None:
        return
    sl, u, v = win
    aa = cv.aa
    un = u * (1.0 / w)
    dv = v - ec
    if spiky:
        saw = np.abs(((u * 7.0 + 0.5) % 1.0) - 0.5) * 2.0  # 0 at spike tips, 1 between them
        dv = dv + np.where(dv < -0.3 * eh, 0.22 * (1.0 - saw) * np.clip(-dv / eh, 0, 1), 0.0)
    k = np.sqrt((u * (1.0 / ew)) ** 2 + (dv * (1.0 / eh)) ** 2)
    env = (k - 1.0) * (ew * 0.9)
    env = np.maximum(env, v - bottom)
    hl = -h * sc.hairline
    part = sc.hair_part * 0.5 * w
    if style == "fringe":
        # Straight-cut bangs with a slightly jagged edge, then straight down the sides.
        edge = -0.3 * h + 0.02 * np.sin(u * 40.0) + 0.9 * h * np.clip(np.abs(un) - 0.72, 0.0, 1.0) * 4.0
    elif style in ("long", "bob"):
        # Curtains parted at `part`, falling past the cheeks.
        pu = (u - part) * (1.0 / w)
        edge = hl + 0.5 * h * pu * pu + 0.6 * h * np.clip(np.abs(un) - 0.8, 0.0, 1.0) * 6.0
    else:
        # Hairline receding towards the temples, then sideburns down to the ears.
        edge = hl + 0.2 * h * np.abs((u - part) * (1.0 / w)) + 0.5 * h * np.clip(np.abs(un) - 0.7, 0.0, 1.0) * 3.0
    sd = np.maximum(env, v - edge)
    alpha = _cov(sd, aa)
    if style == "buzz":
        alpha *= 0.8
    cv.paint(sl, alpha, _hair_texture(u, v, _col(sc.hair_color), light))
    if style in ("fringe", "long", "bob", "short"):
        # A parting line makes the hair read as hair rather than a hat.
        pl = np.maximum(np.abs(u - part - 0.1 * (v - top)) - 0.01, v - (top + 0.45 * eh))
        cv.paint(sl, _cov(pl, aa) * alpha * 0.5, _col(sc.hair_color, 0.55))


def _shade_head(cv: _Canvas, ident: FaceIdentity, light: tuple[float, float, float]) -> None:
    """Directional light across the face, plus a darker rim towards the face outline."""
    w, h = ident.face_width, ident.face_height
    win = cv.head_window(-w, w, -h, h)
    if win is None:
        return
    sl, u, v = win
    lx, ly, k = light
    sd = _face_sd(u, v, ident)
    mask = _cov(sd, cv.aa)
    shade = 1.0 + k * (u * (lx / w) + v * (ly / h)) - 0.22 * np.clip(sd * (1.0 / (0.25 * w)) + 1.0, 0.0, 1.0) ** 2
    view = cv.img[:, sl[0], sl[1]]
    view *= 1.0 + mask * (shade - 1.0)


def render_face(identity: FaceIdentity, scene: FaceScene, image_size: int) -> torch.Tensor:
    """Draw one face.

    Args:
        identity: who the person is.
        scene: background, hair, pose, lighting, expression and clothes.
        image_size: side length S of the square image, in pixels (>= 8).

    Returns:
        The image, ``(3, S, S)`` float32 in [0, 1]. Bit-identical for identical arguments.

    Raises:
        ValueError: if ``image_size`` is smaller than 8.
    """
    if int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    image_size = int(image_size)
    cv = _Canvas(image_size, scene)
    la = scene.light_angle - scene.head_tilt  # light direction in head coordinates
    light = (math.cos(la), math.sin(la), scene.light_strength)
    _draw_background(cv, scene)
    _draw_hair_back(cv, identity, scene, light)
    _draw_neck_and_clothes(cv, identity, scene)
    _draw_ears(cv, identity, light)
    w, h = identity.face_width, identity.face_height
    win = cv.head_window(-w, w, -h, h)
    if win is not None:
        sl, u, v = win
        cv.paint(sl, _cov(_face_sd(u, v, identity), cv.aa), _col(identity.skin))
    _draw_blush(cv, identity)
    _draw_nose(cv, identity, light)
    _draw_mouth(cv, identity, scene)
    _draw_eyes(cv, identity, scene)
    _draw_brows(cv, identity, scene)
    _shade_head(cv, identity, light)
    _draw_hair_front(cv, identity, scene, light)
    np.clip(cv.img, 0.0, 1.0, out=cv.img)
    return torch.from_numpy(cv.img)
