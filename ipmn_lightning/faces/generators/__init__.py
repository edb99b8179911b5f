"""Mask generators x_m = MG(x_p, x_r) and their registry, :data:`GENERATORS` (name -> ``"module:Class"``).

* :mod:`~ipmn_lightning.faces.generators.base`: :class:`MaskGenerator` (the interface) and :class:`MaskOutcome`.
* :mod:`~ipmn_lightning.faces.generators.geometry`: the similarity fit, triangle warps, the face region and the
  colour helpers of the landmark-based generators.
* :mod:`~ipmn_lightning.faces.generators.landmark`: ``landmark``, an offline, deterministic face swap on a CPU.
* :mod:`~ipmn_lightning.faces.generators.mosaic`: ``mosaic``, You et al.'s pixelation baseline (Table 11).
* ``diffface``: the DiffFace port, which lives in its wing (:mod:`ipmn_lightning.diffface`) and is registered here
  by its path only.

A new generator is a :class:`MaskGenerator` subclass with its ``name`` in its own module and one line in
:data:`GENERATORS`; ``ipmn masks generate --generator NAME``, the pipeline's masks step and
:func:`make_mask_generator` then find it.
"""

from __future__ import annotations

import importlib
from typing import Any

from ipmn_lightning.faces.generators.base import MaskGenerator, MaskOutcome
from ipmn_lightning.faces.generators.geometry import face_region
from ipmn_lightning.faces.generators.landmark import LandmarkMaskGenerator
from ipmn_lightning.faces.generators.mosaic import (
    MOSAIC_BLOCK,
    MOSAIC_DILATE,
    MosaicMaskGenerator,
    mosaic,
    mosaic_block_size,
    pixelate,
)

__all__ = [
    "GENERATORS",
    "MOSAIC_BLOCK",
    "MOSAIC_DILATE",
    "LandmarkMaskGenerator",
    "MaskGenerator",
    "MaskOutcome",
    "MosaicMaskGenerator",
    "face_region",
    "generator_class",
    "make_mask_generator",
    "mosaic",
    "mosaic_block_size",
    "pixelate",
    "resolve_path",
]

#: The one list of mask generators: ``--generator`` name -> ``"module:Class"`` of its :class:`MaskGenerator`.
#: Paths, not classes, resolved with importlib on first use: this is the bottom layer, and the ``diffface`` entry
#: points up into its wing (which imports this package), so importing it here would invert the layers.
GENERATORS: dict[str, str] = {
    "landmark": "ipmn_lightning.faces.generators.landmark:LandmarkMaskGenerator",
    "mosaic": "ipmn_lightning.faces.generators.mosaic:MosaicMaskGenerator",
    "diffface": "ipmn_lightning.diffface.generator:DiffFaceMaskGenerator",
}

_RESOLVED: dict[str, type[MaskGenerator]] = {}


def resolve_path(path: str) -> Any:
    """The object a ``"module:name"`` path names (a :data:`GENERATORS` entry, a :attr:`MaskGenerator.driver`)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def generator_class(name: str) -> type[MaskGenerator]:
    """The :class:`MaskGenerator` subclass registered as ``name`` (its module imported on first use).

    Raises:
        ValueError: an unknown name.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown mask generator {name!r}; choose one of {list(GENERATORS)}")
    if name not in _RESOLVED:
        _RESOLVED[name] = resolve_path(GENERATORS[name])
    return _RESOLVED[name]


def make_mask_generator(name: str = "landmark", **kwargs: object) -> MaskGenerator:
    """Build a generator by its ``--generator`` name.

    Args:
        name: one of :data:`GENERATORS`.
        **kwargs: the generator's constructor arguments.

    Raises:
        ValueError: an unknown name.
    """
    return generator_class(name)(**kwargs)
