"""``ipmn masks pairs`` on a user's folder as it is (issue 23, item 3): loops, too few photos, no folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ipmn_lightning.console.main import main
from ipmn_lightning.data.folder import split_of
from tests.fakes.make_fake_folder import fake_folder_names


def _touch(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")  # pairing only looks at names


def _pairs(root: Path) -> int:
    return main(["masks", "pairs", "--root", str(root), "--source", "folder"])


def test_a_symlink_loop_gives_one_row_per_photo(tmp_path, capsys):
    root = tmp_path / "faces"
    names = fake_folder_names(30)  # val and test get 2 or more each
    _touch(root, names)
    os.symlink(".", root / "again")
    assert _pairs(root) == 0
    assert "skipped 1 folder link(s)" in capsys.readouterr().err
    with open(root / "masks_store" / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30 and sorted(r["protected"] for r in rows) == names
    splits: dict[str, set[str]] = {}
    for row in rows:
        splits.setdefault(row["protected"], set()).add(row["split"])
        assert row["protected"] != row["replacement"]
        assert os.path.realpath(root / row["protected"]) != os.path.realpath(root / row["replacement"])
    assert all(len(s) == 1 for s in splits.values())


def test_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "faces").mkdir()
    assert _pairs(tmp_path / "faces") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path / "faces") in err and "at least 2 photos" in err
    assert not (tmp_path / "faces" / "masks_store").exists()


def test_too_few_photos_is_a_clear_error(tmp_path, capsys):
    names: list[str] = []
    index = 0
    while len(names) < 8:  # 7 photos in train and 1 in test: the test photo has no other to swap with
        name = f"photo_{index:03d}.jpg"
        split = split_of(name)
        if (split == "train" and len([n for n in names if split_of(n) == "train"]) < 7) or (
            split == "test" and not any(split_of(n) == "test" for n in names)
        ):
            names.append(name)
        index += 1
    _touch(tmp_path / "faces", names)
    assert _pairs(tmp_path / "faces") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{tmp_path / 'faces'} has 8 photo(s), too few to pair" in err and "split(s) test" in err
    assert "needs at least 2" in err and "about 60 or more" in err
    assert not (tmp_path / "faces" / "masks_store").exists()
