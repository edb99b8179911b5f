"""Shared base of the IPMN phase modules: tagging checkpoints, the frozen earlier phases, image grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torchvision.utils import make_grid

from ipmn_lightning.core.files import atomic_save_image
from ipmn_lightning.phases import FROZEN_KEY, PHASE_KEY, CheckpointError, check_phase_tag


def freeze(module: nn.Module) -> nn.Module:
    """Freeze a black-box network: eval mode, no gradients (and so never registered by DDP)."""
    module.requires_grad_(False)
    module.eval()
    return module


class IPMNModule(pl.LightningModule):
    """Base class of the four phase modules; ``ipmn fit`` accepts any subclass as ``model.class_path``.

    Args:
        image_size: side of the square images; linked from ``data.image_size`` by the CLI.
    """

    phase: str = "base"
    frozen_attributes: tuple[str, ...] = ()

    def __init__(self, image_size: int = 256) -> None:
        super().__init__()
        self.image_size = image_size
        # architecture of the frozen networks taken from earlier phases; saved in every checkpoint so
        # that a reload rebuilds them without the earlier phases' files
        self.frozen_config: dict[str, Any] | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Tag the checkpoint with its phase and the frozen networks' architecture."""
        checkpoint[PHASE_KEY] = self.phase
        if self.frozen_config is not None:
            checkpoint[FROZEN_KEY] = self.frozen_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the frozen networks (weights follow in ``load_state_dict``) when reloading this phase.

        Raises:
            CheckpointError: the checkpoint is of another phase (e.g. ``--ckpt_path`` given as a URL), or its
                tag is not a phase of this version.
        """
        phase = checkpoint.get(PHASE_KEY)
        check_phase_tag(phase, f"the checkpoint given to {type(self).__name__}")
        if phase is not None and phase != self.phase:
            raise CheckpointError(
                f"the checkpoint is of phase {phase!r} but {type(self).__name__} trains {self.phase!r}; "
                "pass a checkpoint of this phase, or the config of the checkpoint's phase"
            )
        if self.frozen_config is None and checkpoint.get(FROZEN_KEY) is not None:
            self.build_frozen(checkpoint[FROZEN_KEY])

    def build_frozen(self, config: dict[str, Any]) -> None:
        """Create the frozen earlier-phase networks from their architecture ``config`` (weights not loaded)."""
        self.frozen_config = config

    def load_frozen(self) -> None:
        """Load the earlier phases' checkpoints named by the ``*_ckpt`` arguments; overridden by later phases."""

    def setup(self, stage: str) -> None:
        """Load the earlier phases unless the frozen networks already came with a checkpoint of this phase.

        When Lightning restores this phase (``--ckpt_path``) it calls ``on_load_checkpoint`` after ``setup``,
        so the earlier phases' files are not needed for resuming, validating or testing a checkpoint.
        """
        if self.frozen_config is None and (self._trainer is None or self.trainer.ckpt_path is None):
            self.load_frozen()

    def train(self, mode: bool = True) -> IPMNModule:
        """Keep the frozen black-box networks in eval mode whatever the trainer asks."""
        super().train(mode)
        for name in self.frozen_attributes:
            sub = getattr(self, name, None)
            if isinstance(sub, nn.Module):
                sub.eval()
        return self

    # ------------------------------------------------------------------ images
    @rank_zero_only
    def log_image_grid(self, name: str, rows: list[Tensor], max_images: int = 8) -> None:
        """Log a grid whose rows are image kinds and whose columns are samples.

        Goes to every logger that takes images (W&B ``log_image``, TensorBoard ``add_image``); otherwise
        it is written as a PNG under ``<log_dir>/images/`` so CPU users can look at it (nothing
        is written when logging is off).

        Args:
            name: metric-style key, e.g. ``val/images``.
            rows: tensors (B, 3, H, W) in [0, 1] (residuals should be pre-scaled).
            max_images: columns to show.
        """
        if self.trainer is None or self.trainer.sanity_checking:
            return
        rows = [r for r in rows if r.dim() == 4]  # an R of the HiDDeN baseline gives (B, L) messages, not images
        cols = min(max_images, rows[0].shape[0])
        images = torch.cat([r[:cols].detach().float().clamp(0, 1).cpu() for r in rows])
        grid = make_grid(images, nrow=cols, padding=2, pad_value=1.0)
        written = False
        for logger in self.trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=name, images=[grid], step=self.global_step)
                written = True
            elif hasattr(getattr(logger, "experiment", None), "add_image"):
                logger.experiment.add_image(name, grid, self.global_step)
                written = True
        if not written and self.trainer.loggers and self.trainer.log_dir is not None:
            path = Path(self.trainer.log_dir) / "images" / f"{name.replace('/', '_')}_epoch{self.current_epoch:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_image(path, grid)

    @staticmethod
    def warn_once(message: str) -> None:
        """Warn once per message on rank zero."""
        rank_zero_warn(message)
