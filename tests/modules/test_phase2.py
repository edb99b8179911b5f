import shutil

import pytest
import torch
from helpers import SIZE, TINY_PHASE2, tiny_data, tiny_trainer

from ipmn_lightning.modules import InvertibleMaskModule
from ipmn_lightning.phases import CheckpointError


def make_module(checkpoints, **kwargs) -> InvertibleMaskModule:
    return InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), **{**TINY_PHASE2, **kwargs})


def test_phase1_weights_frozen_and_inn_trained(checkpoints):
    module = make_module(checkpoints)
    tiny_trainer(max_steps=2, limit_val_batches=0).fit(module, datamodule=tiny_data())
    phase1 = torch.load(checkpoints["phase1"], map_location="cpu", weights_only=True)["state_dict"]
    for key, value in module.embedder.state_dict().items():
        assert torch.equal(value, phase1[f"embedder.{key}"]), key
    assert torch.equal(module.watermark, phase1["watermark"])
    assert not any(p.requires_grad for p in module.embedder.parameters())
    fresh = make_module(checkpoints).inn.state_dict()
    assert any(not torch.equal(v, fresh[k]) for k, v in module.inn.state_dict().items())


def test_phase2_checkpoint_reloads_without_phase1_file(tmp_path, checkpoints):
    phase1 = tmp_path / "phase1.ckpt"
    shutil.copy(checkpoints["phase1"], phase1)
    module = InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(phase1), **TINY_PHASE2)
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    trainer.save_checkpoint(tmp_path / "phase2.ckpt")
    phase1.unlink()
    reloaded = InvertibleMaskModule.load_from_checkpoint(tmp_path / "phase2.ckpt", weights_only=True)
    x_p, x_m = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE)
    module.eval()
    with torch.no_grad():
        expected, _ = module(x_p, x_m)
        got, _ = reloaded(x_p, x_m)
    assert torch.allclose(expected, got)
    # validating the reloaded checkpoint needs no phase-1 file either
    tiny_trainer().validate(reloaded, datamodule=tiny_data())


def test_missing_and_wrong_phase1_checkpoint(tmp_path, checkpoints):
    with pytest.raises(ValueError, match="phase1_ckpt"):
        InvertibleMaskModule(image_size=SIZE, **TINY_PHASE2).setup("fit")
    with pytest.raises(CheckpointError, match="phase1_ckpt"):
        InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(tmp_path / "nope.ckpt"), **TINY_PHASE2).setup("fit")
    wrong = InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(checkpoints["phase2"]), **TINY_PHASE2)
    with pytest.raises(CheckpointError, match="expected 'phase1'"):
        wrong.setup("fit")


def test_nonfinite_step_is_skipped_and_counted(checkpoints):
    module = make_module(checkpoints)

    original = module.losses

    def nan_losses(*args, **kwargs):
        out = original(*args, **kwargs)
        out["fp"] = out["fp"] * float("nan")
        return out

    module.losses = nan_losses
    before = {k: v.clone() for k, v in module.inn.state_dict().items()}
    tiny_trainer(max_steps=2, limit_val_batches=0).fit(module, datamodule=tiny_data())
    assert module.skipped_steps.item() == 2
    assert all(torch.equal(v, before[k]) for k, v in module.inn.state_dict().items())


def test_validation_logs_table2_metrics(checkpoints):
    module = make_module(checkpoints)
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    for pair in ("recovered", "masked", "recovered_mask"):
        for suffix in ("", "_q8"):
            for kind in ("psnr", "ssim", "psnr_y", "ssim_y"):
                assert f"val/{kind}_{pair}{suffix}" in trainer.callback_metrics
