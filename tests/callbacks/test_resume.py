"""Resuming with --ckpt_path continues every phase as if it had never stopped (ExactResume).

Tolerance: on CPU the resumed runs are bit-identical to uninterrupted ones (measured max |Δ| = 0 for weights,
optimizer and scheduler state and validation metrics); the asserts allow 1e-6 so that thread-count-dependent
float reassociation cannot make them flaky. See docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from ipmn_lightning.callbacks import ExactResume
from ipmn_lightning.console.main import main
from ipmn_lightning.modules import (
    ExtractorEnhanceModule,
    InvertibleMaskModule,
    StealingAttackModule,
    WatermarkPretrainModule,
)
from tests.helpers import SIZE, TINY_PHASE1, TINY_PHASE2, tiny_data, tiny_trainer

TOL = 1e-6


class Killed(RuntimeError):
    """The simulated crash."""


class KillAt(Callback):
    """Crash after training batch ``batch`` of epoch ``epoch`` (before that batch's checkpoint is written)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise Killed(f"killed at epoch {self.epoch} batch {batch_idx}")


def factories(checkpoints: dict[str, Path]) -> dict[str, Callable[[], pl.LightningModule]]:
    p1, p2, steal = (str(checkpoints[k]) for k in ("phase1", "phase2", "stealer"))
    return {
        # patience 0 and a 1-epoch StepLR: the hand-stepped schedulers change state every epoch
        "phase1": lambda: WatermarkPretrainModule(image_size=SIZE, plateau_patience=0, **TINY_PHASE1),
        "phase2": lambda: InvertibleMaskModule(
            image_size=SIZE, phase1_ckpt=p1, lr=1e-3, lr_step_epochs=1, spike_warmup_steps=0, **TINY_PHASE2
        ),
        "phase3_steal": lambda: StealingAttackModule(
            image_size=SIZE,
            phase1_ckpt=p1,
            phase2_ckpt=p2,
            stealer="cnet",
            ngf=4,
            lr_schedule="linear_decay",
            decay_epochs=2,
        ),
        "phase3_enhance": lambda: ExtractorEnhanceModule(
            image_size=SIZE, phase1_ckpt=p1, phase2_ckpt=p2, stealer_ckpt=[steal], plateau_patience=0
        ),
    }


def fit(
    factory: Callable[[], pl.LightningModule],
    root: Path,
    max_epochs: int,
    ckpt_path: Path | None = None,
    every_n_train_steps: int | None = None,
    kill: KillAt | None = None,
    restore: bool = True,
    num_workers: int = 0,
) -> tuple[pl.LightningModule, pl.Trainer]:
    pl.seed_everything(0)
    module = factory()
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=every_n_train_steps),
        ExactResume(restore=restore),
    ]
    if kill is not None:
        callbacks.append(kill)
    trainer = tiny_trainer(
        max_epochs=max_epochs, callbacks=callbacks, enable_checkpointing=True,
        limit_train_batches=None, limit_val_batches=None,
    )  # fmt: skip
    try:
        data = tiny_data(batch_size=2)
        data.num_workers = num_workers  # > 0: persistent workers, as the real configs use
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    except Killed:
        pass
    return module, trainer


def max_difference(a: pl.Trainer, b: pl.Trainer) -> float:
    """Largest absolute difference between two finished fits' weights and optimizer states."""
    diffs = [0.0]
    sa, sb = a.lightning_module.state_dict(), b.lightning_module.state_dict()
    assert sa.keys() == sb.keys()
    diffs += [(sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].numel()]
    for oa, ob in zip(a.optimizers, b.optimizers):
        for qa, qb in zip(oa.state.values(), ob.state.values()):
            diffs += [(qa[k].double() - qb[k].double()).abs().max().item() for k in qa if torch.is_tensor(qa[k])]
    return max(diffs)


def assert_same_schedules(a: pl.Trainer, b: pl.Trainer) -> None:
    for oa, ob in zip(a.optimizers, b.optimizers):
        assert [g["lr"] for g in oa.param_groups] == pytest.approx([g["lr"] for g in ob.param_groups], rel=TOL)
    for ca, cb in zip(a.lr_scheduler_configs, b.lr_scheduler_configs):
        state_a, state_b = ca.scheduler.state_dict(), cb.scheduler.state_dict()
        assert state_a.keys() == state_b.keys()
        for key, value in state_a.items():  # last_epoch, best, num_bad_epochs, cooldown_counter, _last_lr...
            assert_close(value, state_b[key], key)


def assert_close(a: object, b: object, where: str) -> None:
    """Recursive comparison of scheduler states (SequentialLR nests its schedulers' states in lists of dicts)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, int | float) and not isinstance(a, bool):
        assert b == pytest.approx(a, rel=TOL), where
    elif torch.is_tensor(a):
        assert torch.allclose(a.double(), b.double(), rtol=TOL), where
    else:
        assert a == b, where


def assert_same_run(straight: pl.Trainer, resumed: pl.Trainer) -> None:
    assert resumed.global_step == straight.global_step
    assert resumed.current_epoch == straight.current_epoch
    assert max_difference(straight, resumed) <= TOL
    assert_same_schedules(straight, resumed)
    for key, value in straight.callback_metrics.items():
        if key.startswith("val/"):
            assert float(resumed.callback_metrics[key]) == pytest.approx(float(value), rel=TOL, abs=TOL), key


@pytest.mark.parametrize("phase", ["phase1", "phase2", "phase3_steal", "phase3_enhance"])
def test_resume_from_epoch_end_matches_uninterrupted_run(phase, checkpoints, tmp_path):
    factory = factories(checkpoints)[phase]
    _, straight = fit(factory, tmp_path / "straight", max_epochs=2)
    fit(factory, tmp_path / "first", max_epochs=1)
    _, resumed = fit(factory, tmp_path / "resumed", max_epochs=2, ckpt_path=tmp_path / "first" / "last.ckpt")
    assert_same_run(straight, resumed)
    # the hand-stepped schedulers were restored, not restarted
    if phase == "phase2":
        assert resumed.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**2)


@pytest.mark.parametrize(
    ("mid_epoch_checkpoints", "num_workers"),
    [(False, 0), (True, 0), (True, 2)],
    ids=["epoch_end_ckpt", "mid_epoch_ckpt", "mid_epoch_ckpt-persistent_workers"],
)
def test_killed_mid_epoch_and_resumed_matches_uninterrupted_run(mid_epoch_checkpoints, num_workers, tmp_path):
    factory = factories({"phase1": Path(), "phase2": Path(), "stealer": Path()})["phase1"]
    every = 2 if mid_epoch_checkpoints else None  # phase 1 makes 2 optimizer steps per batch: every batch
    run = dict(max_epochs=3, every_n_train_steps=every, num_workers=num_workers)
    _, straight = fit(factory, tmp_path / "straight", **run)
    fit(factory, tmp_path / "killed", **run, kill=KillAt(epoch=1, batch=2))
    last = tmp_path / "killed" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)  # the random state is weights_only-safe
    assert saved["epoch"] == (1 if mid_epoch_checkpoints else 0)
    assert saved["callbacks"]["ExactResume"]["batches"] == (2 if mid_epoch_checkpoints else 4)
    _, resumed = fit(factory, tmp_path / "resumed", **run, ckpt_path=last)
    assert_same_run(straight, resumed)


def test_without_restored_random_state_runs_differ(tmp_path):
    """The equality above is not vacuous: resuming without the saved random state changes the run."""
    factory = factories({"phase1": Path(), "phase2": Path(), "stealer": Path()})["phase1"]
    _, straight = fit(factory, tmp_path / "straight", max_epochs=2, restore=False)
    fit(factory, tmp_path / "first", max_epochs=1, restore=False)
    _, resumed = fit(factory, tmp_path / "resumed", 2, ckpt_path=tmp_path / "first" / "last.ckpt", restore=False)
    assert max_difference(straight, resumed) > 1e-4


def test_cli_resume_with_ckpt_path(tmp_path):
    """`ipmn fit --ckpt_path` (ExactResume comes with the CLI) continues epoch, step and state."""
    common = [
        "fit", "--model=ipmn_lightning.modules.WatermarkPretrainModule",
        "--model.init_args.ngf=4", "--model.init_args.extractor_channels=8",
        "--model.init_args.extractor_dilations=[1,2]", "--model.init_args.discriminator_widths=[4,8,8,8]",
        "--model.init_args.lambda_vgg=0", "--model.init_args.vgg_weights=null",
        f"--data.image_size={SIZE}", "--data.batch_size=2", "--data.num_workers=0", "--data.synthetic_sizes=[8,4,4]",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.logger=false",
    ]  # fmt: skip

    def ckpt(name: str) -> str:
        init_args = f"{{dirpath: {tmp_path / name}, save_last: true}}"
        return f"--trainer.callbacks=[{{class_path: ModelCheckpoint, init_args: {init_args}}}]"

    assert main([*common, "--trainer.max_epochs=2", ckpt("straight")]) == 0
    assert main([*common, "--trainer.max_epochs=1", ckpt("first")]) == 0
    first = tmp_path / "first" / "last.ckpt"
    assert main([*common, "--trainer.max_epochs=2", ckpt("resumed"), f"--ckpt_path={first}"]) == 0
    straight, resumed = (
        torch.load(tmp_path / name / "last.ckpt", map_location="cpu", weights_only=True)
        for name in ("straight", "resumed")
    )
    assert resumed["epoch"] == straight["epoch"] == 1
    assert resumed["global_step"] == straight["global_step"] == 16  # 2 optimizer steps per batch (#17958)
    for key, value in straight["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][key].double(), value.double(), rtol=0, atol=TOL), key
    assert resumed["lr_schedulers"][0]["last_epoch"] == straight["lr_schedulers"][0]["last_epoch"]
