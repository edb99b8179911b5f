"""Role-command guards: protect/recover/verify never write into their inputs, check paths and devices up front.

Also the verify report, never overwritten without ``--overwrite true`` (its p-values: ``test_statistics.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ipmn_lightning.console.main import main
from tests.helpers import write_faces
from tests.helpers.roles import protect_args, snapshot


@pytest.mark.parametrize("where", ["faces", "faces/sub", "masks"])
def test_protect_never_writes_into_an_input_folder(service, tmp_path, capsys, where):
    faces, masks = write_faces(tmp_path)
    before = {"faces": snapshot(faces), "masks": snapshot(masks)}
    assert main(protect_args(service, faces, masks, tmp_path / where)) == 2
    assert "pass another folder" in capsys.readouterr().err
    assert {"faces": snapshot(faces), "masks": snapshot(masks)} == before
    assert not (tmp_path / "faces" / "sub").exists()


def test_protect_never_replaces_a_single_input_file(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=1)
    before = (faces / "face0.png").read_bytes()
    assert main(protect_args(service, faces / "face0.png", masks / "face0.png", faces)) == 2
    assert "would replace the input file" in capsys.readouterr().err
    assert (faces / "face0.png").read_bytes() == before


def test_recover_refuses_out_equal_to_masked(service, tmp_path, capsys):
    faces, _ = write_faces(tmp_path)
    before = snapshot(faces)
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", str(faces)]) == 2
    assert "--masked folder" in capsys.readouterr().err
    assert snapshot(faces) == before


def test_mask_equal_to_protected_is_refused(service, tmp_path, capsys):
    faces, _ = write_faces(tmp_path)
    assert main(protect_args(service, faces, faces, "out")) == 2
    assert "its own mask" in capsys.readouterr().err
    assert main(protect_args(service, faces / "face0.png", faces / "face0.png", "out")) == 2
    assert "its own mask" in capsys.readouterr().err
    assert not Path("out").exists()


def test_same_stem_twice_is_refused(service, verifier, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=2)
    (faces / "face1.png").rename(faces / "face0.bmp")
    code = main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "out"])
    err = capsys.readouterr().err
    assert code == 2 and "face0.bmp" in err and "face0.png" in err
    assert main(["verify", "--bundle", str(verifier), "--images", str(faces)]) == 2
    assert "same name" in capsys.readouterr().err
    assert main(protect_args(service, faces, masks, "out")) == 2
    assert not Path("out").exists()


def test_a_bad_file_after_the_first_batch_writes_nothing(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=3)
    (faces / "face9.png").write_bytes(b"not an image at all")
    (masks / "face9.png").write_bytes((masks / "face0.png").read_bytes())
    assert main(protect_args(service, faces, masks, "out", "--batch_size", "1")) == 2
    assert "face9.png" in capsys.readouterr().err
    assert not Path("out").exists() or not list(Path("out").iterdir())


def test_a_file_failing_while_decoding_says_what_was_written(service, tmp_path, capsys, monkeypatch):
    faces, _ = write_faces(tmp_path, n=3)
    data = (faces / "face2.png").read_bytes()
    (faces / "face2.png").write_bytes(data[: len(data) // 2])  # header fine, pixel data cut short
    args = ["recover", "--bundle", str(service), "--masked", str(faces), "--out", "out", "--batch_size", "1"]
    # every input is decoded before the first output (issue 26): nothing is written, no folder is left
    assert main(args) == 2
    assert "face2.png" in capsys.readouterr().err and not Path("out").exists()
    # a file that breaks after the check (changed while the command runs) still names what was written
    monkeypatch.setattr("ipmn_lightning.inference.guards.read_image", lambda *args, **kwargs: None)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "face2.png" in err and "4 output(s) were already written to out" in err


def test_hidden_and_leftover_temporary_files_are_skipped(service, tmp_path):
    faces, _ = write_faces(tmp_path, n=2)
    (faces / "._face0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (faces / ".face1.k2j4h1.tmp.png").write_bytes((faces / "face1.png").read_bytes()[:40])
    (faces / ".hidden.png").write_bytes(b"junk")
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "out"]) == 0
    assert sorted(p.name for p in Path("out").iterdir()) == [
        "face0_face.png", "face0_mask.png", "face1_face.png", "face1_mask.png"
    ]  # fmt: skip


def test_bad_output_paths_and_devices_fail_before_any_work(service, verifier, tmp_path, capsys, monkeypatch):
    from ipmn_lightning.inference.facade import IPMN

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the networks ran before the arguments were checked")

    for method in ("protect", "recover", "verify"):
        monkeypatch.setattr(IPMN, method, no_work)
    faces, masks = write_faces(tmp_path, n=2)
    Path("a_file").write_text("x")
    assert main(protect_args(service, faces, masks, "a_file")) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(protect_args(service, faces, masks, "a_file/sub")) == 2
    assert "a_file is a file" in capsys.readouterr().err
    Path("a_folder").mkdir()
    assert main(["verify", "--bundle", str(verifier), "--images", str(faces), "--report", "a_folder"]) == 2
    assert "is a folder" in capsys.readouterr().err
    recover = ["recover", "--bundle", str(service), "--masked", str(faces), "--out", "o", "--device"]
    if not torch.cuda.is_available():
        assert main([*recover, "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert main([*recover, "gpu7"]) == 2
    assert "--device" in capsys.readouterr().err
    assert not Path("o").exists()


def test_unwritable_output_folder_fails_before_any_work(service, tmp_path, capsys, monkeypatch):
    """A read-only folder (simulated: the tests may run as root, which ignores permission bits)."""
    import tempfile

    from ipmn_lightning.inference.facade import IPMN

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the networks ran before the output folder was checked")

    faces, _ = write_faces(tmp_path, n=2)
    monkeypatch.setattr(IPMN, "recover", no_work)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "ro"]) == 2
    assert "not writable" in capsys.readouterr().err


def test_verify_report_never_overwrites_inputs_or_the_bundle(verifier, tmp_path, capsys):
    import json

    faces, _ = write_faces(tmp_path, n=2)
    bundle_bytes, face_bytes = verifier.read_bytes(), (faces / "face0.png").read_bytes()
    args = ["verify", "--bundle", str(verifier), "--images", str(faces), "--report"]
    assert main([*args, str(verifier), "--overwrite", "true"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main([*args, str(faces / "face0.png"), "--overwrite", "true"]) == 2
    assert verifier.read_bytes() == bundle_bytes and (faces / "face0.png").read_bytes() == face_bytes
    Path("report.json").write_text("keep me")
    assert main([*args, "report.json"]) == 2
    assert "--overwrite true" in capsys.readouterr().err
    assert Path("report.json").read_text() == "keep me"
    assert main([*args, "report.json", "--overwrite", "true"]) in (0, 1)
    assert json.loads(Path("report.json").read_text())["total"] == 2
