"""Training: the LightningCLI behind ``ipmn fit|validate|test|predict`` and :func:`build_cli` for the pipeline.

The CLI runs in subclass mode: the YAML's ``model.class_path`` picks the phase module
(:data:`~ipmn_lightning.phases.PHASES`) and the data module is shared. The console script is
:mod:`ipmn_lightning.console.main`.

A config without a ``ModelCheckpoint`` in ``trainer.callbacks`` gets the default one (:func:`default_checkpoints`):
``<trainer.default_root_dir>/checkpoints/<phase>-epochNNNN.ckpt`` and ``last.ckpt``, no version counter. Its
phase-specific settings are the config's ``checkpoint:`` group (:class:`CheckpointSettings`). :func:`parse_config`
gives the merged namespace of a command line (every ``--config`` and override) without instantiating anything.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from ipmn_lightning.callbacks import ExactResume, IPMNSaveConfigCallback, default_wandb_run_name
from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule
from ipmn_lightning.modules import IPMNModule
from ipmn_lightning.phases import CheckpointError, load_phase_checkpoint

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
MODEL_CHECKPOINT = "pytorch_lightning.callbacks.ModelCheckpoint"
# the file names of the checkpoints the configs used to declare: <prefix>-epoch0003.ckpt
CHECKPOINT_PREFIXES = {
    "ipmn_lightning.modules.HiddenPretrainModule": "hidden-phase1",
    "phase1": "phase1",
    "phase2": "phase2",
    "phase3_steal": "steal",
    "phase3_enhance": "enhance",
}


@dataclass
class CheckpointSettings:
    """The phase's settings of the default checkpoint (a config's ``checkpoint:`` group).

    Args:
        monitor: keep the top-1 checkpoint by this metric (``None``: the newest epoch).
        mode: ``min`` or ``max`` of ``monitor``.
        every_epoch_last: write ``last.ckpt`` after every training epoch, not only when a checkpoint is saved
            (after a validation, or with ``monitor`` only on a new best), so a crash loses at most one epoch and
            the next phase never reads an older one.
    """

    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    every_epoch_last: bool = False


def _class_path(value: Any) -> str:
    """``class_path`` of a callback entry (a Namespace, a dict or a class path string)."""
    if isinstance(value, str):
        return value
    return str(value.get("class_path", "") if isinstance(value, (dict, Namespace)) else "")


def has_model_checkpoint(callbacks: Any) -> bool:
    """Whether a ``trainer.callbacks`` value (one entry or a list) declares a ``ModelCheckpoint``."""
    entries = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
    return any(_class_path(c).endswith("ModelCheckpoint") for c in entries)


def checkpoint_prefix(class_path: str | None) -> str:
    """The checkpoint file prefix of a phase module (``phase1``, ``phase2``, ``steal``, ``enhance``)."""
    if class_path in CHECKPOINT_PREFIXES:
        return CHECKPOINT_PREFIXES[class_path]
    module_name, _, name = str(class_path or "").rpartition(".")
    try:
        phase = getattr(getattr(importlib.import_module(module_name), name, None), "phase", None)
    except (ImportError, ValueError):
        phase = None
    return CHECKPOINT_PREFIXES.get(phase, name.lower() or "model")


def default_checkpoints(
    class_path: str | None, default_root_dir: str | None, settings: CheckpointSettings | None = None
) -> list[dict[str, Any]]:
    """The ``ModelCheckpoint`` entries the CLI adds to a config that has none.

    The settings every shipped config used to repeat: a fixed folder (so the next phase finds ``last.ckpt``),
    ``<prefix>-epoch{epoch:04d}`` file names, ``save_last`` and no version counter (a rerun replaces
    ``last.ckpt``, the file the next phase reads, instead of writing ``last-v1.ckpt``).

    Args:
        class_path: the model's class path (picks the file prefix).
        default_root_dir: ``trainer.default_root_dir``; ``None`` keeps Lightning's folder (the logger's).
        settings: the config's ``checkpoint:`` group.

    Returns:
        ``class_path``/``init_args`` entries for ``trainer.callbacks``.
    """
    settings = settings or CheckpointSettings()
    init_args: dict[str, Any] = {"filename": f"{checkpoint_prefix(class_path)}-epoch{{epoch:04d}}",
                                 "auto_insert_metric_name": False, "save_last": True,
                                 "enable_version_counter": False}  # fmt: skip
    if default_root_dir is not None:
        init_args = {"dirpath": str(Path(default_root_dir) / "checkpoints"), **init_args}
    if settings.monitor is not None:
        init_args.update(monitor=settings.monitor, mode=settings.mode)
    elif settings.every_epoch_last:
        init_args["save_on_train_epoch_end"] = True
    entries = [{"class_path": MODEL_CHECKPOINT, "init_args": init_args}]
    if settings.monitor is not None and settings.every_epoch_last:
        # a second checkpoint whose one rolling file is last.ckpt itself, written after every epoch
        last = {"filename": "last", "save_on_train_epoch_end": True, "enable_version_counter": False}
        entries.append({"class_path": MODEL_CHECKPOINT, "init_args": {**init_args, **last, "save_last": None}})
        for key in ("monitor", "mode", "auto_insert_metric_name", "save_last"):
            entries[-1]["init_args"].pop(key)
    return entries


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
        """Link ``data.image_size`` to every phase's ``image_size``; the default checkpoint's ``checkpoint:`` group."""
        parser.link_arguments("data.image_size", "model.init_args.image_size")
        parser.add_class_arguments(CheckpointSettings, "checkpoint")

    def before_instantiate_classes(self) -> None:
        """Add the default checkpoint to a config without one; name an unnamed W&B run after its phase."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is None:
            return
        callbacks = config.get("trainer.callbacks")
        if config.get("trainer.enable_checkpointing") is not False and not has_model_checkpoint(callbacks):
            settings = CheckpointSettings(**(config.get("checkpoint") or Namespace()).as_dict())
            added = default_checkpoints(
                config.get("model.class_path"), config.get("trainer.default_root_dir"), settings
            )
            entries = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
            config["trainer.callbacks"] = [*entries, *(Namespace(class_path=c["class_path"],
                                            init_args=Namespace(**c["init_args"])) for c in added)]  # fmt: skip
        if os.environ.get("WANDB_SWEEP_ID"):
            return
        loggers = config.get("trainer.logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if str(getattr(logger, "class_path", "")).endswith("WandbLogger") and init_args is not None:
                if init_args.get("name") is None:
                    init_args["name"] = default_wandb_run_name(
                        config.get("model.class_path"), config.get("model.init_args")
                    )


def _cli_kwargs() -> dict[str, Any]:
    """The LightningCLI arguments of every ``ipmn`` trainer command."""
    return dict(
        model_class=IPMNModule,
        datamodule_class=FaceSwapDataModule,
        subclass_mode_model=True,
        seed_everything_default=0,
        # never fails on an existing config.yaml; feeds the W&B run config (ipmn_lightning/callbacks.py)
        save_config_callback=IPMNSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        # appended to the configured callbacks: per-rank seeds under DDP, random state in checkpoints
        trainer_defaults={"callbacks": [ExactResume()]},
    )


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> IPMNCLI:
    """Build (and by default run) the training CLI; ``args=None`` reads ``sys.argv``.

    Args:
        args: the command line, e.g. ``["fit", "--config", "configs/phase1.yaml"]``.
        run: run the subcommand (otherwise only parse and instantiate).
    """
    return IPMNCLI(**_cli_kwargs(), args=list(args) if args is not None else None, run=run)


class _Parsed(Exception):
    """Carries the parsed namespace out of :class:`_ParseOnlyCLI` before anything is instantiated."""

    def __init__(self, config: Namespace) -> None:
        super().__init__("parsed")
        self.config = config


class _ParseOnlyCLI(IPMNCLI):
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        raise _Parsed(self.config)


def parse_config(args: Sequence[str]) -> Namespace:
    """The merged config of a trainer command line, parsed as ``ipmn fit`` does, without instantiating it.

    Args:
        args: e.g. ``["fit", "--config", "configs/data/synthetic.yaml", "--config", "configs/demo/phase1.yaml",
            "--data.root", "DIR"]``: every ``--config`` file and override, in order (last wins).

    Returns:
        The subcommand's namespace (``data``, ``model.class_path``, ``model.init_args``, ``trainer``, ...),
        before the default checkpoint is added.
    """
    try:
        _ParseOnlyCLI(**_cli_kwargs(), args=list(args), run=True)
    except _Parsed as parsed:
        config = parsed.config
        return config[config["subcommand"]]
    raise AssertionError("unreachable: _ParseOnlyCLI always raises _Parsed")


def data_settings(*configs: str | os.PathLike[str]) -> dict[str, Any]:
    """The data module's arguments of config files (e.g. ``configs/data/synthetic.yaml``), merged as ``ipmn fit`` does.

    Args:
        configs: YAML files with a ``data`` section (a data config, a phase config), later ones winning.

    Returns:
        Every argument of :class:`~ipmn_lightning.datamodules.face_swap.FaceSwapDataModule`, defaults included.
    """
    # the base module stands in for a model: only the data section is read
    args = ["fit", "--model=ipmn_lightning.modules.IPMNModule"]
    for config in configs:
        args += ["--config", str(config)]
    return parse_config(args)["data"].as_dict()
