"""DiffFace (Kim et al. 2022) in diffusers: the paper's mask generator, as one self-contained wing (README.md).

The identity-conditioned UNet (:mod:`~ipmn_lightning.diffface.unet`), its guidance networks
(:mod:`~ipmn_lightning.diffface.facenets`: ArcFace, BiSeNet), the guided sampler
(:mod:`~ipmn_lightning.diffface.sampler`), the ``diffface`` mask generator (:mod:`~ipmn_lightning.diffface.generator`),
its multi-GPU Lightning generation (:mod:`~ipmn_lightning.diffface.predict`), the weights conversion
(:mod:`~ipmn_lightning.diffface.convert`), the training LightningModule (:mod:`~ipmn_lightning.diffface.module`) and
the commands (:mod:`~ipmn_lightning.diffface.commands`).

The names below are imported on first use: the torch files of the wing (the UNet, the face nets, the sampler, the
generator, the conversion) run without Lightning, and importing one of them runs this file first, so this file
must not load the LightningModule or the Lightning predict.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ipmn_lightning.diffface.arcface import IRSEBackbone, IRSEResNet, load_arcface
    from ipmn_lightning.diffface.bisenet import BiSeNet, load_bisenet
    from ipmn_lightning.diffface.commands import diffface_generate, masks_convert_diffface
    from ipmn_lightning.diffface.convert import (
        DiffFaceWeightsError,
        check_diffface_file,
        convert_diffface_file,
        load_diffface,
        save_diffface,
    )
    from ipmn_lightning.diffface.face_weights import FaceWeightsError
    from ipmn_lightning.diffface.facenets import (
        PARSER_FACE_CLASSES,
        FaceNetModule,
        TorchScriptModule,
        load_face_parser,
        load_identity_model,
    )
    from ipmn_lightning.diffface.generator import DiffFaceMaskGenerator, landmark_face_mask
    from ipmn_lightning.diffface.module import DiffFaceModule
    from ipmn_lightning.diffface.predict import generate_masks_lightning
    from ipmn_lightning.diffface.sampler import DiffFaceSampler
    from ipmn_lightning.diffface.unet import DIFFFACE_CONFIG, DiffFaceUNet, GaussianDiffusion

#: Public name -> the module of this folder that defines it.
_EXPORTS: dict[str, str] = {
    "IRSEBackbone": "arcface",
    "IRSEResNet": "arcface",
    "load_arcface": "arcface",
    "BiSeNet": "bisenet",
    "load_bisenet": "bisenet",
    "diffface_generate": "commands",
    "masks_convert_diffface": "commands",
    "DiffFaceWeightsError": "convert",
    "check_diffface_file": "convert",
    "convert_diffface_file": "convert",
    "load_diffface": "convert",
    "save_diffface": "convert",
    "FaceWeightsError": "face_weights",
    "PARSER_FACE_CLASSES": "facenets",
    "FaceNetModule": "facenets",
    "TorchScriptModule": "facenets",
    "load_face_parser": "facenets",
    "load_identity_model": "facenets",
    "DiffFaceMaskGenerator": "generator",
    "landmark_face_mask": "generator",
    "DiffFaceModule": "module",
    "generate_masks_lightning": "predict",
    "DiffFaceSampler": "sampler",
    "DIFFFACE_CONFIG": "unet",
    "DiffFaceUNet": "unet",
    "GaussianDiffusion": "unet",
}

__all__ = [
    "DIFFFACE_CONFIG",
    "PARSER_FACE_CLASSES",
    "BiSeNet",
    "DiffFaceMaskGenerator",
    "DiffFaceModule",
    "DiffFaceSampler",
    "DiffFaceUNet",
    "DiffFaceWeightsError",
    "FaceNetModule",
    "FaceWeightsError",
    "GaussianDiffusion",
    "IRSEBackbone",
    "IRSEResNet",
    "TorchScriptModule",
    "check_diffface_file",
    "convert_diffface_file",
    "diffface_generate",
    "generate_masks_lightning",
    "landmark_face_mask",
    "load_arcface",
    "load_bisenet",
    "load_diffface",
    "load_face_parser",
    "load_identity_model",
    "masks_convert_diffface",
    "save_diffface",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module of this folder on first use (see the module docstring)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
