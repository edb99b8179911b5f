import random

import pytest
import torch

from ipmn_lightning.attacks.distortions import (
    RandomDistortion,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    quantize_8bit_ste,
    resize_round_trip,
)
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.modules import ExtractorEnhanceModule, WatermarkPretrainModule
from tests.helpers import SIZE, TINY_PHASE1, tiny_data, tiny_trainer


def faces(count: int = 4, size: int = 32) -> torch.Tensor:
    dm = tiny_data(size, batch_size=count)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))["mask"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).detach().pow(2).mean()))


def is_8bit(images: torch.Tensor) -> bool:
    return bool(((images * 255) - (images * 255).round()).abs().max() < 1e-3)


def test_jpeg_is_a_real_round_trip_with_identity_gradient():
    images = faces().requires_grad_(True)
    low, high = jpeg(images, 30), jpeg(images, 95)
    assert is_8bit(low)  # decoded 8-bit pixels
    assert psnr(high, images) > psnr(low, images) + 3  # quality matters
    assert not torch.equal(low, quantize_8bit(images))
    low.sum().backward()
    assert torch.equal(images.grad, torch.ones_like(images))
    with pytest.raises(ValueError, match="quality"):
        jpeg(images, 0)


def test_plain_distortions_keep_shape_and_range():
    images = faces()
    for out in (resize_round_trip(images, 0.5), gaussian_blur(images, 1.0), gaussian_noise(images, 0.05)):
        assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
        assert 15 < psnr(out, images) < 60
    blurred = gaussian_blur(images, 1.0)
    assert (blurred[..., 1:] - blurred[..., :-1]).abs().mean() < (images[..., 1:] - images[..., :-1]).abs().mean()


def test_random_distortion_clean_is_only_rounding_and_seeded_draws_repeat():
    images = faces(8)
    assert torch.equal(RandomDistortion(p_clean=1.0)(images), quantize_8bit(images))
    distortion = RandomDistortion(p_clean=0.0)
    random.seed(3), torch.manual_seed(3)
    first = distortion(images)
    random.seed(3), torch.manual_seed(3)
    assert torch.equal(distortion(images), first)
    assert (first - quantize_8bit(images)).abs().flatten(1).amax(1).gt(0).all()  # every image distorted
    assert is_8bit(first)


def test_random_distortion_gradient_reaches_every_image():
    images = faces(8).requires_grad_(True)
    random.seed(0)
    RandomDistortion(p_clean=0.0)(images).sum().backward()
    assert images.grad.flatten(1).abs().sum(1).gt(0).all()
    assert torch.equal(quantize_8bit_ste(images), quantize_8bit(images))


@pytest.mark.parametrize(
    "kwargs",
    [{"p_clean": 1.5}, {"kinds": ["jpeg", "rotate"]}, {"kinds": []}, {"jpeg_qualities": [0]}],
)
def test_random_distortion_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        RandomDistortion(**kwargs)


class InputSpy:
    def __init__(self, net: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        net.register_forward_pre_hook(lambda _module, args: self.inputs.append(args[0].detach().clone()))


def test_phase1_robust_option_feeds_r_distorted_images_in_training_only():
    module = WatermarkPretrainModule(image_size=SIZE, robust_extraction=True, robust_p_clean=0.0, **TINY_PHASE1)
    batch = {"mask": faces(4, SIZE)}
    spy = InputSpy(module.extractor)
    random.seed(0)
    watermarked = module.embedder(batch["mask"], module.watermark)
    robust = module.ip_losses(batch["mask"], watermarked, distort=True)
    plain = module.ip_losses(batch["mask"], watermarked, distort=False)
    clean_input = torch.cat([watermarked, batch["mask"]]).detach()
    both, only_clean = spy.inputs
    assert torch.equal(only_clean, clean_input) and "robust" not in plain
    assert torch.equal(both[:8], clean_input)  # the paper's terms are unchanged ...
    distorted = both[8:]  # ... and a distorted copy is added
    assert (distorted - quantize_8bit(clean_input)).abs().flatten(1).amax(1).gt(0).all()
    assert torch.allclose(robust["ip"], plain["ip"] + robust["robust"])
    # H gets no gradient through the copy by default, and some with robust_embedder_gradient > 0
    for gamma, expect_grad in ((0.0, False), (0.5, True)):
        module.hparams.robust_embedder_gradient = gamma
        carrier = watermarked.detach().requires_grad_(True)
        random.seed(0)
        module.ip_losses(batch["mask"], carrier, distort=True)["robust"].backward()
        assert (carrier.grad is not None and carrier.grad.abs().sum() > 0) == expect_grad
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=tiny_data())
    assert "val/sr_e_jpeg75" in trainer.callback_metrics
    default = WatermarkPretrainModule(image_size=SIZE, **TINY_PHASE1)
    assert default.distortion is None


def test_phase3b_robust_option_distorts_every_source(checkpoints):
    module = ExtractorEnhanceModule(
        image_size=SIZE,
        phase1_ckpt=str(checkpoints["phase1"]),
        phase2_ckpt=str(checkpoints["phase2"]),
        stealer_ckpt=[str(checkpoints["stealer"])],
        robust_extraction=True,
        robust_p_clean=0.0,
    )
    module.load_frozen()
    dm = tiny_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    spy = InputSpy(module.extractor)
    random.seed(0)
    module.training_step(batch, 0)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    (seen,) = spy.inputs
    assert seen.shape[0] == 6 * batch["protected"].shape[0]
    assert is_8bit(seen)
    # the clean sources x_m and x_p (no randomness) appear distorted in what R saw
    count = batch["protected"].shape[0]
    names = list(module.sources(batch, generator))
    for name in ("mask", "protected"):
        start = names.index(name) * count
        original = quantize_8bit(batch[name])
        assert (seen[start : start + count] - original).abs().flatten(1).amax(1).gt(0).all(), name
