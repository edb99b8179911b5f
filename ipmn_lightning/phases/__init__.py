"""The phase registry and checkpoint reading: torch only, so inference never imports Lightning.

- :mod:`~ipmn_lightning.phases.registry`: :data:`PHASES`, the one table of the four training phases, and the
  checkpoint tags (``ipmn_phase``, ``ipmn_frozen``).
- :mod:`~ipmn_lightning.phases.checkpoints`: weights-only loading of an earlier phase's checkpoint.
- :mod:`~ipmn_lightning.phases.builders`: the networks' constructor arguments from a phase's hyper-parameters.
- :mod:`~ipmn_lightning.phases.sender`: :func:`put_on_mask`, the sender's black box.
"""

from ipmn_lightning.phases.builders import (
    HIDDEN,
    build,
    embedder_config,
    extractor_config,
    inn_config,
    stealer_config,
    watermark_shape,
)
from ipmn_lightning.phases.checkpoints import (
    CheckpointError,
    check_image_size,
    check_phase_tag,
    load_phase1,
    load_phase2,
    load_phase_checkpoint,
    load_stealer,
    load_stealer_network,
    load_submodule,
)
from ipmn_lightning.phases.registry import (
    FROZEN_KEY,
    LEGACY_KINDS,
    PHASE1,
    PHASE2,
    PHASE3_ENHANCE,
    PHASE3_STEAL,
    PHASE_KEY,
    PHASES,
    Phase,
)
from ipmn_lightning.phases.sender import WATERMARK_POSITIONS, WatermarkPosition, put_on_mask, watermark_position

__all__ = [
    "FROZEN_KEY",
    "HIDDEN",
    "LEGACY_KINDS",
    "PHASE1",
    "PHASE2",
    "PHASE3_ENHANCE",
    "PHASE3_STEAL",
    "PHASES",
    "PHASE_KEY",
    "WATERMARK_POSITIONS",
    "CheckpointError",
    "Phase",
    "WatermarkPosition",
    "build",
    "check_image_size",
    "check_phase_tag",
    "embedder_config",
    "extractor_config",
    "inn_config",
    "load_phase1",
    "load_phase2",
    "load_phase_checkpoint",
    "load_stealer",
    "load_stealer_network",
    "load_submodule",
    "put_on_mask",
    "stealer_config",
    "watermark_position",
    "watermark_shape",
]
