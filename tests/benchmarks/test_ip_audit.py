"""``benchmarks/ip_audit.py`` end to end on tiny checkpoints (models given, so no ``ipmn fit`` runs here)."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "ip_audit.py"


def test_ip_audit_reports_every_model_the_audit_and_the_calibration(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    for phase in ("phase1", "phase2"):
        (run / phase / "checkpoints").mkdir(parents=True)
        shutil.copy(checkpoints[phase], run / phase / "checkpoints" / "last.ckpt")
    names = ["cnet", "null_unet_plain_inn", "null_res9_mask", "null_attn_plain_inn"]
    for name in names:  # trained already: the benchmark reuses them (models/<name>/done.json)
        folder = out / "models" / name / "checkpoints"
        folder.mkdir(parents=True)
        shutil.copy(checkpoints["stealer"], folder / "step00002.ckpt")
        (out / "models" / name / "done.json").write_text("{}")
    argv = ["ip_audit.py", "--run", str(run), "--out", str(out), "--n", "8", "--image_size", "32",
            "--models", ",".join(names), "--resamples", "5"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCHMARK), run_name="__main__")
    result = json.loads((out / "ip_audit.json").read_text())
    assert list(result["models"]) == names and result["n"] == 8
    thief = result["models"]["cnet"]
    assert thief["role"] == "thief" and thief["steps"][0]["step"] == 2 and thief["imitation_psnr"] > 0
    # every null model is the same tiny network here: identical answers, never accused, the thief neither
    for row in result["models"].values():
        assert row["audit"]["verdict"] == "not shown" and row["audit"]["n"] == 8
        assert row["keyed_audit"]["verdict"] == "not shown" and row["keyed_audit"]["n"] == 8
    assert result["calibration"]["trials"] == 15 and result["keyed_calibration"]["trials"] == 15
    assert (out / "reference.safetensors").is_file() and result["genuine_mean_keyed"] is not None
    assert (out / "ip_audit_curve.png").is_file() and "| cnet | thief |" in (out / "ip_audit.md").read_text()
