"""The one image reader: a photo stored sideways with an EXIF orientation reads upright through every door.

Training (``load_image``, the folder dataset), the role commands (``read_images``, ``ipmn verify``) and the
``IPMN`` facade must give the same ``(3, S, S)`` tensor for an upright image and its twin stored rotated with
EXIF Orientation 6 (a portrait phone photo). The twins are built from the same pixels: exactly equal for PNG,
within JPEG noise for JPEG (the two are compressed on different block grids).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ipmn_lightning import IPMN
from ipmn_lightning.console.main import main
from ipmn_lightning.core.images import center_square_box, pil_to_tensor
from ipmn_lightning.data.face_images import FaceImagesDataset
from ipmn_lightning.data.folder import list_images
from ipmn_lightning.data.images import IMAGE_EXTENSIONS, fit_image, image_size_of, load_image, read_image
from ipmn_lightning.inference.role_work import read_images

ORIENTATION = 0x0112
WIDTH, HEIGHT = 96, 128  # portrait: the centre square drops 16 rows at the top and the bottom
# Mean per-pixel noise allowed between two JPEG encodings of the same picture on different block grids
# (quality 95, 4:4:4), after the resize: measured ~0.001 (at most 2/255 on a pixel); reading the twin sideways
# differs by ~0.25 (checked below).
JPEG_TOLERANCE = 0.005


def portrait() -> Image.Image:
    """A smooth 96x128 RGB picture, unlike itself when turned by 90 degrees, with bands the centre crop drops."""
    y = torch.linspace(0, 1, HEIGHT).view(HEIGHT, 1).expand(HEIGHT, WIDTH)
    x = torch.linspace(0, 1, WIDTH).view(1, WIDTH).expand(HEIGHT, WIDTH)
    blob = torch.exp(-((x - 0.3) ** 2 + (y - 0.35) ** 2) / 0.02)
    image = torch.stack([x, y, blob]).clone()
    image[:, :16], image[:, -16:] = 1.0, 0.0
    array = image.mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array)


def write_twins(folder: Path, suffix: str) -> tuple[Path, Path]:
    """``upright<suffix>`` and ``rotated<suffix>``: the same pixels, the second stored turned with Orientation 6."""
    folder.mkdir(parents=True, exist_ok=True)
    upright = portrait()
    # Orientation 6: the viewer turns the stored image 90 degrees clockwise, so store it turned anticlockwise.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    assert stored.size == (HEIGHT, WIDTH)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    options = {"quality": 95, "subsampling": 0} if suffix == ".jpg" else {}
    upright.save(folder / f"upright{suffix}", **options)
    stored.save(folder / f"rotated{suffix}", exif=exif.tobytes(), **options)
    with Image.open(folder / f"rotated{suffix}") as check:
        assert check.size == (HEIGHT, WIDTH) and check.getexif().get(ORIENTATION) == 6
    return folder / f"upright{suffix}", folder / f"rotated{suffix}"


def sideways(path: Path, size: int) -> torch.Tensor:
    """What a reader that ignores the EXIF orientation gets: the stored pixels, centre-cropped and resized."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        square = rgb.crop(center_square_box(*rgb.size)).resize((size, size), Image.Resampling.LANCZOS)
    return pil_to_tensor(square)


def assert_same(a: torch.Tensor, b: torch.Tensor, suffix: str) -> None:
    assert a.shape == b.shape
    if suffix == ".png":
        assert torch.equal(a, b)
    else:
        assert (a - b).abs().mean().item() < JPEG_TOLERANCE and (a - b).abs().max().item() <= 4 / 255


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("size", [32, 64])  # 32: the JPEGs are decoded at half scale (draft); 64: in full
def test_the_rotated_twin_reads_upright_in_training_and_in_the_roles(tmp_path, suffix, size):
    upright, rotated = write_twins(tmp_path / "faces", suffix)
    assert image_size_of(rotated) == image_size_of(upright) == (WIDTH, HEIGHT)
    expected = load_image(upright, size)
    # the test tells the two readings apart: the sideways one is far outside the tolerance
    assert (sideways(rotated, size) - expected).abs().mean().item() > 20 * JPEG_TOLERANCE

    assert_same(load_image(rotated, size), expected, suffix)
    # training on a folder of faces: the folder's listing, read by the dataset
    paths = list_images(tmp_path / "faces")
    assert paths == [f"rotated{suffix}", f"upright{suffix}"]
    dataset = FaceImagesDataset(tmp_path / "faces", paths, size)
    assert_same(dataset[0]["protected"], expected, suffix)
    assert torch.equal(dataset[1]["protected"], expected)
    # the role commands (ipmn protect / recover / verify), for each --resize policy that resizes
    for policy, crop in (("crop", "center"), ("resize", "none")):
        reference = load_image(upright, size, crop)
        images = read_images([upright, rotated], size, policy)
        assert torch.equal(pil_to_tensor(images[0]), reference)
        assert_same(pil_to_tensor(images[1]), reference, suffix)
        assert torch.equal(pil_to_tensor(read_image(rotated, size, crop)), load_image(rotated, size, crop))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_the_rotated_twin_reads_upright_through_the_facade(service, tmp_path, suffix):
    upright, rotated = write_twins(tmp_path, suffix)
    model = IPMN.load(service)  # 32 px bundle
    # an image handed over in memory is decoded in full, so compare with a full decode of the file
    expected = load_image(upright, model.image_size, use_draft=False)
    for path in (upright, rotated):
        with Image.open(path) as image:
            # the facade's input path (the networks after it would only blur the comparison)
            batch, kind, _ = model._to_batch(image, "image")
        assert kind == "pil"
        assert_same(batch[0], expected, suffix if path == rotated else ".png")
        with Image.open(path) as image:
            assert torch.equal(pil_to_tensor(fit_image(image, model.image_size)), batch[0])


def test_verify_gives_the_rotated_twin_the_upright_nc(verifier, tmp_path):
    write_twins(tmp_path / "images", ".png")
    code = main(["verify", "--bundle", str(verifier), "--images", str(tmp_path / "images"), "--report", "r.json"])
    assert code in (0, 1)
    ncs = {Path(row["file"]).name: row["nc"] for row in json.loads(Path("r.json").read_text())["images"]}
    assert ncs["rotated.png"] == ncs["upright.png"]


def test_image_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert tuple(IMAGE_EXTENSIONS) == tuple(IMG_EXTENSIONS)
