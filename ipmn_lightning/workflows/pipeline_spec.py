"""The pipeline file (``ipmn pipeline --config``) and each phase's settings, parsed as ``ipmn fit`` parses them.

A pipeline file::

    output: runs/demo                    # everything goes under here
    data: configs/data/synthetic.yaml    # the data config, applied to every phase before its own config
    checkpoint: last                     # or best: which checkpoint a phase hands to the next
    phases:
      - {name: phase1, config: configs/demo/phase1.yaml}
      - {name: phase2, config: configs/demo/phase2.yaml}
      - {name: steal_unet, config: configs/demo/phase3_steal.yaml, args: ["--model.init_args.stealer=unet"]}
      - {name: enhance, config: configs/demo/phase3_enhance.yaml}

A pipeline over real photos may start with a ``masks`` step that fills the mask store before phase 1
(``ipmn masks generate``; ``configs/faces/pipeline.yaml``)::

    masks: {generator: landmark, image_size: 128, workers: 2}   # store: <output>/masks_store

A pipeline states what its result must reach before its bundles are exported (checked on the validation
split: :mod:`ipmn_lightning.workflows.targets`), and how many more enhancement steps it may take to get there::

    targets: {sr_e: 0.95, fpr: 0.01, recovery_psnr: 30.0, sr_p: 0.90}
    extra_budget: 256

A phase's settings are never read from its YAML by hand: :func:`phase_settings` parses its command line
(the data config, the phase config, its ``args``, the overrides) with the training CLI's parser
(:func:`ipmn_lightning.training.lightning_cli.parse_config`), so every ``--config`` file and both override
forms (``--data.root=DIR`` and ``--data.root DIR``) count exactly as they do for ``ipmn fit``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import Namespace

from ipmn_lightning.phases import PHASES
from ipmn_lightning.training.lightning_cli import parse_config

__all__ = ["PIPELINE_KEYS", "MasksStep", "PhaseSpec", "fit_arguments", "model_class", "phase_kind",
           "phase_settings", "read_pipeline_file"]  # fmt: skip

PIPELINE_KEYS = (
    "output",
    "data",
    "checkpoint",
    "phases",
    "overrides",
    "seed",
    "evaluate",
    "masks",
    "targets",
    "extra_budget",
)


@dataclass
class PhaseSpec:
    """One phase of a pipeline.

    Args:
        name: the phase's folder under ``output`` and its key in the manifest (unique).
        config: the phase's YAML, as given to ``ipmn fit --config``.
        args: extra ``ipmn fit`` arguments for this phase only, e.g. ``["--model.init_args.stealer=unet"]``.
        held_out: a stealing phase whose model the enhancement never sees: trained like the others and scored in
            Table 10 as an unseen attacker (paper §4.4.1: the owner cannot know the attacker's architecture).
        stealers: an enhancement phase's stealing phases, by name (default: every earlier one not ``held_out``).
            ``["all"]`` gives it every earlier stealing phase, held-out ones included. The verifier bundle and the
            report's "enhanced R" come from the last enhancement phase with the default; the others are variants,
            reported beside it.
        checkpoint: a phase trained elsewhere: its checkpoint is used as it is (the config still says its kind).
    """

    name: str
    config: str
    args: list[str] = field(default_factory=list)
    held_out: bool = False
    stealers: list[str] | None = None
    checkpoint: str | None = None


@dataclass
class MasksStep:
    """The optional first step: generate the mask store x_m = MG(x_p, x_r) (``ipmn masks generate``).

    The store is filled before phase 1 and every phase reads it (``--data.mask_store``); a rerun finishes
    what an interrupted one left, as ``ipmn masks generate`` does.

    Args:
        generator: the mask generator (see ``ipmn masks generate``).
        image_size: side of the square masks (at least the phases' ``data.image_size``).
        workers: processes.
        seed: seed of the pairing.
        identity_sample: new masks checked with the recogniser for the identity statistics of the summary.
        root: the dataset folder (default: ``--data.root`` of the overrides, else of the first phase's config).
        source: ``celeba`` or ``folder`` (default: as ``root``, from ``--data.source``).
        store: the store folder (default ``<output>/masks_store``: the dataset folder is never written to).
    """

    generator: str = "landmark"
    image_size: int = 256
    workers: int = 1
    seed: int = 0
    identity_sample: int = 32
    root: str | None = None
    source: Literal["celeba", "folder"] | None = None
    store: str | None = None


def fit_arguments(spec: PhaseSpec, data: str | None, extra: list[str]) -> list[str]:
    """A phase's ``ipmn fit`` command line: the data config, the phase config, its args, then ``extra``."""
    return ["fit", *(["--config", str(data)] if data else []), "--config", spec.config, *spec.args, *extra]


def phase_settings(spec: PhaseSpec, data: str | None, extra: list[str]) -> Namespace:
    """A phase's merged settings (``data``, ``model.class_path``, ``model.init_args``, ``trainer``, ...).

    Args:
        spec: the phase.
        data: the pipeline's data config (applied before the phase's own).
        extra: arguments after the phase's own (the pipeline's overrides).

    Returns:
        The ``fit`` namespace the training CLI would build, nothing instantiated.
    """
    if not Path(spec.config).is_file():
        raise FileNotFoundError(f"phase {spec.name!r}: no config file {spec.config}")
    if data and not Path(data).is_file():
        raise FileNotFoundError(f"pipeline data config {data} does not exist")
    return parse_config(fit_arguments(spec, data, extra))


def model_class(settings: Namespace) -> type:
    """The LightningModule class a phase trains (its merged ``model.class_path``)."""
    module, _, name = str(settings.get("model.class_path") or "").rpartition(".")
    return getattr(importlib.import_module(module or "ipmn_lightning.modules"), name)


def phase_kind(model_class: type) -> str:
    """The phase key (:data:`~ipmn_lightning.phases.PHASES`) a module class trains (``other`` otherwise)."""
    phase = getattr(model_class, "phase", None)
    return phase if phase in PHASES else "other"


def read_pipeline_file(config: str | os.PathLike[str]) -> dict[str, Any]:
    """The pipeline file's keys (read once), checked against :data:`PIPELINE_KEYS`."""
    spec = yaml.safe_load(Path(config).read_text()) or {}
    unknown = set(spec) - set(PIPELINE_KEYS)
    if unknown:
        raise ValueError(f"{config}: unknown pipeline keys {sorted(unknown)}")
    return spec
