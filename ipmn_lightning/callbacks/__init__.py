"""Callbacks for scale and tracking: config saving for W&B, resumable random state, a sweep objective.

- :mod:`~ipmn_lightning.callbacks.config`: :class:`IPMNSaveConfigCallback` replaces LightningCLI's
  ``SaveConfigCallback``: it never fails because a ``config.yaml`` already exists, writes the config next to a
  W&B run's checkpoints and into the run's files, and puts the resolved config into the W&B run config.
- :mod:`~ipmn_lightning.callbacks.resume`: :class:`ExactResume` gives every DDP rank its own random stream and
  stores the random state (torch, CUDA, numpy, Python and the training sampler's generator) in checkpoints, so
  that ``--ckpt_path`` continues a run as if it had never stopped.
- :mod:`~ipmn_lightning.callbacks.sweeps`: :class:`SweepObjective` logs one number a W&B sweep can optimise when
  the searched loss weights trade two goals against each other (every single metric can be gamed by such a
  search).
"""

from ipmn_lightning.callbacks.config import IPMNSaveConfigCallback, default_wandb_run_name, free_config_path
from ipmn_lightning.callbacks.resume import ExactResume
from ipmn_lightning.callbacks.sweeps import SWEEP_OBJECTIVES, SweepObjective

__all__ = [
    "SWEEP_OBJECTIVES",
    "ExactResume",
    "IPMNSaveConfigCallback",
    "SweepObjective",
    "default_wandb_run_name",
    "free_config_path",
]
