"""Budgets in steps: the demo configs train the same number of optimizer steps whatever the data size."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ipmn_lightning.training.lightning_cli import build_cli, parse_config

REPO = Path(__file__).resolve().parents[2]
DEMO = ["phase1", "phase2", "phase3_steal", "phase3_enhance"]
TINY_PHASE1 = {"ngf": 4, "extractor_channels": 8, "extractor_dilations": [1, 2], "discriminator_widths": [4, 8, 8, 8],
               "lambda_vgg": 0.0, "vgg_weights": None}  # fmt: skip


@pytest.mark.parametrize("name", DEMO)
def test_demo_configs_count_steps_not_epochs(name):
    settings = parse_config(
        [
            "fit",
            "--config",
            str(REPO / "configs/data/synthetic.yaml"),
            "--config",
            str(REPO / f"configs/demo/{name}.yaml"),
        ]
    )
    trainer = settings["trainer"]
    assert trainer["max_epochs"] == -1 and trainer["max_steps"] > 0
    # validation every N batches, across epochs: a tiny folder does not validate every step, a huge one not once
    assert isinstance(trainer["val_check_interval"], int) and trainer["check_val_every_n_epoch"] is None


def test_demo_schedules_count_steps():
    phase2 = parse_config(
        [
            "fit",
            "--config",
            str(REPO / "configs/data/synthetic.yaml"),
            "--config",
            str(REPO / "configs/demo/phase2.yaml"),
        ]
    )
    assert phase2["model"]["init_args"]["lr_step_steps"] == 256  # was 2 epochs of 128 batches
    enhance = parse_config(["fit", "--config", str(REPO / "configs/demo/phase3_enhance.yaml")])
    assert enhance["model"]["init_args"]["plateau_interval"] == "validation"


def _fit(folder: Path, train: int) -> tuple[int, int]:
    """A tiny phase 1 with the demo's trainer settings, scaled down, on ``train`` synthetic faces (batch 4)."""
    demo = yaml.safe_load((REPO / "configs/demo/phase1.yaml").read_text())["trainer"]
    trainer = {**demo, "max_steps": 12, "val_check_interval": 2, "default_root_dir": str(folder / str(train)),
               "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
               "enable_checkpointing": False, "num_sanity_val_steps": 0}  # fmt: skip
    config = {"seed_everything": 0, "trainer": trainer,
              "model": {"class_path": "ipmn_lightning.modules.WatermarkPretrainModule", "init_args": TINY_PHASE1},
              "data": {"source": "synthetic", "image_size": 32, "batch_size": 4, "synthetic_sizes": [train, 4, 4],
                       "num_workers": 0}}  # fmt: skip
    path = folder / f"phase1_{train}.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = build_cli(["fit", "--config", str(path)])
    return cli.trainer.global_step, cli.trainer.current_epoch


def test_a_budget_in_steps_is_the_same_for_two_data_sizes(tmp_path):
    small, large = _fit(tmp_path, 8), _fit(tmp_path, 40)
    # 12 optimizer steps = 6 batches (phase 1 steps H+R, then D): 3 epochs of 8 faces, part of one of 40
    assert small[0] == large[0] == 12
    assert small[1] > large[1]
