"""Procedurally generated cartoon faces: the library's default, file-free data source.

Every image is drawn analytically on a coordinate grid from two parameter sets:

* :class:`FaceIdentity` — who the person is (face shape, skin tone, eyes, brows, nose, mouth, ears).
* :class:`FaceScene` — everything else (background, hair, head pose, lighting, expression, clothes).

Hair belongs to the scene, so a face swap ``render_face(id_b, scene_a)`` keeps the target's hair,
pose, lighting and background and changes only the face, like DiffFace's target-preserving blending.
:class:`SyntheticFaceSwapDataset` turns this into (protected, replacement, mask) triplets that are a
deterministic function of ``(seed, split, index)``.

Shapes are soft (linear coverage of an approximate signed distance over one pixel, i.e. anti-aliased)
and each part is evaluated only on the pixel window it can touch, so the renderer is plain vectorised
numpy with no per-pixel Python loops and works at any square size.

Modules: :mod:`~ipmn_lightning.data.synthetic.identity` (the parameter sets, palettes and sampling),
:mod:`~ipmn_lightning.data.synthetic.render` (the renderer, :func:`render_face`) and
:mod:`~ipmn_lightning.data.synthetic.dataset` (:class:`SyntheticFaceSwapDataset`).
"""

from ipmn_lightning.data.synthetic.dataset import SyntheticFaceSwapDataset
from ipmn_lightning.data.synthetic.identity import (
    BACKGROUND_PATTERNS,
    HAIR_STYLES,
    NECKLINES,
    SPLIT_CODES,
    FaceIdentity,
    FaceScene,
    sample_identity,
    sample_scene,
    sample_triplet_params,
)
from ipmn_lightning.data.synthetic.render import render_face

__all__ = [
    "BACKGROUND_PATTERNS",
    "HAIR_STYLES",
    "NECKLINES",
    "SPLIT_CODES",
    "FaceIdentity",
    "FaceScene",
    "SyntheticFaceSwapDataset",
    "render_face",
    "sample_identity",
    "sample_scene",
    "sample_triplet_params",
]
