import inspect

import pytest
import torch

from ipmn_lightning.losses import enhanced_extracting_loss
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.modules import ExtractorEnhanceModule, StealingAttackModule
from tests.helpers import SIZE, tiny_data, tiny_trainer


@pytest.mark.parametrize("name", ["cnet", "res9", "res16", "unet"])
def test_stealing_attack_trains_each_architecture(name, checkpoints):
    module = StealingAttackModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]),
        stealer=name, ngf=4,
    )  # fmt: skip
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    assert "val/psnr_stolen" in trainer.callback_metrics and "val/sr_e_stolen" in trainer.callback_metrics


def test_stealer_sees_only_protected_and_replacement(checkpoints):
    module = StealingAttackModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]),
        stealer="cnet", ngf=4,
    )  # fmt: skip
    module.setup("fit")
    seen = []
    module.stealer.register_forward_hook(lambda mod, args, out: seen.append(args))
    dm = tiny_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module.training_step(batch, 0)
    ((protected, replacement),) = seen
    assert torch.equal(protected, batch["protected"]) and torch.equal(replacement, batch["replacement"])
    assert list(inspect.signature(module.stealer.forward).parameters) == ["protected", "replacement"]


def enhance_module(checkpoints) -> ExtractorEnhanceModule:
    """An enhancement module on the tiny checkpoints, with its frozen networks loaded."""
    module = ExtractorEnhanceModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]),
        stealer_ckpt=[str(checkpoints["stealer"])],
    )  # fmt: skip
    module.setup("fit")
    return module


def test_black_box_frozen_and_unchanged(checkpoints):
    module = enhance_module(checkpoints)
    frozen = {name: {k: v.clone() for k, v in getattr(module, name).state_dict().items()}
              for name in ("embedder", "inn", "stealers")}  # fmt: skip
    extractor_before = {k: v.clone() for k, v in module.extractor.state_dict().items()}
    tiny_trainer(max_steps=2, limit_val_batches=0).fit(module, datamodule=tiny_data())
    for name, state in frozen.items():
        for key, value in getattr(module, name).state_dict().items():
            assert torch.equal(value, state[key]), f"{name}.{key}"
    assert any(not torch.equal(v, extractor_before[k]) for k, v in module.extractor.state_dict().items())


def test_mixed_batch_has_six_sources_with_right_targets(checkpoints):
    module = enhance_module(checkpoints)
    dm = tiny_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    sources = module.sources(batch)
    assert set(sources) == {
        "masked_face",
        "recovered_mask",
        "stolen_cnet",
        "mask",
        "protected",
        "recovered_face",
    }
    captured = {}
    import ipmn_lightning.modules.phase3_enhance as enhance

    def spy(watermarked, clean, watermark, blank, **kwargs):
        captured.update(watermarked=watermarked, clean=clean, watermark=watermark, blank=blank)
        return enhanced_extracting_loss(watermarked, clean, watermark, blank, **kwargs)

    original = enhance.enhanced_extracting_loss
    enhance.enhanced_extracting_loss = spy
    try:
        module.training_step(batch, 0)
    finally:
        enhance.enhanced_extracting_loss = original
    assert len(captured["watermarked"]) == 3 and len(captured["clean"]) == 3
    assert torch.equal(captured["watermark"], module.watermark)
    assert torch.equal(captured["blank"], torch.ones_like(module.watermark))


def test_extractor_gets_every_source_as_an_8bit_file_in_training_and_validation(checkpoints):
    """R is trained and scored on what a verifier receives: clamped to [0, 1] and rounded to 8 bits (issue 14)."""
    module = enhance_module(checkpoints)
    # a stealer's output is not bounded: push it out of [0, 1] so the clamp is exercised too
    module.stealers[0].register_forward_hook(lambda _module, _args, out: out * 3 - 1)
    seen: list[tuple[bool, torch.Tensor]] = []
    module.extractor.register_forward_pre_hook(lambda net, args: seen.append((net.training, args[0].detach())))
    tiny_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1).fit(module, datamodule=tiny_data())
    assert {training for training, _ in seen} == {True, False}  # a training and a validation step
    for training, images in seen:
        assert images.min() >= 0 and images.max() <= 1, training
        assert torch.equal(images, quantize_8bit(images)), training


def test_blank_is_phase1_blank_value(tmp_path, checkpoints):
    """R's clean target x_clean is phase 1's ``blank_value``, not a hard-coded ones image (issue 14)."""
    phase1 = torch.load(checkpoints["phase1"], map_location="cpu", weights_only=True)
    phase1["hyper_parameters"]["blank_value"] = 0.5
    phase1["state_dict"]["blank"] = torch.full_like(phase1["state_dict"]["blank"], 0.5)
    torch.save(phase1, tmp_path / "phase1.ckpt")
    module = ExtractorEnhanceModule(
        image_size=SIZE, phase1_ckpt=str(tmp_path / "phase1.ckpt"), phase2_ckpt=str(checkpoints["phase2"]),
        stealer_ckpt=[str(checkpoints["stealer"])],
    )  # fmt: skip
    trainer = tiny_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=tiny_data())
    assert torch.equal(module.blank, torch.full_like(module.watermark, 0.5))
    trainer.save_checkpoint(tmp_path / "enhance.ckpt")
    reloaded = ExtractorEnhanceModule.load_from_checkpoint(tmp_path / "enhance.ckpt", weights_only=True)
    assert torch.equal(reloaded.blank, module.blank)


def test_enhanced_loss_hand_value():
    w = torch.zeros(3, 2, 2)
    blank = torch.ones(3, 2, 2)
    out = enhanced_extracting_loss(
        [torch.full((2, 3, 2, 2), 0.5)] * 3, [torch.zeros(2, 3, 2, 2)] * 3, w, blank,
        mse_scale=2.0, lambda_wm=1.0, lambda_clean=0.5, lambda_cst=1.0,
    )  # fmt: skip
    assert out["wm"].item() == pytest.approx(3 * 2.0 * 0.25)
    assert out["clean"].item() == pytest.approx(3 * 2.0 * 1.0)
    assert out["cst"].item() == pytest.approx(0.0)
    assert out["wext"].item() == pytest.approx(1.5 + 0.5 * 6.0)


def test_null_models_are_negatives_of_the_enhancement(checkpoints, tmp_path):
    """``null_ckpt``: the null models' answers join the clean sources, and the checkpoint rebuilds them."""
    from ipmn_lightning.phases import load_phase_checkpoint

    module = ExtractorEnhanceModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]),
        stealer_ckpt=[str(checkpoints["stealer"])], null_ckpt=[str(checkpoints["stealer"])],
    )  # fmt: skip
    seen = []
    original = module._extract_all
    module._extract_all = lambda sources, distort=False: seen.append(list(sources)) or original(sources, distort)
    trainer = tiny_trainer()
    trainer.fit(module, datamodule=tiny_data())
    assert len(module.null_models) == 1 and all(not p.requires_grad for p in module.null_models.parameters())
    assert "null_0" in seen[0] and "stolen_cnet" in seen[0]  # the first call is a training step's
    trainer.save_checkpoint(tmp_path / "e.ckpt")
    frozen = load_phase_checkpoint(tmp_path / "e.ckpt", "enhance", "phase3_enhance")["ipmn_frozen"]
    assert len(frozen["null_models"]) == 1
