"""DDP on CPU (gloo): every phase under ddp_spawn with 2 processes, and one `ipmn fit` through the console script.

`strategy="ddp"` re-runs the command line in its child processes, so it is only ever used in a subprocess of
its own (inside pytest the child would re-run pytest); in-process tests use `ddp_spawn`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint

from ipmn_lightning.callbacks import ExactResume
from ipmn_lightning.modules import (
    ExtractorEnhanceModule,
    InvertibleMaskModule,
    StealingAttackModule,
    WatermarkPretrainModule,
)
from tests.helpers import SIZE, TINY_PHASE1, TINY_PHASE2, tiny_data, tiny_trainer

REPO = Path(__file__).resolve().parents[2]
DDP_OVERLAY = REPO / "configs" / "trainer" / "ddp.yaml"


def build(phase: str, checkpoints: dict[str, Path]) -> torch.nn.Module:
    p1, p2, steal = (str(checkpoints[k]) for k in ("phase1", "phase2", "stealer"))
    if phase == "phase1":
        return WatermarkPretrainModule(image_size=SIZE, **TINY_PHASE1)
    if phase == "phase2":
        return InvertibleMaskModule(image_size=SIZE, phase1_ckpt=p1, **TINY_PHASE2)
    if phase == "phase3_steal":
        return StealingAttackModule(image_size=SIZE, phase1_ckpt=p1, phase2_ckpt=p2, stealer="cnet", ngf=4)
    return ExtractorEnhanceModule(image_size=SIZE, phase1_ckpt=p1, phase2_ckpt=p2, stealer_ckpt=[steal])


# phase 1 toggles two optimizers under manual optimization: DDP must look for unused parameters; the other
# phases train every trainable parameter in each backward and run with plain DDP (frozen nets are not in DDP)
STRATEGIES = {
    "phase1": "ddp_spawn_find_unused_parameters_true",
    "phase2": "ddp_spawn",
    "phase3_steal": "ddp_spawn",
    "phase3_enhance": "ddp_spawn",
}
TRAINED = {"phase1": "embedder", "phase2": "inn", "phase3_steal": "stealer", "phase3_enhance": "extractor"}


@pytest.mark.parametrize("phase", ["phase1", "phase3_steal", "phase3_enhance"])
def test_phase_trains_under_ddp_spawn_on_two_cpu_processes(phase, checkpoints):
    module = build(phase, checkpoints)
    module.load_frozen()  # phase 3b starts R from phase 1's: build it now to compare
    before = {k: v.clone() for k, v in getattr(module, TRAINED[phase]).state_dict().items()}
    trainer = tiny_trainer(
        devices=2, strategy=STRATEGIES[phase], callbacks=[ExactResume()], limit_train_batches=2, limit_val_batches=1
    )
    trainer.fit(module, datamodule=tiny_data(batch_size=2))
    # rank 0's weights come back to this process: trained, finite, and every frozen net is still frozen
    after = getattr(module, TRAINED[phase]).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    for name in type(module).frozen_attributes:
        if getattr(module, name, None) is not None:
            assert not any(p.requires_grad for p in getattr(module, name).parameters()), name
    assert "val/loss" in trainer.callback_metrics


def test_phase2_under_ddp_spawn_resumes_mid_epoch_exactly(checkpoints, tmp_path):
    """Phase 2 on 2 gloo processes (random z and flips on both ranks, hand-stepped StepLR), resumed from a
    checkpoint written in the middle of epoch 1, ends bit-identical to the run that never stopped."""

    def fit(root: Path, ckpt_path: Path | None = None) -> None:
        pl.seed_everything(0)
        module = InvertibleMaskModule(
            image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), lr=1e-3, lr_step_epochs=1, **TINY_PHASE2
        )
        every_step = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=-1, every_n_train_steps=1)
        trainer = tiny_trainer(
            devices=2, strategy=STRATEGIES["phase2"], max_epochs=2, callbacks=[every_step, ExactResume()],
            enable_checkpointing=True, limit_train_batches=None, limit_val_batches=None,
        )  # fmt: skip
        trainer.fit(module, datamodule=tiny_data(batch_size=2), ckpt_path=ckpt_path)

    fit(tmp_path / "straight")  # 8 samples / 2 ranks / batch 2: 2 steps per epoch
    fit(tmp_path / "resumed", ckpt_path=tmp_path / "straight" / "epoch=1-step=3.ckpt")
    straight, resumed = (
        torch.load(tmp_path / name / "last.ckpt", map_location="cpu", weights_only=True)
        for name in ("straight", "resumed")
    )
    assert resumed["global_step"] == straight["global_step"] == 4
    for key, value in straight["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][key].double(), value.double(), rtol=0, atol=1e-6), key
    assert resumed["lr_schedulers"] == straight["lr_schedulers"]
    # last.ckpt is the one written after the last batch, before epoch 1's StepLR step: stepped once
    assert resumed["lr_schedulers"][0]["_last_lr"] == pytest.approx([1e-3 * 0.5])


def test_ddp_overlay_is_composable_and_fits_every_phase():
    spec = yaml.safe_load(DDP_OVERLAY.read_text())
    assert set(spec) == {"trainer"}  # only trainer keys: composes with any phase config
    assert spec["trainer"]["devices"] == 2
    assert spec["trainer"]["strategy"] == "ddp_find_unused_parameters_true"  # what phase 1 needs


def test_ranks_above_zero_get_their_own_random_streams(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    streams = {}
    for rank in (0, 1, 2):
        for epoch in (0, 1):
            torch.manual_seed(7)
            np.random.seed(7)
            random.seed(7)
            trainer = SimpleNamespace(world_size=3, global_rank=rank, current_epoch=epoch, train_dataloader=None)
            callback = ExactResume()
            callback.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
            streams[rank, epoch] = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(7)
    reference = torch.rand(3)
    assert torch.equal(streams[0, 0][0], reference) and torch.equal(streams[0, 1][0], reference)  # rank 0 untouched
    # ranks above 0: a function of (seed, rank, epoch) only, so a resumed run gets the same stream
    torch.manual_seed(callback.rank_seed(trainer, "epoch", 1))  # type: ignore[arg-type]
    assert torch.equal(streams[2, 1][0], torch.rand(3))
    others = [streams[r, e] for r in (1, 2) for e in (0, 1)]
    assert len({s[0].sum().item() for s in others} | {reference.sum().item()}) == 5
    assert len({s[1] for s in others}) == 4 and len({s[2] for s in others}) == 4
    assert callback.rank_seed(trainer, "step", 1) != callback.rank_seed(trainer, "epoch", 1)  # type: ignore[arg-type]


def run_in_own_group(args: list[str], cwd: Path, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    """Run a command; on timeout kill its whole process group (DDP children included)."""
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"{' '.join(args)} timed out after {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(args, process.returncode, out, None)


TINY_CLI_PHASE1 = [
    "--data.source=synthetic", f"--data.image_size={SIZE}", "--data.batch_size=2", "--data.num_workers=0",
    "--data.train_part=all",  # every one of the 8 faces: the step count below is 2 batches per rank
    "--data.synthetic_sizes=[8,4,4]", "--model.init_args.ngf=4", "--model.init_args.extractor_channels=8",
    "--model.init_args.extractor_dilations=[1,2]", "--model.init_args.discriminator_widths=[4,8,8,8]",
    "--model.init_args.lambda_vgg=0", "--model.init_args.vgg_weights=null", "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("ipmn") is None, reason="console script not installed")
def test_console_script_fit_with_ddp_on_two_cpu_processes_and_wandb_offline(tmp_path):
    """`ipmn fit --config phase1 --config trainer/ddp --config logger/wandb` with 2 gloo processes, W&B offline."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_SWEEP_ID", None)
    args = [
        "ipmn", "fit", "--config", str(REPO / "configs/phase1.yaml"), "--config", str(DDP_OVERLAY),
        "--config", str(REPO / "configs/logger/wandb.yaml"),
        "--trainer.strategy=ddp_find_unused_parameters_true", "--trainer.devices=2", "--trainer.accelerator=cpu",
        *TINY_CLI_PHASE1,
    ]  # fmt: skip
    result = run_in_own_group(args, tmp_path, env, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:]
    # only rank 0 created a W&B run
    runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    assert list(runs[0].glob("run-*.wandb"))
    run_id = runs[0].name.rsplit("-", 1)[-1]
    run_dir = tmp_path / "runs" / "ipmn" / run_id
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["trainer"]["strategy"] == "ddp_find_unused_parameters_true"
    assert str(config["trainer"]["devices"]) == "2"
    assert config["trainer"]["logger"]["init_args"]["name"] == "phase1"
    assert (runs[0] / "files" / "config.yaml").is_file()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 4  # 2 batches x 2 optimizer steps (H+R, D) per batch
    assert "ExactResume" in checkpoint["callbacks"]
