"""Service and verifier bundles and the IPMN facade: round trips against the checkpoints, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ipmn_lightning import IPMN
from ipmn_lightning.core.images import tensor_to_pil
from ipmn_lightning.data.synthetic import SyntheticFaceSwapDataset
from ipmn_lightning.inference.bundle import BundleError, export_service_bundle, export_verifier_bundle, load_bundle
from ipmn_lightning.inference.facade import Verification
from ipmn_lightning.metrics.functional import normalized_correlation, quantize_8bit
from ipmn_lightning.modules import ExtractorEnhanceModule, InvertibleMaskModule, WatermarkPretrainModule
from ipmn_lightning.phases import CheckpointError


@pytest.fixture(scope="module")
def bundles(checkpoints, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles")
    return {
        "service": export_service_bundle(checkpoints["phase2"], folder / "service.safetensors"),
        "verifier": export_verifier_bundle(checkpoints["enhance"], folder / "verifier.safetensors"),
        "verifier1": export_verifier_bundle(checkpoints["phase1"], folder / "verifier1.safetensors"),
    }


def faces(n: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    data = SyntheticFaceSwapDataset(n, size, split="test")
    return torch.stack([data[i]["protected"] for i in range(n)]), torch.stack([data[i]["mask"] for i in range(n)])


def load(cls, path):
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


def test_bundle_contents(bundles):
    service = load_bundle(bundles["service"], "ipmn-service")
    assert service.format == "ipmn-service" and service.version == 1 and service.image_size == 32
    assert {"embedder", "inn", "ipmn_version"} <= set(service.config)
    assert "watermark" in service.tensors and not any(k.startswith("extractor.") for k in service.tensors)
    verifier = load_bundle(bundles["verifier"], "ipmn-verifier")
    assert verifier.config["threshold"] == 0.95 and verifier.config["source"] == "enhance.ckpt"
    assert set(verifier.tensors) == {"watermark"} | {k for k in verifier.tensors if k.startswith("extractor.")}
    assert not list(Path(bundles["service"]).parent.glob(".*"))  # atomic writes leave no temporary files


def test_round_trip_matches_the_checkpoints(checkpoints, bundles):
    protected, mask = faces()
    model = IPMN.load(bundles["service"], bundles["verifier"])
    phase2 = load(InvertibleMaskModule, checkpoints["phase2"])
    with torch.no_grad():
        masked_face, lost = phase2(protected, mask)
        expected = quantize_8bit(masked_face)
        z = torch.randn(lost.shape, generator=torch.Generator().manual_seed(7))
        expected_face, expected_mask = phase2.inn.put_off(expected, z=z)
    shared = model.protect(protected, mask)
    assert torch.equal(shared, expected)
    face, recovered_mask = model.recover(shared, seed=7)
    assert torch.equal(face, expected_face.clamp(0, 1)) and torch.equal(recovered_mask, expected_mask.clamp(0, 1))
    enhance = load(ExtractorEnhanceModule, checkpoints["enhance"])
    with torch.no_grad():
        extracted = enhance(shared)
    assert torch.equal(model.extract(shared), extracted)
    verdicts = model.verify(shared)
    assert [v.nc for v in verdicts] == pytest.approx(normalized_correlation(extracted, enhance.watermark).tolist())
    phase1 = load(WatermarkPretrainModule, checkpoints["phase1"])
    with torch.no_grad():
        assert torch.equal(IPMN.load(verifier_bundle=bundles["verifier1"]).extract(shared), phase1.extract(shared))


def test_facade_kinds_and_sizes(bundles):
    protected, mask = faces(2)
    model = IPMN.load(bundles["service"], bundles["verifier"])
    single = model.protect(protected[0], mask[0])
    assert single.shape == (3, 32, 32) and torch.equal(single, model.protect(protected, mask)[0])
    pils = model.protect([tensor_to_pil(x) for x in protected], [tensor_to_pil(x) for x in mask])
    assert isinstance(pils, list) and pils[0].size == (32, 32)
    face, _ = model.recover(pils[0], seed=0)
    assert face.size == (32, 32)
    big = torch.nn.functional.interpolate(protected, size=48, mode="bilinear")
    assert model.protect(big, mask).shape == (2, 3, 32, 32)  # resized to the bundle's size
    verdict = model.verify(protected[0])
    assert isinstance(verdict, Verification) and verdict.verified == (verdict.nc > verdict.threshold)
    with pytest.raises(ValueError, match=r"2 protected images but 1 masks"):
        model.protect(protected, mask[:1])
    with pytest.raises(RuntimeError, match=r"verifier"):
        IPMN.load(bundles["service"]).verify(protected)


def rewrite(source: Path, target: Path, drop: str | None = None, **header: str) -> Path:
    with safe_open(str(source), framework="pt") as handle:
        metadata = {**handle.metadata(), **header}
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k != drop}
    save_file(tensors, str(target), metadata=metadata)
    return target


def test_bundle_errors_name_the_file(bundles, tmp_path):
    with pytest.raises(BundleError, match=r"no bundle at .*missing.safetensors"):
        load_bundle(tmp_path / "missing.safetensors", "ipmn-service")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(BundleError, match=r"garbage.safetensors is not a readable safetensors file"):
        load_bundle(garbage, "ipmn-service")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(Path(bundles["service"]).read_bytes()[:-1000])
    with pytest.raises(BundleError, match=r"truncated.safetensors"):
        load_bundle(truncated, "ipmn-service")
    with pytest.raises(BundleError, match=r"verifier bundle .* but a service bundle"):
        load_bundle(bundles["verifier"], "ipmn-service")
    with pytest.raises(BundleError, match=r"service bundle .* but a verifier bundle"):
        IPMN.load(verifier_bundle=bundles["service"])
    future = rewrite(bundles["service"], tmp_path / "future.safetensors", format_version="2")
    with pytest.raises(BundleError, match=r"future.safetensors has bundle format version 2"):
        load_bundle(future, "ipmn-service")
    partial = rewrite(bundles["service"], tmp_path / "partial.safetensors", drop="watermark")
    with pytest.raises(BundleError, match=r"partial.safetensors is incomplete: missing tensors watermark"):
        load_bundle(partial, "ipmn-service")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(BundleError, match=r"not an IPMN bundle"):
        load_bundle(plain, "ipmn-verifier")
    damaged = rewrite(bundles["verifier"], tmp_path / "damaged.safetensors", config=json.dumps({"image_size": 32}))
    with pytest.raises(BundleError, match=r"no 'extractor' config"):
        load_bundle(damaged, "ipmn-verifier")


def test_export_checks_the_phase(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match=r"phase-1 or an extractor-enhancement checkpoint"):
        export_verifier_bundle(checkpoints["phase2"], tmp_path / "v.safetensors")
    with pytest.raises(CheckpointError, match=r"expected 'phase2'"):
        export_service_bundle(checkpoints["phase1"], tmp_path / "s.safetensors")
    assert not (tmp_path / "v.safetensors").exists() and not (tmp_path / "s.safetensors").exists()
    custom = export_verifier_bundle(checkpoints["phase1"], tmp_path / "t.safetensors", threshold=0.5)
    assert load_bundle(custom, "ipmn-verifier").config["threshold"] == 0.5
