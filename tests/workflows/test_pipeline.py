"""`ipmn pipeline`: chaining the phases, the manifest, resuming, bundles and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from ipmn_lightning.console.main import main
from ipmn_lightning.inference.bundle import load_bundle
from ipmn_lightning.workflows.pipeline import _checkpoint_callbacks, run_pipeline
from tests.helpers import TINY_PHASE1, TINY_PHASE2

REPO = Path(__file__).resolve().parents[2]
TRAINER = {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_train_batches": 2,
           "limit_val_batches": 1, "num_sanity_val_steps": 0, "enable_progress_bar": "false",
           "enable_model_summary": "false", "logger": "false"}  # fmt: skip
OVERRIDES = [f"--trainer.{k}={v}" for k, v in TRAINER.items()]
MODELS = {
    "phase1": (
        "WatermarkPretrainModule",
        {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_PHASE1.items()},
    ),
    "phase2": ("InvertibleMaskModule", dict(TINY_PHASE2)),
    "steal": ("StealingAttackModule", {"ngf": 4, "stealer": "cnet"}),
    "enhance": ("ExtractorEnhanceModule", {}),
}
FULL = [{"name": "phase1", "config": "phase1.yaml"}, {"name": "phase2", "config": "phase2.yaml"},
        {"name": "steal_unet", "config": "steal.yaml", "args": ["--model.init_args.stealer=unet"]},
        {"name": "null_plain", "config": "steal.yaml", "args": ["--model.init_args.target=plain_inn"]},
        {"name": "null_mask", "config": "steal.yaml", "args": ["--model.init_args.target=mask"]},
        {"name": "enhance", "config": "enhance.yaml"}]  # fmt: skip


def write_pipeline(folder: Path, phases: list[dict], output: str = "run", **extra: object) -> Path:
    """Tiny 32-px phase configs (synthetic faces) and a pipeline listing ``phases``, all in ``folder``."""
    for kind, (cls, init_args) in MODELS.items():
        config = {
            "seed_everything": 0,
            "trainer": {"callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                       "init_args": {"save_last": True, "dirpath": "elsewhere"}}]},
            "model": {"class_path": f"ipmn_lightning.modules.{cls}", "init_args": init_args},
            "data": {"source": "synthetic", "image_size": 32, "batch_size": 4, "synthetic_sizes": [8, 4, 4],
                     "num_workers": 0},
        }  # fmt: skip
        (folder / f"{kind}.yaml").write_text(yaml.safe_dump(config))
    phases = [{**p, "config": str(folder / p["config"])} for p in phases]
    spec = {"output": str(folder / output), "overrides": OVERRIDES, "phases": phases, **extra}
    path = folder / f"pipeline_{len(phases)}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four tiny phases run once through `ipmn pipeline --config`, with the evaluation."""
    folder = tmp_path_factory.mktemp("pipeline")
    assert main(["pipeline", "--config", str(write_pipeline(folder, FULL))]) == 0
    return folder / "run"


def test_pipeline_chains_the_phases(full_run):
    manifest = json.loads((full_run / "manifest.json").read_text())
    phases = {p["name"]: p for p in manifest["phases"]}
    assert list(phases) == ["phase1", "phase2", "steal_unet", "null_plain", "null_mask", "enhance"]
    kinds = ["phase1", "phase2", "phase3_steal", "phase3_steal", "phase3_steal", "phase3_enhance"]
    assert [p["kind"] for p in phases.values()] == kinds
    assert phases["null_plain"]["null"] == "plain_inn" and phases["null_mask"]["null"] == "mask"
    for name, phase in phases.items():
        assert phase["status"] == "finished" and phase["checkpoint"] == f"{name}/checkpoints/last.ckpt"
        assert (full_run / phase["checkpoint"]).is_file() and phase["seed"] == 0 and phase["wall_time_s"] > 0
        assert phase["data"]["image_size"] == 32 and all(isinstance(v, float) for v in phase["metrics"].values())
        assert any(k.startswith("val/") for k in phase["metrics"])
    args = {name: " ".join(p["args"]) for name, p in phases.items()}
    phase1, phase2, steal = (str(full_run / f"{n}/checkpoints/last.ckpt") for n in ("phase1", "phase2", "steal_unet"))
    assert "phase1_ckpt" not in args["phase1"] and f"--model.init_args.phase1_ckpt={phase1}" in args["phase2"]
    assert f"--model.init_args.phase2_ckpt={phase2}" in args["steal_unet"] and "stealer=unet" in args["steal_unet"]
    assert f'--model.init_args.stealer_ckpt=["{steal}"]' in args["enhance"]  # a null model is no thief
    stealer = torch.load(full_run / phases["steal_unet"]["checkpoint"], weights_only=True)
    assert stealer["hyper_parameters"]["stealer"] == "unet"  # the phase's own args reach the model
    assert not (full_run.parent / "elsewhere").exists()  # the pipeline pins the checkpoint folder
    assert manifest["versions"]["ipmn_lightning"] and manifest["versions"]["torch"] == torch.__version__
    assert manifest["overrides"] == OVERRIDES


def test_pipeline_exports_bundles_and_report(full_run):
    manifest = json.loads((full_run / "manifest.json").read_text())
    assert manifest["bundles"] == {
        "service": "bundles/service.safetensors",
        "receiver": "bundles/receiver.safetensors",
        "verifier": "bundles/verifier.safetensors",
    }
    verifier = load_bundle(full_run / "bundles/verifier.safetensors", "ipmn-verifier")
    assert verifier.config["source"] == "last.ckpt"
    enhanced = torch.load(full_run / "enhance/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    key = next(k for k in verifier.tensors if k.startswith("extractor."))
    assert torch.equal(verifier.tensors[key], enhanced[key])  # R comes from the enhanced checkpoint
    assert load_bundle(full_run / "bundles/service.safetensors", "ipmn-service").image_size == 32
    for name in ("report.md", "report.json", "examples.png"):
        assert (full_run / name).is_file() and manifest["evaluation"][name] == name
    table10 = json.loads((full_run / "report.json").read_text())["table10"]
    assert "unet" in table10 and not any("null" in key for key in json.dumps(table10).split('"'))
    null = verifier.config["audit_null"]  # the audit's null: R's NCs on both null models' answers
    assert set(null["models"]) == {"null_plain", "null_mask"} and len(null["models"]["null_mask"]) == 4
    assert len(null["genuine"]) == 4


def test_pipeline_bundles_give_each_holder_only_its_part(full_run):
    """Service, receiver, verifier: fingerprints in the manifest, the receiver's INN only, the calibration."""
    from safetensors import safe_open

    manifest = json.loads((full_run / "manifest.json").read_text())
    formats = {"service": "ipmn-service", "receiver": "ipmn-receiver", "verifier": "ipmn-verifier"}
    for role, fmt in formats.items():
        bundle = load_bundle(full_run / manifest["bundles"][role], fmt)
        assert manifest["bundle_fingerprints"][role] == bundle.fingerprint  # recorded outside the bundle
    with safe_open(str(full_run / manifest["bundles"]["receiver"]), framework="pt") as handle:
        assert all(key.startswith("inn.") for key in handle.keys())
    verifier = load_bundle(full_run / manifest["bundles"]["verifier"], "ipmn-verifier")
    reference = verifier.config["calibration"]["reference"]
    assert reference["clean_images"] == reference["size"] == len(verifier.config["clean_nc_reference"])
    assert reference["run"] == str(full_run.resolve()) and "test split" in reference["source"]
    assert verifier.config["calibration"]["threshold"]["value"] == verifier.config["threshold"]


def test_verifier_bundle_carries_clean_reference_ncs(full_run):
    """x_m, x_p and x'_p of the 4 test images: the reference of `ipmn verify`'s p-values."""
    from ipmn_lightning.workflows.pipeline import clean_nc_reference

    verifier = load_bundle(full_run / "bundles/verifier.safetensors", "ipmn-verifier")
    reference = verifier.config["clean_nc_reference"]
    assert len(reference) == 12 and all(-1 <= v <= 1 for v in reference)
    manifest = json.loads((full_run / "manifest.json").read_text())
    data = manifest["phases"][-1]["data"]
    bundles = full_run / "bundles"
    again = clean_nc_reference(bundles / "verifier.safetensors", data, bundles / "service.safetensors")
    assert again == pytest.approx(reference)  # deterministic: fixed data, seeded z


def test_resume_skips_finished_and_continues_interrupted(tmp_path):
    first = write_pipeline(tmp_path, FULL[:1])
    run_pipeline(first, evaluate=False)
    last1 = tmp_path / "run/phase1/checkpoints/last.ckpt"
    stamp = last1.stat().st_mtime_ns
    both = write_pipeline(tmp_path, FULL[:2])
    manifest = run_pipeline(both, evaluate=False)
    assert last1.stat().st_mtime_ns == stamp  # phase 1 was not retrained
    assert manifest["phases"][0]["reused"] and manifest["phases"][1]["status"] == "finished"
    assert set(manifest["bundles"]) == {"service", "receiver", "verifier"} and "evaluation" not in manifest
    # an interrupted phase 2: its last.ckpt exists but the manifest does not call it finished
    path = tmp_path / "run/manifest.json"
    manifest["phases"][1]["status"] = "interrupted"
    path.write_text(json.dumps(manifest))
    resumed = run_pipeline(both, evaluate=False, overrides=["--trainer.max_epochs=2"])
    phase2 = resumed["phases"][1]
    assert phase2["resumed_from"] == "phase2/checkpoints/last.ckpt"
    assert f"--ckpt_path={tmp_path / 'run/phase2/checkpoints/last.ckpt'}" in phase2["args"]
    assert phase2["epochs"] == 2 and phase2["status"] == "finished"
    assert last1.stat().st_mtime_ns == stamp


def test_pipeline_failure_is_recorded(tmp_path):
    path = write_pipeline(tmp_path, [{"name": "phase2", "config": "phase2.yaml"}])
    with pytest.raises(ValueError, match="phase1_ckpt"):  # phase 2 alone has no phase-1 checkpoint
        run_pipeline(path, evaluate=False)
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["phases"][0]["status"] == "failed" and "phase1_ckpt" in manifest["phases"][0]["error"]


def test_pipeline_file_errors(tmp_path):
    path = write_pipeline(tmp_path, [{"name": "a", "config": "phase1.yaml"}, {"name": "a", "config": "phase1.yaml"}])
    with pytest.raises(ValueError, match="unique names"):
        run_pipeline(path)
    path.write_text(yaml.safe_dump({"output": "x", "phases": [], "bogus": 1}))
    with pytest.raises(ValueError, match="bogus"):
        run_pipeline(path)
    path.write_text(yaml.safe_dump({"output": "x", "phases": [{"name": "a", "config": "missing.yaml"}]}))
    with pytest.raises(FileNotFoundError, match="missing"):
        run_pipeline(path)


def test_checkpoint_callback_is_pinned(tmp_path):
    config = tmp_path / "c.yaml"
    monitor = {"class_path": "pytorch_lightning.callbacks.LearningRateMonitor"}
    checkpoint = {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"filename": "x"}}
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [monitor, checkpoint]}}))
    callbacks = json.loads(_checkpoint_callbacks(str(config), tmp_path / "ck").split("=", 1)[1])
    assert callbacks[0]["class_path"] == "pytorch_lightning.callbacks.LearningRateMonitor"
    pinned = {"filename": "x", "dirpath": str(tmp_path / "ck"), "save_last": True, "enable_version_counter": False}
    assert pinned.items() <= callbacks[1]["init_args"].items()  # the parsed entry also lists every default
    config.write_text(yaml.safe_dump({"trainer": {"max_epochs": 1}}))
    (added,) = json.loads(_checkpoint_callbacks(str(config), tmp_path / "ck").split("=", 1)[1])
    assert added["class_path"].endswith("ModelCheckpoint") and added["init_args"]["save_last"] is True


@pytest.mark.parametrize("name", ["pipeline.yaml", "demo/pipeline.yaml"])
def test_shipped_pipelines_parse(name, capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "--config", str(REPO / "configs" / name), "--print_config"])
    spec = yaml.safe_load(capsys.readouterr().out)
    assert spec["phases"][0]["name"] == "phase1" and spec["phases"][-1]["name"] == "enhance"
    for phase in spec["phases"]:
        assert (REPO / phase["config"]).is_file()


EXPERIMENT_PIPELINES = sorted(
    p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("pipeline_*.yaml")
)


@pytest.mark.parametrize("name", EXPERIMENT_PIPELINES)
def test_experiment_pipelines_parse_and_name_shipped_configs(name, capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "--config", str(REPO / "configs" / name), "--print_config"])
    spec = yaml.safe_load(capsys.readouterr().out)
    for phase in spec["phases"]:
        assert (REPO / phase["config"]).is_file()
        assert ("demo/" in name) == ("configs/demo/" in phase["config"]), "demo pipelines use demo configs only"


def test_there_is_an_experiment_pipeline_per_comparison():
    names = {Path(n).name for n in EXPERIMENT_PIPELINES}
    assert {f"pipeline_{k}.yaml" for k in ("ipmn", "imn", "position", "hidden")} <= names
    assert len(EXPERIMENT_PIPELINES) == 2 * len(names)  # the paper scale and the demo of each
