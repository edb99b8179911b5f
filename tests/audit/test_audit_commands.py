"""``ipmn audit challenge|answer|run``: the owner's challenge, its answers, and the model-level verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ipmn_lightning.audit.challenge import AuditChallengeError, read_challenge
from ipmn_lightning.console.main import main

SIZE = 32


@pytest.fixture(scope="module")
def challenge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audit") / "challenge"
    assert main(["audit", "challenge", "--source", "synthetic", "--n", "24", "--image_size", str(SIZE),
                 "--out", str(out)]) == 0  # fmt: skip
    return out


def test_synthetic_challenge_layout_and_hashes(challenge: Path) -> None:
    manifest = read_challenge(challenge)
    assert manifest["n"] == 24 and manifest["source"] == "synthetic" and len(manifest["pairs"]) == 24
    for name in ("protected", "replacement", "mask"):
        files = sorted((challenge / name).glob("*.png"))
        assert len(files) == 24 and Image.open(files[0]).size == (SIZE, SIZE)
    first = manifest["pairs"][0]
    assert first["id"] == "0000" and len(first["protected"]["sha256"]) == 64


def test_a_changed_challenge_file_is_refused(challenge: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(challenge, tmp_path / "copy")
    Image.new("RGB", (SIZE, SIZE)).save(copy / "protected" / "0003.png")
    with pytest.raises(AuditChallengeError, match=r"0003\.png is missing or changed"):
        read_challenge(copy)


def test_folder_challenge_uses_each_photo_once(fake_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "c"
    assert main(["audit", "challenge", "--root", str(fake_folder), "--n", "5", "--out", str(out)]) == 0
    origins = [p["origin"] for p in read_challenge(out)["pairs"]]
    used = [o["protected"] for o in origins] + [o["replacement"] for o in origins]
    assert len(set(used)) == 10  # never a self-pair, never one photo twice
    assert main(["audit", "challenge", "--root", str(fake_folder), "--n", "6", "--out", str(tmp_path / "d")]) == 2
    assert "needs 12 (each photo once)" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["audit", "challenge", "--root", str(fake_folder), "--n", "5", "--out", str(out)]) == 2
    assert main(["audit", "challenge", "--source", "folder", "--out", str(tmp_path / "e")]) == 2
    assert "needs --root" in capsys.readouterr().err


def test_answer_writes_one_png_per_pair(checkpoints: dict[str, Path], challenge: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers"
    assert main(["audit", "answer", "--stealer_ckpt", str(checkpoints["stealer"]), "--challenge", str(challenge),
                 "--out", str(out)]) == 0  # fmt: skip
    assert sorted(p.stem for p in out.glob("*.png")) == [f"{i:04d}" for i in range(24)]
    assert json.loads((out / "responses.json").read_text())["stealer"] == "cnet"
    assert main(["audit", "answer", "--stealer_ckpt", str(checkpoints["phase1"]), "--challenge", str(challenge),
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert not (tmp_path / "x").exists()


def _split_by_nc(verifier: Path, folder: Path, tmp_path: Path) -> dict[str, Path]:
    """Three folders of answers: two null models of the lowest NCs, and the suspect of the highest."""
    from ipmn_lightning.inference.facade import IPMN

    model = IPMN.load(verifier_bundle=verifier)
    files = sorted(folder.glob("*.png"))
    ncs = [v.nc for v in model.verify([Image.open(f).convert("RGB") for f in files])]
    ranked = [f for _, f in sorted(zip(ncs, files))]
    # two null models that answer alike (no between-model spread), and a suspect with the highest NCs
    groups = {"null_a": ranked[:8], "null_b": ranked[:8], "suspect": ranked[-8:]}
    out = {}
    for name, members in groups.items():
        (tmp_path / name).mkdir()
        for file in members:
            shutil.copy(file, tmp_path / name / file.name)
        out[name] = tmp_path / name
    return out


def test_run_verdict_follows_the_ncs(verifier: Path, challenge: Path, tmp_path: Path, capsys) -> None:
    folders = _split_by_nc(verifier, challenge / "protected", tmp_path)
    null = json.dumps([str(folders["null_a"]), str(folders["null_b"])])
    report = tmp_path / "audit.json"
    base = ["audit", "--bundle", str(verifier), "--null", null, "--alpha", "0.05"]
    # with no floor on the spread of independent models (and none seen), the top NCs stand out of the bottom ones
    code = main([*base, "--responses", str(folders["suspect"]), "--report", str(report), "--min_between_sd", "0"])
    result = json.loads(report.read_text())
    assert code == 0 and result["verdict"] == "watermarked" and result["p_value"] <= 0.05
    assert {"p_value", "statistic", "n", "alpha", "verdict"} <= result.keys() and result["n"] == 8
    assert Path(result["figure"]).is_file()
    # a null model as the suspect is not accused
    code = main([*base, "--responses", str(folders["null_a"]), "--report", str(report), "--overwrite", "true"])
    assert code == 1 and json.loads(report.read_text())["verdict"] == "not shown"
    capsys.readouterr()


def test_run_refuses_bad_input(verifier: Path, challenge: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "audit.json"
    one_null = json.dumps([str(challenge / "mask")])
    args = ["audit", "run", "--bundle", str(verifier), "--responses", str(challenge / "protected")]
    assert main([*args, "--report", str(report)]) == 2
    assert "no null" in capsys.readouterr().err
    assert main([*args, "--report", str(report), "--null", one_null]) == 2
    assert "at least 2" in capsys.readouterr().err
    nulls = json.dumps([str(challenge / "mask"), str(challenge / "replacement")])
    subset = tmp_path / "subset"
    subset.mkdir()
    shutil.copy(challenge / "protected" / "0000.png", subset)
    assert main(["audit", "run", "--bundle", str(verifier), "--responses", str(subset), "--report", str(report),
                 "--null", nulls, "--challenge", str(challenge)]) == 2  # fmt: skip
    assert "23 pair(s) unanswered" in capsys.readouterr().err and not report.exists()


def test_bundle_recorded_null_is_used_without_null_folders(
    checkpoints: dict[str, Path], challenge: Path, tmp_path: Path
) -> None:
    from ipmn_lightning.inference.bundle import export_verifier_bundle, load_bundle

    null = {"source": "test", "models": {"a": [0.1, 0.12, 0.11], "b": [0.13, 0.1, 0.12]}, "genuine": [0.9]}
    bundle = export_verifier_bundle(checkpoints["phase1"], tmp_path / "v.safetensors", audit_null=null)
    assert load_bundle(bundle, "ipmn-verifier").config["audit_null"]["models"]["a"] == [0.1, 0.12, 0.11]
    report = tmp_path / "a.json"
    main(["audit", "--bundle", str(bundle), "--responses", str(challenge / "protected"), "--report", str(report)])
    assert json.loads(report.read_text())["null_source"].startswith("the bundle's audit_null")
    with pytest.raises(ValueError, match="audit_null needs >= 2"):
        export_verifier_bundle(checkpoints["phase1"], tmp_path / "w.safetensors", audit_null={"models": {"a": [0.1]}})
