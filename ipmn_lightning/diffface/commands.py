"""The DiffFace commands: ``ipmn masks convert-diffface`` and ``ipmn masks generate --generator diffface``.

:func:`diffface_generate` is the ``diffface`` generator's driver
(:attr:`~ipmn_lightning.diffface.generator.DiffFaceMaskGenerator.driver`): ``ipmn masks generate`` hands it the
command's arguments instead of running the generator in process.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

__all__ = ["diffface_generate", "masks_convert_diffface"]


def masks_convert_diffface(
    model: str,
    out: str,
    attention_order: Literal["legacy", "new"] = "legacy",
    image_size: int = 256,
    model_channels: int = 256,
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4),
    num_res_blocks: int = 2,
    attention_resolutions: tuple[int, ...] = (32, 16, 8),
    num_head_channels: int = 64,
    id_dim: int = 512,
) -> int:
    """Convert DiffFace's guided-diffusion ``Model.pt`` to a diffusers-layout safetensors file.

    The defaults are DiffFace's published network; the result loads with ``--generator.checkpoint OUT``.
    The file is read weights-only (no code runs) and written atomically.

    Args:
        model: DiffFace's ``checkpoints/Model.pt``.
        out: the ``.safetensors`` to write.
        attention_order: ``legacy`` (guided-diffusion's default, DiffFace) or ``new`` (use_new_attention_order).
        image_size: the network's image side.
        model_channels: ADM ``num_channels``.
        channel_mult: per-level width multipliers.
        num_res_blocks: residual blocks per level.
        attention_resolutions: feature sides with attention.
        num_head_channels: channels per attention head.
        id_dim: identity embedding size (ArcFace: 512).
    """
    from ipmn_lightning.diffface.convert import DiffFaceWeightsError, convert_diffface_file

    config = {
        "image_size": image_size,
        "model_channels": model_channels,
        "channel_mult": tuple(channel_mult),
        "num_res_blocks": num_res_blocks,
        "attention_resolutions": tuple(attention_resolutions),
        "num_head_channels": num_head_channels,
        "id_dim": id_dim,
    }
    try:
        path = convert_diffface_file(model, out, config, attention_order)
    except (DiffFaceWeightsError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def diffface_generate(
    root: str,
    source: str,
    store: str | None,
    image_size: int,
    seed: int,
    identity_sample: int,
    progress: bool,
    options: dict[str, Any] | None,
    workers: int = 1,
    shard: str = "0/1",
) -> int:
    """``ipmn masks generate --generator diffface``: a Lightning predict over the store's shards.

    ``options`` are the ``--generator.*`` flags: :class:`~ipmn_lightning.diffface.generator.DiffFaceMaskGenerator`'s
    arguments (``checkpoint`` is required) plus Lightning's ``accelerator``, ``devices``, ``num_nodes`` and
    ``strategy`` (e.g. ``--generator.devices 2 --generator.strategy ddp``).

    ``--workers`` and ``--shard`` belong to the CPU generators and are refused here rather than ignored: the
    Lightning predict already runs one process per device, each holding the UNet and backpropagating through it
    for the guidance, and shards the rows by rank (more processes: ``--generator.devices N`` with
    ``--generator.strategy ddp``, on CPUs with ``--generator.accelerator cpu``; more machines:
    ``--generator.num_nodes``).
    """
    from ipmn_lightning.diffface.convert import DiffFaceWeightsError
    from ipmn_lightning.diffface.generator import DiffFaceMaskGenerator
    from ipmn_lightning.diffface.predict import generate_masks_lightning, tool_options

    more = "--generator.devices N --generator.strategy ddp (CPU processes: add --generator.accelerator cpu)"
    if workers != 1:
        print(
            f"error: --workers {workers} does not apply to --generator diffface: it runs as a Lightning predict with "
            f"one process per device (each holds the UNet and backpropagates through it); for more processes "
            f"pass {more}",
            file=sys.stderr,
        )
        return 1
    if shard not in ("0/1", ""):
        print(
            f"error: --shard {shard} does not apply to --generator diffface: the Lightning predict shards the rows "
            f"by rank; for more processes pass {more}, for more machines --generator.num_nodes (docs/scaling.md)",
            file=sys.stderr,
        )
        return 1
    gen_opts, trainer_opts = tool_options(options)
    if "checkpoint" not in gen_opts:
        print(
            "error: --generator diffface needs --generator.checkpoint PATH (a .ckpt from "
            "`ipmn fit --config configs/diffface.yaml`, or a .safetensors from `ipmn masks convert-diffface`)",
            file=sys.stderr,
        )
        return 1
    try:
        gen = DiffFaceMaskGenerator(**gen_opts)
        summary = generate_masks_lightning(
            root,
            gen,
            source=source,
            store=store,
            image_size=image_size,
            seed=seed,
            progress=progress,
            identity_sample=identity_sample,
            **trainer_opts,
        )
    except (DiffFaceWeightsError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
