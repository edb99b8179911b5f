"""Least privilege and fingerprints: the receiver bundle holds only the INN; an edited bundle is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ipmn_lightning import IPMN
from ipmn_lightning.console.main import main
from ipmn_lightning.inference.bundle import (
    BundleError,
    export_receiver_bundle,
    export_service_bundle,
    export_verifier_bundle,
    load_bundle,
)
from tests.helpers import write_faces
from tests.helpers.bundles import retouch


@pytest.fixture(scope="module")
def receiver(checkpoints, tmp_path_factory) -> Path:
    return export_receiver_bundle(checkpoints["phase2"], tmp_path_factory.mktemp("receiver") / "receiver.safetensors")


def test_receiver_file_holds_no_tensor_of_h_and_no_watermark(receiver):
    with safe_open(str(receiver), framework="pt") as handle:
        keys, header = list(handle.keys()), handle.metadata()
    assert keys and all(key.startswith("inn.") for key in keys)
    assert "watermark" not in keys and not any(key.startswith("embedder.") for key in keys)
    config = json.loads(header["config"])
    assert header["format"] == "ipmn-receiver" and "embedder" not in config and set(config) >= {"inn", "image_size"}
    assert header["fingerprint"].startswith("sha256:") and len(header["fingerprint"]) == 7 + 64


def test_recover_with_the_receiver_bundle_gives_the_same_faces(service, receiver, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=3)
    assert main(["protect", "--bundle", str(service), "--protected", str(faces), "--mask", str(masks),
                 "--out", "shared"]) == 0  # fmt: skip
    assert load_bundle(service, "ipmn-service").fingerprint in capsys.readouterr().err
    for name, bundle in (("with_service", service), ("with_receiver", receiver)):
        assert main(["recover", "--bundle", str(bundle), "--masked", "shared", "--out", name, "--seed", "3"]) == 0
        assert load_bundle(bundle, ("ipmn-service", "ipmn-receiver")).fingerprint in capsys.readouterr().err
    outputs = sorted(p.name for p in Path("with_service").iterdir())
    assert outputs == sorted(p.name for p in Path("with_receiver").iterdir()) and len(outputs) == 6
    for name in outputs:  # bit-identical files
        assert (Path("with_service") / name).read_bytes() == (Path("with_receiver") / name).read_bytes()


def test_facade_with_a_receiver_bundle_recovers_but_refuses_protect(service, receiver):
    masked = torch.rand(2, 3, 32, 32)
    full = IPMN.load(service_bundle=service)
    for model in (IPMN.load(receiver_bundle=receiver), IPMN.load(service_bundle=receiver)):
        assert model.embedder is None and model.watermark is None
        face, mask = model.recover(masked, seed=1)
        expected_face, expected_mask = full.recover(masked, seed=1)
        assert torch.equal(face, expected_face) and torch.equal(mask, expected_mask)
        with pytest.raises(RuntimeError, match=r"receiver bundle .* cannot put one on.*service bundle"):
            model.protect(masked, masked)
    with pytest.raises(ValueError, match="not both"):
        IPMN.load(service_bundle=service, receiver_bundle=receiver)


def test_receiver_bundle_with_h_or_w_is_refused(service, receiver, tmp_path):
    with safe_open(str(receiver), framework="pt") as handle:
        header, tensors = dict(handle.metadata()), {k: handle.get_tensor(k) for k in handle.keys()}
    with safe_open(str(service), framework="pt") as handle:
        tensors["watermark"] = handle.get_tensor("watermark")
    save_file(tensors, str(tmp_path / "leaky.safetensors"), metadata=header)
    with pytest.raises(BundleError, match=r"receiver bundle .* must not hold watermark"):
        load_bundle(tmp_path / "leaky.safetensors", "ipmn-receiver")


@pytest.mark.parametrize(
    ("field", "value"), [("threshold", 0.5), ("clean_nc_reference", [0.999] * 50), ("source", "other.ckpt")]
)
def test_an_edited_verifier_header_is_refused(checkpoints, tmp_path, field, value):
    bundle = export_verifier_bundle(checkpoints["phase1"], tmp_path / "v.safetensors", clean_nc_reference=[0.4] * 50)
    assert load_bundle(bundle, "ipmn-verifier").config["threshold"] == 0.95
    tampered = retouch(bundle, tmp_path / "tampered.safetensors", {field: value})
    with pytest.raises(BundleError, match=r"tampered\.safetensors was edited after export.*fingerprint"):
        load_bundle(tampered, "ipmn-verifier")


def test_edited_weights_and_a_missing_fingerprint_are_refused(verifier, tmp_path):
    with safe_open(str(verifier), framework="pt") as handle:
        header, tensors = dict(handle.metadata()), {k: handle.get_tensor(k) for k in handle.keys()}
    key = next(k for k in tensors if k.startswith("extractor."))
    edited = {**tensors, key: tensors[key] + 1e-3}
    save_file(edited, str(tmp_path / "weights.safetensors"), metadata=header)
    with pytest.raises(BundleError, match="edited after export"):
        load_bundle(tmp_path / "weights.safetensors", "ipmn-verifier")
    old = {k: v for k, v in header.items() if k != "fingerprint"}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old)
    with pytest.raises(BundleError, match=r"old\.safetensors has no fingerprint.*re-export it.*ipmn pipeline"):
        load_bundle(tmp_path / "old.safetensors", "ipmn-verifier")
    assert main(["verify", "--bundle", str(tmp_path / "old.safetensors"), "--images", str(tmp_path)]) == 2


def test_verify_reports_the_fingerprint_and_the_calibration(checkpoints, tmp_path, capsys):
    calibration = {"run": "runs/demo", "clean_images": 20, "source": "test split"}
    bundle = export_verifier_bundle(
        checkpoints["phase1"], tmp_path / "v.safetensors", clean_nc_reference=[0.4] * 20, calibration=calibration
    )
    faces, _ = write_faces(tmp_path, n=2)
    assert main(["verify", "--bundle", str(bundle), "--images", str(faces), "--report", "r.json"]) in (0, 1)
    fingerprint = load_bundle(bundle, "ipmn-verifier").fingerprint
    assert fingerprint in capsys.readouterr().err
    report = json.loads(Path("r.json").read_text())
    assert report["bundle_fingerprint"] == fingerprint
    calibration = report["calibration"]
    assert calibration["reference"] == {"run": "runs/demo", "clean_images": 20, "source": "test split", "size": 20}
    assert calibration["threshold"]["value"] == 0.95 and calibration["threshold"]["checkpoint"] == "phase1.ckpt"


def test_service_bundles_still_recover_and_fingerprints_are_stable(checkpoints, tmp_path):
    first = export_service_bundle(checkpoints["phase2"], tmp_path / "a.safetensors")
    second = export_service_bundle(checkpoints["phase2"], tmp_path / "b.safetensors")
    assert load_bundle(first, "ipmn-service").fingerprint == load_bundle(second, "ipmn-service").fingerprint
    assert IPMN.load(service_bundle=first).inn is not None
