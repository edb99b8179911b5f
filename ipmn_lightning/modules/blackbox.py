"""Rebuilding earlier phases' networks from their checkpoints, as frozen black boxes for later phases.

Each phase records the architecture of what it trained in its hyper-parameters; the helpers here turn
those into constructor arguments, so a later phase (or a bundle) can rebuild the network and load its
weights without running any code from the checkpoint.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..nets.embedder import WatermarkEmbedder
from ..nets.extractor import WatermarkExtractor
from ..nets.inn import InvertibleMaskNet
from ..nets.stealing import build_stealer
from .base import load_phase_checkpoint

PHASE1 = "watermark_pretrain"
PHASE2 = "invertible_mask"
PHASE3_STEAL = "stealing_attack"


def embedder_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """H's constructor arguments from phase-1 hyper-parameters."""
    return {
        "image_size": int(hparams["image_size"]),
        "ngf": int(hparams["ngf"]),
        "num_downs": hparams.get("num_downs"),
        "residual": bool(hparams.get("residual_embedder", False)),
    }


def extractor_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """R's constructor arguments from phase-1 hyper-parameters."""
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


def build(kind: str, config: dict[str, Any]) -> nn.Module:
    """Build an untrained network of ``kind`` (embedder, extractor, inn, stealer) from its config."""
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
    return {"embedder": frozen["embedder"], "inn": inn_config(checkpoint["hyper_parameters"])}, checkpoint["state_dict"]


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
