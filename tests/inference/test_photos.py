"""Photo mode: protect every face of a whole photo, recover the whole photo, the PNG record, the commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("cv2")

from ipmn_lightning import IPMN
from ipmn_lightning.console.main import main
from ipmn_lightning.core.images import tensor_to_pil
from ipmn_lightning.data.synthetic import render_face, sample_identity, sample_scene
from ipmn_lightning.faces.align import TEMPLATE
from ipmn_lightning.inference.donors import DonorPicker
from ipmn_lightning.inference.photos import (
    PHOTO_RECORD_KEY,
    FaceRegion,
    NoFaceError,
    PhotoRecord,
    PhotoRecordError,
    protect_photo,
    read_photo_record,
    recover_photo,
    save_protected_png,
)
from tests.fakes.faces import FakeEncoder


def synthetic_face(seed: int, size: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return tensor_to_pil(render_face(sample_identity(rng), sample_scene(rng), size))


def make_photo(
    places: list[tuple[int, int, int]], size: tuple[int, int] = (400, 300), smooth: bool = False
) -> Image.Image:
    """A background of pixel noise (``smooth``: a colour gradient, as a photo's is) with a synthetic face of side
    ``s`` at ``(x, y)`` for each ``(x, y, s)``."""
    if smooth:
        ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
        rgb = np.stack([xs * 200 / size[0] + 30, ys * 180 / size[1] + 40, 160 + 0 * xs], axis=-1)
        photo = Image.fromarray(rgb.astype(np.uint8))
    else:
        rng = np.random.default_rng(1)
        photo = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    for index, (x, y, side) in enumerate(places):
        photo.paste(synthetic_face(10 + index, side), (x, y))
    return photo


class BoxAnalyzer:
    """Fake analyser: the template's landmarks in each given square of a photo of ``photo_size``; any other
    image (the donor) has one face in its middle 80%."""

    def __init__(self, places: list[tuple[int, int, int]], photo_size: tuple[int, int]) -> None:
        self.places, self.photo_size = places, photo_size

    def faces(self, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        if (w, h) != self.photo_size:
            return [(TEMPLATE * 0.8 + 0.1) * np.array([w, h])]
        return [TEMPLATE * s + np.array([x, y]) for x, y, s in self.places]

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        found = self.faces(image)
        return found[0] if found else None


def outside(boxes: list[tuple[int, int, int, int]], shape: tuple[int, ...]) -> np.ndarray:
    keep = np.ones(shape[:2], dtype=bool)
    for left, top, right, bottom in boxes:
        keep[top:bottom, left:right] = False
    return keep


TWO = [(40, 60, 120), (240, 120, 100)]


@pytest.fixture(scope="module")
def model(service: Path) -> IPMN:
    return IPMN.load(service_bundle=service)


@pytest.fixture(scope="module")
def two_faces(model: IPMN) -> tuple[Image.Image, Image.Image, PhotoRecord]:
    photo = make_photo(TWO)
    protected, record = protect_photo(photo, model, analyzer=BoxAnalyzer(TWO, photo.size))
    return photo, protected, record


def test_two_faces_change_only_inside_their_boxes(two_faces: tuple[Image.Image, Image.Image, PhotoRecord]) -> None:
    photo, protected, record = two_faces
    assert protected.size == photo.size and protected.mode == "RGB"
    assert len(record.regions) == 2
    before, after = np.asarray(photo), np.asarray(protected)
    keep = outside([r.box for r in record.regions], before.shape)
    assert np.array_equal(before[keep], after[keep])  # bit for bit outside the face boxes
    for region, (x, y, side) in zip(record.regions, TWO):
        left, top, right, bottom = region.box
        assert left <= x + 0.2 * side and right >= x + 0.8 * side and top <= y + 0.2 * side
        assert not np.array_equal(before[top:bottom, left:right], after[top:bottom, left:right])


def test_recovered_photo_equals_the_input_outside_the_boxes(
    model: IPMN, two_faces: tuple[Image.Image, Image.Image, PhotoRecord]
) -> None:
    photo, protected, record = two_faces
    buffer = io.BytesIO()
    save_protected_png(buffer, protected, record)
    recovered = recover_photo(Image.open(io.BytesIO(buffer.getvalue())), model)  # the record from the chunk
    before, after = np.asarray(photo), np.asarray(recovered)
    keep = outside([r.box for r in record.regions], before.shape)
    assert recovered.size == photo.size
    assert np.array_equal(before[keep], after[keep])


def test_the_record_round_trips_through_the_png_chunk(
    tmp_path: Path, two_faces: tuple[Image.Image, Image.Image, PhotoRecord]
) -> None:
    _, protected, record = two_faces
    target = tmp_path / "out" / "p.png"
    target.parent.mkdir()
    save_protected_png(target, protected, record)
    assert [p.name for p in target.parent.iterdir()] == ["p.png"]  # atomic: no temporary file left
    with Image.open(target) as image:
        assert PHOTO_RECORD_KEY in image.text
        assert read_photo_record(image) == record
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(protected))  # lossless
    assert PhotoRecord.from_json(record.to_json()) == record
    assert isinstance(record.regions[0], FaceRegion) and len(record.regions[0].affine) == 2


def test_a_png_without_the_chunk_is_refused_clearly(model: IPMN, tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    make_photo([]).save(plain)
    with Image.open(plain) as image:
        assert read_photo_record(image) is None
        with pytest.raises(PhotoRecordError, match="no photo record"):
            recover_photo(image, model)
    with pytest.raises(PhotoRecordError, match="corrupt"):
        PhotoRecord.from_json('{"version": 1, "regions": [{"box": 3}]}')


def test_a_record_of_another_bundle_is_refused(
    model: IPMN, two_faces: tuple[Image.Image, Image.Image, PhotoRecord]
) -> None:
    _, protected, record = two_faces
    other = PhotoRecord(record.regions, "0000000000000000")
    with pytest.raises(PhotoRecordError, match="another service bundle"):
        recover_photo(protected, model, other)


def test_no_face_raises_a_clear_error(model: IPMN) -> None:
    photo = make_photo([])
    with pytest.raises(NoFaceError, match="no face found"):
        protect_photo(photo, model, analyzer=BoxAnalyzer([], photo.size))


def test_a_larger_crop_size_runs_the_fully_convolutional_bundle(model: IPMN) -> None:
    photo = make_photo(TWO[:1])
    protected, record = protect_photo(photo, model, analyzer=BoxAnalyzer(TWO[:1], photo.size), size=64)
    assert record.regions[0].size == 64 and model.image_size != 64
    recovered = recover_photo(protected, model, record)
    keep = outside([record.regions[0].box], np.asarray(photo).shape)
    assert np.array_equal(np.asarray(recovered)[keep], np.asarray(photo)[keep])


def test_the_donor_picker_chooses_the_farthest_donor() -> None:
    donors = [Image.new("RGB", (64, 64), (200, 40, 40)), Image.new("RGB", (64, 64), (40, 40, 200))]
    picker = DonorPicker(donors, encoder=FakeEncoder())
    reddish = np.full((64, 64, 3), (190, 50, 50), dtype=np.uint8)
    assert picker(reddish) is donors[1]


# ---------------------------------------------------------------- real dlib
dlib_only = pytest.mark.skipif(
    __import__("importlib").util.find_spec("dlib") is None, reason="needs the faces extra (dlib)"
)


@dlib_only
def test_dlib_finds_the_synthetic_face_and_an_exif_6_jpeg_gives_the_same_face(model: IPMN, tmp_path: Path) -> None:
    photo = make_photo([(120, 40, 220)], size=(480, 320))
    upright, rotated = tmp_path / "upright.jpg", tmp_path / "rotated.jpg"
    photo.save(upright, quality=98, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° counter-clockwise: a viewer turns it clockwise
    photo.transpose(Image.Transpose.ROTATE_90).save(rotated, quality=98, subsampling=0, exif=exif)
    from ipmn_lightning.faces.analysis import DlibFaceAnalyzer
    from ipmn_lightning.inference.photos import read_photo

    analyzer = DlibFaceAnalyzer()
    first, record_a = protect_photo(read_photo(upright), model, analyzer=analyzer)
    with Image.open(rotated) as raw:  # the PIL image as opened: protect_photo applies the EXIF orientation
        second, record_b = protect_photo(raw, model, analyzer=analyzer)
    assert second.size == photo.size == first.size
    assert len(record_a.regions) == len(record_b.regions) == 1
    box_a, box_b = np.array(record_a.regions[0].box), np.array(record_b.regions[0].box)
    assert np.abs(box_a - box_b).max() <= 3
    left, top, right, bottom = box_a
    assert left <= 120 + 60 and right >= 120 + 160  # the face is where it was pasted
    a = np.asarray(first, dtype=np.float64)[top:bottom, left:right]
    b = np.asarray(second, dtype=np.float64)[top:bottom, left:right]
    assert np.abs(a - b).mean() < 3.0  # the same protected face, up to the two JPEG encodings


@dlib_only
def test_the_commands_in_photo_mode(service: Path, verifier: Path, tmp_path: Path) -> None:
    photo = make_photo([(120, 40, 220)], size=(480, 320))
    photo.save(tmp_path / "holiday.jpg", quality=95)
    Image.new("RGB", (300, 200), (90, 120, 60)).save(tmp_path / "wall.jpg")
    bundle = str(service)
    # no face: a clear message, exit 2, nothing written
    assert main(["protect", "--protected", str(tmp_path / "wall.jpg"), "--bundle", bundle, "--out", "none"]) == 2
    assert not Path("none").exists() or not any(Path("none").iterdir())
    assert main(["protect", "--protected", str(tmp_path / "holiday.jpg"), "--bundle", bundle, "--out", "shared"]) == 0
    shared = Path("shared/holiday.png")
    with Image.open(shared) as image:
        record = read_photo_record(image)
        assert image.size == photo.size and record is not None and len(record.regions) == 1
    assert main(["recover", "--masked", str(shared), "--bundle", bundle, "--out", "received"]) == 0
    with Image.open("received/holiday.png") as image:
        assert image.size == photo.size
    # a PNG without the chunk, asked for in photo mode: a clear error
    photo.save(tmp_path / "plain.png")
    code = main(["recover", "--masked", str(tmp_path / "plain.png"), "--photo", "true", "--bundle", bundle,
                 "--out", "nothing"])  # fmt: skip
    assert code == 2 and not Path("nothing/plain.png").exists()
    code = main(["verify", "--images", str(shared), "--bundle", str(verifier), "--report", "report.json"])
    assert code in (0, 1)
    rows = json.loads(Path("report.json").read_text())["images"]
    assert [Path(r["file"]).name for r in rows] == ["holiday.png#0"]


class _OracleInn(torch.nn.Module):
    """An INN that recovers perfectly: put-on shares x_m and remembers x_p; put-off gives x_p back plus what the
    photo's round trip (paste, 8 bits, re-crop) changed in x_m, last region first as ``recover_photo`` asks."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[torch.Tensor, torch.Tensor]] = []

    def put_on(self, protected: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.stack.append((protected.clone(), mask.clone()))
        return mask, mask

    def put_off(self, masked: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        protected, mask = self.stack.pop()
        return protected + (masked - mask), masked


def test_with_a_perfect_inn_the_recovered_faces_reach_30_db_inside_their_boxes(service: Path) -> None:
    """What photo mode's own geometry (align, paste, 8 bits, re-crop, paste back) leaves of a perfect recovery."""
    model = IPMN.load(service_bundle=service)
    model.inn = _OracleInn()
    photo = make_photo(TWO, smooth=True)  # pixel noise has no detail a 2x resampling keeps
    protected, record = protect_photo(photo, model, analyzer=BoxAnalyzer(TWO, photo.size))
    buffer = io.BytesIO()
    save_protected_png(buffer, protected, record)
    recovered = recover_photo(Image.open(io.BytesIO(buffer.getvalue())), model)
    before, after = np.asarray(photo, dtype=np.float64), np.asarray(recovered, dtype=np.float64)
    for region in record.regions:
        left, top, right, bottom = region.box
        error = np.mean((before[top:bottom, left:right] - after[top:bottom, left:right]) ** 2)
        assert 10 * np.log10(255**2 / error) >= 30.0, region.box
