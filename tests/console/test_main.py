import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ipmn_lightning import __version__
from ipmn_lightning.console.main import main

REPO = Path(__file__).resolve().parents[2]
OVERLAY_DIRS = {"trainer", "logger", "sweeps"}  # overlays composed onto a phase config, tested elsewhere
PHASE_CONFIGS = sorted(
    p for p in (REPO / "configs").rglob("*.yaml")
    if p.parent.name not in OVERLAY_DIRS and "pipeline" not in p.name
)  # fmt: skip


def test_overview_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "masks"):
        assert command in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_fit_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    assert "--model" in capsys.readouterr().out


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("ipmn") is None, reason="console script not installed")
def test_console_script_help():
    result = subprocess.run(["ipmn", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fit" in result.stdout


def test_module_entry_point_version():
    result = subprocess.run([sys.executable, "-m", "ipmn_lightning", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


def config_overrides(config: Path, checkpoints: dict[str, Path], fake_celeba: Path, fake_folder: Path) -> list[str]:
    """Arguments that point a shipped config at fake data and tiny earlier-phase checkpoints."""
    spec = yaml.safe_load(config.read_text())
    init_args = spec["model"].get("init_args", {})
    source = spec.get("data", {}).get("source", "synthetic")
    args = ["--data.image_size=32", "--data.batch_size=2", "--data.num_workers=0",
            "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--trainer.devices=1"]  # fmt: skip
    if source == "celeba":
        args.append(f"--data.root={fake_celeba}")
    elif source == "folder":
        args.append(f"--data.root={fake_folder}")
    if spec["model"]["class_path"].endswith("DiffFaceModule"):
        # the paper-scale UNet (~550M parameters) at a test's width; every block type still runs
        args += ["--model.init_args.model_channels=32", "--model.init_args.num_head_channels=32",
                 "--model.init_args.sample_steps=2"]  # fmt: skip
    if init_args.get("vgg_weights"):
        args.append("--model.init_args.vgg_weights=random")  # no VGG16 download in tests
    for name in ("phase1_ckpt", "phase2_ckpt"):
        if name in init_args:
            args.append(f"--model.init_args.{name}={checkpoints[name[:6]]}")
    if "stealer_ckpt" in init_args:
        args.append(f"--model.init_args.stealer_ckpt=[{checkpoints['stealer']}]")
    return args


@pytest.mark.parametrize("config", PHASE_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_fits_on_fake_data(config, checkpoints, fake_celeba, fake_folder):
    args = ["fit", "--config", str(config), *config_overrides(config, checkpoints, fake_celeba, fake_folder)]
    assert main(args) == 0


def test_configs_exist():
    names = {str(p.relative_to(REPO / "configs")) for p in PHASE_CONFIGS}
    assert {"phase1.yaml", "demo/phase1.yaml"} <= names
