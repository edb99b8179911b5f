"""The LightningModules of the four IPMN training phases."""

from ipmn_lightning.modules.base import IPMNModule
from ipmn_lightning.modules.phase1 import WatermarkPretrainModule
from ipmn_lightning.modules.phase1_hidden import HiddenPretrainModule
from ipmn_lightning.modules.phase2 import InvertibleMaskModule
from ipmn_lightning.modules.phase3_enhance import ExtractorEnhanceModule
from ipmn_lightning.modules.phase3_steal import StealingAttackModule

__all__ = [
    "ExtractorEnhanceModule",
    "HiddenPretrainModule",
    "IPMNModule",
    "InvertibleMaskModule",
    "StealingAttackModule",
    "WatermarkPretrainModule",
]
