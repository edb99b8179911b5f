from __future__ import annotations

from pathlib import Path

import pytest

from ipmn_lightning.data.celeba import read_celeba_identities, read_celeba_splits
from ipmn_lightning.data.images import DatasetLayoutError
from tests.helpers import load_script as _generator


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    return _generator("make_fake_celeba").make_fake_celeba(tmp_path_factory.mktemp("celeba"), with_masks=False)


def _minimal(root: Path, partition: str) -> Path:
    (root / "img_align_celeba").mkdir(parents=True)
    (root / "list_eval_partition.txt").write_text(partition)
    return root


def test_fake_celeba_layout(celeba):
    images = sorted(p.name for p in (celeba / "img_align_celeba").iterdir())
    assert images == [f"{i:06d}.jpg" for i in range(1, 13)]
    assert (celeba / "list_eval_partition.txt").is_file()
    assert (celeba / "identity_CelebA.txt").is_file()
    assert not (celeba / "masks_store").exists()


def test_read_splits(celeba):
    splits = read_celeba_splits(celeba)
    assert list(splits) == ["train", "val", "test"]
    assert splits["train"] == [f"{i:06d}.jpg" for i in range(1, 9)]
    assert splits["val"] == ["000009.jpg", "000010.jpg"]
    assert splits["test"] == ["000011.jpg", "000012.jpg"]


def test_read_splits_keeps_file_order_and_skips_blank_lines(tmp_path):
    root = _minimal(tmp_path, "000003.jpg 0\n\n000001.jpg 2\n000002.jpg 0\n")
    assert read_celeba_splits(root) == {
        "train": ["000003.jpg", "000002.jpg"],
        "val": [],
        "test": ["000001.jpg"],
    }


def test_read_identities(celeba):
    ids = read_celeba_identities(celeba)
    assert ids is not None and len(ids) == 12
    assert all(isinstance(v, int) for v in ids.values())
    assert ids["000001.jpg"] != ids["000002.jpg"]
    assert len(set(ids.values())) == 4


def test_identities_absent_is_none(tmp_path):
    root = _minimal(tmp_path, "000001.jpg 0\n")
    assert read_celeba_identities(root) is None


def test_identities_malformed(tmp_path):
    root = _minimal(tmp_path, "000001.jpg 0\n")
    (root / "identity_CelebA.txt").write_text("000001.jpg 5\n000002.jpg five\n")
    with pytest.raises(DatasetLayoutError, match=r"identity_CelebA.txt line 2.*not an integer"):
        read_celeba_identities(root)


def test_missing_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match="is not a folder"):
        read_celeba_splits(tmp_path / "nope")


def test_missing_image_folder(tmp_path):
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(DatasetLayoutError, match=r"img_align_celeba is missing.*list_eval_partition.txt"):
        read_celeba_splits(tmp_path)


def test_missing_partition_file(tmp_path):
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"list_eval_partition.txt is missing.*Expected the official"):
        read_celeba_splits(tmp_path)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("000001.jpg 0\n000002.jpg\n", r"line 2: expected '<image file> <partition id"),
        ("000001.jpg 0\n000002.jpg 0 extra\n", r"line 2: expected"),
        ("000001.jpg 0\n\n000002.jpg 3\n", r"line 3: unknown partition id '3'"),
        ("000001.jpg 0\n000001.jpg 1\n", r"line 2: 000001.jpg is listed again \(first on line 1\)"),
        ("\n", r"lists no images"),
    ],
)
def test_malformed_partition(tmp_path, text, pattern):
    root = _minimal(tmp_path, text)
    with pytest.raises(DatasetLayoutError, match=pattern) as info:
        read_celeba_splits(root)
    assert "list_eval_partition.txt" in str(info.value)


def test_kaggle_nested_folder_is_explained(tmp_path):
    root = _minimal(tmp_path, "000001.jpg 0\n")
    (root / "img_align_celeba" / "img_align_celeba").mkdir()
    with pytest.raises(DatasetLayoutError, match="nested one level too deep"):
        read_celeba_splits(root)


def test_kaggle_partition_csv(tmp_path):
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "list_eval_partition.csv").write_text("image_id,partition\n000001.jpg,0\n000002.jpg,1\n000003.jpg,2\n")
    assert read_celeba_splits(tmp_path) == {
        "train": ["000001.jpg"],
        "val": ["000002.jpg"],
        "test": ["000003.jpg"],
    }
