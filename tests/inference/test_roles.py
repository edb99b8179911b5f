"""`ipmn protect`, `ipmn recover` and `ipmn verify` on image files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ipmn_lightning import IPMN
from ipmn_lightning.console.main import main
from ipmn_lightning.core.images import pil_to_tensor
from ipmn_lightning.inference.bundle import export_service_bundle, export_verifier_bundle
from tests.helpers import write_faces


@pytest.fixture(scope="module")
def service(checkpoints, tmp_path_factory):
    return export_service_bundle(checkpoints["phase2"], tmp_path_factory.mktemp("service") / "service.safetensors")


def read(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return pil_to_tensor(image)


def test_protect_then_recover_round_trip(service, tmp_path):
    faces, masks = write_faces(tmp_path)
    assert main(["protect", "--bundle", str(service), "--protected", str(faces), "--mask", str(masks),
                 "--out", "shared", "--batch_size", "2"]) == 0  # fmt: skip
    shared = sorted(Path("shared").iterdir())
    assert [p.name for p in shared] == ["face0.png", "face1.png", "face2.png"]
    model = IPMN.load(service)
    expected = model.protect(torch.stack([read(p) for p in sorted(faces.iterdir())]),
                             torch.stack([read(p) for p in sorted(masks.iterdir())]))  # fmt: skip
    assert torch.equal(torch.stack([read(p) for p in shared]), expected)  # lossless PNG of the 8-bit x_wmf
    assert main(["recover", "--bundle", str(service), "--masked", "shared", "--out", "received", "--seed", "3"]) == 0
    names = sorted(p.name for p in Path("received").iterdir())
    assert names == [f"face{i}_{kind}.png" for i in range(3) for kind in ("face", "mask")]
    face, mask = model.recover(expected, seed=3)
    assert torch.equal(read(Path("received/face1_face.png")), face[1].mul(255).round().div(255))
    assert torch.equal(read(Path("received/face2_mask.png")), mask[2].mul(255).round().div(255))
    assert not [p for p in Path("received").iterdir() if p.name.startswith(".")]  # atomic writes


def test_single_files_and_sizes(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=1)
    big = tmp_path / "big.png"
    Image.open(faces / "face0.png").resize((48, 48)).save(big)
    args = ["protect", "--bundle", str(service), "--protected", str(big), "--mask", str(masks / "face0.png")]
    assert main([*args, "--out", "a", "--resize", "reject"]) == 2
    assert "big.png (48x48)" in capsys.readouterr().err
    assert main([*args, "--out", "b"]) == 0
    with Image.open("b/big.png") as image:
        assert image.size == (32, 32)


def test_unpaired_and_missing_inputs(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path)
    (masks / "face2.png").rename(masks / "other.png")
    code = main(["protect", "--bundle", str(service), "--protected", str(faces), "--mask", str(masks), "--out", "o"])
    err = capsys.readouterr().err
    assert code == 2 and "face2.png" in err and "other.png" in err and "without a partner" in err
    assert main(["recover", "--bundle", str(service), "--masked", str(tmp_path / "nothing"), "--out", "o"]) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err
    assert main(["recover", "--bundle", str(tmp_path / "none.safetensors"), "--masked", str(faces), "--out", "o"]) == 2
    assert "no bundle at" in capsys.readouterr().err
    assert not Path("o").exists()


def test_verify_exit_code_follows_the_verdicts(checkpoints, service, tmp_path, capsys):
    """The verdict is NC > the bundle's threshold; the threshold is set between two images' NC."""
    faces, masks = write_faces(tmp_path, n=2)
    assert main(["protect", "--bundle", str(service), "--protected", str(faces), "--mask", str(masks),
                 "--out", "shared"]) == 0  # fmt: skip
    probe = export_verifier_bundle(checkpoints["enhance"], tmp_path / "probe.safetensors")
    candidates = [Path("shared/face0.png"), faces / "face1.png"]
    ncs = [IPMN.load(verifier_bundle=probe).verify(Image.open(p)).nc for p in candidates]
    assert ncs[0] != ncs[1]
    high, low = candidates if ncs[0] > ncs[1] else candidates[::-1]
    bundle = export_verifier_bundle(checkpoints["enhance"], tmp_path / "v.safetensors", threshold=sum(ncs) / 2)
    for folder, files in (("pass", [high]), ("fail", [low]), ("mixed", [high, low])):
        Path(folder).mkdir()
        for file in files:
            (Path(folder) / file.name).write_bytes(file.read_bytes())
    assert main(["verify", "--bundle", str(bundle), "--images", "pass"]) == 0
    assert "1/1 image(s) verified" in capsys.readouterr().out
    assert main(["verify", "--bundle", str(bundle), "--images", "fail"]) == 1
    code = main(["verify", "--bundle", str(bundle), "--images", "mixed", "--report", "report.json"])
    report = json.loads(Path("report.json").read_text())
    table = capsys.readouterr().out
    assert code == 1 and report["total"] == 2 and report["verified"] == 1 and not report["all_verified"]
    verdicts = {Path(row["file"]).name: row["verified"] for row in report["images"]}
    assert verdicts == {high.name: True, low.name: False}
    assert "NOT verified" in table and f"{low.name}" in table
    assert main(["verify", "--bundle", str(service), "--images", "pass"]) == 2  # a service bundle is refused
