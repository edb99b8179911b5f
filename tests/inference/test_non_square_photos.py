"""Photos that are not square: the roles and the facade keep a face's proportions (centre crop, then resize)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ipmn_lightning import IPMN
from ipmn_lightning.console.main import main
from ipmn_lightning.core.images import pil_to_tensor, tensor_to_pil
from ipmn_lightning.inference.bundle import export_service_bundle


@pytest.fixture(scope="module")
def service(checkpoints, tmp_path_factory):
    return export_service_bundle(checkpoints["phase2"], tmp_path_factory.mktemp("service") / "service.safetensors")


def portrait(seed: int) -> torch.Tensor:
    """(3, 48, 32): a 32x32 picture with distinct 8-row bands above and below it."""
    image = torch.rand(3, 48, 32, generator=torch.Generator().manual_seed(seed))
    image[:, :8], image[:, -8:] = 0.0, 1.0
    return image.mul(255).round().div(255)


def read(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return pil_to_tensor(image)


def test_protect_crops_a_portrait_photo_to_its_centre_square(service, tmp_path):
    face, mask = portrait(0), portrait(1)
    for name, image in (("face", face), ("mask", mask)):
        (tmp_path / name).mkdir()
        tensor_to_pil(image).save(tmp_path / name / "p.png")
    model = IPMN.load(service)  # 32 px bundle
    centre = model.protect(face[:, 8:40], mask[:, 8:40])
    assert torch.equal(model.protect(face, mask), centre)  # the facade crops like training does
    args = [
        "protect",
        "--bundle",
        str(service),
        "--protected",
        str(tmp_path / "face"),
        "--mask",
        str(tmp_path / "mask"),
    ]
    assert main([*args, "--out", str(tmp_path / "crop")]) == 0  # crop is the default
    assert torch.equal(read(tmp_path / "crop" / "p.png"), centre)
    assert main([*args, "--out", str(tmp_path / "squash"), "--resize", "resize"]) == 0
    squashed = read(tmp_path / "squash" / "p.png")
    assert squashed.shape == (3, 32, 32) and not torch.equal(squashed, centre)
