"""Pure ``torch.nn`` networks of IPMN (no Lightning): H, R, D, the INN, the stealers and VGG features."""

from .discriminator import PatchDiscriminator
from .embedder import WatermarkEmbedder
from .extractor import WatermarkExtractor
from .inn import CouplingBlock, DenseBlock, InvertibleMaskNet
from .perceptual import VGGFeatures
from .stealing import build_stealer
from .unet import UNet
from .wavelet import HaarDWT, HaarIWT, haar_dwt, haar_iwt, make_wavelet

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
