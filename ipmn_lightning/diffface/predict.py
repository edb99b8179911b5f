"""``ipmn masks generate --generator diffface`` as a Lightning predict: one shard of the store per process.

:func:`generate_masks_lightning` runs :class:`MaskShardPredictor` over :class:`ShardIndices` (one item per rank),
so every rank fills its own shard with :func:`~ipmn_lightning.workflows.masks.generate_masks` on its own device;
rank 0 then folds the shards' logs into ``pairs.csv``. :func:`tool_options` splits the ``--generator.*`` flags
into the generator's and the trainer's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ipmn_lightning.data.mask_store import read_pairs
from ipmn_lightning.faces.generators import MaskGenerator
from ipmn_lightning.workflows.masks import STATE_DIR, _finalize_pairs, _read_logs, generate_masks

__all__ = ["MaskShardPredictor", "ShardIndices", "generate_masks_lightning", "tool_options"]

#: The ``--generator.*`` options that go to the Lightning trainer rather than to the generator.
TRAINER_OPTIONS = ("accelerator", "devices", "num_nodes", "strategy")


class ShardIndices(Dataset[int]):
    """The predict loop's data: item ``i`` is shard ``i``, so a distributed sampler gives each rank one.

    Args:
        n: the number of shards (the trainer's world size).
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class MaskShardPredictor(pl.LightningModule):
    """Fills this rank's shard of a mask store in ``predict_step`` (shard ``rank/world_size``).

    Args:
        root: the dataset folder.
        generator: the mask generator (moved to this rank's device when it has ``to``).
        **kwargs: the other arguments of :func:`~ipmn_lightning.workflows.masks.generate_masks` (``source``,
            ``store``, ``image_size``, ``seed``, ``progress``, ``identity_sample``).
    """

    def __init__(self, root: str | os.PathLike[str], generator: MaskGenerator, **kwargs: Any) -> None:
        super().__init__()
        self.root = root
        self.generator = generator
        self.kwargs = kwargs

    def predict_step(self, batch: Tensor, batch_idx: int) -> dict[str, Any]:
        """This rank's ``generate_masks`` summary (its shard's rows)."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        if hasattr(self.generator, "to"):
            self.generator.to(self.device)
        return generate_masks(self.root, generator=self.generator, workers=1, shard=(rank, world), **self.kwargs)


def generate_masks_lightning(
    root: str | os.PathLike[str],
    generator: MaskGenerator,
    source: str = "folder",
    store: str | os.PathLike[str] | None = None,
    image_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    identity_sample: int = 32,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
) -> dict[str, Any]:
    """Fill a mask store as a Lightning predict: one shard of the rows per process (DDP-ready).

    Every rank runs :func:`~ipmn_lightning.workflows.masks.generate_masks` on shard ``rank/world_size`` with the
    generator on its own device, so it writes its own masks atomically and logs its rows to its own
    ``.generate/rows-K-of-N.jsonl``; a rerun (any number of ranks) skips the rows already logged ``ok``. After
    a barrier, rank 0 folds every shard's log into ``pairs.csv`` (re-pairings, dropped rows).

    Args:
        root: the dataset folder.
        generator: the mask generator (moved to each rank's device when it has ``to``).
        source: ``"celeba"`` or ``"folder"``.
        store: the store folder (default ``<root>/masks_store``).
        image_size: mask side.
        seed: pairing seed.
        progress: progress bars.
        identity_sample: see ``generate_masks``.
        accelerator: Lightning accelerator (``"gpu"`` for GPUs).
        devices: processes per node (GPUs).
        num_nodes: nodes (start them as in docs/scaling.md).
        strategy: Lightning strategy (``"ddp"`` for several devices).

    Returns:
        This rank's summary (its shard's rows); on rank 0 also ``"store_rows_done"`` (the rows of every shard
        with a mask, after the fold) and ``"world_size"``.
    """
    kwargs: dict[str, Any] = {
        "source": source,
        "store": store,
        "image_size": image_size,
        "seed": seed,
        "progress": progress,
        "identity_sample": identity_sample,
    }
    trainer = pl.Trainer(
        inference_mode=False,  # the guidance backpropagates through the UNet: no inference tensors
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    predictor = MaskShardPredictor(root, generator, **kwargs)
    results = trainer.predict(predictor, DataLoader(ShardIndices(trainer.world_size), batch_size=1)) or []
    trainer.strategy.barrier()
    summary = next((r for r in results if isinstance(r, dict)), {})
    if not trainer.is_global_zero:
        return summary
    # every shard is logged now: fold the logs into pairs.csv (re-pairings, dropped rows) without redoing any row
    store_path = Path(store).expanduser() if store else Path(root).expanduser() / "masks_store"
    logged = _read_logs(store_path / STATE_DIR)
    updated = _finalize_pairs(store_path, read_pairs(store_path), logged, image_size)
    summary["pairs_csv_updated"] = bool(summary.get("pairs_csv_updated")) or updated
    summary["store_rows_done"] = sum(r.status == "ok" for r in logged.values())
    summary["world_size"] = trainer.world_size
    return summary


def tool_options(options: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``--generator.*`` options into the generator's and the Lightning trainer's."""
    opts = dict(options or {})
    trainer = {k: opts.pop(k) for k in TRAINER_OPTIONS if k in opts}
    return opts, trainer
