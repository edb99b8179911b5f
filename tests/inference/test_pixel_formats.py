"""Pixel formats: 16-bit and float images, uint8 tensors in the facade, huge images refused or read reduced."""

from __future__ import annotations

import pytest
import torch

from ipmn_lightning.console.main import main
from tests.helpers import write_faces
from tests.helpers.roles import protect_args


def test_16_bit_and_float_images_keep_their_grey_level(tmp_path):
    import numpy as np
    from PIL import Image

    from ipmn_lightning.data.images import ImageReadError, load_image
    from ipmn_lightning.inference.role_work import read_images

    Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    Image.fromarray(np.full((32, 32), 200.0, dtype=np.float32)).save(tmp_path / "f255.tif")
    for name in ("g16.png", "f.tif"):
        with Image.open(tmp_path / name) as raw:
            assert raw.mode in ("I;16", "I", "F")
        image = read_images([tmp_path / name], 32, "reject")[0]
        assert image.mode == "RGB" and np.unique(np.asarray(image)).tolist() == [128], name
        assert load_image(tmp_path / name, 32).mean().item() == pytest.approx(128 / 255)
    with pytest.raises(ImageReadError, match="must hold values in \\[0, 1\\]"):
        read_images([tmp_path / "f255.tif"], 32, "reject")


def test_facade_scales_uint8_tensors_and_refuses_other_integers(service):
    from ipmn_lightning import IPMN

    model = IPMN.load(service_bundle=service)
    generator = torch.Generator().manual_seed(0)
    faces = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator)
    masks = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator)
    out = model.protect(faces, masks)
    assert out.dtype == torch.float32
    assert torch.equal(out, model.protect(faces.float() / 255, masks.float() / 255))
    with pytest.raises(TypeError, match="uint8"):
        model.protect(faces.int(), masks.int())


def test_huge_images_are_refused_clearly_and_read_reduced(service, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from ipmn_lightning.inference.role_work import read_images

    faces, masks = write_faces(tmp_path, n=1)
    big = Image.new("RGB", (512, 384), (200, 100, 50))
    big.save(tmp_path / "big.jpg", quality=95)
    images = read_images([tmp_path / "big.jpg"], 32, "resize")
    assert images[0].size == (32, 32)  # reduced while read, not held at full resolution until the batch
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # so a 32x32 image counts as a decompression bomb
    assert main(protect_args(service, faces, masks, "out")) == 2
    err = capsys.readouterr().err
    assert "too large to read safely" in err and "Traceback" not in err
