"""The networks' constructor arguments from the phases' hyper-parameters, and :func:`build`.

A phase records the architecture of what it trained in its hyper-parameters; these helpers turn them into
constructor arguments ("configs"), so a later phase (or a bundle) can rebuild the network without running any
code from the checkpoint.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ipmn_lightning.nets.embedder import WatermarkEmbedder
from ipmn_lightning.nets.extractor import WatermarkExtractor
from ipmn_lightning.nets.hidden import HiddenDecoder, HiddenEncoder
from ipmn_lightning.nets.inn import InvertibleMaskNet
from ipmn_lightning.nets.stealing import build_stealer

__all__ = [
    "HIDDEN",
    "build",
    "embedder_config",
    "extractor_config",
    "inn_config",
    "stealer_config",
    "watermark_shape",
]

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
