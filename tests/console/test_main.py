import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ipmn_lightning import __version__
from ipmn_lightning.console.main import main

REPO = Path(__file__).resolve().parents[2]
OVERLAY_DIRS = {"trainer", "logger", "sweeps", "data"}  # composed onto a phase config (data: below, others elsewhere)
PHASE_CONFIGS = sorted(
    p for p in (REPO / "configs").rglob("*.yaml")
    if p.parent.name not in OVERLAY_DIRS and "pipeline" not in p.name
)  # fmt: skip
DATA_CONFIGS = sorted((REPO / "configs" / "data").glob("*.yaml"))


def data_config(config: Path) -> Path | None:
    """The data file a phase config is composed with, as its pipelines do (None: the phase file has its own data)."""
    if yaml.safe_load(config.read_text()).get("data", {}).get("source"):
        return None
    demo = (REPO / "configs" / "demo") in config.parents
    return REPO / "configs" / "data" / ("synthetic.yaml" if demo else "celeba.yaml")


#: (phase config, data config) pairs that fit: every phase file with its pipelines' data, and every data file once.
FIT_CASES = [(c, data_config(c)) for c in PHASE_CONFIGS] + [
    (REPO / "configs" / "demo" / "phase1.yaml", d) for d in DATA_CONFIGS if d.name == "faces.yaml"
]


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


def config_overrides(
    config: Path, data: Path | None, checkpoints: dict[str, Path], fake_celeba: Path, fake_folder: Path
) -> list[str]:
    """Arguments that point a shipped config (composed with ``data``) at fake data and tiny earlier checkpoints."""
    spec = yaml.safe_load(config.read_text())
    init_args = spec["model"].get("init_args", {})
    source = yaml.safe_load((data or config).read_text()).get("data", {}).get("source", "synthetic")
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
    # the earlier phases' checkpoints the module takes (the pipeline injects them; configs no longer name paths)
    module_name, _, class_name = spec["model"]["class_path"].rpartition(".")
    takes = inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters
    for name in ("phase1_ckpt", "phase2_ckpt"):
        if name in takes:
            args.append(f"--model.init_args.{name}={checkpoints[name[:6]]}")
    if "stealer_ckpt" in takes:
        args.append(f"--model.init_args.stealer_ckpt=[{checkpoints['stealer']}]")
    return args


def _case_id(case: tuple[Path, Path | None]) -> str:
    config, data = case
    name = str(config.relative_to(REPO / "configs"))
    return f"{name}+{data.relative_to(REPO / 'configs')}" if data else name


@pytest.mark.parametrize("case", FIT_CASES, ids=_case_id)
def test_every_config_fits_on_fake_data(case, checkpoints, fake_celeba, fake_folder):
    config, data = case
    configs = [*(["--config", str(data)] if data else []), "--config", str(config)]
    args = ["fit", *configs, *config_overrides(config, data, checkpoints, fake_celeba, fake_folder)]
    assert main(args) == 0


def test_configs_exist():
    names = {str(p.relative_to(REPO / "configs")) for p in PHASE_CONFIGS}
    assert {"phase1.yaml", "demo/phase1.yaml"} <= names
    assert {d for _, d in FIT_CASES if d} == set(DATA_CONFIGS) and len(DATA_CONFIGS) == 3  # every data file fits
