"""DiffFace weights: guided-diffusion ``Model.pt`` -> our diffusers layout, safetensors files, and loading.

Three kinds of file hold a :class:`~ipmn_lightning.diffface.unet.DiffFaceUNet`:

* DiffFace's published ``Model.pt``: a guided-diffusion state dict (ADM key names, ``id_embed`` MLP).
  :func:`convert_guided_diffusion` maps it to our key names; ``ipmn masks convert-diffface Model.pt OUT``
  writes the result as safetensors.
* Our safetensors (:func:`save_diffface`): the UNet's state dict, with the architecture and the identity
  encoder it was trained with in the JSON metadata.
* A ``DiffFaceModule`` Lightning checkpoint (``ipmn fit --config configs/diffface.yaml``): its EMA weights.

:func:`load_diffface` reads any of them without running code (safetensors or ``torch.load(weights_only=True)``).

Attention qkv order (our port to diffusers' ``UNet2DModel``): guided-diffusion's default ``QKVAttentionLegacy``
(DiffFace) lays the 1x1-conv ``qkv`` weight out per head as ``[q_h; k_h; v_h]``; ``QKVAttention``
(``use_new_attention_order``) as ``[q; k; v]`` over all heads. ``attention_order`` picks the split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.core.files import atomic_path
from ipmn_lightning.diffface.unet import DIFFFACE_CONFIG, DiffFaceUNet, attention_levels

__all__ = [
    "DiffFaceWeightsError",
    "check_diffface_file",
    "convert_diffface_file",
    "convert_guided_diffusion",
    "load_diffface",
    "save_diffface",
]

#: safetensors metadata keys.
CONFIG_KEY = "ipmn_diffface_config"
ENCODER_KEY = "ipmn_identity_encoder"
#: ``ipmn_phase`` of DiffFaceModule checkpoints.
DIFFFACE_PHASE = "diffface"


class DiffFaceWeightsError(IPMNError):
    """A DiffFace weights file is missing, unreadable or does not fit the network."""


_RES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


def _map_resblock(sd: Mapping[str, Tensor], src: str, dst: str, out: dict[str, Tensor]) -> None:
    for a, b in _RES.items():
        for p in ("weight", "bias"):
            key = f"{src}.{a}.{p}"
            if key in sd:
                out[f"{dst}.{b}.{p}"] = sd[key]


def _map_attention(
    sd: Mapping[str, Tensor], src: str, dst: str, head_channels: int, order: str, out: dict[str, Tensor]
) -> None:
    out[f"{dst}.group_norm.weight"] = sd[f"{src}.norm.weight"]
    out[f"{dst}.group_norm.bias"] = sd[f"{src}.norm.bias"]
    w = sd[f"{src}.qkv.weight"]  # (3C, C, 1) 1x1 conv1d
    b = sd[f"{src}.qkv.bias"]
    c = w.shape[1]
    heads = c // head_channels
    w = w.reshape(3 * c, c)
    if order == "legacy":  # per head [q_h; k_h; v_h]
        w4 = w.reshape(heads, 3, head_channels, c)
        b3 = b.reshape(heads, 3, head_channels)
        parts_w = [w4[:, i].reshape(c, c) for i in range(3)]
        parts_b = [b3[:, i].reshape(c) for i in range(3)]
    else:  # [q; k; v], heads contiguous inside each
        parts_w, parts_b = list(w.chunk(3, dim=0)), list(b.chunk(3, dim=0))
    for name, pw, pb in zip(("to_q", "to_k", "to_v"), parts_w, parts_b):
        out[f"{dst}.{name}.weight"] = pw.contiguous()
        out[f"{dst}.{name}.bias"] = pb.contiguous()
    out[f"{dst}.to_out.0.weight"] = sd[f"{src}.proj_out.weight"].reshape(c, c)
    out[f"{dst}.to_out.0.bias"] = sd[f"{src}.proj_out.bias"]


def convert_guided_diffusion(
    state_dict: Mapping[str, Tensor],
    config: Mapping[str, Any] | None = None,
    attention_order: Literal["legacy", "new"] = "legacy",
) -> dict[str, Tensor]:
    """Map a guided-diffusion / DiffFace UNet state dict onto :class:`DiffFaceUNet`'s key names.

    Args:
        state_dict: ADM keys (``input_blocks.N.M...``, ``middle_block``, ``output_blocks``, ``out``,
            ``time_embed``, ``id_embed``); a ``module.`` prefix (DataParallel) is dropped.
        config: the architecture (:data:`~ipmn_lightning.diffface.unet.DIFFFACE_CONFIG` keys; missing keys take
            DiffFace's values).
        attention_order: ``"legacy"`` (guided-diffusion's default, DiffFace) or ``"new"``
            (``use_new_attention_order=True``).

    Returns:
        A state dict for ``DiffFaceUNet(**config)`` (``unet.*`` and ``id_mlp.*``).

    Raises:
        DiffFaceWeightsError: a key the architecture needs is missing, naming it and the config to check.
    """
    cfg = {**DIFFFACE_CONFIG, **(config or {})}
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    try:
        for a, b in (("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2")):
            for p in ("weight", "bias"):
                out[f"unet.{b}.{p}"] = sd[f"{a}.{p}"]
        for a, b in (("id_embed.0", "id_mlp.0"), ("id_embed.2", "id_mlp.2")):
            for p in ("weight", "bias"):
                out[f"{b}.{p}"] = sd[f"{a}.{p}"]
        for p in ("weight", "bias"):
            out[f"unet.conv_in.{p}"] = sd[f"input_blocks.0.0.{p}"]
            out[f"unet.conv_norm_out.{p}"] = sd[f"out.0.{p}"]
            out[f"unet.conv_out.{p}"] = sd[f"out.2.{p}"]
        levels = len(cfg["channel_mult"])
        attn = attention_levels(cfg["image_size"], levels, cfg["attention_resolutions"])
        heads_ch, n_res, order = cfg["num_head_channels"], cfg["num_res_blocks"], attention_order
        idx = 0
        for level in range(levels):
            for j in range(n_res):
                idx += 1
                _map_resblock(sd, f"input_blocks.{idx}.0", f"unet.down_blocks.{level}.resnets.{j}", out)
                if attn[level]:
                    _map_attention(
                        sd, f"input_blocks.{idx}.1", f"unet.down_blocks.{level}.attentions.{j}", heads_ch, order, out
                    )
            if level != levels - 1:
                idx += 1
                _map_resblock(sd, f"input_blocks.{idx}.0", f"unet.down_blocks.{level}.downsamplers.0", out)
        _map_resblock(sd, "middle_block.0", "unet.mid_block.resnets.0", out)
        _map_attention(sd, "middle_block.1", "unet.mid_block.attentions.0", heads_ch, order, out)
        _map_resblock(sd, "middle_block.2", "unet.mid_block.resnets.1", out)
        idx = 0
        for up, level in enumerate(reversed(range(levels))):
            for j in range(n_res + 1):
                _map_resblock(sd, f"output_blocks.{idx}.0", f"unet.up_blocks.{up}.resnets.{j}", out)
                if attn[level]:
                    _map_attention(
                        sd, f"output_blocks.{idx}.1", f"unet.up_blocks.{up}.attentions.{j}", heads_ch, order, out
                    )
                if level and j == n_res:
                    k = 2 if attn[level] else 1
                    _map_resblock(sd, f"output_blocks.{idx}.{k}", f"unet.up_blocks.{up}.upsamplers.0", out)
                idx += 1
    except KeyError as err:
        raise DiffFaceWeightsError(
            f"the guided-diffusion state dict has no {err.args[0]!r}: it does not have the architecture "
            f"{ {k: cfg[k] for k in ('image_size', 'channel_mult', 'num_res_blocks', 'attention_resolutions')} }; "
            "pass the channel_mult/num_res_blocks/attention_resolutions it was trained with"
        ) from None
    # resblock convs in ADM are 2-D already; attention 1x1 conv1d weights were flattened above
    return out


def save_diffface(
    path: str | os.PathLike[str], net: DiffFaceUNet, identity_encoder: str = "arcface", extra: dict | None = None
) -> Path:
    """Write ``net``'s weights and architecture to a safetensors file (atomically).

    Args:
        path: the ``.safetensors`` file.
        net: the network.
        identity_encoder: what produced the identity embeddings it was trained with (``"arcface"`` for
            DiffFace's checkpoint, ``"dlib"`` for our DiffFaceModule), so the sampler embeds x_r the same way.
        extra: more JSON-able metadata.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {CONFIG_KEY: json.dumps(net.config), ENCODER_KEY: identity_encoder}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, os.fspath(tmp), metadata=meta)
    return Path(path)


def _build(config: Mapping[str, Any], state: Mapping[str, Tensor], source: str) -> DiffFaceUNet:
    net = DiffFaceUNet(**dict(config))
    try:
        net.load_state_dict(dict(state))
    except RuntimeError as err:
        raise DiffFaceWeightsError(f"{source}: the weights do not fit the recorded architecture: {err}") from err
    return net.eval()


def check_diffface_file(path: str | os.PathLike[str]) -> Path:
    """The weights file's path, or :class:`DiffFaceWeightsError` naming ``--generator.checkpoint`` if it is missing."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DiffFaceWeightsError(
            f"--generator.checkpoint: no DiffFace weights at {file}; pass a .safetensors from "
            "`ipmn masks convert-diffface`, a .ckpt from `ipmn fit --config configs/diffface.yaml`, or Model.pt"
        )
    return file


def load_diffface(
    path: str | os.PathLike[str], config: Mapping[str, Any] | None = None, ema: bool = True
) -> tuple[DiffFaceUNet, str]:
    """Load a DiffFace network from our safetensors, a DiffFaceModule checkpoint or DiffFace's ``Model.pt``.

    Args:
        path: ``.safetensors`` (ours), ``.ckpt`` (DiffFaceModule) or ``.pt`` (guided-diffusion state dict,
            converted on the fly with the legacy qkv order).
        config: architecture for a ``Model.pt`` (default: DiffFace's).
        ema: take a DiffFaceModule checkpoint's EMA weights (else the raw weights).

    Returns:
        The network in eval mode and the identity encoder name it expects (``"arcface"`` or ``"dlib"``).

    Raises:
        DiffFaceWeightsError: a missing or unreadable file, or weights of another architecture, naming the file.
    """
    file = check_diffface_file(path)
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(os.fspath(file), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        if CONFIG_KEY not in meta:
            raise DiffFaceWeightsError(f"{file} has no {CONFIG_KEY!r} metadata; write it with save_diffface")
        return _build(json.loads(meta[CONFIG_KEY]), state, os.fspath(file)), meta.get(ENCODER_KEY, "arcface")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DiffFaceWeightsError(
            f"{file} is not a weights-only torch file ({type(err).__name__}: {err}); convert it with "
            "`ipmn masks convert-diffface` where it was written"
        ) from err
    if isinstance(obj, dict) and "state_dict" in obj:  # a DiffFaceModule checkpoint
        if obj.get("ipmn_phase") != DIFFFACE_PHASE:
            raise DiffFaceWeightsError(f"{file} is a checkpoint of phase {obj.get('ipmn_phase')!r}, not a DiffFace one")
        hp = obj.get("hyper_parameters", {})
        prefix = "ema." if ema and any(k.startswith("ema.") for k in obj["state_dict"]) else "net."
        state = {k[len(prefix) :]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
        cfg = obj.get("diffface_config") or {k: hp[k] for k in DIFFFACE_CONFIG if k in hp}
        return _build(cfg, state, os.fspath(file)), str(hp.get("identity_encoder", "dlib"))
    if not isinstance(obj, dict):
        raise DiffFaceWeightsError(f"{file} holds a {type(obj).__name__}, not a state dict")
    cfg = {**DIFFFACE_CONFIG, **(config or {})}
    return _build(cfg, convert_guided_diffusion(obj, cfg), os.fspath(file)), "arcface"


def convert_diffface_file(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
    attention_order: Literal["legacy", "new"] = "legacy",
) -> Path:
    """Convert DiffFace's ``Model.pt`` to our safetensors (``ipmn masks convert-diffface``).

    Args:
        model: the guided-diffusion state dict file (read weights-only).
        out: the ``.safetensors`` to write.
        config: architecture overrides (default: DiffFace's 256-px network).
        attention_order: qkv layout of the source (``"legacy"`` for DiffFace).

    Raises:
        DiffFaceWeightsError: unreadable input or weights that do not fit, naming the file and the fix.
    """
    file = Path(model).expanduser()
    if not file.is_file():
        raise DiffFaceWeightsError(f"MODEL: no file at {file}; pass DiffFace's checkpoints/Model.pt")
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DiffFaceWeightsError(
            f"MODEL: {file} is not a weights-only state dict ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(sd, dict):
        raise DiffFaceWeightsError(f"MODEL: {file} holds a {type(sd).__name__}, not a state dict")
    cfg = {**DIFFFACE_CONFIG, **(config or {})}
    net = _build(cfg, convert_guided_diffusion(sd, cfg, attention_order), os.fspath(file))
    out_path = Path(out).expanduser()
    if out_path.suffix != ".safetensors":
        out_path = out_path.with_suffix(".safetensors") if out_path.suffix else out_path / "diffface.safetensors"
    return save_diffface(out_path, net, identity_encoder="arcface", extra={"source": os.fspath(file)})
