"""Real-face workflow: the pipeline's masks step and the privacy table (Table 11) of `ipmn evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("cv2")
pytest.importorskip("dlib")

import ipmn_lightning.faces.analysis as analysis
import ipmn_lightning.workflows.masks as generate
from ipmn_lightning.console.main import main
from ipmn_lightning.data.mask_store import check_store
from ipmn_lightning.faces.generators import LandmarkMaskGenerator
from ipmn_lightning.training.lightning_cli import data_settings
from ipmn_lightning.workflows.evaluation import run_evaluation
from ipmn_lightning.workflows.pipeline import run_pipeline
from tests.fakes.faces import FakeAnalyzer, FakeEncoder, face_folder
from tests.workflows.test_pipeline import FULL, write_pipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of 16 synthetic photos; masks made by the landmark generator on fake landmarks (no dlib model)."""
    monkeypatch.setattr(generate, "make_mask_generator", lambda name: LandmarkMaskGenerator(analyzer=FakeAnalyzer()))
    root = tmp_path / "photos"
    face_folder(root, size=48, per_split=(8, 4, 4))
    return root


def faces_pipeline(folder: Path, photos: Path, phases: list[dict]) -> Path:
    path = write_pipeline(folder, phases, masks={"image_size": 48, "identity_sample": 0})
    spec = yaml.safe_load(path.read_text())
    spec["overrides"] += ["--data.source=folder", f"--data.root={photos}"]
    path.write_text(yaml.safe_dump(spec))
    return path


def test_masks_step_fills_the_store_before_phase_1_and_resumes(tmp_path, fake_faces):
    path = faces_pipeline(tmp_path, fake_faces, FULL[:1])
    manifest = run_pipeline(path, evaluate=False)
    store = tmp_path / "run" / "masks_store"
    masks = manifest["masks"]
    assert masks["status"] == "finished" and masks["store"] == "masks_store" and masks["summary"]["generated"] == 16
    assert check_store(store, fake_faces, 48) == []
    assert not (fake_faces / "masks_store").exists()  # the photo folder is only read
    phase1 = manifest["phases"][0]
    assert f"--data.mask_store={store}" in phase1["args"] and phase1["data"]["mask_store"] == str(store)
    # a finished masks step is skipped on the next run
    stamps = {p: p.stat().st_mtime_ns for p in (store / "masks").iterdir()}
    again = run_pipeline(path, evaluate=False)
    assert again["masks"]["reused"] and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # an interrupted one makes only what is missing
    lost = sorted(stamps)[0]
    lost.unlink()
    manifest["masks"]["status"] = "running"
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    resumed = run_pipeline(path, evaluate=False)["masks"]
    assert resumed["status"] == "finished" and resumed["summary"]["generated"] == 1 and lost.is_file()


def test_masks_step_needs_photos(tmp_path):
    path = write_pipeline(tmp_path, FULL[:1], masks={"image_size": 48})  # synthetic faces: nothing to swap
    with pytest.raises(ValueError, match=r"data\.root"):
        run_pipeline(path, evaluate=False)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["masks"]["status"] == "failed"


def test_evaluate_reports_table_11(tmp_path, fake_faces, monkeypatch):
    run_pipeline(faces_pipeline(tmp_path, fake_faces, FULL), evaluate=False)
    monkeypatch.setattr(analysis, "DlibIdentityEncoder", FakeEncoder)  # mean colour as identity
    monkeypatch.setattr(analysis, "DlibFaceAnalyzer", FakeAnalyzer)  # the mosaic row's landmarks
    report = run_evaluation(run=str(tmp_path / "run"), progress=False, privacy=True)
    table = report["table11"]
    assert set(table["sr_p"]) == {"masked_face", "mask", "mosaic"} and set(table["sr_p"]["mask"]) == {"none"}
    assert set(table["sr_p"]["masked_face"]) == {"none", "gaussian_noise", "gaussian_blur", "jpeg"}
    counts = table["counts"]["masked_face"]["none"]
    assert counts["total"] + counts["reference_missing"] == 4  # the test split
    srp = 1 - counts["recognised"] / counts["total"]
    assert table["sr_p"]["masked_face"]["none"] == pytest.approx(srp)
    assert 0 <= table["utility"] <= 1 and table["utility_counts"]["total"] == counts["total"]
    text = (tmp_path / "run" / "report.md").read_text()
    assert "Table 11" in text and "JPEG 30" in text and "Utility: x'_p recognised as x_p" in text
    assert "| Mosaic (You et al.) |" in text and "| paper: You et al. [36]" in text
    assert "same person below 0.05" in text  # the recogniser and its threshold are named
    # synthetic data: no privacy table unless asked for
    assert run_evaluation(run=str(tmp_path / "run"), progress=False, privacy=False)["table11"] is None


def test_faces_pipeline_parses(capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "--config", str(REPO / "configs/faces/pipeline.yaml"), "--print_config"])
    spec = yaml.safe_load(capsys.readouterr().out)
    assert spec["masks"]["generator"] == "landmark" and spec["masks"]["image_size"] >= 64
    names = ["phase1", "phase2", "steal_unet", "null_unet_plain_inn", "null_res9_mask", "enhance"]
    assert [p["name"] for p in spec["phases"]] == names
    assert spec["data"] == "configs/data/faces.yaml"  # named once, composed into every phase
    for phase in spec["phases"]:
        data = data_settings(REPO / spec["data"], REPO / phase["config"])
        assert data["source"] == "folder" and data["image_size"] <= spec["masks"]["image_size"]
