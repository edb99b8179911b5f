"""Config saving for LightningCLI runs, and the W&B run names.

:class:`IPMNSaveConfigCallback` replaces LightningCLI's ``SaveConfigCallback``: it never fails because a
``config.yaml`` already exists, writes the config next to a W&B run's checkpoints and into the run's files, and
puts the resolved config into the W&B run config.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.phases import PHASE3_STEAL

__all__ = ["IPMNSaveConfigCallback", "default_wandb_run_name", "free_config_path"]


def free_config_path(directory: str | os.PathLike[str], filename: str = "config.yaml", overwrite: bool = True) -> Path:
    """Where to write a run's config: ``directory/filename``, or the first free ``stem-N.suffix`` next to it.

    Args:
        directory: target folder.
        filename: file name, e.g. ``config.yaml``.
        overwrite: replace an existing file instead of picking a new name.
    """
    path = Path(directory) / filename
    if overwrite or not path.exists():
        return path
    stem, suffix = path.stem, path.suffix
    n = 1
    while (candidate := path.with_name(f"{stem}-{n}{suffix}")).exists():
        n += 1
    return candidate


def _wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def _wandb_run_dir(logger: WandbLogger) -> Path | None:
    """``<save_dir>/<project>/<run id>``: the folder where ModelCheckpoint puts a W&B run's checkpoints."""
    if logger.save_dir is None or logger.version is None:
        return None
    return Path(logger.save_dir) / str(logger.name) / str(logger.version)


class IPMNSaveConfigCallback(SaveConfigCallback):
    """LightningCLI config saving that never aborts a run and feeds Weights & Biases.

    Where the config goes (rank 0 only, written atomically):

    - with a ``WandbLogger`` first in ``trainer.logger``: ``<save_dir>/<project>/<run id>/config.yaml`` (next to the
      run's checkpoints; Lightning's default ``trainer.log_dir`` would be ``save_dir``, shared by every run), a copy in
      the run's files (``wandb.run.dir``, uploaded with the run) and the resolved config under the key ``config`` of
      the W&B run config;
    - otherwise: ``trainer.log_dir/config.yaml`` as LightningCLI does.

    An existing file is replaced when ``overwrite`` is true (the ``ipmn`` default) and kept otherwise, the config
    then going to the next free ``config-N.yaml``: no run ever fails because a ``config.yaml`` already exists.
    No collective call is made on rank 0 alone, so this is safe under DDP. Lightning's ``setup`` is replaced, not
    extended: it raises on an existing file and writes to ``trainer.log_dir``, and the choice of folder cannot move
    to the ``save_config`` hook, which Lightning calls on rank 0 only while ``trainer.log_dir`` is a collective call.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Write the config once per trainer (the first ``setup``)."""
        if self.already_saved:
            return
        # every rank takes part in trainer.log_dir (it broadcasts); only rank 0 writes
        log_dir = trainer.log_dir if self.save_to_log_dir else None
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            if self.save_to_log_dir:
                wandb = _wandb_loggers(trainer)
                run_dir = _wandb_run_dir(wandb[0]) if wandb and trainer.loggers[0] is wandb[0] else None
                directory = run_dir or (Path(log_dir) if log_dir is not None else None)
                if directory is not None:
                    path = free_config_path(directory, self.config_filename, self.overwrite)
                    if self.multifile:  # one file per --config, as LightningCLI writes them
                        self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=True)
                    else:
                        atomic_write_text(path, text)
                    rank_zero_info(f"LightningCLI config saved to {path}")
            self._dumped = text
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Put the resolved config into every W&B run: its config (key ``config``) and its files."""
        text = getattr(self, "_dumped", None) or self.parser.dump(self.config, skip_none=False)
        for logger in _wandb_loggers(trainer):
            run = logger.experiment
            config = getattr(run, "config", None)
            if config is not None and hasattr(config, "update"):
                config.update({"config": yaml.safe_load(text)}, allow_val_change=True)
            run_files = getattr(run, "dir", None)
            if isinstance(run_files, str) and run_files and os.path.isdir(run_files):
                atomic_write_text(Path(run_files) / self.config_filename, text)


def default_wandb_run_name(model_class_path: str | None, init_args: Mapping[str, Any] | None = None) -> str | None:
    """The W&B run name of a phase: the module's ``phase`` (``phase1``, ...), plus the stealer in 3a.

    Args:
        model_class_path: ``model.class_path`` of the LightningCLI config.
        init_args: ``model.init_args`` (for the stealer architecture of phase 3a).

    Returns:
        The name, or ``None`` when the class cannot be imported.
    """
    if not model_class_path:
        return None
    from jsonargparse import Namespace

    module_name, _, class_name = model_class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        return None
    phase = getattr(cls, "phase", None) or cls.__name__
    args = init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args or {})
    stealer = args.get("stealer")
    return f"{phase}-{stealer}" if stealer and phase == PHASE3_STEAL else str(phase)
