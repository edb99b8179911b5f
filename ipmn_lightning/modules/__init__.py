"""The LightningModules of the four IPMN training phases."""

from .base import IPMNModule
from .phase1 import WatermarkPretrainModule
from .phase1_hidden import HiddenPretrainModule
from .phase2 import InvertibleMaskModule
from .phase3_enhance import ExtractorEnhanceModule
from .phase3_steal import StealingAttackModule

__all__ = [
    "ExtractorEnhanceModule",
    "HiddenPretrainModule",
    "IPMNModule",
    "InvertibleMaskModule",
    "StealingAttackModule",
    "WatermarkPretrainModule",
]
