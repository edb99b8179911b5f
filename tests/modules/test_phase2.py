import importlib
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.demos.boring_classes import BoringModel

from ipmn_lightning.modules import InvertibleMaskModule
from ipmn_lightning.phases import PHASES, CheckpointError
from ipmn_lightning.training.lightning_cli import CheckpointSettings, default_checkpoints
from tests.helpers import SIZE, TINY_PHASE2, tiny_data, tiny_trainer


def make_module(checkpoints, **kwargs) -> InvertibleMaskModule:
    return InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), **{**TINY_PHASE2, **kwargs})


def test_phase1_weights_frozen_and_inn_trained(checkpoints):
    module = make_module(checkpoints)
    tiny_trainer(max_steps=2, limit_val_batches=0).fit(module, datamodule=tiny_data())
    phase1 = torch.load(checkpoints["phase1"], map_location="cpu", weights_only=True)["state_dict"]
    for key, value in module.embedder.state_dict().items():
        assert torch.equal(value, phase1[f"embedder.{key}"]), key
    assert torch.equal(module.watermark, phase1["watermark"])
    assert not any(p.requires_grad for p in module.embedder.parameters())
    fresh = make_module(checkpoints).inn.state_dict()
    assert any(not torch.equal(v, fresh[k]) for k, v in module.inn.state_dict().items())


def test_phase2_checkpoint_reloads_without_phase1_file(tmp_path, checkpoints):
    phase1 = tmp_path / "phase1.ckpt"
    shutil.copy(checkpoints["phase1"], phase1)
    module = InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(phase1), **TINY_PHASE2)
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    trainer.save_checkpoint(tmp_path / "phase2.ckpt")
    phase1.unlink()
    reloaded = InvertibleMaskModule.load_from_checkpoint(tmp_path / "phase2.ckpt", weights_only=True)
    x_p, x_m = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE)
    module.eval()
    with torch.no_grad():
        expected, _ = module(x_p, x_m)
        got, _ = reloaded(x_p, x_m)
    assert torch.allclose(expected, got)
    # validating the reloaded checkpoint needs no phase-1 file either
    tiny_trainer().validate(reloaded, datamodule=tiny_data())


def test_missing_and_wrong_phase1_checkpoint(tmp_path, checkpoints):
    with pytest.raises(ValueError, match="phase1_ckpt"):
        InvertibleMaskModule(image_size=SIZE, **TINY_PHASE2).setup("fit")
    with pytest.raises(CheckpointError, match="phase1_ckpt"):
        InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(tmp_path / "nope.ckpt"), **TINY_PHASE2).setup("fit")
    wrong = InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(checkpoints["phase2"]), **TINY_PHASE2)
    with pytest.raises(CheckpointError, match="expected 'phase1'"):
        wrong.setup("fit")


def test_nonfinite_step_is_skipped_and_counted(checkpoints):
    module = make_module(checkpoints)

    original = module.losses

    def nan_losses(*args, **kwargs):
        out = original(*args, **kwargs)
        out["fp"] = out["fp"] * float("nan")
        return out

    module.losses = nan_losses
    before = {k: v.clone() for k, v in module.inn.state_dict().items()}
    tiny_trainer(max_steps=2, limit_val_batches=0).fit(module, datamodule=tiny_data())
    assert module.skipped_steps.item() == 2
    assert all(torch.equal(v, before[k]) for k, v in module.inn.state_dict().items())


def test_validation_logs_table2_metrics(checkpoints):
    module = make_module(checkpoints)
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    for pair in ("recovered", "masked", "recovered_mask", "masked_vs_mask"):
        for suffix in ("", "_q8"):
            for kind in ("psnr", "ssim", "psnr_y", "ssim_y"):
                assert f"val/{kind}_{pair}{suffix}" in trainer.callback_metrics


@pytest.mark.parametrize(("clip", "fraction"), [(1e-8, 1.0), (1e12, 0.0)])
def test_clip_fraction_and_grad_norm_are_logged(clip, fraction, checkpoints):
    """How often clipping at ``gradient_clip_val`` fires is measurable: train/clip_fraction per epoch (issue 14)."""
    module = make_module(checkpoints, gradient_clip_val=clip)
    trainer = tiny_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, datamodule=tiny_data())
    assert trainer.callback_metrics["train/clip_fraction"].item() == fraction
    assert trainer.callback_metrics["train/grad_norm"].item() > 0


CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAINER_CONFIGS = [folder / f"{phase}.yaml" for folder in (CONFIGS, CONFIGS / "demo") for phase in PHASES]


class LogsMonitors(BoringModel):
    """BoringModel logging every metric the configs' checkpoints monitor."""

    def __init__(self, monitors: list[str]) -> None:
        super().__init__()
        self.monitors = monitors

    def validation_step(self, batch, batch_idx):
        for name in self.monitors:
            self.log(name, 1.0)
        return super().validation_step(batch, batch_idx)


@pytest.mark.parametrize("config", TRAINER_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_writes_last_ckpt_every_epoch(config, tmp_path):
    """last.ckpt follows every epoch even when validation (and so top-k saving) is rarer (issue 14).

    configs/phase2.yaml validates every 50 epochs: its last.ckpt was written only then, so a crash lost up to 50.
    """
    spec = yaml.safe_load(config.read_text())
    trainer_config = spec["trainer"]
    entries = [c for c in trainer_config.get("callbacks") or [] if c["class_path"].endswith("ModelCheckpoint")]
    if not entries:  # the training CLI's default checkpointing, with the config's `checkpoint:` group
        settings = CheckpointSettings(**spec.get("checkpoint", {}))
        entries = default_checkpoints(spec["model"]["class_path"], None, settings)
    callbacks = []
    for entry in entries:  # with the pipeline's dirpath
        module_name, _, class_name = entry["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        callbacks.append(cls(**{**(entry.get("init_args") or {}), "dirpath": str(tmp_path)}))
    found: list[int | None] = []  # the step of last.ckpt as each later epoch starts (what a crash would leave)

    class Probe(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch > 0:
                last = tmp_path / "last.ckpt"
                found.append(torch.load(last, weights_only=True)["global_step"] if last.is_file() else None)

    trainer = pl.Trainer(
        max_epochs=3, check_val_every_n_epoch=trainer_config.get("check_val_every_n_epoch", 1),
        callbacks=[*callbacks, Probe()], limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(LogsMonitors([c.monitor for c in callbacks if c.monitor]))
    assert found == [2, 4]  # two steps per epoch
