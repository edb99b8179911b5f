"""The rough edges of issue 26 (item 4) in the role commands and the facade: each refused clearly, up front.

A truncated JPEG stops the command before its first output; a ``.gif`` or a broken link is refused by name;
a failed command leaves no output folder; tiny and elongated images are refused, smaller ones upscaled with a
warning; the facade refuses 0-255 float tensors, NaN and empty batches.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ipmn_lightning.console.main import main
from tests.helpers import write_faces
from tests.helpers.roles import protect_args


def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3)).astype("uint8"))


def test_a_truncated_jpeg_stops_protect_before_any_output(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=8)
    buffer = io.BytesIO()
    _photo((256, 256)).save(buffer, format="JPEG")  # large enough for the reduced (draft) decode
    (faces / "face9.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # header intact
    (masks / "face9.png").write_bytes((masks / "face0.png").read_bytes())
    assert main(protect_args(service, faces, masks, "out", "--batch_size", "1")) == 2
    err = capsys.readouterr().err
    assert "face9.jpg" in err and "truncated" in err
    assert not Path("out").exists()  # not 8 outputs, not even an empty folder


def test_a_gif_in_an_input_folder_is_refused_by_name(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=2)
    _photo((32, 32)).save(faces / "face2.gif")
    (masks / "face2.png").write_bytes((masks / "face0.png").read_bytes())
    assert main(protect_args(service, faces, masks, "out")) == 2
    err = capsys.readouterr().err
    assert "face2.gif" in err and "unsupported image format .gif" in err
    assert "without a partner" not in err  # not blamed on its mask
    assert not Path("out").exists()
    assert main(protect_args(service, faces / "face2.gif", masks / "face2.png", "out")) == 2
    assert "unsupported image format .gif" in capsys.readouterr().err


def test_a_broken_link_in_an_input_folder_is_refused_by_name(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=2)
    os.symlink(tmp_path / "gone.png", faces / "face2.png")
    (masks / "face2.png").write_bytes((masks / "face0.png").read_bytes())
    assert main(protect_args(service, faces, masks, "out")) == 2
    err = capsys.readouterr().err
    assert "face2.png" in err and "broken link" in err and "without a partner" not in err
    assert main(["recover", "--bundle", str(service), "--masked", str(faces / "face2.png"), "--out", "o"]) == 2
    assert "broken link" in capsys.readouterr().err
    assert not Path("out").exists() and not Path("o").exists()


def test_non_images_are_skipped_with_a_note_and_links_to_one_file_collapse(service, tmp_path, capsys):
    faces, _ = write_faces(tmp_path, n=2)
    (faces / "notes.txt").write_text("my faces")
    os.symlink(faces / "face0.png", faces / "again.png")
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "out"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 file(s) that are not images: notes.txt" in err
    assert "collapsed 1 link(s)" in err and "again.png (= face0.png)" in err
    assert sorted(p.name for p in Path("out").iterdir()) == [
        "face0_face.png", "face0_mask.png", "face1_face.png", "face1_mask.png"
    ]  # fmt: skip


@pytest.mark.parametrize("command", ["protect", "recover"])
def test_a_failed_command_leaves_no_output_folder(service, tmp_path, capsys, command):
    faces, masks = write_faces(tmp_path, n=2)
    data = (faces / "face1.png").read_bytes()
    (faces / "face1.png").write_bytes(data[: len(data) // 2])  # a readable header: passes a header check
    if command == "protect":
        args = protect_args(service, faces, masks, "new/out")
    else:
        args = ["recover", "--bundle", str(service), "--masked", str(faces), "--out", "new/out"]
    assert main(args) == 2
    assert "face1.png" in capsys.readouterr().err
    assert not Path("new").exists()


def test_a_failure_in_the_first_batch_removes_the_folder_it_created(service, tmp_path, monkeypatch):
    from ipmn_lightning.inference.facade import IPMN
    from ipmn_lightning.inference.guards import RoleError

    def fails(*args: object, **kwargs: object) -> None:
        raise RoleError("the network failed")

    faces, _ = write_faces(tmp_path, n=2)
    monkeypatch.setattr(IPMN, "recover", fails)
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "a/b"]) == 2
    assert not Path("a").exists()


@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (8, 8), (200, 40)])
def test_tiny_and_elongated_images_are_refused(service, tmp_path, capsys, size):
    faces, masks = write_faces(tmp_path, n=2)
    _photo(size).save(faces / "face1.png")
    for resize in ("crop", "resize"):
        assert main(protect_args(service, faces, masks, "out", "--resize", resize)) == 2
        err = capsys.readouterr().err
        assert "face1.png" in err and ("too small" in err or "too elongated" in err), err
    assert not Path("out").exists()


def test_upscaled_images_are_announced(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=2)
    _photo((20, 24)).save(faces / "face1.png")  # above the 16-px minimum of a 32-px bundle, below 32
    assert main(protect_args(service, faces, masks, "out")) == 0
    err = capsys.readouterr().err
    assert "warning: 1 image(s) smaller than the bundle's 32x32 are upscaled" in err and "face1.png (20x24)" in err
    assert main(protect_args(service, faces, masks, "out2", "--resize", "reject")) == 2


def test_the_facade_refuses_0_255_floats_non_finite_values_and_empty_batches(service):
    from ipmn_lightning import IPMN

    model = IPMN.load(service_bundle=service)
    generator = torch.Generator().manual_seed(0)
    faces = torch.rand(2, 3, 32, 32, generator=generator)
    masks = torch.rand(2, 3, 32, 32, generator=generator)
    with pytest.raises(ValueError, match=r"spans 0(\.\d+)? to 2\d\d.*divide by 255"):
        model.protect(faces * 255, masks)
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        model.protect(faces * 2 - 1, masks)
    for bad in (float("nan"), float("inf")):
        broken = faces.clone()
        broken[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            model.protect(broken, masks)
        with pytest.raises(ValueError, match="NaN or infinite"):
            model.recover(broken)
    with pytest.raises(ValueError, match="batch is empty"):
        model.protect(faces[:0], masks[:0])
    with pytest.raises(ValueError, match="batch is empty"):
        model.recover(faces[:0])
    with pytest.raises(ValueError, match="list of images is empty"):
        model.recover([])
    assert model.protect(faces.clamp(0, 1) * 1.005, masks).shape == (2, 3, 32, 32)  # within the tolerance


def test_the_facade_refuses_tiny_images_and_warns_when_upscaling(service):
    from ipmn_lightning import IPMN

    model = IPMN.load(service_bundle=service)
    with pytest.raises(ValueError, match="too small"):
        model.recover(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="too small"):
        model.recover(_photo((1, 1)))
    with pytest.raises(ValueError, match="too elongated"):
        model.recover(torch.rand(1, 3, 20, 200))
    with pytest.warns(UserWarning, match="20x24 image is upscaled"):
        model.recover(_photo((20, 24)))
    with pytest.warns(UserWarning, match="upscaled"):
        model.recover(torch.rand(3, 24, 24))
