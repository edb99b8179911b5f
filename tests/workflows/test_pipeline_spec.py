"""Every phase's settings come from the training CLI's parser: both override forms and extra --config files."""

from __future__ import annotations

from pathlib import Path

import yaml

import ipmn_lightning.faces.analysis as analysis
import ipmn_lightning.workflows.masks as masks
import ipmn_lightning.workflows.pipeline as pipeline_module
from ipmn_lightning.console.main import main
from ipmn_lightning.training.lightning_cli import parse_config

REPO = Path(__file__).resolve().parents[2]


def test_two_token_overrides_and_an_extra_config_reach_every_phase(tmp_path, monkeypatch):
    seen: dict[str, dict] = {}

    def fake_generate(root, *, source, store, **kwargs):
        seen["masks"] = {"root": str(root), "source": source}
        Path(store).mkdir(parents=True, exist_ok=True)
        (Path(store) / "pairs.csv").write_text("")
        return {}

    def fake_fit(spec, args, root, mode):
        data = parse_config(args)["data"].as_dict()
        seen[spec.name] = data
        last = root / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True, exist_ok=True)
        last.write_bytes(b"")
        return {"status": "finished", "checkpoint": str(last), "data": data}

    monkeypatch.setattr(analysis, "require_faces_extra", lambda what: None)
    monkeypatch.setattr(masks, "generate_masks", fake_generate)
    monkeypatch.setattr(pipeline_module, "_fit", fake_fit)
    monkeypatch.setattr(pipeline_module, "export_bundles", lambda out, done, data=None, nulls=None: {})
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"data": {"source": "folder", "batch_size": 3}}))
    photos = tmp_path / "photos"
    pipe = tmp_path / "pipeline.yaml"
    spec = yaml.safe_load((REPO / "configs/faces/pipeline.yaml").read_text())
    spec.update(output=str(tmp_path / "run"), data=str(REPO / spec["data"]), evaluate=False)
    spec["phases"] = [{**p, "config": str(REPO / p["config"])} for p in spec["phases"]]
    pipe.write_text(yaml.safe_dump(spec))
    code = main(["pipeline", "--config", str(pipe), "--overrides+=--data.root", f"--overrides+={photos}",
              "--overrides+=--config", f"--overrides+={extra}", "--overrides+=--data.source", "--overrides+=celeba",
              "--overrides+=--config", f"--overrides+={extra}"])  # fmt: skip
    assert code in (0, None)
    assert seen["masks"] == {"root": str(photos), "source": "folder"}
    phases = [p["name"] for p in spec["phases"]]
    for name in phases:
        assert seen[name]["root"] == str(photos), name
        assert seen[name]["source"] == "folder" and seen[name]["batch_size"] == 3, name
        assert seen[name]["train_limit"] == 2048, name  # configs/data/faces.yaml, the pipeline's data config
        assert seen[name]["mask_store"] == str((tmp_path / "run" / "masks_store").resolve()), name
    assert seen["steal_unet"]["train_part"] == "attacker" and seen["phase1"]["train_part"] == "owner"


def test_every_data_config_is_named_by_a_shipped_pipeline_and_composes_with_its_phases():
    pipelines = [
        p for p in [*(REPO / "configs").rglob("*pipeline*.yaml"), *(REPO / "benchmarks/pipelines").glob("*.yaml")]
    ]
    named: dict[str, list[dict]] = {}
    for path in pipelines:
        spec = yaml.safe_load(path.read_text())
        assert spec.get("data"), f"{path}: a pipeline names its data config"
        named.setdefault(spec["data"], []).append(spec)
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "configs/data").glob("*.yaml")}
    assert shipped == set(named) and {"configs/data/synthetic.yaml", "configs/data/faces.yaml"} <= shipped
    for data, specs in named.items():
        for phase in {p["config"] for spec in specs for p in spec["phases"]}:
            settings = parse_config(["fit", "--config", str(REPO / data), "--config", str(REPO / phase)])
            assert settings["data"]["source"] == yaml.safe_load((REPO / data).read_text())["data"]["source"]
            assert settings["data"]["train_part"] in ("owner", "attacker"), phase
