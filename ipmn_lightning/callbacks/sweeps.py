"""A sweep objective: one number a W&B sweep can optimise when the searched loss weights trade two goals.

Every single metric can be gamed by a search over loss weights, so :class:`SweepObjective` logs a weighted sum
of the metrics on both sides of a phase's trade-off.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from ipmn_lightning.phases import PHASE1, PHASE2

__all__ = ["SWEEP_OBJECTIVES", "SweepObjective"]

#: Default objectives per phase: a weighted sum of validation metrics, all larger-is-better.
SWEEP_OBJECTIVES: dict[str, dict[str, float]] = {
    # PSNR (dB) of the watermarked mask, minus 1 dB for every 5 % of failed extractions or false positives:
    # searching the loss weights trades invisibility against extraction, so neither alone is the objective
    PHASE1: {"val/psnr_mask": 1.0, "val/sr_e_watermarked": 20.0, "val/fpr_mask": -20.0},
    # mean PSNR (dB) of the 8-bit masked face (x_wmf vs x_wm) and of the face recovered from it (x'_p vs x_p)
    PHASE2: {"val/psnr_masked_q8": 0.5, "val/psnr_recovered_q8": 0.5},
}


class SweepObjective(Callback):
    """Log ``name`` = Σ weight · metric over validation metrics, the number a W&B sweep optimises.

    A sweep over loss weights that optimises one metric would simply buy that metric with the others (e.g. lower
    the invisibility weight to raise NC). The defaults (:data:`SWEEP_OBJECTIVES`) combine the two sides of each
    phase's trade-off; pass ``terms`` to choose your own. Add it from the command line with
    ``--trainer.callbacks+=ipmn_lightning.callbacks.SweepObjective``. The inputs are epoch-level metrics that
    Lightning/torchmetrics already reduced over DDP ranks, so every rank logs the same value.

    Args:
        name: key logged (the sweep's ``metric.name``).
        terms: metric key -> weight; ``None`` picks the defaults of the module's ``phase``.
    """

    def __init__(self, name: str = "val/objective", terms: dict[str, float] | None = None) -> None:
        self.name = name
        self.terms = dict(terms) if terms is not None else None

    def _terms(self, pl_module: pl.LightningModule) -> dict[str, float]:
        if self.terms is not None:
            return self.terms
        phase = getattr(pl_module, "phase", None)
        if phase not in SWEEP_OBJECTIVES:
            raise ValueError(
                f"SweepObjective has no default terms for phase {phase!r}; pass "
                "--trainer.callbacks.init_args.terms='{\"val/metric\": 1.0}'"
            )
        return SWEEP_OBJECTIVES[phase]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Combine this epoch's validation metrics (skipped during the sanity check)."""
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        terms = self._terms(pl_module)
        missing = [key for key in terms if key not in metrics]
        if missing:
            rank_zero_warn(f"SweepObjective: {missing} not logged this epoch; {self.name} not logged")
            return
        value = sum(float(weight) * float(metrics[key]) for key, weight in terms.items())
        pl_module.log(self.name, value, sync_dist=False)
