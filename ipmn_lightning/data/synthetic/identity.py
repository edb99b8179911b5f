"""Who is in a synthetic face image and what surrounds them: the parameter sets and how they are drawn.

:class:`FaceIdentity` holds what a face swap must change (face shape, skin tone, eyes, brows, nose,
mouth, ears), :class:`FaceScene` everything it must keep (background, hair, head pose, lighting,
expression, clothes). :func:`sample_identity` and :func:`sample_scene` draw them from a numpy
generator over fixed palettes; :func:`sample_triplet_params` derives one dataset sample's four parameter
sets from ``(seed, split, index)`` alone.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "BACKGROUND_PATTERNS",
    "HAIR_STYLES",
    "NECKLINES",
    "SPLIT_CODES",
    "Color",
    "FaceIdentity",
    "FaceScene",
    "sample_identity",
    "sample_scene",
    "sample_triplet_params",
]

Color = tuple[float, float, float]

#: Stream code of each split in ``numpy.random.default_rng([seed, code, index])``.
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
HAIR_STYLES: tuple[str, ...] = ("short", "long", "bob", "buzz", "bald", "curly", "bun", "spiky", "fringe")
BACKGROUND_PATTERNS: tuple[str, ...] = ("plain", "stripes", "dots", "checks", "rings")
NECKLINES: tuple[str, ...] = ("round", "v", "turtleneck")

# Anchor skin tones from very light to very dark (sRGB in [0, 1]); identities interpolate between them.
_SKIN_TONES = np.array(
    [
        (1.00, 0.87, 0.77),
        (0.96, 0.80, 0.68),
        (0.91, 0.72, 0.58),
        (0.83, 0.62, 0.47),
        (0.72, 0.51, 0.36),
        (0.60, 0.40, 0.27),
        (0.47, 0.31, 0.20),
        (0.36, 0.23, 0.15),
    ]
)
_IRIS_COLORS = (
    (0.36, 0.22, 0.11),  # brown
    (0.20, 0.12, 0.06),  # dark brown
    (0.47, 0.38, 0.17),  # hazel
    (0.24, 0.48, 0.30),  # green
    (0.23, 0.43, 0.74),  # blue
    (0.46, 0.53, 0.60),  # grey
    (0.55, 0.36, 0.10),  # amber
)
_BROW_COLORS = (
    (0.08, 0.06, 0.05),
    (0.18, 0.11, 0.07),
    (0.33, 0.21, 0.12),
    (0.55, 0.40, 0.22),
    (0.45, 0.20, 0.10),
    (0.45, 0.45, 0.45),
)
_HAIR_COLORS = (
    (0.07, 0.06, 0.06),  # black
    (0.20, 0.13, 0.08),  # dark brown
    (0.38, 0.25, 0.14),  # brown
    (0.50, 0.21, 0.10),  # auburn
    (0.78, 0.42, 0.16),  # ginger
    (0.86, 0.71, 0.42),  # blond
    (0.92, 0.88, 0.78),  # platinum
    (0.62, 0.62, 0.64),  # grey
    (0.92, 0.42, 0.68),  # dyed pink
    (0.25, 0.45, 0.88),  # dyed blue
    (0.30, 0.72, 0.48),  # dyed green
    (0.52, 0.30, 0.78),  # dyed purple
)
# Natural colours are drawn more often than dyed ones.
_HAIR_WEIGHTS = np.array([5, 5, 5, 3, 2, 4, 1.5, 2, 1, 1, 1, 1], dtype=np.float64)
_HAIR_WEIGHTS /= _HAIR_WEIGHTS.sum()
_HAIR_STYLE_WEIGHTS = np.array([4, 4, 3, 1.5, 1, 2, 1.5, 1.5, 2], dtype=np.float64)
_HAIR_STYLE_WEIGHTS /= _HAIR_STYLE_WEIGHTS.sum()


@dataclass(frozen=True)
class FaceIdentity:
    """Who the person is: every parameter that a face swap must change.

    Lengths are in head units, where the face's half-height is about 1 and the head's centre is the
    origin (``u`` to the right, ``v`` downwards). Colours are sRGB triples in [0, 1].

    Attributes:
        skin: skin colour.
        face_width: half-width of the face.
        face_height: half-height of the face.
        jaw: how much the lower face narrows towards the chin (0 = oval).
        chin: exponent of that narrowing (< 1 gives a square jaw, > 1 a pointed chin).
        ear_size: half-height of the ears.
        eye_y: vertical position of the eye centres.
        eye_spacing: half the distance between the eye centres.
        eye_width: half-width of an eye.
        eye_height: eye height as a fraction of its width, fully open.
        eye_tilt: slope of the eye axis (positive: outer corners up).
        iris_color: iris colour.
        iris_size: iris radius as a fraction of the eye's half-width.
        brow_color: eyebrow (and lash line) colour.
        brow_gap: distance from the eye centre up to the brow.
        brow_length: half-length of a brow.
        brow_thickness: half-thickness of a brow at its inner end.
        brow_arch: height of the brow's arch.
        brow_tilt: slope of the brow (positive: outer end up).
        nose_length: distance from the eye line down to the nose tip.
        nose_width: half-width of the nose at the nostrils.
        mouth_y: vertical position of the mouth line.
        mouth_width: half-width of the mouth.
        lip_color: lip colour.
        upper_lip: thickness of the upper lip.
        lower_lip: thickness of the lower lip.
        blush: strength of the cheek blush in [0, 1].
    """

    skin: Color
    face_width: float
    face_height: float
    jaw: float
    chin: float
    ear_size: float
    eye_y: float
    eye_spacing: float
    eye_width: float
    eye_height: float
    eye_tilt: float
    iris_color: Color
    iris_size: float
    brow_color: Color
    brow_gap: float
    brow_length: float
    brow_thickness: float
    brow_arch: float
    brow_tilt: float
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    lip_color: Color
    upper_lip: float
    lower_lip: float
    blush: float


@dataclass(frozen=True)
class FaceScene:
    """Everything about an image except the identity; a face swap keeps all of it.

    Positions are in image units (``x`` and ``y`` in [-1, 1], ``y`` downwards); colours are sRGB
    triples in [0, 1].

    Attributes:
        bg_color_a: background colour at one end of the gradient.
        bg_color_b: background colour at the other end.
        bg_angle: direction of the background gradient, radians.
        bg_pattern: one of :data:`BACKGROUND_PATTERNS`.
        pattern_color: colour of the pattern.
        pattern_freq: angular frequency of the pattern, radians per image unit.
        pattern_angle: orientation of the pattern, radians.
        pattern_strength: opacity of the pattern in [0, 1].
        hair_color: hair colour.
        hair_style: one of :data:`HAIR_STYLES`.
        hair_volume: how far the hair stands out from the head, in [0, 1].
        hair_length: how far long styles fall below the chin, head units.
        hairline: height of the hairline above the head centre, head units.
        hair_part: horizontal position of the parting in [-1, 1].
        head_x: horizontal position of the head centre.
        head_y: vertical position of the head centre.
        head_scale: face half-height in image units (1.0 would span the whole image).
        head_tilt: roll of the head, radians.
        light_angle: direction the light comes from, radians (0 = from the right).
        light_strength: contrast of the shading across the face, in [0, 1).
        smile: mouth curvature (negative: frown).
        mouth_open: how far the mouth opens, in [0, 1].
        eyes_open: eyelid opening in [0, 1] (0 = closed).
        gaze_x: horizontal gaze in [-1, 1].
        gaze_y: vertical gaze in [-1, 1].
        brow_raise: how far the brows are raised, head units.
        clothes_color: colour of the top.
        neckline: one of :data:`NECKLINES`.
        shoulder_width: half-width of the shoulders in image units.
    """

    bg_color_a: Color
    bg_color_b: Color
    bg_angle: float
    bg_pattern: str
    pattern_color: Color
    pattern_freq: float
    pattern_angle: float
    pattern_strength: float
    hair_color: Color
    hair_style: str
    hair_volume: float
    hair_length: float
    hairline: float
    hair_part: float
    head_x: float
    head_y: float
    head_scale: float
    head_tilt: float
    light_angle: float
    light_strength: float
    smile: float
    mouth_open: float
    eyes_open: float
    gaze_x: float
    gaze_y: float
    brow_raise: float
    clothes_color: Color
    neckline: str
    shoulder_width: float


# ---------------------------------------------------------------------------------------------------
# Sampling


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _jitter(rng: np.random.Generator, color: Color | np.ndarray, amount: float) -> Color:
    c = np.clip(np.asarray(color, dtype=np.float64) + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (float(r), float(g), float(b))


def _mix(a: Color, b: Color, t: float) -> Color:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
    """Draw a random identity.

    Args:
        rng: the generator to draw from; the result is a deterministic function of its state.

    Returns:
        A new :class:`FaceIdentity`.
    """
    t = _u(rng, 0.0, len(_SKIN_TONES) - 1.0)
    k = min(int(t), len(_SKIN_TONES) - 2)
    base = _SKIN_TONES[k] + (_SKIN_TONES[k + 1] - _SKIN_TONES[k]) * (t - k)
    skin = _jitter(rng, base, 0.025)
    darkness = t / (len(_SKIN_TONES) - 1.0)
    iris = _jitter(rng, _IRIS_COLORS[int(rng.integers(len(_IRIS_COLORS)))], 0.04)
    brow = _jitter(rng, _BROW_COLORS[int(rng.integers(len(_BROW_COLORS)))], 0.03)
    if darkness > 0.5:
        # Dark skin with very light brows reads as a missing brow.
        brow = _mix(brow, (0.06, 0.05, 0.04), 0.6)
    if rng.random() < 0.15:
        lip = _jitter(rng, ((0.72, 0.08, 0.16), (0.55, 0.12, 0.35), (0.85, 0.35, 0.40))[int(rng.integers(3))], 0.05)
    else:
        lip = _mix(
            (skin[0] * 0.8, skin[1] * 0.62, skin[2] * 0.62),
            (0.70, 0.28, 0.30),
            _u(rng, 0.25, 0.55) * (1 - darkness * 0.5),
        )
    eye_width = _u(rng, 0.13, 0.18)
    return FaceIdentity(
        skin=skin,
        face_width=_u(rng, 0.68, 0.84),
        face_height=_u(rng, 0.94, 1.06),
        jaw=_u(rng, 0.12, 0.38),
        chin=_u(rng, 0.7, 1.8),
        ear_size=_u(rng, 0.13, 0.19),
        eye_y=_u(rng, -0.14, -0.02),
        eye_spacing=_u(rng, 0.27, 0.35),
        eye_width=eye_width,
        eye_height=_u(rng, 0.45, 0.75),
        eye_tilt=_u(rng, -0.12, 0.22),
        iris_color=iris,
        iris_size=_u(rng, 0.42, 0.58),
        brow_color=brow,
        brow_gap=_u(rng, 0.15, 0.22),
        brow_length=eye_width * _u(rng, 1.0, 1.35),
        brow_thickness=_u(rng, 0.022, 0.045),
        brow_arch=_u(rng, -0.01, 0.06),
        brow_tilt=_u(rng, -0.25, 0.2),
        nose_length=_u(rng, 0.24, 0.36),
        nose_width=_u(rng, 0.07, 0.12),
        mouth_y=_u(rng, 0.5, 0.62),
        mouth_width=_u(rng, 0.17, 0.27),
        lip_color=lip,
        upper_lip=_u(rng, 0.03, 0.055),
        lower_lip=_u(rng, 0.04, 0.075),
        blush=_u(rng, 0.0, 0.35) if rng.random() < 0.6 else 0.0,
    )


def sample_scene(rng: np.random.Generator) -> FaceScene:
    """Draw a random scene (background, hair, pose, lighting, expression, clothes).

    Args:
        rng: the generator to draw from; the result is a deterministic function of its state.

    Returns:
        A new :class:`FaceScene`.
    """
    hue = _u(rng, 0.0, 1.0)
    bg_a = _hsv(hue, _u(rng, 0.1, 0.65), _u(rng, 0.45, 0.98))
    bg_b = _hsv(hue + _u(rng, -0.2, 0.2), _u(rng, 0.1, 0.7), _u(rng, 0.3, 0.9))
    pattern = BACKGROUND_PATTERNS[int(rng.integers(len(BACKGROUND_PATTERNS)))]
    pattern_color = _hsv(_u(rng, 0.0, 1.0), _u(rng, 0.1, 0.6), _u(rng, 0.5, 1.0))
    hair_color = _jitter(rng, _HAIR_COLORS[int(rng.choice(len(_HAIR_COLORS), p=_HAIR_WEIGHTS))], 0.04)
    style = HAIR_STYLES[int(rng.choice(len(HAIR_STYLES), p=_HAIR_STYLE_WEIGHTS))]
    smile = _u(rng, -0.3, 1.0)
    mouth_open = _u(rng, 0.2, 1.0) if smile > 0.4 and rng.random() < 0.35 else 0.0
    eyes_open = _u(rng, 0.0, 0.15) if rng.random() < 0.06 else _u(rng, 0.55, 1.0) - 0.15 * max(smile, 0.0)
    return FaceScene(
        bg_color_a=bg_a,
        bg_color_b=bg_b,
        bg_angle=_u(rng, 0.0, 2 * math.pi),
        bg_pattern=pattern,
        pattern_color=pattern_color,
        pattern_freq=_u(rng, 8.0, 30.0),
        pattern_angle=_u(rng, 0.0, math.pi),
        pattern_strength=_u(rng, 0.1, 0.35),
        hair_color=hair_color,
        hair_style=style,
        hair_volume=_u(rng, 0.0, 1.0),
        hair_length=_u(rng, 1.4, 2.3),
        hairline=_u(rng, 0.52, 0.72),
        hair_part=_u(rng, -0.5, 0.5),
        head_x=_u(rng, -0.06, 0.06),
        head_y=_u(rng, -0.12, -0.02),
        head_scale=_u(rng, 0.5, 0.6),
        head_tilt=_u(rng, -0.12, 0.12),
        light_angle=_u(rng, -math.pi, math.pi),
        light_strength=_u(rng, 0.08, 0.4),
        smile=smile,
        mouth_open=mouth_open,
        eyes_open=eyes_open,
        gaze_x=_u(rng, -1.0, 1.0),
        gaze_y=_u(rng, -0.6, 0.6),
        brow_raise=_u(rng, -0.02, 0.05),
        clothes_color=_hsv(_u(rng, 0.0, 1.0), _u(rng, 0.15, 0.9), _u(rng, 0.2, 0.9)),
        neckline=NECKLINES[int(rng.integers(len(NECKLINES)))],
        shoulder_width=_u(rng, 0.72, 0.95),
    )


def sample_triplet_params(
    seed: int, split: Literal["train", "val", "test"], index: int
) -> tuple[FaceIdentity, FaceScene, FaceIdentity, FaceScene]:
    """Parameters of triplet ``index`` of :class:`SyntheticFaceSwapDataset`.

    Args:
        seed: the dataset seed (>= 0).
        split: ``"train"``, ``"val"`` or ``"test"``; each has its own random stream.
        index: the sample index (>= 0).

    Returns:
        ``(id_a, scene_a, id_b, scene_b)`` with ``id_b != id_a``: the protected face is
        ``render_face(id_a, scene_a)``, the replacement ``render_face(id_b, scene_b)`` and the mask
        ``render_face(id_b, scene_a)``.

    Raises:
        ValueError: if ``split`` is unknown or ``seed``/``index`` is negative.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])
    id_a = sample_identity(rng)
    scene_a = sample_scene(rng)
    id_b = sample_identity(rng)
    while id_b == id_a:  # practically never: continuous parameters
        id_b = sample_identity(rng)
    scene_b = sample_scene(rng)
    return id_a, scene_a, id_b, scene_b
