"""Weights-only reading of the phases' checkpoints: torch only, so inference never imports Lightning.

Each phase records the architecture of what it trained in its hyper-parameters; the loaders here return those
as constructor arguments (:mod:`ipmn_lightning.phases.builders`) with the state dict, so a later phase (or a
bundle) can rebuild the network and load its weights without running any code from the checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.phases.builders import build, embedder_config, extractor_config, inn_config, stealer_config
from ipmn_lightning.phases.registry import FROZEN_KEY, PHASE1, PHASE2, PHASE3_STEAL, PHASE_KEY, PHASES
from ipmn_lightning.phases.sender import watermark_position

__all__ = [
    "CheckpointError",
    "check_image_size",
    "check_phase_tag",
    "load_phase1",
    "load_phase2",
    "load_phase_checkpoint",
    "load_stealer",
    "load_stealer_network",
    "load_submodule",
]


class CheckpointError(IPMNError):
    """An earlier-phase checkpoint is missing, unreadable or of the wrong phase."""


def check_phase_tag(tag: object, source: str) -> None:
    """Refuse an ``ipmn_phase`` tag that is not a phase key (e.g. a pre-release tag such as ``watermark_pretrain``).

    Args:
        tag: the checkpoint's ``ipmn_phase`` entry (``None`` when it has none: left to the caller).
        source: what the checkpoint is, for the message (the argument and the file).

    Raises:
        CheckpointError: ``tag`` is set but is not a key of :data:`~ipmn_lightning.phases.registry.PHASES`.
    """
    if tag is not None and tag not in PHASES:
        raise CheckpointError(
            f"{source} has the phase tag {tag!r}, which is not a phase of this version; expected one of "
            f"{', '.join(map(repr, PHASES))} (checkpoints from before the phases had one name are not read: "
            "retrain that phase)"
        )


def load_phase_checkpoint(
    path: str | os.PathLike, argument: str, expected_phase: str | tuple[str, ...]
) -> dict[str, Any]:
    """Load an earlier phase's Lightning checkpoint without running code.

    Args:
        path: the ``.ckpt`` file.
        argument: the init argument that took the path (named in error messages).
        expected_phase: the ``ipmn_phase`` the checkpoint must come from (a key of :data:`PHASES`), or several.

    Returns:
        The checkpoint dict (``state_dict``, ``hyper_parameters``, ...).

    Raises:
        CheckpointError: missing file, a file that is not a Lightning checkpoint, a tag that is not a phase key,
            or a checkpoint of another phase.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{argument}: no checkpoint at {file}; pass the .ckpt written by that phase's `ipmn fit`")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{argument}: {file} is not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{argument}: {file} is not a Lightning checkpoint (no state_dict)")
    phase = checkpoint.get(PHASE_KEY)
    check_phase_tag(phase, f"{argument}: {file}")
    expected = (expected_phase,) if isinstance(expected_phase, str) else expected_phase
    if phase not in expected:
        raise CheckpointError(
            f"{argument}: {file} is a checkpoint of phase {phase!r}, expected {' or '.join(map(repr, expected))}; "
            "check that each *_ckpt argument points at the right phase's output"
        )
    return checkpoint


def load_submodule(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, source: str) -> None:
    """Load the ``prefix.``-keys of a checkpoint's state dict into ``module`` (strictly)."""
    sub = {k[len(prefix) + 1 :]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}
    if not sub:
        raise CheckpointError(f"{source} has no weights for {prefix!r}")
    try:
        module.load_state_dict(sub)
    except RuntimeError as err:
        raise CheckpointError(
            f"{source}: the {prefix!r} weights do not fit this network "
            f"(were the architecture arguments changed?): {err}"
        ) from err


def load_phase1(path: str, argument: str = "phase1_ckpt") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Configs of H and R, and the state dict, of a phase-1 checkpoint."""
    checkpoint = load_phase_checkpoint(path, argument, PHASE1)
    hparams = checkpoint["hyper_parameters"]
    return {"embedder": embedder_config(hparams), "extractor": extractor_config(hparams)}, checkpoint["state_dict"]


def load_phase2(path: str, argument: str = "phase2_ckpt") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Configs of H and the INN, and the state dict (H, w, INN), of a phase-2 checkpoint."""
    checkpoint = load_phase_checkpoint(path, argument, PHASE2)
    frozen = checkpoint.get(FROZEN_KEY) or {}
    if "embedder" not in frozen:
        raise ValueError(f"{argument}: {path} does not record its embedder; re-save it with this version")
    hparams = checkpoint["hyper_parameters"]
    configs = {"embedder": frozen["embedder"], "inn": inn_config(hparams), "position": watermark_position(hparams)}
    return configs, checkpoint["state_dict"]


def load_stealer(path: str, argument: str = "stealer_ckpt") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Config and state dict of a stealing model from a phase-3a checkpoint."""
    checkpoint = load_phase_checkpoint(path, argument, PHASE3_STEAL)
    return stealer_config(checkpoint["hyper_parameters"]), checkpoint["state_dict"]


def load_stealer_network(path: str, argument: str = "stealer_ckpt") -> tuple[dict[str, Any], nn.Module]:
    """A phase-3a checkpoint's stealing model, built, loaded and in eval mode, with its config."""
    config, state = load_stealer(path, argument)
    network = build("stealer", config)
    load_submodule(network, state, "stealer", f"{argument} {path}")
    return config, network.eval()


def check_image_size(trained: int, wanted: int, argument: str) -> None:
    """An earlier phase must have been trained at the data module's image size."""
    if trained != wanted:
        raise ValueError(
            f"{argument} was trained at {trained} px but data.image_size is {wanted}; use the earlier phase's size"
        )
