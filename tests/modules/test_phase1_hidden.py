"""The HiDDeN baseline (paper §4.3.2) as a phase-1 variant, and phases 2 / 3a taking its checkpoint unchanged."""

from pathlib import Path

import pytest
import torch
from pytorch_lightning.loggers import CSVLogger

from ipmn_lightning.modules import (
    ExtractorEnhanceModule,
    HiddenPretrainModule,
    InvertibleMaskModule,
    StealingAttackModule,
)
from ipmn_lightning.modules.phase1_hidden import bit_accuracy, owner_message
from ipmn_lightning.nets.hidden import HiddenDecoder, HiddenEncoder
from ipmn_lightning.phases import build, load_phase1, load_submodule
from ipmn_lightning.workflows.pipeline import phase_kind
from tests.helpers import SIZE, TINY_PHASE2, tiny_data, tiny_trainer

TINY_HIDDEN = dict(message_length=8, channels=8, encoder_blocks=2, decoder_blocks=2, discriminator_blocks=1)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


@pytest.fixture(scope="module")
def hidden_ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A HiDDeN phase-1 checkpoint and a phase-2 checkpoint trained on it, a couple of steps each."""
    folder = tmp_path_factory.mktemp("hidden")
    torch.manual_seed(0)
    phase1 = HiddenPretrainModule(image_size=SIZE, **TINY_HIDDEN)
    trainer = tiny_trainer()
    trainer.fit(phase1, datamodule=tiny_data())
    trainer.save_checkpoint(folder / "phase1.ckpt")
    phase2 = InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(folder / "phase1.ckpt"), **TINY_PHASE2)
    trainer = tiny_trainer()
    trainer.fit(phase2, datamodule=tiny_data())
    trainer.save_checkpoint(folder / "phase2.ckpt")
    return {"phase1": folder / "phase1.ckpt", "phase2": folder / "phase2.ckpt"}


def test_buffers_and_phase():
    module = HiddenPretrainModule(image_size=SIZE, **TINY_HIDDEN)
    assert module.watermark.shape == (8,) and set(module.watermark.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(module.blank, torch.zeros(8))
    assert torch.equal(module.watermark, HiddenPretrainModule(image_size=SIZE, **TINY_HIDDEN).watermark)
    assert not torch.equal(module.watermark, owner_message(8, seed=1))
    assert module.hparams.embedder == "hidden"
    assert phase_kind(HiddenPretrainModule) == "phase1"
    mask = torch.rand(2, 3, SIZE, SIZE)
    module.eval()
    with torch.no_grad():
        watermarked = module(mask)
        assert watermarked.shape == mask.shape and watermarked.min() >= 0 and watermarked.max() <= 1
        assert module.extract(watermarked).shape == (2, 8)
    with pytest.raises(ValueError, match="noise"):
        HiddenPretrainModule(noise="crop")


def test_bit_accuracy():
    message = torch.tensor([1.0, -1.0, 1.0, -1.0])
    decoded = torch.tensor([[0.3, -2.0, 5.0, -0.1], [0.3, 2.0, -5.0, -0.1]])
    assert torch.allclose(bit_accuracy(decoded, message), torch.tensor([1.0, 0.5]))


@pytest.mark.parametrize("noise", ["identity", "distortions"])
def test_steps_update_e_r_d_only(noise):
    module = HiddenPretrainModule(image_size=SIZE, noise=noise, **TINY_HIDDEN)
    before = {name: snapshot(getattr(module, name)) for name in ("embedder", "extractor", "discriminator")}
    watermark = module.watermark.clone()
    trainer = tiny_trainer()  # two batches, then validation
    trainer.fit(module, datamodule=tiny_data())
    for name, state in before.items():
        assert changed(state, getattr(module, name)), name
    assert torch.equal(watermark, module.watermark)
    metrics = trainer.callback_metrics
    for key in ("val/psnr_mask", "val/bit_acc", "val/nc_watermarked", "val/sr_e_watermarked", "val/fpr_mask",
                "val/nc_clean", "val/loss", "val/loss_d", "train/bit_acc"):  # fmt: skip
        assert key in metrics, key
    assert 0 <= metrics["val/bit_acc"] <= 1 and 0 <= metrics["val/sr_e_watermarked"] <= 1
    assert -1 <= metrics["val/nc_watermarked"] <= 1


def test_learns_to_carry_a_message():
    """Overfit one batch: the decoder reads the owner's message from x_wm and x_wm stays close to x_m."""
    torch.manual_seed(0)
    module = HiddenPretrainModule(image_size=16, lr=3e-3, **TINY_HIDDEN)
    opt_g, _ = module.configure_optimizers()
    mask = torch.rand(8, 3, 16, 16)
    message = module.watermark.expand(8, -1)
    for _ in range(150):
        watermarked = module.embedder(mask, message)
        losses = module.generator_losses(mask, watermarked, module.extractor(watermarked), message)
        opt_g.zero_grad()
        losses["g"].backward()
        opt_g.step()
    module.eval()
    with torch.no_grad():
        decoded = module.extractor(module.embedder(mask, module.watermark))
    assert bit_accuracy(decoded, module.watermark).mean() == 1


def test_checkpoint_is_a_phase1_checkpoint(hidden_ckpts):
    configs, state = load_phase1(str(hidden_ckpts["phase1"]))
    assert configs["embedder"]["type"] == "hidden" and configs["embedder"]["watermark_shape"] == [8]
    encoder, decoder = build("embedder", configs["embedder"]), build("extractor", configs["extractor"])
    assert isinstance(encoder, HiddenEncoder) and isinstance(decoder, HiddenDecoder)
    load_submodule(encoder, state, "embedder", "test")
    load_submodule(decoder, state, "extractor", "test")
    reloaded = HiddenPretrainModule.load_from_checkpoint(hidden_ckpts["phase1"], weights_only=True).eval()
    encoder.eval()
    decoder.eval()
    mask = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(encoder(mask, state["watermark"]), reloaded(mask))
        assert torch.allclose(decoder(mask), reloaded.extract(mask))
    assert torch.equal(state["watermark"], reloaded.watermark)


def test_phase2_takes_the_hidden_checkpoint(hidden_ckpts):
    """The INN trains on x_wm of HiDDeN's encoder; its checkpoint records the HiDDeN H and the (L,) message."""
    module = InvertibleMaskModule(image_size=SIZE, phase1_ckpt=str(hidden_ckpts["phase1"]), **TINY_PHASE2)
    tiny_trainer(fast_dev_run=True).fit(module, datamodule=tiny_data())
    _, state1 = load_phase1(str(hidden_ckpts["phase1"]))
    assert isinstance(module.embedder, HiddenEncoder)
    assert torch.equal(module.watermark, state1["watermark"])
    reloaded = InvertibleMaskModule.load_from_checkpoint(hidden_ckpts["phase2"], weights_only=True)
    assert isinstance(reloaded.embedder, HiddenEncoder) and reloaded.watermark.shape == (8,)


def test_stealing_attack_measures_nc_with_the_hidden_decoder(hidden_ckpts, tmp_path):
    module = StealingAttackModule(
        image_size=SIZE, phase1_ckpt=str(hidden_ckpts["phase1"]), phase2_ckpt=str(hidden_ckpts["phase2"]),
        stealer="cnet", ngf=4,
    )  # fmt: skip
    trainer = tiny_trainer(limit_train_batches=1, logger=CSVLogger(tmp_path))  # a logger: the image grid runs too
    trainer.fit(module, datamodule=tiny_data())
    assert isinstance(module.extractor, HiddenDecoder) and module.watermark.shape == (8,)
    metrics = trainer.callback_metrics
    assert "val/nc_stolen" in metrics and 0 <= metrics["val/sr_e_stolen"] <= 1
    assert list(Path(trainer.log_dir).glob("images/*.png"))  # the grid leaves out R's (B, L) messages


def test_extractor_enhancement_on_hidden(hidden_ckpts, tmp_path):
    """Phase 3b (and so the Table 9 measurement with R on x_wmf, x'_wm, x_sm) runs with the HiDDeN decoder."""
    stealer = StealingAttackModule(
        image_size=SIZE, phase1_ckpt=str(hidden_ckpts["phase1"]), phase2_ckpt=str(hidden_ckpts["phase2"]),
        stealer="cnet", ngf=4,
    )  # fmt: skip
    trainer = tiny_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(stealer, datamodule=tiny_data())
    trainer.save_checkpoint(tmp_path / "stealer.ckpt")
    module = ExtractorEnhanceModule(
        image_size=SIZE, phase1_ckpt=str(hidden_ckpts["phase1"]), phase2_ckpt=str(hidden_ckpts["phase2"]),
        stealer_ckpt=[str(tmp_path / "stealer.ckpt")],
    )  # fmt: skip
    trainer = tiny_trainer(limit_train_batches=1, logger=CSVLogger(tmp_path))
    trainer.fit(module, datamodule=tiny_data())
    assert isinstance(module.extractor, HiddenDecoder)
    assert module.watermark.shape == (8,) and torch.equal(module.blank, torch.zeros(8))
    metrics = trainer.callback_metrics
    for source in ("masked_face", "recovered_mask", "stolen"):
        assert 0 <= metrics[f"val/sr_e_{source}"] <= 1, source
