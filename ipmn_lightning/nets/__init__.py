"""Pure ``torch.nn`` networks of IPMN (no Lightning): H, R, D, the INN, the stealers, VGG features and HiDDeN.

``VGGFeatures`` (the perceptual loss's VGG16, :mod:`ipmn_lightning.nets.perceptual`) is imported on first use:
it needs torchvision, whose import takes seconds, and the inference layer (``IPMN``, ``ipmn protect``) never
uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ipmn_lightning.nets.discriminator import PatchDiscriminator
from ipmn_lightning.nets.embedder import WatermarkEmbedder
from ipmn_lightning.nets.extractor import WatermarkExtractor
from ipmn_lightning.nets.inn import CouplingBlock, DenseBlock, InvertibleMaskNet
from ipmn_lightning.nets.stealing import build_stealer
from ipmn_lightning.nets.unet import UNet
from ipmn_lightning.nets.wavelet import HaarDWT, HaarIWT, haar_dwt, haar_iwt, make_wavelet

__all__ = [
    "CouplingBlock",
    "DenseBlock",
    "HaarDWT",
    "HaarIWT",
    "InvertibleMaskNet",
    "PatchDiscriminator",
    "UNet",
    "VGGFeatures",
    "WatermarkEmbedder",
    "WatermarkExtractor",
    "build_stealer",
    "haar_dwt",
    "haar_iwt",
    "make_wavelet",
]

if TYPE_CHECKING:
    from ipmn_lightning.nets.perceptual import VGGFeatures


def __getattr__(name: str) -> Any:
    """Import ``VGGFeatures`` (and with it torchvision) only when it is asked for."""
    if name == "VGGFeatures":
        from ipmn_lightning.nets.perceptual import VGGFeatures

        return VGGFeatures
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
