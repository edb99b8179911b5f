"""The phase LightningModules: one per training phase, and the HiDDeN variant of phase 1.

- :class:`IPMNModule` (``base.py``): the shared base (checkpoint tags, the frozen earlier phases, image grids).
- :class:`WatermarkPretrainModule` (``phase1.py``): H, R and D (eqs. 10-18).
- :class:`HiddenPretrainModule` (``phase1_hidden.py``): the HiDDeN baseline (paper §4.3.2), writing phase-1
  checkpoints that phases 2-3 take unchanged.
- :class:`InvertibleMaskModule` (``phase2.py``): the INN (eqs. 19-22).
- :class:`StealingAttackModule` (``phase3_steal.py``): the attacker's stealing models.
- :class:`ExtractorEnhanceModule` (``phase3_enhance.py``): R enhanced against the stealers (eqs. 23-26).
"""

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
