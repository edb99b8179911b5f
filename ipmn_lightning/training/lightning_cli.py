"""Training: the LightningCLI behind ``ipmn fit|validate|test|predict`` and :func:`build_cli` for the pipeline.

The CLI runs in subclass mode: the YAML's ``model.class_path`` picks the phase module
(:data:`~ipmn_lightning.phases.PHASES`) and the data module is shared. The console script is
:mod:`ipmn_lightning.console.main`.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from ipmn_lightning.callbacks import ExactResume, IPMNSaveConfigCallback, default_wandb_run_name
from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule
from ipmn_lightning.modules import IPMNModule
from ipmn_lightning.phases import CheckpointError, load_phase_checkpoint

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")


class IPMNCLI(LightningCLI):
    """LightningCLI with the image size shared between the data module and the phase module.

    A ``WandbLogger`` without a ``name`` gets the phase's name (``phase1``, ...) except in sweeps.
    Every checkpoint a command loads (``--ckpt_path``, local or a URL) is read with ``weights_only=True``, so
    a crafted checkpoint cannot run code (``--weights_only false`` is refused), and a local ``--ckpt_path``
    must come from the phase the config trains.
    """

    def _parse_ckpt_path(self) -> None:
        """Refuse a local ``--ckpt_path`` of another phase before Lightning reads its hyper-parameters.

        Lightning applies the checkpoint's hyper-parameters, ``_class_path`` included, to the config, which
        would silently swap a phase-1 config's model for the checkpoint's phase-2 module.
        """
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path and Path(ckpt_path).is_file():
            module_name, _, name = str(config.get("model.class_path") or "").rpartition(".")
            try:
                phase = getattr(getattr(importlib.import_module(module_name), name, None), "phase", None)
            except (ImportError, ValueError):  # not resolvable here: Lightning reports the class itself
                phase = None
            if phase is not None:
                load_phase_checkpoint(ckpt_path, "--ckpt_path", phase)  # CheckpointError: unreadable, other phase
        super()._parse_ckpt_path()

    def _run_trainer(self, subcommand: str, **kwargs: Any) -> Any:
        """``trainer.<subcommand>(...)`` with ``weights_only=True`` (Lightning's default for URLs is False)."""
        if kwargs.get("weights_only") is False:
            raise CheckpointError("--weights_only false is refused: checkpoints are always loaded weights-only")
        kwargs["weights_only"] = True
        try:
            return getattr(self.trainer, subcommand)(**kwargs)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"--ckpt_path {kwargs.get('ckpt_path')}: refused, it holds objects a weights-only load does not "
                f"allow (a checkpoint that could run code, or not a checkpoint of this library): {err}"
            ) from err

    def fit(self, **kwargs: Any) -> Any:
        """``ipmn fit``: Trainer.fit, loading ``--ckpt_path`` weights-only."""
        return self._run_trainer("fit", **kwargs)

    def validate(self, **kwargs: Any) -> Any:
        """``ipmn validate``: Trainer.validate, loading ``--ckpt_path`` weights-only."""
        return self._run_trainer("validate", **kwargs)

    def test(self, **kwargs: Any) -> Any:
        """``ipmn test``: Trainer.test, loading ``--ckpt_path`` weights-only."""
        return self._run_trainer("test", **kwargs)

    def predict(self, **kwargs: Any) -> Any:
        """``ipmn predict``: Trainer.predict, loading ``--ckpt_path`` weights-only."""
        return self._run_trainer("predict", **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` as given (Lightning warns when a process with its own ``sys.argv`` passes ``args``)."""
        self.config = parser.parse_args(args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link ``data.image_size`` to every phase's ``image_size``."""
        parser.link_arguments("data.image_size", "model.init_args.image_size")

    def before_instantiate_classes(self) -> None:
        """Name an unnamed W&B run after its phase (outside sweeps, where the agent names the runs)."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is None or os.environ.get("WANDB_SWEEP_ID"):
            return
        loggers = config.get("trainer.logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if str(getattr(logger, "class_path", "")).endswith("WandbLogger") and init_args is not None:
                if init_args.get("name") is None:
                    init_args["name"] = default_wandb_run_name(
                        config.get("model.class_path"), config.get("model.init_args")
                    )


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> IPMNCLI:
    """Build (and by default run) the training CLI; ``args=None`` reads ``sys.argv``.

    Args:
        args: the command line, e.g. ``["fit", "--config", "configs/phase1.yaml"]``.
        run: run the subcommand (otherwise only parse and instantiate).
    """
    return IPMNCLI(
        IPMNModule,
        FaceSwapDataModule,
        subclass_mode_model=True,
        seed_everything_default=0,
        # never fails on an existing config.yaml; feeds the W&B run config (ipmn_lightning/callbacks.py)
        save_config_callback=IPMNSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        # appended to the configured callbacks: per-rank seeds under DDP, random state in checkpoints
        trainer_defaults={"callbacks": [ExactResume()]},
        args=list(args) if args is not None else None,
        run=run,
    )
