"""DiffFaceModule: identity cache, hybrid loss, EMA, checkpoints the sampler loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

pytest.importorskip("diffusers")

from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule
from ipmn_lightning.diffface.convert import load_diffface
from ipmn_lightning.diffface.module import DiffFaceModule, sample_from_noise
from ipmn_lightning.diffface.unet import GaussianDiffusion
from tests.fakes.faces import FakeEncoder, face_folder

TINY = {
    "model_channels": 32,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (8,),
    "num_head_channels": 32,
    "sample_steps": 2,
    "num_val_samples": 2,
}


class CountingEncoder(FakeEncoder):
    calls = 0

    def __init__(self, *args, **kwargs) -> None:
        pass

    def embed_arrays(self, images):
        CountingEncoder.calls += len(images)
        return super().embed_arrays(images)


def _fit(root: Path, tmp: Path, **kwargs) -> tuple[DiffFaceModule, pl.Trainer]:
    dm = FaceSwapDataModule(
        source="folder", root=str(root), faces_only=True, image_size=16, batch_size=2, num_workers=0
    )
    model = DiffFaceModule(image_size=16, id_dim=3, **TINY, **kwargs)
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(tmp),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, dm)
    return model, trainer


def test_trains_caches_identities_and_saves_ema(tmp_path, monkeypatch):
    monkeypatch.setattr("ipmn_lightning.faces.analysis.DlibIdentityEncoder", CountingEncoder)
    monkeypatch.setattr("ipmn_lightning.faces.analysis.require_faces_extra", lambda *a: None)
    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(6, 2, 2), black=1)
    CountingEncoder.calls = 0
    model, trainer = _fit(root, tmp_path / "run")
    cache = tmp_path / "run" / "identity_cache.safetensors"
    assert cache.is_file() and CountingEncoder.calls == 9  # train (6 + 1 black) + val (2)
    table = model._identity_table
    assert table is not None and table.shape == (9, 3)
    assert (table.norm(dim=1) > 0).sum() == 8  # the black face has no identity: zeros
    assert model._ema_updates == 3
    assert any(not torch.equal(a, b) for a, b in zip(model.net.parameters(), model.ema.parameters()))
    # the embeddings are read back, not recomputed
    _fit(root, tmp_path / "run")
    assert CountingEncoder.calls == 9
    # the checkpoint loads into the sampler's network, EMA weights by default, tagged dlib
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    net, encoder = load_diffface(ckpt)
    assert encoder == "dlib"
    for a, b in zip(net.parameters(), model.ema.parameters()):
        assert torch.equal(a, b)
    assert net.config["image_size"] == 16


def test_identity_encoder_none_needs_no_faces_extra(tmp_path):
    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(4, 2, 2))
    model, _ = _fit(root, tmp_path / "run", identity_encoder="none")
    assert model._identity_table is None
    assert not (tmp_path / "run" / "identity_cache.safetensors").exists()
    batch = {"protected": torch.rand(2, 3, 16, 16), "key": ["a", "b"]}
    assert torch.equal(model.identities(batch, "train"), torch.zeros(2, 3))


def test_ema_moves_once_per_optimizer_step_under_gradient_accumulation(tmp_path):
    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(8, 2, 2))
    dm = FaceSwapDataModule(
        source="folder", root=str(root), faces_only=True, image_size=16, batch_size=2, num_workers=0
    )
    model = DiffFaceModule(image_size=16, id_dim=3, identity_encoder="none", **{**TINY, "sample_steps": 0})
    ema_before = [p.detach().clone() for p in model.ema.parameters()]

    class Batches(pl.Callback):
        seen = 0

        def on_train_batch_end(self, *args) -> None:
            Batches.seen += 1

    trainer = pl.Trainer(
        max_steps=2,
        accumulate_grad_batches=2,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(tmp_path / "run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        limit_val_batches=0,
        callbacks=[Batches()],
    )
    trainer.fit(model, dm)
    assert trainer.global_step == 2 and Batches.seen == 4  # two batches per optimizer step
    assert model._ema_updates == trainer.global_step  # once per optimizer step, not per batch
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, model.ema.parameters()))


def test_hybrid_loss_terms():
    d = GaussianDiffusion.linear(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = d.q_sample(x0, t, noise)
    v = torch.zeros_like(x0)
    perfect = d.training_losses(torch.cat([noise, v], 1), x0, x_t, t, noise)
    assert torch.allclose(perfect["mse"], torch.zeros(4))
    assert (perfect["vb"] >= -1e-6).all() and torch.isfinite(perfect["vb"]).all()
    wrong = d.training_losses(torch.cat([noise + 0.5, v], 1), x0, x_t, t, noise)
    assert (wrong["mse"] > 0.2).all()
    # the variance term does not train the mean (eps is detached inside vb)
    out = torch.cat([noise + 0.5, v], 1).requires_grad_(True)
    d.training_losses(out, x0, x_t, t, noise)["vb"].sum().backward()
    assert out.grad[:, :3].abs().sum() == 0 and out.grad[:, 3:].abs().sum() > 0


def test_sample_from_noise_is_seeded():
    model = DiffFaceModule(image_size=16, id_dim=3, **TINY)
    ids = torch.zeros(2, 3)
    a = sample_from_noise(model.ema, ids, 3, torch.Generator().manual_seed(1))
    b = sample_from_noise(model.ema, ids, 3, torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert np.isfinite(a.numpy()).all()


def test_trains_under_ddp_spawn_with_one_shared_identity_cache(tmp_path):
    pytest.importorskip("dlib")
    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(6, 2, 2))
    dm = FaceSwapDataModule(
        source="folder", root=str(root), faces_only=True, image_size=16, batch_size=2, num_workers=0
    )
    model = DiffFaceModule(image_size=16, id_dim=128, **TINY)
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        default_root_dir=str(tmp_path / "run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, dm)
    # local rank 0 embedded every train/val face once (dlib finds no face in these drawings: all zeros)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "identity_cache.safetensors"), framework="pt") as f:
        assert f.get_tensor("embeddings").shape == (8, 128)
