"""A user's folder as it is (issue 23, item 3) and the reader's rough edges (issue 26, item 4).

Symlink loops and duplicate links list each real file once, the split follows the real file, make_pairs never
pairs a file with itself; transparent pixels are composited onto white; a float TIFF's real range is reported.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ipmn_lightning.data.folder import folder_splits, list_images, split_of
from ipmn_lightning.data.images import ImageReadError, fit_image, load_image, read_image
from ipmn_lightning.data.mask_store import make_pairs


def _photos(root: Path, n: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = [f"photo_{i:02d}.png" for i in range(n)]
    for name in names:
        (root / name).write_bytes(b"")  # the listing and the split only look at names
    return names


def test_a_symlink_loop_lists_each_photo_once(tmp_path, capsys):
    names = _photos(tmp_path / "faces", 30)
    os.symlink(".", tmp_path / "faces" / "again")
    assert list_images(tmp_path / "faces") == names
    assert "skipped 1 folder link(s)" in capsys.readouterr().err
    splits = folder_splits(tmp_path / "faces")
    assert sorted(f for files in splits.values() for f in files) == names


def test_links_to_one_file_collapse_and_the_split_follows_the_real_file(tmp_path, capsys):
    root = tmp_path / "faces"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.png").write_bytes(b"")
    (root / "real" / "b.png").write_bytes(b"")
    os.symlink("real", root / "alias")  # sorts before real: met first while scanning
    os.symlink("real/a.png", root / "a_link.png")
    listed = list_images(root)
    assert listed == ["real/a.png", "real/b.png"]
    err = capsys.readouterr().err
    assert "collapsed 1 duplicate name(s)" in err and "skipped 1 folder link(s)" in err
    splits = folder_splits(root, val_fraction=0.3, test_fraction=0.3, seed=3)
    assert {f: s for s, files in splits.items() for f in files} == {f: split_of(f, 0.3, 0.3, 3) for f in listed}


def test_a_file_outside_the_root_keeps_its_link_name(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"")
    root = tmp_path / "faces"
    (root / "deep").mkdir(parents=True)
    os.symlink(outside / "x.png", root / "x.png")
    os.symlink(outside / "x.png", root / "deep" / "x.png")
    assert list_images(root) == ["x.png"]


def test_make_pairs_refuses_one_real_file_under_two_names(tmp_path):
    _photos(tmp_path, 3)
    os.symlink("photo_00.png", tmp_path / "link.png")
    with pytest.raises(ValueError, match=r"photo_00\.png.*link\.png.*same file"):
        make_pairs({"train": ["photo_00.png", "photo_01.png", "link.png"]}, root=tmp_path)
    with pytest.raises(ValueError, match="same file"):  # across splits: one photo in train and test
        make_pairs({"train": ["photo_00.png", "photo_01.png"], "test": ["link.png", "photo_02.png"]}, root=tmp_path)
    records = make_pairs({"train": ["photo_00.png", "photo_01.png", "photo_02.png"]}, root=tmp_path)
    assert all(r.protected != r.replacement for r in records)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_become_white(tmp_path, mode):
    # a red square with its left half transparent: the hidden colour there is black (or red, for P)
    pixels = np.zeros((32, 32, 4), dtype=np.uint8)
    pixels[..., 0] = 200
    pixels[:, 16:, 3] = 255
    pixels[:, :16, :3] = 0
    image = Image.fromarray(pixels, "RGBA")
    if mode == "P":
        image = image.convert("RGB").convert("P")
        image.info["transparency"] = image.getpixel((0, 0))  # the black of the left half
    elif mode != "RGBA":
        image = image.convert(mode)
    image.save(tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as stored:
        assert stored.mode == mode and (mode != "P" or "transparency" in stored.info)
    for read in (read_image(tmp_path / "t.png", 32), fit_image(Image.open(tmp_path / "t.png"), 32)):
        left = np.asarray(read)[:, :12]
        assert (left == 255).all(), mode  # our default background: white
        assert not (np.asarray(read)[:, 20:] == 255).all()  # the opaque half keeps its colour
    assert load_image(tmp_path / "t.png", 32)[:, :, :12].min().item() == 1.0


def test_a_float_tiff_out_of_range_reports_its_real_range(tmp_path):
    Image.fromarray(np.full((32, 32), 3.0, dtype=np.float32)).save(tmp_path / "three.tif")
    with pytest.raises(ImageReadError, match=r"spans 3 to 3\).*rescale it to \[0, 1\]"):
        read_image(tmp_path / "three.tif", 32)
    ramp = np.linspace(0.5, 200.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(ramp).save(tmp_path / "ramp.tif")
    with pytest.raises(ImageReadError, match=r"spans 0.5 to 200\); rescale it to \[0, 1\] \(divide by 255"):
        read_image(tmp_path / "ramp.tif", 32)
    with pytest.raises(ValueError, match=r"spans 3 to 3"):
        fit_image(Image.open(tmp_path / "three.tif"), 32)
