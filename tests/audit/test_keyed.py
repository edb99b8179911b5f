"""The keyed audit score: the share of the owner's watermark residual that an answer reproduces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ipmn_lightning.audit.keyed import high_pass, keyed_scores
from ipmn_lightning.audit.reference import read_reference
from ipmn_lightning.console.main import main
from ipmn_lightning.core.images import tensor_to_pil


def _faces(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear")
    return smooth.clamp(0.05, 0.95)


def test_high_pass_removes_constants_and_keeps_detail() -> None:
    flat = torch.full((2, 3, 16, 16), 0.4)
    assert high_pass(flat).abs().max() < 1e-6
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    detail = high_pass(checker.float().expand(1, 3, 16, 16))
    assert detail.abs().mean() > 0.3  # a one-pixel pattern is almost all detail
    with pytest.raises(ValueError, match="sigma must be > 0"):
        high_pass(flat, sigma=0)


def test_scores_measure_the_share_of_the_residual() -> None:
    masks = _faces(64)
    residual = 0.03 * torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = 0.05 * torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for share in (1.0, 0.1, 0.0):
        scores = keyed_scores(masks + share * residual + noise, masks, residual)
        assert scores.shape == (64,) and scores.dtype == torch.float64
        assert abs(float(scores.mean()) - share) < 0.03
    # an independent model's error (noise that never saw the residual) scores about 0, not its size
    other = 0.2 * torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert abs(float(keyed_scores(masks + other, masks, residual).mean())) < 0.05


def test_scores_refuse_bad_shapes_and_an_empty_residual() -> None:
    masks = _faces(4)
    with pytest.raises(ValueError, match="one shape"):
        keyed_scores(masks[:3], masks, masks)
    with pytest.raises(ValueError, match="no high-pass detail"):
        keyed_scores(masks, masks, torch.zeros_like(masks))


@pytest.fixture(scope="module")
def challenge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keyed") / "challenge"
    assert main(["audit", "challenge", "--source", "synthetic", "--n", "24", "--image_size", "32",
                 "--out", str(out)]) == 0  # fmt: skip
    return out


def _answers(folder: Path, ids: list[str], images: torch.Tensor) -> Path:
    folder.mkdir()
    for pair_id, image in zip(ids, images.clamp(0, 1)):
        tensor_to_pil(image).save(folder / f"{pair_id}.png")
    return folder


def test_reference_and_keyed_audit(service: Path, verifier: Path, challenge: Path, tmp_path: Path, capsys) -> None:
    ref = tmp_path / "ref.safetensors"
    assert main(["audit", "reference", "--bundle", str(service), "--challenge", str(challenge), "--out", str(ref)]) == 0
    reference = read_reference(ref, str(challenge))
    ids, masks, residual = reference["ids"], reference["mask"], reference["residual"]
    assert len(ids) == 24 and masks.shape == residual.shape == (24, 3, 32, 32)
    assert "keep it private" in capsys.readouterr().out
    # the tiny bundle's H barely marks anything: make the answers from a residual strong enough to read
    strong = residual / residual.std() * 0.05
    ref2 = tmp_path / "ref2.safetensors"
    from safetensors.torch import save_file

    save_file({"mask": masks.half(), "residual": strong.half()}, str(ref2), metadata=reference["metadata"])
    g = torch.Generator().manual_seed(0)
    suspect = _answers(tmp_path / "suspect", ids, masks + 0.5 * strong + 0.02 * torch.randn(masks.shape, generator=g))
    nulls = [_answers(tmp_path / f"null{k}", ids, masks + 0.02 * torch.randn(masks.shape, generator=g))
             for k in range(4)]  # fmt: skip
    report = tmp_path / "audit.json"
    base = ["audit", "run", "--bundle", str(verifier), "--challenge", str(challenge), "--reference", str(ref2),
            "--report", str(report), "--overwrite", "true", "--alpha", "1e-6"]  # fmt: skip
    code = main([*base, "--responses", str(suspect), "--null", json.dumps([str(p) for p in nulls[:3]])])
    result = json.loads(report.read_text())
    assert code == 0 and result["statistic_name"] == "mean keyed score" and result["verdict"] == "watermarked"
    assert abs(result["statistic"] - 0.5) < 0.1 and "nc_audit" in result and len(result["keyed"]["scores"]) == 24
    code = main([*base, "--responses", str(nulls[3]), "--null", json.dumps([str(p) for p in nulls[:3]])])
    assert code == 1 and json.loads(report.read_text())["verdict"] == "not shown"
    # the keyed score needs null models' answers, and a reference of this very challenge
    assert main([*base, "--responses", str(suspect)]) == 2
    assert "needs --null" in capsys.readouterr().err
    other = shutil.copytree(challenge, tmp_path / "other")
    manifest = json.loads((other / "challenge.json").read_text())
    manifest["seed"] = 99
    (other / "challenge.json").write_text(json.dumps(manifest))
    nulls_arg = json.dumps([str(p) for p in nulls[:2]])
    code = main([*base[:3], str(verifier), "--challenge", str(other), "--reference", str(ref2), "--report",
                 str(tmp_path / "x.json"), "--responses", str(suspect), "--null", nulls_arg])  # fmt: skip
    assert code == 2 and "another challenge" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
    # a receiver never gets here: the reference needs H and w
    assert main(["audit", "reference", "--bundle", str(verifier), "--challenge", str(challenge),
                 "--out", str(tmp_path / "r3.safetensors")]) == 2  # fmt: skip
    assert main(["audit", "reference", "--bundle", str(service), "--challenge", str(challenge), "--out", str(ref)]) == 2
    assert "exists" in capsys.readouterr().err
