"""The paper's comparisons (issue 14): held-out stealers, enhancement variants, given phases, HiDDeN, the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ipmn_lightning.console.main import main
from tests.workflows.test_pipeline import write_pipeline

PHASES = [
    {"name": "phase1", "config": "phase1.yaml"},
    {"name": "phase2", "config": "phase2.yaml"},
    {"name": "steal_unet", "config": "steal.yaml", "args": ["--model.init_args.stealer=unet"]},
    {"name": "steal_cnet", "config": "steal.yaml", "held_out": True},
    {"name": "enhance", "config": "enhance.yaml"},
    {"name": "enhance_all", "config": "enhance.yaml", "stealers": ["all"]},
]


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("heldout")
    assert main(["pipeline", "--config", str(write_pipeline(folder, PHASES))]) == 0
    return folder / "run"


def test_enhancement_gets_only_the_stealers_it_may_see(held_out_run):
    manifest = json.loads((held_out_run / "manifest.json").read_text())
    phases = {p["name"]: p for p in manifest["phases"]}
    assert phases["steal_cnet"]["held_out"] is True and phases["steal_unet"]["held_out"] is False

    def given(name: str) -> list[str]:
        arg = next(a for a in phases[name]["args"] if a.startswith("--model.init_args.stealer_ckpt="))
        return [Path(p).parts[-3] for p in json.loads(arg.split("=", 1)[1])]

    assert given("enhance") == ["steal_unet"] and phases["enhance"]["stealers"] == ["steal_unet"]
    assert given("enhance_all") == ["steal_unet", "steal_cnet"]
    assert phases["enhance"]["main"] is True and phases["enhance_all"]["main"] is False


def test_report_marks_seen_and_unseen_and_the_variant(held_out_run):
    report = json.loads((held_out_run / "report.json").read_text())
    assert set(report["table10"]) == {"unet", "cnet"}
    assert report["table10_seen"]["enhanced"] == {"unet": True, "cnet": False}
    assert report["table10_seen"]["enhanced:enhance_all"] == {"unet": True, "cnet": True}
    assert report["table10_seen"]["phase1"] == {"unet": False, "cnet": False}
    assert set(report["table10"]["cnet"]) == {"phase1", "enhanced", "enhanced:enhance_all"}
    markdown = (held_out_run / "report.md").read_text()
    assert "(unseen)" in markdown and "enhanced:enhance_all R" in markdown


def test_verifier_bundle_is_the_default_protocols_R(held_out_run):
    manifest = json.loads((held_out_run / "manifest.json").read_text())
    from ipmn_lightning.inference.bundle import load_bundle

    bundle = load_bundle(held_out_run / manifest["bundles"]["verifier"], "ipmn-verifier")
    states = {
        p["name"]: torch.load(held_out_run / p["checkpoint"], weights_only=True)["state_dict"]
        for p in manifest["phases"]
        if p["name"].startswith("enhance")
    }
    key = next(k for k in bundle.tensors if k.startswith("extractor."))
    assert torch.equal(bundle.tensors[key], states["enhance"][key])
    assert not torch.equal(bundle.tensors[key], states["enhance_all"][key])


def test_unknown_stealer_name_is_an_error(tmp_path):
    phases = [*PHASES[:3], {"name": "enhance", "config": "enhance.yaml", "stealers": ["steal_res9"]}]
    with pytest.raises(ValueError, match="steal_res9"):
        main(["pipeline", "--config", str(write_pipeline(tmp_path, phases))])


def test_phase_given_by_checkpoint_is_not_trained(held_out_run, tmp_path):
    phase1 = held_out_run / json.loads((held_out_run / "manifest.json").read_text())["phases"][0]["checkpoint"]
    phases = [{"name": "phase1", "config": "phase1.yaml", "checkpoint": str(phase1)},
              {"name": "phase2", "config": "phase2.yaml"}]  # fmt: skip
    assert main(["pipeline", "--config", str(write_pipeline(tmp_path, phases)), "--evaluate=false"]) == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["phases"][0]["given"] is True and not (tmp_path / "run" / "phase1").exists()
    phase2_args = manifest["phases"][1]["args"]
    assert f"--model.init_args.phase1_ckpt={phase1}" in phase2_args


def test_experiments_benchmark_report_from_run_reports(held_out_run):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "experiments.py"
    spec = importlib.util.spec_from_file_location("experiments_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = json.loads((held_out_run / "report.json").read_text())
    markdown, tables = module.build_report({"ipmn": report, "position": report}, {"ipmn": 60.0, "position": 30.0})
    for table in ("Table 5", "Table 6", "Table 7", "Table 8", "Table 9", "Table 10"):
        assert f"## {table}" in markdown
    assert tables["table10"]["cnet"]["enhanced"]["seen"] is False
    assert tables["table10"]["cnet"]["enhanced:enhance_all"]["seen"] is True
    wmf, rec = (report["table3"]["enhanced"][s]["sr_e"] for s in ("masked_face", "recovered_mask"))
    # x_sm: the stealer the enhanced R saw (unet), not the mix with the held-out cnet
    assert tables["table6"]["On x_m"] == (wmf, rec, report["table10"]["unet"]["enhanced"]["sr_e"])
    assert tables["table9"]["HiDDeN"] is None and "1.5 min in all" in markdown
    report["table10"]["unet"]["enhanced"]["sr_e"], report["table3"]["enhanced"]["stolen"]["sr_e"] = 0.5, 0.1
    assert module.build_report({"ipmn": report}, {})[1]["table6"]["On x_m"][2] == 0.5


def test_hidden_baseline_runs_through_the_pipeline_and_lands_in_the_report(tmp_path):
    import yaml

    write_pipeline(tmp_path, [])
    hidden = yaml.safe_load((tmp_path / "phase1.yaml").read_text())
    hidden["model"] = {"class_path": "ipmn_lightning.modules.HiddenPretrainModule",
                       "init_args": {"message_length": 8, "channels": 4, "encoder_blocks": 1, "decoder_blocks": 1,
                                     "discriminator_blocks": 1}}  # fmt: skip
    (tmp_path / "hidden.yaml").write_text(yaml.safe_dump(hidden))
    phases = [{"name": "phase1", "config": "hidden.yaml"}, {"name": "phase2", "config": "phase2.yaml"},
              {"name": "steal_unet", "config": "steal.yaml", "args": ["--model.init_args.stealer=unet"]}]  # fmt: skip
    assert main(["pipeline", "--config", str(write_pipeline(tmp_path, phases))]) == 0
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["bundles"] == {}  # a baseline has no bundles: it is evaluated from its checkpoints
    report = json.loads((run / "report.json").read_text())
    assert set(report["table3"]["phase1"]) == {"masked_face", "recovered_mask", "stolen"}
    assert 0.0 <= report["table3"]["phase1"]["masked_face"]["sr_e"] <= 1.0
    assert (run / "examples.png").is_file()


def test_evaluate_marks_explicit_held_out_stealers_unseen(checkpoints, tmp_path):
    import yaml

    from ipmn_lightning.workflows.evaluation import run_evaluation

    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"data": {"source": "synthetic", "image_size": 32, "batch_size": 4,
                                             "synthetic_sizes": [8, 4, 4], "num_workers": 0}}))  # fmt: skip
    report = run_evaluation(
        phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]), stealer_ckpt=[],
        held_out_stealer_ckpt=[str(checkpoints["stealer"])], enhance_ckpt=str(checkpoints["enhance"]),
        data_config=str(data), limit_batches=1, out=str(tmp_path / "eval"), progress=False, privacy=False,
    )  # fmt: skip
    assert report["table10_seen"]["enhanced"] == {"cnet": False}
    assert "(unseen)" in (tmp_path / "eval" / "report.md").read_text()


@pytest.mark.parametrize("degrade", [False, True])
def test_degrade_stolen_changes_only_the_stolen_sources_in_training(checkpoints, degrade):
    import random

    from ipmn_lightning.modules import ExtractorEnhanceModule
    from tests.helpers import SIZE, tiny_data

    module = ExtractorEnhanceModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]),
        stealer_ckpt=[str(checkpoints["stealer"])], degrade_stolen=degrade,
    )  # fmt: skip
    module.load_frozen()
    data = tiny_data(batch_size=8)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    seen = {}
    module._extract_all = lambda sources, distort=False: seen.update(sources) or {k: v for k, v in sources.items()}
    random.seed(0)
    torch.manual_seed(0)
    module.training_step(batch, 0)
    torch.manual_seed(0)  # the same z for x'_p and x'_wm
    plain = module.sources(batch)
    for name, image in plain.items():
        changed = not torch.equal(seen[name], image)
        assert changed == (degrade and name.startswith("stolen_")), name
