from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from ipmn_lightning.core.files import atomic_path, atomic_save_image, atomic_write_bytes, atomic_write_text
from ipmn_lightning.core.images import pil_to_tensor, tensor_to_pil
from ipmn_lightning.data.celeba import read_celeba_identities, read_celeba_splits
from ipmn_lightning.data.images import ImageReadError, load_image
from ipmn_lightning.data.mask_store import (
    FaceSwapPairsDataset,
    MaskStoreError,
    PairRecord,
    check_store,
    make_pairs,
    read_pairs,
    save_mask,
    validate_store,
    write_pairs,
)
from tests.helpers import load_script as _generator


@pytest.fixture(scope="module")
def fake_celeba(tmp_path_factory) -> Path:
    return _generator("make_fake_celeba").make_fake_celeba(tmp_path_factory.mktemp("fake") / "celeba")


@pytest.fixture
def broken(fake_celeba, tmp_path) -> Path:
    """A private copy of the fake CelebA, to break."""
    return Path(shutil.copytree(fake_celeba, tmp_path / "celeba"))


def _images(root: Path) -> Path:
    return root / "img_align_celeba"


def _store(root: Path) -> Path:
    return root / "masks_store"


def _rows(store: Path) -> list[list[str]]:
    with open(store / "pairs.csv", newline="") as f:
        return list(csv.reader(f))


def _write_rows(store: Path, rows: list[list[str]]) -> None:
    with open(store / "pairs.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".tmp" in p.name]


# ------------------------------------------------------------------------------------------ pairing


def test_make_pairs_every_image_once_same_split_never_itself():
    splits = {"train": [f"t{i}.jpg" for i in range(30)], "val": ["v0.jpg", "v1.jpg"], "test": []}
    records = make_pairs(splits)
    assert [r.protected for r in records] == splits["train"] + splits["val"]
    for r in records:
        assert r.replacement != r.protected
        assert r.replacement in splits[r.split]
        assert r.mask == f"masks/{Path(r.protected).stem}.png"


def test_make_pairs_is_deterministic_and_seeded():
    splits = {"train": [f"{i:03d}.jpg" for i in range(50)]}
    assert make_pairs(splits, seed=1) == make_pairs(splits, seed=1)
    assert make_pairs(splits, seed=1) != make_pairs(splits, seed=2)


def test_make_pairs_different_identity():
    files = [f"{i:03d}.jpg" for i in range(60)]
    ids = {f: i % 3 for i, f in enumerate(files)}  # clustered identities: many same-id neighbours
    for seed in range(5):
        for r in make_pairs({"train": files}, ids, seed=seed):
            assert ids[r.replacement] != ids[r.protected]


def test_make_pairs_unknown_identity_pairs_with_anyone():
    records = make_pairs({"train": ["a.jpg", "b.jpg"]}, {"a.jpg": 1})
    assert {(r.protected, r.replacement) for r in records} == {("a.jpg", "b.jpg"), ("b.jpg", "a.jpg")}


def test_make_pairs_keeps_subfolders_in_mask_path():
    records = make_pairs({"train": ["p1/x.jpg", "p2/x.jpg"]}, mask_dir="swaps/")
    assert [r.mask for r in records] == ["swaps/p1/x.png", "swaps/p2/x.png"]


@pytest.mark.parametrize(
    ("splits", "ids", "pattern"),
    [
        ({"train": ["a.jpg"]}, None, "single image"),
        ({"train": ["a.jpg", "b.jpg"]}, {"a.jpg": 1, "b.jpg": 1}, "no replacement face of another identity"),
        ({"training": ["a.jpg", "b.jpg"]}, None, "unknown split"),
        ({"train": ["a.jpg", "a.png"]}, None, "share the mask file masks/a.png"),
        ({"train": ["a.jpg", "b.jpg"], "val": ["a.jpg", "c.jpg"]}, None, "listed twice"),
    ],
)
def test_make_pairs_errors(splits, ids, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_pairs(splits, ids)


def test_fake_celeba_pairs_are_cross_identity(fake_celeba):
    ids = read_celeba_identities(fake_celeba)
    records = read_pairs(_store(fake_celeba))
    assert len(records) == 12
    assert {r.split for r in records} == {"train", "val", "test"}
    assert all(ids[r.protected] != ids[r.replacement] for r in records)
    splits = read_celeba_splits(fake_celeba)
    assert records == make_pairs(splits, ids, seed=0)


# ----------------------------------------------------------------------------------------- pairs.csv


def test_write_read_round_trip(tmp_path):
    records = [
        PairRecord("train", "a,b.jpg", "dir/c d.jpg", "masks/a,b.png"),
        PairRecord("train", "dir/c d.jpg", "a,b.jpg", "masks/dir/c d.png"),
        PairRecord("test", "e.png", "f.png", "masks/e.png"),
    ]
    path = write_pairs(tmp_path / "store", records)
    assert path == tmp_path / "store" / "pairs.csv"
    assert path.read_text().splitlines()[0] == "split,protected,replacement,mask"
    assert read_pairs(tmp_path / "store") == records
    assert _no_temp_files(tmp_path)


def test_write_pairs_rejects_inconsistent_records(tmp_path):
    records = [
        PairRecord("train", "a.jpg", "b.jpg", "m/a.png"),
        PairRecord("train", "a.jpg", "c.jpg", "m/x.png"),
    ]
    with pytest.raises(MaskStoreError, match="appears again"):
        write_pairs(tmp_path, records)
    assert not (tmp_path / "pairs.csv").exists()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("split,protected,mask\n", r"line 1: header"),
        ("split,protected,replacement,mask\ntrain,a.jpg,b.jpg\n", r"line 2: expected 4 fields"),
        (
            "split,protected,replacement,mask\ntrain,a.jpg,b.jpg,m/a.png\nvalid,b.jpg,a.jpg,m/b.png\n",
            r"line 3: unknown split 'valid'",
        ),
        (
            "split,protected,replacement,mask\ntrain,a.jpg,b.jpg,m/a.png\ntrain,b.jpg,a.jpg,m/b.png\n"
            "train,a.jpg,c.jpg,m/c.png\n",
            r"line 4: protected image a.jpg appears again in split 'train' \(first on line 2\)",
        ),
        (
            "split,protected,replacement,mask\ntrain,/abs/a.jpg,b.jpg,m/a.png\n",
            r"line 2: protected '/abs/a.jpg'",
        ),
        (
            "split,protected,replacement,mask\ntrain,a.jpg,b.jpg,../a.png\n",
            r"line 2: mask '../a.png' must stay inside",
        ),
    ],
)
def test_read_pairs_errors_name_file_and_line(tmp_path, text, pattern):
    (tmp_path / "pairs.csv").write_text(text)
    with pytest.raises(MaskStoreError, match=pattern) as info:
        read_pairs(tmp_path)
    assert str(tmp_path / "pairs.csv") in str(info.value)


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(MaskStoreError, match=r"pairs.csv is missing"):
        read_pairs(tmp_path)


# ------------------------------------------------------------------------------------------- dataset


def test_dataset_items(fake_celeba):
    records = [r for r in read_pairs(_store(fake_celeba)) if r.split == "train"]
    ds = FaceSwapPairsDataset(_images(fake_celeba), _store(fake_celeba), records, image_size=32)
    assert len(ds) == 8
    item = ds[3]
    assert set(item) == {"protected", "replacement", "mask", "index"}
    assert item["index"] == 3 and isinstance(item["index"], int)
    for key in ("protected", "replacement", "mask"):
        x = item[key]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
    # The mask keeps x_p's background (corners) and takes x_r's centre.
    corner = (slice(None), slice(0, 3), slice(0, 3))
    centre = (slice(None), slice(14, 18), slice(14, 18))
    assert (item["mask"][corner] - item["protected"][corner]).abs().mean() < 0.03
    assert (item["mask"][centre] - item["replacement"][centre]).abs().mean() < 0.06
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["protected"].shape == (2, 3, 32, 32) and batch["index"].tolist() == [0, 1]


def test_dataset_reads_whole_store_when_records_is_none(fake_celeba):
    ds = FaceSwapPairsDataset(_images(fake_celeba), _store(fake_celeba), None, image_size=16)
    assert len(ds) == 12


def _banded(path: Path) -> None:
    """40 wide, 60 tall: red top 10 rows, green middle 40 rows, blue bottom 10 rows."""
    arr = np.zeros((60, 40, 3), dtype=np.uint8)
    arr[:10, :, 0] = 255
    arr[10:50, :, 1] = 255
    arr[50:, :, 2] = 255
    Image.fromarray(arr).save(path)


def test_center_crop_content(tmp_path):
    _banded(tmp_path / "p.png")
    x = load_image(tmp_path / "p.png", 20)
    assert x.shape == (3, 20, 20)
    assert torch.allclose(x, torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 20, 20), atol=1e-6)
    squashed = load_image(tmp_path / "p.png", 20, crop="none")
    assert squashed[0, 0].mean() > 0.9 and squashed[2, -1].mean() > 0.9


def test_dataset_centre_crops_all_three(tmp_path):
    for name in ("p.png", "r.png"):
        _banded(tmp_path / name)
    _banded(tmp_path / "m.png")
    ds = FaceSwapPairsDataset(tmp_path, tmp_path, [PairRecord("train", "p.png", "r.png", "m.png")], 16)
    for key in ("protected", "replacement", "mask"):
        assert ds[0][key][1].min() > 0.99 and ds[0][key][[0, 2]].max() < 0.01


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20, 0] = 255  # left half red
    arr[:, 20:, 2] = 255  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: left half becomes the top
    Image.fromarray(arr).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    x = load_image(tmp_path / "rot.jpg", 20, crop="none")
    assert x[0, :8].mean() > 0.8 and x[2, -8:].mean() > 0.8


def test_dataset_raises_image_read_error_naming_the_file(broken):
    (_store(broken) / "masks" / "000002.png").unlink()
    ds = FaceSwapPairsDataset(_images(broken), _store(broken), None, image_size=16)
    with pytest.raises(ImageReadError, match=r"000002.png does not exist"):
        ds[1]


# ------------------------------------------------------------------------------------------ images


def test_corrupt_jpeg_error_names_file(tmp_path):
    bad = tmp_path / "face.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ImageReadError, match=r"Cannot read image .*face.jpg.*re-download or regenerate") as info:
        load_image(bad, 32)
    assert isinstance(info.value, ValueError)


def test_truncated_jpeg_error(fake_celeba, tmp_path):
    data = (_images(fake_celeba) / "000001.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        load_image(tmp_path / "cut.jpg", 32)


def test_missing_image_error(tmp_path):
    with pytest.raises(ImageReadError, match=r"missing.png does not exist"):
        load_image(tmp_path / "missing.png", 32)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_image_size(tmp_path, size):
    with pytest.raises(ValueError, match="image_size"):
        load_image(tmp_path / "x.png", size)


def _smooth_jpeg(path: Path, width: int = 400, height: int = 500) -> None:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = np.stack(
        [
            0.5 + 0.4 * np.sin(xx / 23.0),
            0.5 + 0.4 * np.cos(yy / 31.0),
            0.5 + 0.4 * np.sin((xx + yy) / 41.0),
        ],
        axis=-1,
    )
    Image.fromarray((arr * 255).round().astype(np.uint8)).save(path, quality=92)


def test_jpeg_draft_matches_full_decode(tmp_path, monkeypatch):
    _smooth_jpeg(tmp_path / "big.jpg")
    scales = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        scales.append(result)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    drafted = load_image(tmp_path / "big.jpg", 64)
    assert scales and scales[0] is not None and scales[0][1][2] == 400 / 4  # decoded at 1/4 scale
    full = load_image(tmp_path / "big.jpg", 64, use_draft=False)
    assert len(scales) == 1  # use_draft=False never drafts
    diff = (drafted - full).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.1


def test_jpeg_draft_keeps_the_centre_crop(tmp_path):
    # A wide image: the crop must be the same region in the drafted and the full decode.
    arr = np.zeros((256, 768, 3), dtype=np.uint8)
    arr[:, 256:512] = (40, 200, 90)
    Image.fromarray(arr).save(tmp_path / "wide.jpg", quality=95)
    drafted = load_image(tmp_path / "wide.jpg", 32)
    full = load_image(tmp_path / "wide.jpg", 32, use_draft=False)
    assert (drafted - full).abs().max() < 0.1
    assert torch.allclose(drafted.mean((1, 2)), torch.tensor([40, 200, 90]) / 255.0, atol=0.03)


# ------------------------------------------------------------------------------------- check_store


def test_check_good_store(fake_celeba):
    assert check_store(_store(fake_celeba), _images(fake_celeba)) == []
    assert check_store(_store(fake_celeba), _images(fake_celeba), image_size=32) == []
    assert validate_store(_store(fake_celeba), _images(fake_celeba)) == read_pairs(_store(fake_celeba))


def test_check_good_folder_store(tmp_path):
    root = _generator("make_fake_folder").make_fake_folder(tmp_path / "faces")
    assert check_store(root / "masks_store", root, image_size=32) == []


def _drop_pairs(root):
    (_store(root) / "pairs.csv").unlink()


def _drop_protected(root):
    (_images(root) / "000003.jpg").unlink()


def _replacement_missing(root):
    rows = _rows(_store(root))
    rows[2][2] = "nobody.jpg"
    _write_rows(_store(root), rows)


def _drop_mask(root):
    (_store(root) / "masks" / "000004.png").unlink()


def _corrupt_protected(root):
    path = _images(root) / "000005.jpg"
    path.write_bytes(path.read_bytes()[:300])


def _corrupt_mask(root):
    path = _store(root) / "masks" / "000006.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flips a byte inside the image data: the chunk CRC no longer matches
    path.write_bytes(bytes(data))


def _not_an_image(root):
    (_store(root) / "masks" / "000007.png").write_text("hello")


def _resize_mask(size):
    def fn(root):
        path = _store(root) / "masks" / "000008.png"
        with Image.open(path) as img:
            img.resize(size).save(path)

    return fn


def _duplicate_row(root):
    rows = _rows(_store(root))
    _write_rows(_store(root), [*rows, rows[1]])


def _empty_split(root):
    rows = _rows(_store(root))
    _write_rows(_store(root), [r for r in rows if r[0] != "test"])


def _bad_header(root):
    rows = _rows(_store(root))
    rows[0] = ["split", "protected", "swap", "mask"]
    _write_rows(_store(root), rows)


def _unknown_split(root):
    rows = _rows(_store(root))
    rows[5][0] = "holdout"
    _write_rows(_store(root), rows)


def _missing_store(root):
    shutil.rmtree(_store(root))


@pytest.mark.parametrize(
    ("breaker", "image_size", "pattern"),
    [
        (_missing_store, None, r"mask store folder .* does not exist"),
        (_drop_pairs, None, r"pairs.csv is missing"),
        (_drop_protected, None, r"protected image .*000003.jpg is missing"),
        (_replacement_missing, None, r"line 3: replacement image .*nobody.jpg is missing"),
        (_drop_mask, None, r"mask .*000004.png is missing"),
        (_corrupt_protected, None, r"image .*000005.jpg is unreadable"),
        (_corrupt_mask, None, r"mask .*000006.png is unreadable"),
        (_not_an_image, None, r"mask .*000007.png is unreadable"),
        (_resize_mask((40, 40)), None, r"000008.png is 40x40 but its protected image 000008.jpg is 48x58"),
        (_resize_mask((30, 50)), 16, r"000008.png is 30x50: neither square nor the size"),
        (_resize_mask((20, 20)), 32, r"000008.png is 20x20, smaller than image_size 32"),
        (None, 64, r"is 48x58, smaller than image_size 64"),
        (_duplicate_row, None, r"line 14: duplicate row \(same as line 2\)"),
        (_empty_split, None, r"split 'test' has no rows"),
        (_bad_header, None, r"line 1: header"),
        (_unknown_split, None, r"line 6: unknown split 'holdout'"),
    ],
)
def test_check_store_reports_each_problem(broken, breaker, image_size, pattern):
    if breaker is not None:
        breaker(broken)
    problems = check_store(_store(broken), _images(broken), image_size=image_size)
    assert problems, "expected a problem"
    assert any(re.search(pattern, p) for p in problems), problems


def test_check_store_reports_every_problem_at_once(broken):
    for breaker in (_drop_protected, _drop_mask, _corrupt_protected, _corrupt_mask, _resize_mask((40, 40))):
        breaker(broken)
    problems = check_store(_store(broken), _images(broken))
    text = "\n".join(problems)
    for name in ("000003.jpg", "000004.png", "000005.jpg", "000006.png", "000008.png"):
        assert name in text
    # A missing file used by several rows (as protected and as replacement) is reported once.
    assert sum("000003.jpg is missing" in p for p in problems) == 1
    with pytest.raises(MaskStoreError) as info:
        validate_store(_store(broken), _images(broken), root=broken)
    assert info.value.problems == problems
    assert f"ipmn masks check --root {broken} --store {_store(broken)}" in str(info.value)


def test_mask_store_error_lists_first_20_and_the_count():
    err = MaskStoreError([f"problem {i}" for i in range(25)], store="S", root="R")
    text = str(err)
    assert "has 25 problems" in text and "problem 19" in text and "problem 20" not in text
    assert "... and 5 more" in text
    assert "`ipmn masks check --root R --store S`" in text
    assert isinstance(err, ValueError) and len(err.problems) == 25
    hinted = MaskStoreError(["x"], hint="run the generator")
    assert "Fix: run the generator." in str(hinted) and "has 1 problem:" in str(hinted)


# ------------------------------------------------------------------------------------ atomic writes


def test_atomic_writes(tmp_path):
    atomic_write_text(tmp_path / "a" / "b.txt", "héllo\n")
    assert (tmp_path / "a" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    with atomic_path(tmp_path / "d.pt") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".pt"
        torch.save({"x": torch.ones(2)}, tmp)
    assert torch.load(tmp_path / "d.pt", weights_only=True)["x"].sum() == 2
    assert _no_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.bin", "d.pt"]


def test_failing_writer_leaves_old_target_and_no_temp(tmp_path):
    target = tmp_path / "pairs.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert _no_temp_files(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["pairs.csv"]


def test_failing_image_save_leaves_no_target(tmp_path, monkeypatch):
    def failing_save(self, fp, format=None, **kwargs):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_image(tmp_path / "m.png", torch.rand(3, 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_save_mask_and_image_round_trip(tmp_path):
    x = torch.rand(3, 12, 10)
    record = PairRecord("train", "a/b.jpg", "c.jpg", "masks/a/b.png")
    path = save_mask(tmp_path, record, x)
    assert path == tmp_path / "masks" / "a" / "b.png"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (10, 12)
        y = pil_to_tensor(img)
    assert (y - x).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(pil_to_tensor(tensor_to_pil(y)), y)
    with pytest.raises(ValueError, match="cannot tell the image format"):
        atomic_save_image(tmp_path / "x.unknown", x)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        tensor_to_pil(torch.rand(2, 3, 4, 4))
