"""Checks of a bundle's header and tensors before any network is built, and the bundle's fingerprint.

The fingerprint is a SHA-256 over the format, the format version, the canonical JSON of the config (keys
sorted, no spaces) and every tensor (name, dtype, shape, bytes; in name order): ``sha256:<64 hex digits>`` in
the header's ``fingerprint`` field, which is itself left out. ``load_bundle`` recomputes it, so an edited
threshold, reference or weight is refused. It is a plain hash, not a signature: whoever can write the file can
also write a matching fingerprint, so it proves integrity only against a fingerprint recorded elsewhere (the
pipeline's ``manifest.json``, the owner's records); every role command prints the one it used.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.phases import WATERMARK_POSITIONS

__all__ = [
    "NETWORKS",
    "RECEIVER_FORMAT",
    "ROLE",
    "SERVICE_FORMAT",
    "VERIFIER_FORMAT",
    "BundleError",
    "check_config",
    "check_tensor_names",
    "compute_fingerprint",
]  # fmt: skip

SERVICE_FORMAT = "ipmn-service"
RECEIVER_FORMAT = "ipmn-receiver"
VERIFIER_FORMAT = "ipmn-verifier"
#: The networks each kind of bundle holds; the watermark w is held by the service and verifier bundles only.
NETWORKS = {SERVICE_FORMAT: ("embedder", "inn"), RECEIVER_FORMAT: ("inn",), VERIFIER_FORMAT: ("extractor",)}
ROLE = {
    SERVICE_FORMAT: "service bundle (H, the INN and w)",
    RECEIVER_FORMAT: "receiver bundle (the INN only)",
    VERIFIER_FORMAT: "verifier bundle (R and the watermark)",
}


class BundleError(IPMNError):
    """A bundle file is missing, unreadable, of the other kind, of an unsupported version, incomplete or edited."""


def compute_fingerprint(fmt: str, version: int, config: dict[str, Any], tensors: dict[str, Tensor]) -> str:
    """``sha256:<hex>`` over the format, version, canonical config JSON and every tensor (module docstring)."""
    digest = hashlib.sha256()
    canonical = json.dumps({"format": fmt, "format_version": int(version), "config": config},
                           sort_keys=True, separators=(",", ":"))  # fmt: skip
    digest.update(canonical.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        # dtype and shape fix the byte count that follows, so no two tensor sets hash the same bytes
        digest.update(f"\n{name}\0{tensor.dtype}\0{list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def check_tensor_names(file: Path, fmt: str, tensors: dict[str, Tensor]) -> None:
    """Refuse tensors a bundle of this kind must not hold (a receiver bundle with H or w: least privilege)."""
    allowed = set(NETWORKS[fmt])
    extra = sorted(k for k in tensors if k != "watermark" and k.split(".", 1)[0] not in allowed)
    if fmt == RECEIVER_FORMAT and "watermark" in tensors:
        extra.insert(0, "watermark")
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise BundleError(f"{file}: a {ROLE[fmt]} must not hold {shown}; re-export the bundle")


#: Ranges of the header fields (inclusive): wide enough for any real network, small enough that a damaged or
#: hostile header cannot make the loader allocate until the machine runs out of memory.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "image_size": (8, 4096),
    "embedder.image_size": (8, 4096),
    "embedder.ngf": (1, 512),
    "inn.num_blocks": (1, 64),
    "inn.growth": (1, 1024),
    "extractor.channels": (1, 1024),
}
_MAX_REFERENCE = 1_000_000


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _audit_null_ok(null: Any) -> bool:
    """The verifier's ``audit_null``: at least two null models' NC lists and the genuine NCs, all in [-1, 1]."""

    def ncs(values: Any) -> bool:
        return (
            isinstance(values, list)
            and len(values) <= _MAX_REFERENCE
            and all(_is_real(v) and -1 <= v <= 1 for v in values)
        )

    if not isinstance(null, dict) or not isinstance(null.get("models"), dict) or len(null["models"]) < 2:
        return False
    return all(ncs(v) and v for v in null["models"].values()) and ncs(null.get("genuine", []))


def check_config(file: Path, fmt: str, config: Any, tensors: dict[str, Tensor]) -> None:
    """Check the types and ranges of the header fields before any network is built (BundleError otherwise)."""

    def bad(name: str, value: Any, expected: str) -> BundleError:
        return BundleError(f"{file}: header field {name!r} is {value!r}, expected {expected}; re-export the bundle")

    if not isinstance(config, dict):
        raise BundleError(f"{file}: damaged bundle header (config is not a JSON object)")
    for kind in NETWORKS[fmt]:
        if not isinstance(config.get(kind), dict):
            raise BundleError(f"{file}: the header has no {kind!r} config; re-export the bundle")
    for name, (low, high) in _INT_RANGES.items():
        kind, _, key = name.rpartition(".")
        section = config.get(kind) if kind else config
        if kind and kind not in NETWORKS[fmt]:
            continue
        value = section.get(key) if isinstance(section, dict) else None
        if not _is_int(value) or not low <= value <= high:
            raise bad(name, value, f"an integer in [{low}, {high}]")
    if "embedder" in config:
        embedder = config["embedder"]
        if embedder["image_size"] != config["image_size"]:
            raise bad("embedder.image_size", embedder["image_size"], f"the bundle's image_size {config['image_size']}")
        if embedder.get("num_downs") is not None and not (
            _is_int(embedder["num_downs"]) and 1 <= embedder["num_downs"] <= 12
        ):
            raise bad("embedder.num_downs", embedder["num_downs"], "null or an integer in [1, 12]")
        if not isinstance(embedder.get("residual", False), bool):
            raise bad("embedder.residual", embedder["residual"], "true or false")
    if config.get("position", "mask") not in WATERMARK_POSITIONS:
        raise bad("position", config["position"], f"one of {list(WATERMARK_POSITIONS)}")
    if "inn" in config:
        clamp = config["inn"].get("clamp")
        if not _is_real(clamp) or not 0 < clamp <= 100:
            raise bad("inn.clamp", clamp, "a finite number in (0, 100]")
        if not isinstance(config["inn"].get("wavelet", "haar"), str):
            raise bad("inn.wavelet", config["inn"]["wavelet"], "a string")
    if "extractor" in config:
        dilations = config["extractor"].get("dilations")
        if (
            not isinstance(dilations, list)
            or not 1 <= len(dilations) <= 32
            or not all(_is_int(d) and 1 <= d <= 64 for d in dilations)
        ):
            raise bad("extractor.dilations", dilations, "a list of 1 to 32 integers in [1, 64]")
    if not isinstance(config.get("calibration", {}), dict):
        raise bad("calibration", config["calibration"], "a JSON object (where the threshold and reference came from)")
    if fmt == VERIFIER_FORMAT:
        threshold = config.get("threshold")
        if not _is_real(threshold) or not 0 < threshold < 1:
            raise bad("threshold", threshold, "a number in (0, 1) (NC above it verifies)")
        reference = config.get("clean_nc_reference")
        if reference is not None and (
            not isinstance(reference, list)
            or len(reference) > _MAX_REFERENCE
            or not all(_is_real(v) and -1 <= v <= 1 for v in reference)
        ):
            raise bad("clean_nc_reference", "[...]" if isinstance(reference, list) else reference,
                      f"null or a list of at most {_MAX_REFERENCE} NCs in [-1, 1]")  # fmt: skip
        null = config.get("audit_null")
        if null is not None and not _audit_null_ok(null):
            raise bad("audit_null", "{...}" if isinstance(null, dict) else null,
                      "null or {source, models: {name: [NC, ...]} (at least 2), genuine: [NC, ...]}")  # fmt: skip
    size = config["image_size"]
    watermark = tensors.get("watermark")
    if watermark is not None and (tuple(watermark.shape) != (3, size, size) or not watermark.is_floating_point()):
        raise BundleError(
            f"{file}: the watermark tensor is {tuple(watermark.shape)} {watermark.dtype}, but the header's "
            f"image_size {size} needs a (3, {size}, {size}) float tensor; re-export the bundle"
        )
