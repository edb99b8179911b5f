from __future__ import annotations

from pathlib import Path

import pytest

from ipmn_lightning.data.folder import folder_splits, list_images, split_of
from ipmn_lightning.data.images import DatasetLayoutError
from tests.helpers import load_script as _generator


def _touch(root: Path, names: list[str]) -> None:
    # folder_splits only looks at names, so empty files are enough.
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_lists_images_recursively_sorted_posix(tmp_path):
    _touch(tmp_path, ["b/z.PNG", "a.jpg", "b/a/c.jpeg", "notes.txt", ".hidden.png", ".cache/x.png"])
    assert list_images(tmp_path) == ["a.jpg", "b/a/c.jpeg", "b/z.PNG"]


def test_skips_mask_store_folders(tmp_path):
    _touch(tmp_path, ["a.jpg", "store/masks/a.png", "store/pairs.csv"])
    assert list_images(tmp_path) == ["a.jpg"]


def test_splits_cover_every_file_once(tmp_path):
    names = [f"p{i % 7}/{i:04d}.jpg" for i in range(300)]
    _touch(tmp_path, names)
    splits = folder_splits(tmp_path)
    assert list(splits) == ["train", "val", "test"]
    flat = [f for split in splits.values() for f in split]
    assert sorted(flat) == sorted(names)
    assert all(split == sorted(split) for split in splits.values())
    assert 10 <= len(splits["val"]) <= 55 and 10 <= len(splits["test"]) <= 55


def test_split_fractions_roughly_match():
    counts = {"train": 0, "val": 0, "test": 0}
    for i in range(4000):
        counts[split_of(f"img_{i}.png", val_fraction=0.2, test_fraction=0.1)] += 1
    assert abs(counts["val"] / 4000 - 0.2) < 0.03
    assert abs(counts["test"] / 4000 - 0.1) < 0.03


def test_splits_are_deterministic_and_seeded(tmp_path):
    _touch(tmp_path, [f"{i:03d}.png" for i in range(200)])
    assert folder_splits(tmp_path, seed=3) == folder_splits(tmp_path, seed=3)
    assert folder_splits(tmp_path, seed=3) != folder_splits(tmp_path, seed=4)


def test_adding_files_does_not_move_existing_ones(tmp_path):
    _touch(tmp_path, [f"{i:03d}.png" for i in range(100)])
    before = folder_splits(tmp_path)
    _touch(tmp_path, [f"new/{i:03d}.jpg" for i in range(50)] + ["000.jpg"])
    after = folder_splits(tmp_path)
    for split, files in before.items():
        assert set(files) <= set(after[split])


def test_empty_folder_error(tmp_path):
    _touch(tmp_path, ["readme.txt"])
    with pytest.raises(DatasetLayoutError, match=r"No images found under .*recursively"):
        folder_splits(tmp_path)


def test_missing_folder_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        folder_splits(tmp_path / "missing")


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_bad_fractions(tmp_path, val, test):
    _touch(tmp_path, ["a.png"])
    with pytest.raises(ValueError, match="fraction"):
        folder_splits(tmp_path, val_fraction=val, test_fraction=test)


def test_fake_folder(tmp_path):
    root = _generator("make_fake_folder").make_fake_folder(tmp_path / "faces")
    splits = folder_splits(root)
    assert sum(len(v) for v in splits.values()) == 10
    assert len(splits["val"]) >= 2 and len(splits["test"]) >= 2
    assert not any(f.startswith("masks_store/") for v in splits.values() for f in v)
    assert any(f.endswith(".jpg") for v in splits.values() for f in v)
    assert any(f.endswith(".png") for v in splits.values() for f in v)
    assert all("/" in f for v in splits.values() for f in v)
