"""The phase registry and checkpoint reading: torch only, so inference never imports Lightning.

:data:`PHASES` is the one table of the four training phases: each phase's key is its name everywhere (the
``ipmn_phase`` tag in its checkpoints, the ``kind`` in a pipeline manifest, the module file and the config
file). Each phase records the architecture of what it trained in its hyper-parameters; the helpers here turn
those into constructor arguments, so a later phase (or a bundle) can rebuild the network and load its weights
without running any code from the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ipmn_lightning.nets.embedder import WatermarkEmbedder
from ipmn_lightning.nets.extractor import WatermarkExtractor
from ipmn_lightning.nets.hidden import HiddenDecoder, HiddenEncoder
from ipmn_lightning.nets.inn import InvertibleMaskNet
from ipmn_lightning.nets.stealing import build_stealer

PHASE_KEY = "ipmn_phase"
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
#: The tags of checkpoints written before the phases had one name (0.x): still loaded as their phase.
LEGACY_TAGS = {"watermark_pretrain": PHASE1, "invertible_mask": PHASE2, "stealing_attack": PHASE3_STEAL,
               "extractor_enhance": PHASE3_ENHANCE}  # fmt: skip
#: The pipeline manifests' phase kinds of that time (``phase1`` and ``phase2`` kept their names).
LEGACY_KINDS = {"steal": PHASE3_STEAL, "enhance": PHASE3_ENHANCE}
PHASES: dict[str, Phase] = {
    p.key: p
    for p in (
        Phase(PHASE1, "ipmn_lightning.modules.phase1.WatermarkPretrainModule", "phase1_ckpt"),
        Phase(PHASE2, "ipmn_lightning.modules.phase2.InvertibleMaskModule", "phase2_ckpt"),
        Phase(PHASE3_STEAL, "ipmn_lightning.modules.phase3_steal.StealingAttackModule", "stealer_ckpt"),
        Phase(PHASE3_ENHANCE, "ipmn_lightning.modules.phase3_enhance.ExtractorEnhanceModule", "enhance_ckpt"),
    )
}


class CheckpointError(ValueError):
    """An earlier-phase checkpoint is missing, unreadable or of the wrong phase."""


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
        CheckpointError: missing file, a file that is not a Lightning checkpoint, or a checkpoint of another phase.
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
    phase = checkpoint[PHASE_KEY] = LEGACY_TAGS.get(checkpoint.get(PHASE_KEY), checkpoint.get(PHASE_KEY))
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


HIDDEN = "hidden"
"""The ``type`` of the H/R configs of the HiDDeN baseline (paper §4.3.2); IPMN's own configs have no ``type``."""


def embedder_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """H's constructor arguments from phase-1 hyper-parameters.

    For the HiDDeN baseline (``hparams["embedder"] == "hidden"``) the config also carries ``type`` and the
    shape of the owner's watermark (the (L,) message), ``watermark_shape``, which later phases read.
    """
    if hparams.get("embedder") == HIDDEN:
        length = int(hparams["message_length"])
        return {"type": HIDDEN, "image_size": int(hparams["image_size"]), "message_length": length,
                "channels": int(hparams["channels"]), "blocks": int(hparams["encoder_blocks"]),
                "watermark_shape": [length]}  # fmt: skip
    return {
        "image_size": int(hparams["image_size"]),
        "ngf": int(hparams["ngf"]),
        "num_downs": hparams.get("num_downs"),
        "residual": bool(hparams.get("residual_embedder", False)),
    }


def watermark_shape(embedder: dict[str, Any]) -> tuple[int, ...]:
    """Shape of the watermark buffer w that goes with an H config.

    ``watermark_shape`` if the config records one (the HiDDeN baseline's (L,) message), else the
    (3, size, size) image of IPMN's H.
    """
    if embedder.get("watermark_shape") is not None:
        return tuple(int(n) for n in embedder["watermark_shape"])
    size = int(embedder["image_size"])
    return (3, size, size)


def extractor_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """R's constructor arguments from phase-1 hyper-parameters."""
    if hparams.get("embedder") == HIDDEN:
        return {"type": HIDDEN, "message_length": int(hparams["message_length"]),
                "channels": int(hparams["channels"]), "blocks": int(hparams["decoder_blocks"])}  # fmt: skip
    return {"channels": int(hparams["extractor_channels"]), "dilations": tuple(hparams["extractor_dilations"])}


def inn_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """The INN's constructor arguments from phase-2 hyper-parameters."""
    return {
        "num_blocks": int(hparams["num_blocks"]),
        "clamp": float(hparams["clamp"]),
        "growth": int(hparams["growth"]),
        "wavelet": hparams.get("wavelet", "haar"),
    }


def stealer_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """A stealing model's builder arguments from phase-3a hyper-parameters."""
    return {
        "name": hparams["stealer"],
        "image_size": int(hparams["image_size"]),
        "ngf": int(hparams["ngf"]),
        **({"block": hparams["res_block"]} if hparams["stealer"] in ("res9", "res16") else {}),
    }


#: Where the owner's watermark goes (paper §4.2.2, Tables 5-6): into the mask before the INN (IPMN, ``mask``),
#: into the INN's output ``masked_face`` (the ablation), or nowhere (``none``: IMN, Table 7).
WatermarkPosition = Literal["mask", "masked_face", "none"]
WATERMARK_POSITIONS: tuple[str, ...] = ("mask", "masked_face", "none")


def put_on_mask(
    inn: nn.Module,
    embedder: nn.Module | None,
    watermark: Tensor,
    protected: Tensor,
    mask: Tensor,
    position: str = "mask",
) -> tuple[Tensor, Tensor]:
    """The sender's black box: the masked face x_wmf and the lost information M (eqs. 2 and 5).

    Args:
        inn: the putting-on/off network.
        embedder: H (unused when ``position`` is ``none``).
        watermark: w.
        protected: x_p, (B, 3, H, W) in [0, 1].
        mask: x_m, (B, 3, H, W) in [0, 1].
        position: ``mask``: f(x_p, H(x_m, w)) (IPMN); ``masked_face``: H(f(x_p, x_m), w) (Table 5's ablation);
            ``none``: f(x_p, x_m) (IMN).

    Returns:
        (x_wmf (B, 3, H, W), M (B, 12, H/2, W/2)).
    """
    if position == "none":
        return inn.put_on(protected, mask)
    if position == "masked_face":
        masked_face, lost = inn.put_on(protected, mask)
        return embedder(masked_face, watermark), lost
    return inn.put_on(protected, embedder(mask, watermark))


def watermark_position(hparams: dict[str, Any]) -> str:
    """The watermark position a phase-2 checkpoint was trained with (``mask`` for checkpoints before the option)."""
    return str(hparams.get("watermark_position", "mask"))


def build(kind: str, config: dict[str, Any]) -> nn.Module:
    """Build an untrained network of ``kind`` (embedder, extractor, inn, stealer) from its config."""
    if config.get("type") == HIDDEN and kind in ("embedder", "extractor"):
        arguments = {k: v for k, v in config.items() if k not in ("type", "watermark_shape")}
        return HiddenEncoder(**arguments) if kind == "embedder" else HiddenDecoder(**arguments)
    if kind == "embedder":
        return WatermarkEmbedder(**config)
    if kind == "extractor":
        return WatermarkExtractor(**{**config, "dilations": tuple(config["dilations"])})
    if kind == "inn":
        return InvertibleMaskNet(**config)
    if kind == "stealer":
        return build_stealer(**config)
    raise ValueError(f"unknown network kind {kind!r}")


def load_phase1(path: str, argument: str = "phase1_ckpt") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Configs of H and R, and the state dict, of a phase-1 checkpoint."""
    checkpoint = load_phase_checkpoint(path, argument, PHASE1)
    hparams = checkpoint["hyper_parameters"]
    return {"embedder": embedder_config(hparams), "extractor": extractor_config(hparams)}, checkpoint["state_dict"]


def load_phase2(path: str, argument: str = "phase2_ckpt") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Configs of H and the INN, and the state dict (H, w, INN), of a phase-2 checkpoint."""
    checkpoint = load_phase_checkpoint(path, argument, PHASE2)
    frozen = checkpoint.get("ipmn_frozen") or {}
    if "embedder" not in frozen:
        raise ValueError(f"{argument}: {path} does not record its embedder; re-save it with this version")
    hparams = checkpoint["hyper_parameters"]
    configs = {"embedder": frozen["embedder"], "inn": inn_config(hparams), "position": watermark_position(hparams)}
    return configs, checkpoint["state_dict"]


def load_stealer(path: str, argument: str = "stealer_ckpt") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Config and state dict of a stealing model from a phase-3a checkpoint."""
    checkpoint = load_phase_checkpoint(path, argument, PHASE3_STEAL)
    return stealer_config(checkpoint["hyper_parameters"]), checkpoint["state_dict"]


def check_image_size(trained: int, wanted: int, argument: str) -> None:
    """An earlier phase must have been trained at the data module's image size."""
    if trained != wanted:
        raise ValueError(
            f"{argument} was trained at {trained} px but data.image_size is {wanted}; use the earlier phase's size"
        )
