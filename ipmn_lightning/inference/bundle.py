"""Deployable artifacts of a trained IPMN: the service bundle and the verifier bundle.

Both are safetensors files (tensors plus a string-to-string header), so loading one never runs code:

- **service bundle** (``format: "ipmn-service"``): what a buyer of the privacy service receives, i.e. the
  sender's H (``embedder.*``) and the INN (``inn.*``) that puts the mask on and takes it off. It also holds
  the watermark ``w`` (``watermark``): H computes x_wm = H(x_m, w) and cannot embed without it. Shipping w
  does not weaken the IP check, which rests on the owner's extractor R (kept in the verifier bundle): a
  buyer holding w but not R cannot tell which images R accepts.
- **verifier bundle** (``format: "ipmn-verifier"``): what the owner keeps: R (``extractor.*``), w and the
  NC threshold of the verdict.

The header holds ``format``, ``format_version`` and ``config``, a JSON object with the networks' constructor
arguments, the image size and the ipmn version that wrote the file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ipmn_lightning import __version__
from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.core.files import atomic_path
from ipmn_lightning.metrics.functional import NC_THRESHOLD
from ipmn_lightning.phases import (
    PHASE1,
    PHASE3_ENHANCE,
    PHASE_KEY,
    WATERMARK_POSITIONS,
    CheckpointError,
    build,
    extractor_config,
    load_phase2,
    load_phase_checkpoint,
)

__all__ = [
    "FORMAT_VERSION",
    "SERVICE_FORMAT",
    "VERIFIER_FORMAT",
    "Bundle",
    "BundleError",
    "export_service_bundle",
    "export_verifier_bundle",
    "load_bundle",
]

SERVICE_FORMAT = "ipmn-service"
VERIFIER_FORMAT = "ipmn-verifier"
FORMAT_VERSION = 1
BundleFormat = Literal["ipmn-service", "ipmn-verifier"]
_NETWORKS = {SERVICE_FORMAT: ("embedder", "inn"), VERIFIER_FORMAT: ("extractor",)}
_ROLE = {
    SERVICE_FORMAT: "service bundle (H and the INN)",
    VERIFIER_FORMAT: "verifier bundle (R and the watermark)",
}


class BundleError(IPMNError):
    """A bundle file is missing, unreadable, of the other kind, of an unsupported version or incomplete."""


@dataclass
class Bundle:
    """A loaded bundle.

    Attributes:
        path: the file it was read from.
        format: ``ipmn-service`` or ``ipmn-verifier``.
        version: the format version.
        config: the JSON header: ``image_size``, the networks' configs (``embedder``/``inn`` or
            ``extractor``), ``threshold`` (verifier), optional ``clean_nc_reference`` (verifier: R's NCs on
            clean images), ``ipmn_version``, ``source`` (checkpoint it came from).
        tensors: every tensor, keyed by its name (``embedder.*``, ``inn.*``, ``extractor.*``, ``watermark``).
    """

    path: Path
    format: str
    version: int
    config: dict[str, Any]
    tensors: dict[str, Tensor] = field(repr=False)

    @property
    def image_size(self) -> int:
        """Side of the square images the networks were trained on."""
        return int(self.config["image_size"])

    @property
    def watermark(self) -> Tensor:
        """The watermark w, (3, S, S) float in [0, 1]."""
        return self.tensors["watermark"]

    def network(self, kind: str) -> nn.Module:
        """Build network ``kind`` (``embedder``, ``inn``, ``extractor``) with its weights, in eval mode."""
        module = build(kind, self.config[kind])
        state = {k[len(kind) + 1 :]: v for k, v in self.tensors.items() if k.startswith(kind + ".")}
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise BundleError(f"{self.path}: the {kind!r} weights do not fit its config: {err}") from err
        return module.eval().requires_grad_(False)


def _tensors(state_dict: dict[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    # safetensors needs contiguous tensors that share no memory
    return {
        k: v.detach().to("cpu").contiguous().clone()
        for k, v in state_dict.items()
        if k == "watermark" or k.split(".", 1)[0] in prefixes
    }


def _write(path: str | os.PathLike, fmt: str, config: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    header = {"format": fmt, "format_version": str(FORMAT_VERSION),
              "config": json.dumps({**config, "ipmn_version": __version__}, sort_keys=True)}  # fmt: skip
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return target


def _refuse_baseline(config: dict[str, Any], checkpoint: str | os.PathLike[str]) -> None:
    """Bundles carry IPMN's networks; a baseline's checkpoint (HiDDeN, ``type`` in its config) has no bundle."""
    if config.get("type") is not None:
        raise BundleError(
            f"{checkpoint} holds the {config['type']!r} baseline of the paper's comparisons, not IPMN's H and R: "
            "it is evaluated from its checkpoints (`ipmn evaluate`) and has no bundle"
        )


def export_service_bundle(phase2_ckpt: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Write the service bundle (H, the INN, w, image size) of a phase-2 checkpoint.

    Args:
        phase2_ckpt: a phase-2 (``InvertibleMaskModule``) checkpoint.
        path: the ``.safetensors`` file to write (atomically).

    Returns:
        ``path``.
    """
    configs, state = load_phase2(str(phase2_ckpt))
    _refuse_baseline(configs["embedder"], phase2_ckpt)
    size = int(configs["embedder"]["image_size"])
    config = {**configs, "image_size": size, "source": Path(phase2_ckpt).name}
    return _write(path, SERVICE_FORMAT, config, _tensors(state, ("embedder", "inn")))


def _extractor_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Tensor], float]:
    """R's config, the state dict and the NC threshold of a phase-1 or an extractor-enhancement checkpoint."""
    try:
        checkpoint = load_phase_checkpoint(path, "extractor_ckpt", (PHASE1, PHASE3_ENHANCE))
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}; a verifier bundle takes a phase-1 or an extractor-enhancement checkpoint"
        ) from err
    if checkpoint[PHASE_KEY] == PHASE1:
        hparams = checkpoint["hyper_parameters"]
        threshold = float(hparams.get("nc_threshold", NC_THRESHOLD))
        return extractor_config(hparams), checkpoint["state_dict"], threshold
    frozen = checkpoint.get("ipmn_frozen") or {}
    if "extractor" not in frozen:
        raise CheckpointError(f"extractor_ckpt: {path} does not record its extractor; re-save it")
    return frozen["extractor"], checkpoint["state_dict"], NC_THRESHOLD


def export_verifier_bundle(
    extractor_ckpt: str | os.PathLike[str],
    path: str | os.PathLike[str],
    threshold: float | None = None,
    clean_nc_reference: Sequence[float] | None = None,
) -> Path:
    """Write the verifier bundle (R, w, NC threshold) of an extractor checkpoint.

    Args:
        extractor_ckpt: the extractor-enhancement (phase 3b) checkpoint when there is one, else phase 1.
        path: the ``.safetensors`` file to write (atomically).
        threshold: NC above which an image verifies; default: phase 1's ``nc_threshold`` (0.95, paper §4).
        clean_nc_reference: NCs this R gives on clean images (no watermark), stored in the header so that
            ``ipmn verify`` can turn observed NCs into p-values; ``None``: no reference.

    Returns:
        ``path``.

    Raises:
        ValueError: ``threshold`` not in (0, 1), or a reference NC that is not a finite number in [-1, 1].
    """
    extractor, state, default_threshold = _extractor_checkpoint(str(extractor_ckpt))
    _refuse_baseline(extractor, extractor_ckpt)
    threshold = float(default_threshold if threshold is None else threshold)
    if not 0 < threshold < 1:
        raise ValueError(f"export_verifier_bundle: threshold must be in (0, 1), got {threshold}")
    config = {
        "extractor": {**extractor, "dilations": list(extractor["dilations"])},
        "image_size": int(state["watermark"].shape[-1]),
        "threshold": threshold,
        "source": Path(extractor_ckpt).name,
    }
    if clean_nc_reference is not None:
        reference = [float(v) for v in clean_nc_reference]
        if not all(math.isfinite(v) and -1 <= v <= 1 for v in reference):
            raise ValueError("export_verifier_bundle: clean_nc_reference must hold finite NCs in [-1, 1]")
        config["clean_nc_reference"] = reference
    return _write(path, VERIFIER_FORMAT, config, _tensors(state, ("extractor",)))


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


def _check_config(file: Path, fmt: str, config: Any, tensors: dict[str, Tensor]) -> None:
    """Check the types and ranges of the header fields before any network is built (BundleError otherwise)."""

    def bad(name: str, value: Any, expected: str) -> BundleError:
        return BundleError(f"{file}: header field {name!r} is {value!r}, expected {expected}; re-export the bundle")

    if not isinstance(config, dict):
        raise BundleError(f"{file}: damaged bundle header (config is not a JSON object)")
    for kind in _NETWORKS[fmt]:
        if not isinstance(config.get(kind), dict):
            raise BundleError(f"{file}: the header has no {kind!r} config; re-export the bundle")
    for name, (low, high) in _INT_RANGES.items():
        kind, _, key = name.rpartition(".")
        section = config.get(kind) if kind else config
        if kind and kind not in _NETWORKS[fmt]:
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
    size = config["image_size"]
    watermark = tensors.get("watermark")
    if watermark is not None and (tuple(watermark.shape) != (3, size, size) or not watermark.is_floating_point()):
        raise BundleError(
            f"{file}: the watermark tensor is {tuple(watermark.shape)} {watermark.dtype}, but the header's "
            f"image_size {size} needs a (3, {size}, {size}) float tensor; re-export the bundle"
        )


def load_bundle(path: str | os.PathLike[str], expected_format: BundleFormat) -> Bundle:
    """Read and check a bundle; never runs code from the file.

    Args:
        path: the ``.safetensors`` bundle.
        expected_format: ``ipmn-service`` or ``ipmn-verifier``.

    Returns:
        The bundle, with every tensor on the CPU.

    Raises:
        BundleError: missing file, not a safetensors file (or corrupt), not an IPMN bundle, the other kind of
            bundle, an unsupported format version, a header field of the wrong type or out of range
            (``threshold`` in (0, 1), ``image_size`` in [8, 4096], ...), or missing/mismatched tensors; the
            message names the file and the field.
    """
    file = Path(path).expanduser()
    want = _ROLE[expected_format]
    if not file.is_file():
        raise BundleError(f"no bundle at {file}: pass the {want} from `ipmn pipeline` (<output>/bundles/)")
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # safetensors raises several types for a bad file
        message = f"{file} is not a readable safetensors file (corrupt or not a bundle): {err}"
        raise BundleError(message) from err
    fmt = header.get("format")
    if fmt not in _ROLE:
        raise BundleError(f"{file} is a safetensors file but not an IPMN bundle (header format {fmt!r})")
    if fmt != expected_format:
        raise BundleError(f"{file} is a {_ROLE[fmt]}, but a {want} is needed here; pass the other file")
    try:
        version = int(header.get("format_version", ""))
        config = json.loads(header["config"])
    except (KeyError, ValueError) as err:
        raise BundleError(f"{file}: damaged bundle header ({err})") from err
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{file} has bundle format version {version}; this ipmn-lightning {__version__} reads version "
            f"{FORMAT_VERSION}; use the ipmn that wrote it ({config.get('ipmn_version', '?')}) or re-export"
        )
    _check_config(file, fmt, config, tensors)
    bundle = Bundle(file, fmt, version, config, tensors)
    missing = [] if "watermark" in tensors else ["watermark"]
    wrong = []
    for kind in _NETWORKS[fmt]:
        try:
            # on the meta device: no memory is allocated, so a header asking for a huge network costs nothing;
            # the real network is built only once its shapes match the tensors actually in the file
            with torch.device("meta"):
                expected = build(kind, config[kind]).state_dict()
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as err:
            raise BundleError(f"{file}: header field {kind!r} is not a valid network config ({err})") from err
        for key, value in expected.items():
            name = f"{kind}.{key}"
            if name not in tensors:
                missing.append(name)
            elif tuple(tensors[name].shape) != tuple(value.shape):
                wrong.append(f"{name} {tuple(tensors[name].shape)} (the header's {kind!r} needs {tuple(value.shape)})")
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise BundleError(f"{file} is incomplete: missing tensors {shown}; re-export the bundle")
    if wrong:
        shown = ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        raise BundleError(f"{file}: tensors do not fit the header's network config: {shown}; re-export the bundle")
    return bundle
