"""Phase 2's variants of the paper's experiments (issue 14): IMN (Table 7) and w on the masked face (Tables 5-6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ipmn_lightning.inference.bundle import BundleError, export_service_bundle, load_bundle
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.modules import ExtractorEnhanceModule, InvertibleMaskModule, StealingAttackModule
from tests.helpers import SIZE, TINY_PHASE2, tiny_data, train_and_save


@pytest.fixture(scope="module")
def variants(checkpoints, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("positions")
    return {
        position: train_and_save(
            InvertibleMaskModule(
                image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), watermark_position=position, **TINY_PHASE2
            ),
            folder / f"{position}.ckpt",
        )
        for position in ("none", "masked_face")
    }


def batch() -> dict[str, torch.Tensor]:
    data = tiny_data()
    data.setup("test")
    return next(iter(data.test_dataloader()))


def phase2(path: Path) -> InvertibleMaskModule:
    return InvertibleMaskModule.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


@torch.no_grad()
def test_imn_hides_the_face_in_the_plain_mask(variants):
    module, b = phase2(variants["none"]), batch()
    assert torch.equal(module.watermark_mask(b["mask"]), b["mask"])
    masked_face, _ = module(b["protected"], b["mask"])
    expected, _ = module.inn.put_on(b["protected"], b["mask"])
    assert torch.equal(masked_face, expected)
    with_w, _ = module.inn.put_on(b["protected"], module.embedder(b["mask"], module.watermark))
    assert not torch.allclose(masked_face, with_w)


@torch.no_grad()
def test_masked_face_position_embeds_after_the_inn(variants):
    module, b = phase2(variants["masked_face"]), batch()
    masked_face, _ = module(b["protected"], b["mask"])
    plain, _ = module.inn.put_on(b["protected"], b["mask"])
    assert torch.allclose(masked_face, module.embedder(plain, module.watermark), atol=1e-6)
    # training sees the same x_wmf, and the receiver inverts the INN from it
    out = module.run_inn(b["protected"], module.watermark_mask(b["mask"]), z=torch.zeros(4, 12, SIZE // 2, SIZE // 2))
    assert torch.allclose(out["masked_face"], masked_face, atol=1e-5)


def test_masked_face_position_trains_the_inn_through_h(checkpoints):
    module = InvertibleMaskModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), watermark_position="masked_face", **TINY_PHASE2
    )
    module.load_frozen()
    b = batch()
    out = module.run_inn(b["protected"], module.watermark_mask(b["mask"]))
    module.losses(b["protected"], b["mask"], out)["fp"].backward()
    assert all(p.grad is not None for p in module.inn.parameters() if p.requires_grad)
    assert all(p.grad is None for p in module.embedder.parameters())


@pytest.mark.parametrize("position", ["none", "masked_face"])
@torch.no_grad()
def test_later_phases_and_the_facade_query_the_variants_black_box(variants, checkpoints, position, tmp_path):
    b = batch()
    module = phase2(variants[position])
    expected = quantize_8bit(module(b["protected"], b["mask"])[0])
    stealer = StealingAttackModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(variants[position]), ngf=4,
        stealer="cnet",
    )  # fmt: skip
    stealer.load_frozen()
    assert torch.equal(stealer.query_black_box(b["protected"], b["mask"]), expected)
    enhance = ExtractorEnhanceModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(variants[position])
    )
    enhance.load_frozen()
    assert torch.equal(enhance.sources(b)["masked_face"], expected)
    bundle = export_service_bundle(variants[position], tmp_path / "service.safetensors")
    assert load_bundle(bundle, "ipmn-service").config["position"] == position
    assert torch.equal(IPMN.load(service_bundle=bundle).protect(b["protected"], b["mask"]), expected)


def test_bundle_with_an_unknown_position_is_refused(variants, tmp_path):
    from safetensors.torch import load_file, save_file

    path = export_service_bundle(variants["none"], tmp_path / "service.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
    metadata = {k: v.replace('"position": "none"', '"position": "elsewhere"') for k, v in metadata.items()}
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.raises(BundleError, match="position"):
        load_bundle(path, "ipmn-service")


@torch.no_grad()
def test_null_models_imitate_a_service_without_the_watermark(checkpoints):
    """Issue 24's null models: the same INN on the plain mask, or the plain face swap, never x_wmf."""
    b = batch()
    answers = {}
    for target in ("watermarked", "plain_inn", "mask"):
        stealer = StealingAttackModule(
            image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]), ngf=4,
            stealer="cnet", target=target,
        )  # fmt: skip
        stealer.load_frozen()
        answers[target] = stealer.query_black_box(b["protected"], b["mask"])
    inn = phase2(checkpoints["phase2"]).inn
    assert torch.equal(answers["mask"], quantize_8bit(b["mask"]))
    assert torch.equal(answers["plain_inn"], quantize_8bit(inn.put_on(b["protected"], b["mask"])[0]))
    assert not torch.equal(answers["plain_inn"], answers["watermarked"])


def test_a_careful_attacker_augments_queries_consistently_and_trains(checkpoints):
    """Issue 24's careful attacker: L1, flips/shifts/jitter on the query triple, a cosine schedule per step."""
    from tests.helpers import tiny_trainer

    module = StealingAttackModule(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), phase2_ckpt=str(checkpoints["phase2"]), ngf=4,
        stealer="attn", loss="l1", augment=True, lr_schedule="cosine",
    )  # fmt: skip
    face = batch()["protected"]
    torch.manual_seed(0)
    protected, replacement, mask = module.augment_queries({"protected": face, "replacement": face, "mask": face})
    assert torch.equal(protected, replacement) and torch.equal(protected, mask)  # one transform for the triple
    assert not torch.equal(protected, face) and protected.shape == face.shape
    trainer = tiny_trainer(max_epochs=-1, max_steps=2)
    trainer.fit(module, datamodule=tiny_data(SIZE))
    assert trainer.lr_scheduler_configs[0].interval == "step" and trainer.global_step == 2
