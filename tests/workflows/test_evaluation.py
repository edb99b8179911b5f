"""`ipmn evaluate`: every table of the report on tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ipmn_lightning.console.main import main
from ipmn_lightning.workflows.evaluation import run_evaluation

DATA = {
    "source": "synthetic",
    "image_size": 32,
    "batch_size": 4,
    "synthetic_sizes": [8, 4, 4],
    "num_workers": 0,
}


@pytest.fixture
def data_config(tmp_path: Path) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"data": DATA}))
    return path


def test_evaluate_writes_every_table(checkpoints, data_config, capsys):
    paths = {name: str(path) for name, path in checkpoints.items()}
    args = ["evaluate", "--phase1_ckpt", paths["phase1"], "--phase2_ckpt", paths["phase2"],
            "--stealer_ckpt", json.dumps([paths["stealer"]]), "--enhance_ckpt", paths["enhance"],
            "--data_config", str(data_config), "--out", "report", "--accelerator", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "Table 2" in capsys.readouterr().out
    markdown = Path("report/report.md").read_text()
    for heading in ("Table 2", "Table 3", "Table 4", "Table 10", "False-positive rate"):
        assert f"## {heading}" in markdown
    for paper in ("41.05", "53.65", "55.97", "0.005262", "| cnet |", "74%"):
        assert paper in markdown
    report = json.loads(Path("report/report.json").read_text())
    assert report["images"] == 4 and report["split"] == "test"
    assert set(report["table2"]) == {"recovered", "masked", "recovered_mask", "masked_vs_mask"}
    assert {"psnr", "ssim", "psnr_q8", "ssim_q8"} <= set(report["table2"]["recovered"])
    assert set(report["table3"]) == {"phase1", "enhanced"}
    assert set(report["table3"]["enhanced"]) == {"masked_face", "recovered_mask", "stolen"}
    assert report["table4"]["phase1"]["stolen"] == report["table3"]["phase1"]["stolen"]["sr_e"]
    assert set(report["table10"]) == {"cnet"} and set(report["table10"]["cnet"]) == {"phase1", "enhanced"}
    assert set(report["false_positive_rate"]["phase1"]) == {"mask", "protected", "recovered_face"}
    assert all(0.0 <= v <= 1.0 for rows in report["table4"].values() for v in rows.values())
    # Table 2 is the phase-2 module's own test metrics
    assert report["table2"]["masked"]["psnr"] == report["metrics"]["phase2"]["test/psnr_masked"]
    with Image.open("report/examples.png") as grid:
        assert grid.width > 4 * 32 and grid.height > 10 * 32


def test_evaluate_without_enhancement_or_stealers(checkpoints, data_config):
    report = run_evaluation(phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]),
                            data_config=str(data_config), split="val", limit_batches=1, out="r",
                            accelerator="cpu", progress=False)  # fmt: skip
    assert set(report["table3"]) == {"phase1"} and set(report["table3"]["phase1"]) == {
        "masked_face",
        "recovered_mask",
    }
    assert report["table10"] == {} and report["split"] == "val"
    assert "(none trained)" in Path("r/report.md").read_text()


def test_evaluate_needs_checkpoints_and_data(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="phase2_ckpt"):
        run_evaluation(phase1_ckpt=str(checkpoints["phase1"]), accelerator="cpu")
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        run_evaluation(run=str(tmp_path), accelerator="cpu")
    with pytest.raises(ValueError, match="data settings"):
        run_evaluation(phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]))
