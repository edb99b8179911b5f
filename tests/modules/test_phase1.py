import pytest
import torch

from ipmn_lightning.modules import WatermarkPretrainModule
from tests.helpers import SIZE, TINY_PHASE1, tiny_data, tiny_trainer


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_one_step_updates_h_r_d_and_nothing_else():
    module = WatermarkPretrainModule(image_size=SIZE, **{**TINY_PHASE1, "lambda_vgg": 1.0, "vgg_weights": "random"})
    nets = {name: getattr(module, name) for name in ("embedder", "extractor", "discriminator", "vgg")}
    before = {name: snapshot(net) for name, net in nets.items()}
    watermark = module.watermark.clone()
    tiny_trainer(max_steps=2, limit_val_batches=0).fit(module, datamodule=tiny_data())
    assert changed(before["embedder"], module.embedder)
    assert changed(before["extractor"], module.extractor)
    assert changed(before["discriminator"], module.discriminator)
    assert not changed(before["vgg"], module.vgg)
    assert torch.equal(watermark, module.watermark)


def test_validation_logs_paper_metrics():
    module = WatermarkPretrainModule(image_size=SIZE, **TINY_PHASE1)
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    for key in ("val/nc_watermarked", "val/nc_clean", "val/sr_e_watermarked", "val/psnr_mask", "val/fpr_mask",
                "val/loss", "val/nc_centered_watermarked"):  # fmt: skip
        assert key in trainer.callback_metrics, key


def test_checkpoint_roundtrip(tmp_path):
    module = WatermarkPretrainModule(image_size=SIZE, **TINY_PHASE1)
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    path = tmp_path / "p1.ckpt"
    trainer.save_checkpoint(path)
    reloaded = WatermarkPretrainModule.load_from_checkpoint(path, weights_only=True)
    mask = torch.rand(2, 3, SIZE, SIZE)
    module.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(module(mask), reloaded(mask))
    assert torch.equal(module.watermark, reloaded.watermark)


def test_watermark_from_file_and_warning_for_bright_watermark(tmp_path):
    from PIL import Image

    path = tmp_path / "white.png"
    Image.new("RGB", (40, 40), (250, 250, 250)).save(path)
    with pytest.warns(UserWarning, match="blank image"):
        module = WatermarkPretrainModule(image_size=SIZE, watermark_path=str(path), **TINY_PHASE1)
    assert module.watermark.shape == (3, SIZE, SIZE)


def test_missing_vgg_weights_names_the_argument():
    with pytest.raises((FileNotFoundError, ValueError), match="vgg_weights"):
        WatermarkPretrainModule(image_size=SIZE, **{**TINY_PHASE1, "lambda_vgg": 1.0, "vgg_weights": "IMAGENET1K_V1"})


def test_validate_and_test_a_checkpoint_outside_fit(tmp_path):
    module = WatermarkPretrainModule(image_size=SIZE, **TINY_PHASE1)
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    trainer.save_checkpoint(tmp_path / "p1.ckpt")
    reloaded = WatermarkPretrainModule.load_from_checkpoint(tmp_path / "p1.ckpt", weights_only=True)
    (metrics,) = tiny_trainer().validate(reloaded, datamodule=tiny_data(), verbose=False)
    assert "val/nc_watermarked" in metrics
    (metrics,) = tiny_trainer(limit_test_batches=1).test(reloaded, datamodule=tiny_data(), verbose=False)
    assert "test/sr_e_watermarked" in metrics
