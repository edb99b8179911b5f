"""Tiny phase checkpoints for tests: every phase trained for a couple of steps on fake data."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytorch_lightning as pl

from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule
from ipmn_lightning.modules import (
    ExtractorEnhanceModule,
    InvertibleMaskModule,
    StealingAttackModule,
    WatermarkPretrainModule,
)

SIZE = 32
TINY_PHASE1 = dict(
    ngf=4, extractor_channels=8, extractor_dilations=(1, 2), discriminator_widths=(4, 8, 8, 8),
    lambda_vgg=0.0, vgg_weights=None,
)  # fmt: skip
TINY_PHASE2 = dict(num_blocks=2, growth=4, lpips_net=None)


def tiny_data(size: int = SIZE, batch_size: int = 4) -> FaceSwapDataModule:
    return FaceSwapDataModule(image_size=size, batch_size=batch_size, num_workers=0, synthetic_sizes=(8, 4, 4), seed=0)


def tiny_trainer(**kwargs: object) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )  # fmt: skip
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def train_and_save(module: pl.LightningModule, path: Path, size: int = SIZE) -> Path:
    trainer = tiny_trainer()
    trainer.fit(module, datamodule=tiny_data(size))
    trainer.save_checkpoint(path)
    return path


def make_checkpoints(folder: Path, size: int = SIZE) -> dict[str, Path]:
    """phase1, phase2, stealer (cnet) and enhance checkpoints, each a couple of steps old."""
    folder.mkdir(parents=True, exist_ok=True)
    p1 = train_and_save(WatermarkPretrainModule(image_size=size, **TINY_PHASE1), folder / "phase1.ckpt", size)
    p2 = train_and_save(
        InvertibleMaskModule(image_size=size, phase1_ckpt=str(p1), **TINY_PHASE2),
        folder / "phase2.ckpt",
        size,
    )
    steal = train_and_save(
        StealingAttackModule(image_size=size, phase1_ckpt=str(p1), phase2_ckpt=str(p2), stealer="cnet", ngf=4),
        folder / "stealer.ckpt",
        size,
    )
    enhance = train_and_save(
        ExtractorEnhanceModule(image_size=size, phase1_ckpt=str(p1), phase2_ckpt=str(p2), stealer_ckpt=[str(steal)]),
        folder / "enhance.ckpt",
        size,
    )
    return {"phase1": p1, "phase2": p2, "stealer": steal, "enhance": enhance}


def write_faces(folder: Path, n: int = 3, size: int = 32) -> tuple[Path, Path]:
    """``n`` synthetic faces and their masks as PNG files named alike in ``folder/faces`` and ``folder/masks``."""
    from ipmn_lightning.core.files import atomic_save_image
    from ipmn_lightning.data.synthetic import SyntheticFaceSwapDataset

    data = SyntheticFaceSwapDataset(n, size, split="val")
    for i in range(n):
        atomic_save_image(folder / "faces" / f"face{i}.png", data[i]["protected"])
        atomic_save_image(folder / "masks" / f"face{i}.png", data[i]["mask"])
    return folder / "faces", folder / "masks"


def load_script(name: str) -> ModuleType:
    """The fake-data generator ``tests/fakes/<name>.py`` (also runnable as a script)."""
    return importlib.import_module(f"tests.fakes.{name}")
