"""The ``diffface`` mask generator at tiny widths on random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from ipmn_lightning.diffface.convert import save_diffface
from ipmn_lightning.diffface.facenets import TorchScriptModule
from ipmn_lightning.diffface.generator import DiffFaceMaskGenerator, landmark_face_mask
from ipmn_lightning.faces.generators import generator_class, make_mask_generator, resolve_path
from tests.fakes.faces import FakeAnalyzer, FakeEncoder
from tests.helpers.diffface import FAST, TinyRecogniser, dlib_checkpoint, tiny_net


def test_landmark_mask_is_zero_outside_the_hull():
    lm = FakeAnalyzer().landmarks(np.full((40, 40, 3), 128, np.uint8))
    m = landmark_face_mask(lm, 40, 40)
    assert m.shape == (1, 40, 40) and m.max() > 0.99 and m[0, 0, 0] == 0 and 0 < m.mean() < 0.6


def test_generator_full_resolution_masks_keep_x_p_outside(tmp_path):
    gen = DiffFaceMaskGenerator(str(dlib_checkpoint(tmp_path)), **FAST, background_weight=10.0, device="cpu")
    gen._analyzer, gen._encoder = FakeAnalyzer(), FakeEncoder()
    protected = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    replacement = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    replacement[1] = 0  # no face in x_r
    outcomes = gen.generate(protected, replacement)
    assert outcomes[1].mask is None and outcomes[1].reason == "no face found in the replacement image"
    x_m = outcomes[0].mask
    assert x_m.shape == (3, 40, 40)
    lm = FakeAnalyzer().landmarks((protected[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    outside = (landmark_face_mask(lm, 40, 40) == 0).expand(3, -1, -1)
    assert torch.equal(x_m[outside], protected[0][outside])
    again = gen.generate(protected[:1], replacement[:1])[0].mask
    assert torch.equal(again, x_m)  # seeded per pair


def test_arcface_checkpoint_needs_a_recogniser_and_takes_torchscript(tmp_path):
    ckpt = save_diffface(tmp_path / "arc.safetensors", tiny_net(id_dim=8), identity_encoder="arcface")
    gen = DiffFaceMaskGenerator(str(ckpt), **FAST, device="cpu")
    gen._analyzer = FakeAnalyzer()
    with pytest.raises(ValueError, match=r"--generator\.identity_model"):
        gen.generate(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    script = tmp_path / "arcface.pt2"
    batch = {"x": {0: torch.export.Dim("batch", max=64)}}  # the guidance runs augmented views in one batch
    exported = torch.export.export(TinyRecogniser(), (torch.rand(2, 3, 112, 112),), dynamic_shapes=batch)
    torch.export.save(exported, script)
    gen = DiffFaceMaskGenerator(str(ckpt), identity_model=str(script), **FAST, device="cpu")
    gen._analyzer = FakeAnalyzer()
    out = gen.generate(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))[0]
    assert out.mask is not None and out.mask.shape == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        TorchScriptModule(tmp_path / "missing.pt", 112)


def test_missing_checkpoint_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"--generator\.checkpoint"):
        DiffFaceMaskGenerator(str(tmp_path / "nope.safetensors"))


def test_the_registry_builds_it_and_names_its_lightning_driver(tmp_path):
    """``diffface`` is registered by path; the class, not the console, says it runs through its own driver."""
    assert generator_class("diffface") is DiffFaceMaskGenerator
    gen = make_mask_generator("diffface", checkpoint=str(dlib_checkpoint(tmp_path)), device="cpu")
    assert isinstance(gen, DiffFaceMaskGenerator) and gen.name == "diffface"
    from ipmn_lightning.diffface.commands import diffface_generate

    assert resolve_path(DiffFaceMaskGenerator.driver) is diffface_generate
