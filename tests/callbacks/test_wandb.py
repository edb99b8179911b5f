"""Weights & Biases through configs/logger/wandb.yaml: offline run files, the resolved config, images, run names,
disabled mode, and no failure on an existing config.yaml. Nothing here reaches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wandb
import yaml

from ipmn_lightning.callbacks import default_wandb_run_name, free_config_path
from ipmn_lightning.console.main import main
from ipmn_lightning.training.lightning_cli import build_cli
from tests.helpers import SIZE

REPO = Path(__file__).resolve().parents[2]
PHASE1 = ["--config", str(REPO / "configs/phase1.yaml")]
WANDB = ["--config", str(REPO / "configs/logger/wandb.yaml")]
TINY = [
    "--data.source=synthetic", f"--data.image_size={SIZE}", "--data.batch_size=2", "--data.num_workers=0",
    "--data.synthetic_sizes=[8,4,4]", "--model.init_args.ngf=4", "--model.init_args.extractor_channels=8",
    "--model.init_args.extractor_dilations=[1,2]", "--model.init_args.discriminator_widths=[4,8,8,8]",
    "--model.init_args.lambda_vgg=0", "--model.init_args.vgg_weights=null", "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu",
    "--trainer.devices=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1",
]  # fmt: skip


@pytest.fixture
def wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)

    def set_mode(mode: str) -> None:
        monkeypatch.setenv("WANDB_MODE", mode)
        wandb.teardown()  # wandb reads WANDB_MODE once per process setup

    yield set_mode
    wandb.finish()  # a run left open would be reused by the next WandbLogger in this process
    wandb.teardown()


def child_pids() -> set[int]:
    me, children = str(os.getpid()), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            children.add(int(stat.parent.name))
    return children


def test_offline_run_gets_files_config_images_and_phase_name(wandb_mode, tmp_path):
    wandb_mode("offline")
    cli = build_cli(["fit", *PHASE1, *WANDB, *TINY])
    run = cli.trainer.logger.experiment
    assert run.name == "phase1"
    assert run.config["config"]["model"]["class_path"].endswith("WatermarkPretrainModule")
    assert run.config["config"]["model"]["init_args"]["lr"] == pytest.approx(1e-4)
    assert run.config["config"]["data"]["image_size"] == SIZE
    wandb.finish()
    [offline] = (tmp_path / "runs" / "wandb").glob("offline-run-*")  # upload later with `wandb sync`
    assert list(offline.glob("run-*.wandb"))
    assert yaml.safe_load((offline / "files" / "config.yaml").read_text())["trainer"]["logger"]["init_args"]["project"]
    assert list((offline / "files" / "media" / "images").rglob("*.png"))  # the val/images grid went to W&B
    run_dir = tmp_path / "runs" / "ipmn" / run.id  # config.yaml next to the run's checkpoints
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_disabled_mode_writes_nothing_starts_nothing_and_never_clashes(wandb_mode, tmp_path):
    wandb_mode("disabled")
    before = child_pids()
    for _ in range(2):  # two runs sharing save_dir: no "config.yaml already exists"
        cli = build_cli(["fit", *PHASE1, *WANDB, *TINY])
        assert getattr(cli.trainer.logger.experiment, "disabled", False)
        wandb.finish()
    assert not (tmp_path / "runs" / "wandb").exists()
    assert not (tmp_path / "wandb").exists()
    assert not child_pids() - before  # no W&B service process
    assert len(list((tmp_path / "runs" / "ipmn").glob("*/config.yaml"))) == 2


def test_existing_config_yaml_never_fails_a_run(tmp_path):
    log_dir = tmp_path / "logs" / "lightning_logs" / "fixed"  # a re-run into the same log dir
    log_dir.mkdir(parents=True)
    stale = log_dir / "config.yaml"
    stale.write_text("stale: true\n")
    logger = ["--trainer.logger=CSVLogger", "--trainer.logger.save_dir=logs", "--trainer.logger.version=fixed"]
    assert main(["fit", *PHASE1, *TINY, *logger]) == 0
    assert "model" in yaml.safe_load(stale.read_text())  # replaced (ipmn overwrites by default)
    # with overwrite=False the config goes next to the old one instead of aborting the run
    assert free_config_path(log_dir, overwrite=True) == stale
    assert free_config_path(log_dir, overwrite=False) == log_dir / "config-1.yaml"
    (log_dir / "config-1.yaml").write_text("x: 1\n")
    assert free_config_path(log_dir, overwrite=False) == log_dir / "config-2.yaml"


def test_run_name_from_phase_unless_set_or_in_a_sweep(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)

    def name(*extra: str) -> str | None:
        cli = build_cli([*PHASE1, *WANDB, *TINY, *extra], run=False)
        return cli.config["trainer"]["logger"]["init_args"]["name"]

    assert name() == "phase1"
    assert name("--trainer.logger.init_args.name=mine") == "mine"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")  # the agent names sweep runs
    assert name() is None
    assert default_wandb_run_name("ipmn_lightning.modules.InvertibleMaskModule") == "phase2"
    steal = default_wandb_run_name("ipmn_lightning.modules.StealingAttackModule", {"stealer": "res9"})
    assert steal == "phase3_steal-res9"
    assert default_wandb_run_name("ipmn_lightning.modules.ExtractorEnhanceModule") == "phase3_enhance"
    assert default_wandb_run_name("no.such.Module") is None


def test_wandb_overlay_is_composable():
    spec = yaml.safe_load((REPO / "configs/logger/wandb.yaml").read_text())
    assert set(spec) == {"trainer"} and set(spec["trainer"]) == {"logger"}
    init_args = spec["trainer"]["logger"]["init_args"]
    assert spec["trainer"]["logger"]["class_path"].endswith("WandbLogger")
    assert init_args["project"] and "log_model" in init_args and init_args.get("offline") is not True
