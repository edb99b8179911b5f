"""The W&B sweep files: W&B's own schema check, and the exact command an agent would run for a sampled
configuration, run with fast_dev_run (offline: `wandb sweep`/`wandb agent` need the W&B server)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from ipmn_lightning.training.lightning_cli import build_cli
from tests.helpers import SIZE

REPO = Path(__file__).resolve().parents[2]
SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydantic v1-style config warnings from the sweeps package
    sweeps = pytest.importorskip("sweeps")


def agent_command(sweep: dict, run_config: dict) -> list[str]:
    """The argv `wandb agent` builds for one run (wandb/wandb_agent.py `Agent._command_run`)."""
    try:
        from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

        command = create_sweep_command(list(sweep["command"]))
        sweep_vars = create_sweep_command_args({"args": run_config})
    except ImportError:  # internal module: format `${args}` as the agent documents it
        command = list(sweep["command"])
        sweep_vars = {"args": [f"--{key}={spec['value']}" for key, spec in run_config.items()]}
    sweep_vars.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep.get("program", "")])
    argv: list[str] = []
    for chunk in map(str, command):
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += sweep_vars.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


def overrides(name: str, checkpoints: dict[str, Path]) -> list[str]:
    """Appended after the agent's arguments: tiny networks on synthetic data, one batch (fast_dev_run)."""
    common = [
        "--data.source=synthetic", f"--data.image_size={SIZE}", "--data.batch_size=2", "--data.num_workers=0",
        "--data.synthetic_sizes=[8,4,4]", "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    if name == "phase1":
        return [*common, "--model.init_args.ngf=4", "--model.init_args.extractor_channels=8",
                "--model.init_args.extractor_dilations=[1,2]", "--model.init_args.discriminator_widths=[4,8,8,8]",
                "--model.init_args.vgg_weights=random"]  # fmt: skip
    return [*common, f"--model.init_args.phase1_ckpt={checkpoints['phase1']}", "--model.init_args.num_blocks=2",
            "--model.init_args.growth=4", "--model.init_args.lpips_net=null"]  # fmt: skip


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_passes_wandb_schema_check(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweeps.schema_violations_from_proposed_config(sweep) == []
    assert sweep["method"] == "bayes"
    assert all("." in key and not isinstance(spec.get("value"), dict) for key, spec in sweep["parameters"].items())
    command = [str(c) for c in sweep["command"]]
    assert command[:3] == ["${env}", "ipmn", "fit"] and command[-1] == "${args}"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_agent_command_for_a_sampled_run_fits(path, checkpoints):
    sweep = yaml.safe_load(path.read_text())
    run = sweeps.next_run(sweep, [])
    argv = agent_command(sweep, run.config)
    assert argv[:3] == ["/usr/bin/env", "ipmn", "fit"]
    for key, spec in run.config.items():
        assert f"--{key}={spec['value']}" in argv
    # the agent runs from the repository root; this test runs elsewhere
    args = [str(REPO / a) if (REPO / a).is_file() and a.startswith("configs/") else a for a in argv[2:]]
    cli = build_cli([*args, *overrides(path.stem, checkpoints)])
    # the sampled values reached the module, and the sweep's metric is a key this run logs
    for key, spec in run.config.items():
        if key.startswith("model.init_args.") and key != "model.init_args.phase1_ckpt":
            assert cli.model.hparams[key.rsplit(".", 1)[-1]] == pytest.approx(spec["value"])
    metrics = cli.trainer.callback_metrics
    assert sweep["metric"]["name"] in metrics, sorted(metrics)
    if path.stem == "phase2":
        expected = 0.5 * (float(metrics["val/psnr_masked_q8"]) + float(metrics["val/psnr_recovered_q8"]))
    else:
        expected = float(metrics["val/psnr_mask"]) + 20 * (
            float(metrics["val/sr_e_watermarked"]) - float(metrics["val/fpr_mask"])
        )
    assert float(metrics[sweep["metric"]["name"]]) == pytest.approx(expected, rel=1e-5)
