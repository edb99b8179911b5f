"""Pure ``torch.nn`` networks of IPMN (no Lightning): H, R, D, the INN, the stealers and VGG features."""

from ipmn_lightning.nets.discriminator import PatchDiscriminator
from ipmn_lightning.nets.embedder import WatermarkEmbedder
from ipmn_lightning.nets.extractor import WatermarkExtractor
from ipmn_lightning.nets.inn import CouplingBlock, DenseBlock, InvertibleMaskNet
from ipmn_lightning.nets.perceptual import VGGFeatures
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
