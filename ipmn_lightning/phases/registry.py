"""The one table of the four training phases: :data:`PHASES` and the checkpoint tags.

Each phase's key is its name everywhere: the ``ipmn_phase`` tag in its checkpoints, the ``kind`` in a pipeline
manifest, the module file and the config file.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FROZEN_KEY",
    "LEGACY_KINDS",
    "PHASE1",
    "PHASE2",
    "PHASE3_ENHANCE",
    "PHASE3_STEAL",
    "PHASES",
    "PHASE_KEY",
    "Phase",
]

#: The checkpoint entry naming the phase that wrote it (a key of :data:`PHASES`).
PHASE_KEY = "ipmn_phase"
#: The checkpoint entry recording the architecture of the frozen earlier-phase networks.
FROZEN_KEY = "ipmn_frozen"


@dataclass(frozen=True)
class Phase:
    """One training phase.

    Args:
        key: its one name: checkpoint tag, manifest kind, ``modules/<key>.py``, ``configs/<key>.yaml``.
        module: class path of its LightningModule.
        ckpt_argument: the init argument through which later phases (and the evaluation) take its checkpoint.
    """

    key: str
    module: str
    ckpt_argument: str

    @property
    def config(self) -> str:
        """The paper-scale config, ``configs/<key>.yaml`` (``configs/demo/<key>.yaml``: the CPU demo)."""
        return f"configs/{self.key}.yaml"


PHASE1, PHASE2, PHASE3_STEAL, PHASE3_ENHANCE = "phase1", "phase2", "phase3_steal", "phase3_enhance"
PHASES: dict[str, Phase] = {
    p.key: p
    for p in (
        Phase(PHASE1, "ipmn_lightning.modules.phase1.WatermarkPretrainModule", "phase1_ckpt"),
        Phase(PHASE2, "ipmn_lightning.modules.phase2.InvertibleMaskModule", "phase2_ckpt"),
        Phase(PHASE3_STEAL, "ipmn_lightning.modules.phase3_steal.StealingAttackModule", "stealer_ckpt"),
        Phase(PHASE3_ENHANCE, "ipmn_lightning.modules.phase3_enhance.ExtractorEnhanceModule", "enhance_ckpt"),
    )
}

#: The manifests' phase kinds before the phases had one name. The package was never released, so old
#: checkpoint tags are refused (:func:`~ipmn_lightning.phases.checkpoints.load_phase_checkpoint`); this table
#: stays only because ``workflows/manifest.py`` still reads it, and goes when that reader drops it.
LEGACY_KINDS = {"steal": PHASE3_STEAL, "enhance": PHASE3_ENHANCE}
