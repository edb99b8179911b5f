"""The DiffFace guided sampler at tiny widths on random weights."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from ipmn_lightning.diffface.sampler import DiffFaceSampler
from ipmn_lightning.diffface.unet import GaussianDiffusion, space_timesteps
from tests.diffface.tiny import FAST, TinyParser, TinyRecogniser, tiny_batch, tiny_net


def test_space_timesteps_matches_guided_diffusion_spacing():
    steps = space_timesteps(1000, 100)
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 999 and steps[1] == 10
    d = GaussianDiffusion.linear(1000, 100)
    full = GaussianDiffusion.linear(1000)
    # the respaced cumulative products are the original ones at the kept steps
    torch.testing.assert_close(d.alphas_cumprod, full.alphas_cumprod[steps])


@pytest.mark.parametrize("guided", [False, True])
def test_shapes_range_and_exact_outside_face(guided):
    protected, mask, identity = tiny_batch()
    kwargs = dict(FAST, background_weight=50.0 if guided else 0.0)
    if guided:
        kwargs.update(identity_model=TinyRecogniser(), face_parser=TinyParser(), augmentations=2)
    sampler = DiffFaceSampler(tiny_net(), **kwargs)
    assert sampler.guided is guided
    out = sampler.sample(protected, mask, identity, replacement=torch.rand(2, 3, 24, 24))
    assert out.shape == protected.shape and out.min() >= 0 and out.max() <= 1
    outside = (mask == 0).expand_as(protected)
    assert torch.equal(out[outside], protected[outside])  # bit for bit
    assert not torch.allclose(out[~outside], protected[~outside])  # the face did change


def test_deterministic_under_a_seed():
    protected, mask, identity = tiny_batch()
    sampler = DiffFaceSampler(tiny_net(), **FAST, background_weight=50.0)
    a = sampler.sample(protected, mask, identity, generator=torch.Generator().manual_seed(7))
    b = sampler.sample(protected, mask, identity, generator=torch.Generator().manual_seed(7))
    c = sampler.sample(protected, mask, identity, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_guidance_changes_the_sample_and_conditioning_alone_works():
    protected, mask, identity = tiny_batch()
    net = tiny_net()
    plain = DiffFaceSampler(net, **FAST, background_weight=0.0)
    guided = DiffFaceSampler(net, **FAST, background_weight=0.0, identity_model=TinyRecogniser(), augmentations=2)
    r = torch.rand(2, 3, 16, 16)
    a = plain.sample(protected, mask, identity, r, torch.Generator().manual_seed(1))
    b = guided.sample(protected, mask, identity, r, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    # a NaN identity (no face) samples unconditionally instead of failing
    c = plain.sample(protected, mask, torch.full_like(identity, float("nan")), None, torch.Generator().manual_seed(1))
    assert torch.isfinite(c).all()
<<<<<<< HEAD


def test_landmark_mask_is_zero_outside_the_hull():
    lm = FakeAnalyzer().landmarks(np.full((40, 40, 3), 128, np.uint8))
    m = landmark_face_mask(lm, 40, 40)
    assert m.shape == (1, 40, 40) and m.max() > 0.99 and m[0, 0, 0] == 0 and 0 < m.mean() < 0.6


def _dlib_checkpoint(tmp_path: Path) -> Path:
    # FakeEncoder embeddings are 3-d mean colours; the network is tagged as dlib-conditioned like DiffFaceModule's
    return save_diffface(tmp_path / "tiny.safetensors", _net(id_dim=3), identity_encoder="dlib")


def test_generator_full_resolution_masks_keep_x_p_outside(tmp_path):
    gen = DiffFaceMaskGenerator(str(_dlib_checkpoint(tmp_path)), **FAST, background_weight=10.0, device="cpu")
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
    ckpt = save_diffface(tmp_path / "arc.safetensors", _net(id_dim=8), identity_encoder="arcface")
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


def test_lightning_predict_fills_a_store_resumably(tmp_path):
    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(2, 2, 2))
    gen = DiffFaceMaskGenerator(str(_dlib_checkpoint(tmp_path)), **FAST, background_weight=10.0, device="cpu")
    gen._analyzer, gen._encoder = FakeAnalyzer(), FakeEncoder()
    kw = {"image_size": 32, "progress": False, "identity_sample": 0, "accelerator": "cpu", "devices": 1}
    summary = generate_masks_lightning(root, gen, **kw)
    assert summary["generated"] == 6 and summary["failed"] == 0 and summary["store_rows_done"] == 6
    store = root / "masks_store"
    assert check_store(store, root, 32) == []
    assert (store / ".generate" / "rows-0-of-1.jsonl").is_file()
    again = generate_masks_lightning(root, gen, **kw)
    assert again["generated"] == 0 and again["already_done"] == 6


DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from tests.fakes.faces import FakeAnalyzer, FakeEncoder
from ipmn_lightning.diffface.generator import DiffFaceMaskGenerator, generate_masks_lightning

gen = DiffFaceMaskGenerator({ckpt!r}, timestep_respacing=8, skip_timesteps=2, masking_threshold=3,
                            background_weight=0.0, device="cpu")
gen._analyzer, gen._encoder = FakeAnalyzer(), FakeEncoder()
summary = generate_masks_lightning({root!r}, gen, image_size=32, progress=False, identity_sample=0,
                                   accelerator="cpu", devices=2, strategy="ddp")
print("SUMMARY", summary.get("store_rows_done"), summary.get("world_size"))
"""


def test_two_process_ddp_generation_fills_each_shard(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(4, 2, 2))
    ckpt = _dlib_checkpoint(tmp_path)
    tests = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "gen.py"
    script.write_text(DDP_SCRIPT.format(tests=tests, ckpt=str(ckpt), root=str(root)))
    # strategy="ddp" re-runs the command line in the second process, so it runs in a subprocess of its own
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    store = root / "masks_store"
    logs = sorted(p.name for p in (store / ".generate").glob("rows-*-of-2.jsonl"))
    assert logs == ["rows-0-of-2.jsonl", "rows-1-of-2.jsonl"]
    assert check_store(store, root, 32) == []
    assert "SUMMARY 8 2" in result.stdout  # rank 0 reports every shard's rows after the fold
=======
>>>>>>> wt-diffface
