"""The pipeline checks its own result: a run that misses its targets fails loudly and exports no bundles."""

from __future__ import annotations

import json

import pytest

from ipmn_lightning.console.main import main
from ipmn_lightning.workflows.pipeline import TARGETS_MISSED, run_pipeline
from ipmn_lightning.workflows.targets import Targets, check
from tests.workflows.test_pipeline import FULL, write_pipeline

UNREACHABLE = {"min_images": 1}  # the defaults: SR_E 95%, FPR 1%, recovery 30 dB; the tiny nets reach none
REACHABLE = {"sr_e": 0.0, "fpr": 1.0, "recovery_psnr": -100.0, "sr_p": 0.0, "min_images": 1}


def test_a_run_that_misses_its_targets_fails_loudly(tmp_path, capsys):
    path = write_pipeline(tmp_path, FULL, targets=UNREACHABLE, extra_budget=2)
    assert main(["pipeline", "--config", str(path)]) == TARGETS_MISSED
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    gate = manifest["gate"]
    assert manifest["status"] == gate["status"] == "FAILED" and manifest["bundles"] is None
    assert "recovery PSNR (x_p, x'_p) 8-bit" in gate["failed"]  # a 2-batch INN is far below 30 dB
    missed = {c["target"]: c for c in gate["checks"] if not c["passed"]}
    assert all(isinstance(c["value"], float) for c in missed.values())  # the measured value, never silent
    assert not (run / "bundles").exists()
    report = (run / "report.md").read_text()
    assert report.startswith("# Result: FAILED") and "recovery PSNR" in report and "not exported" in report
    assert json.loads((run / "report.json").read_text())["gate"]["status"] == "FAILED"
    assert gate["split"] == "val" and (run / "gate/report.json").is_file()
    assert any(s["target"] == "SR_P of x_wmf" for s in gate["skipped"])  # synthetic faces: said, not hidden
    assert "FAILED" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="FAILED"):  # a rerun measures again, and fails again
        run_pipeline(path)


def test_a_run_that_meets_its_targets_exports_as_before(tmp_path):
    path = write_pipeline(tmp_path, FULL, targets=REACHABLE)
    assert main(["pipeline", "--config", str(path)]) == 0
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == manifest["gate"]["status"] == "PASSED" and not manifest["gate"]["failed"]
    assert manifest["bundles"] == {role: f"bundles/{role}.safetensors" for role in ("service", "receiver", "verifier")}
    assert (run / "bundles/verifier.safetensors").is_file()
    report = json.loads((run / "report.json").read_text())
    assert report["split"] == "test" and report["gate"]["status"] == "PASSED"  # the test report, stamped
    assert (run / "report.md").read_text().startswith("# Result: PASSED")


def _report(sr_e: float, fpr: float, psnr: float, images: int = 64, sr_p: float | None = None) -> dict:
    sources = {"masked_face": sr_e, "recovered_mask": sr_e, "stolen": sr_e}
    return {"split": "val", "images": images, "data": {"source": "folder"},
            "table4": {"phase1": sources, "enhanced": sources},
            "false_positive_rate": {"enhanced": {"mask": fpr, "protected": fpr, "recovered_face": 0.0}},
            "table2": {"recovered": {"psnr_q8": psnr}},
            "table11": {"sr_p": {"masked_face": {"none": sr_p}}} if sr_p is not None else None}  # fmt: skip


def test_check_names_each_missed_target():
    targets = Targets()
    assert check(_report(1.0, 0.0, 32.0, sr_p=0.95), targets)["status"] == "PASSED"
    verdict = check(_report(0.0, 0.0, 32.0, sr_p=0.95), targets)  # the silent 0% of the issue
    assert verdict["failed"] == ["SR_E enhanced R on x_wmf", "SR_E enhanced R on x'_wm", "SR_E enhanced R on x_sm"]
    verdict = check(_report(1.0, 0.05, 29.0, images=8), targets)
    assert verdict["failed"] == ["FPR enhanced R on clean x_m", "FPR enhanced R on clean x_p",
                                 "recovery PSNR (x_p, x'_p) 8-bit", "validation images"]  # fmt: skip
    assert verdict["skipped"][0]["why"].startswith("no face analyser")
    assert check(_report(1.0, 0.0, 32.0, sr_p=0.5), targets)["failed"] == ["SR_P of x_wmf (8-bit, no attack)"]


def test_a_missed_r_target_trains_the_enhancement_within_the_extra_budget(tmp_path):
    only_r = {**REACHABLE, "sr_e": 1.01}  # only SR_E misses, and always: more enhancement is tried, then it fails
    path = write_pipeline(tmp_path, FULL, targets=only_r, extra_budget=2)
    assert main(["pipeline", "--config", str(path)]) == TARGETS_MISSED
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    enhance = next(p for p in manifest["phases"] if p["name"] == "enhance")
    assert enhance["extra_steps"] == 2 and manifest["gate"]["extra_steps"] == 2
    assert all(name.startswith("SR_E") for name in manifest["gate"]["failed"])
    assert "2 extra steps" in (tmp_path / "run/report.md").read_text()
