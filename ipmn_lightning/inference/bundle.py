"""Deployable artifacts of a trained IPMN: the service, receiver and verifier bundles.

Each is a safetensors file (tensors plus a string-to-string header), so loading one never runs code, and each
gives its holder only what the role needs (least privilege; who holds which: docs/security.md):

- **service bundle** (``format: "ipmn-service"``): what the operator of the privacy service runs: the
  sender's H (``embedder.*``), the INN (``inn.*``) that puts the mask on and the watermark ``w``
  (``watermark``): H computes x_wm = H(x_m, w) and cannot embed without it. Whoever holds it can watermark any
  image, so it stays with the operator.
- **receiver bundle** (``format: "ipmn-receiver"``): what a receiver needs to take the mask off: the INN
  (``inn.*``) and its settings; no tensor of H and no w.
- **verifier bundle** (``format: "ipmn-verifier"``): what the owner keeps: R (``extractor.*``), w, the NC
  threshold of the verdict, the reference NCs of clean images and ``calibration``, where the threshold and the
  reference came from (the run, the number and source of the clean images).

The header holds ``format``, ``format_version``, ``config`` (a JSON object with the networks' constructor
arguments, the image size and the ipmn version that wrote the file) and ``fingerprint``, a SHA-256 over all
of it and the tensors, recomputed on every load (:mod:`ipmn_lightning.inference.bundle_checks`).
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
from ipmn_lightning.core.files import atomic_path
from ipmn_lightning.inference.bundle_checks import (
    NETWORKS,
    RECEIVER_FORMAT,
    ROLE,
    SERVICE_FORMAT,
    VERIFIER_FORMAT,
    BundleError,
    check_config,
    check_tensor_names,
    compute_fingerprint,
)
from ipmn_lightning.metrics.functional import NC_THRESHOLD
from ipmn_lightning.phases import (
    PHASE1,
    PHASE3_ENHANCE,
    PHASE_KEY,
    CheckpointError,
    build,
    extractor_config,
    load_phase2,
    load_phase_checkpoint,
)

__all__ = [
    "FORMAT_VERSION",
    "RECEIVER_FORMAT",
    "SERVICE_FORMAT",
    "VERIFIER_FORMAT",
    "Bundle",
    "BundleError",
    "export_receiver_bundle",
    "export_service_bundle",
    "export_verifier_bundle",
    "load_bundle",
]

FORMAT_VERSION = 1
BundleFormat = Literal["ipmn-service", "ipmn-receiver", "ipmn-verifier"]


@dataclass
class Bundle:
    """A loaded bundle.

    Attributes:
        path: the file it was read from.
        format: ``ipmn-service``, ``ipmn-receiver`` or ``ipmn-verifier``.
        version: the format version.
        config: the JSON header: ``image_size``, the networks' configs (``embedder``/``inn`` or
            ``extractor``), ``threshold`` (verifier), optional ``clean_nc_reference`` (verifier: R's NCs on
            clean images), optional ``calibration`` (verifier: where the threshold and reference came from),
            ``ipmn_version``, ``source`` (checkpoint it came from).
        tensors: every tensor, keyed by its name (``embedder.*``, ``inn.*``, ``extractor.*``, ``watermark``).
        fingerprint: ``sha256:<hex>`` of the header and tensors, as checked on loading.
    """

    path: Path
    format: str
    version: int
    config: dict[str, Any]
    tensors: dict[str, Tensor] = field(repr=False)
    fingerprint: str = ""

    @property
    def role(self) -> str:
        """What the bundle is, in words (``service bundle (H, the INN and w)``, ...)."""
        return ROLE[self.format]

    @property
    def image_size(self) -> int:
        """Side of the square images the networks were trained on."""
        return int(self.config["image_size"])

    @property
    def watermark(self) -> Tensor:
        """The watermark w, (3, S, S) float in [0, 1]; a receiver bundle has none."""
        if "watermark" not in self.tensors:
            raise BundleError(f"{self.path} is a {self.role}: it holds no watermark")
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
    # the fingerprint is computed over the config as it will be read back (JSON round trip: tuples -> lists)
    config = json.loads(json.dumps({**config, "ipmn_version": __version__}, sort_keys=True))
    header = {"format": fmt, "format_version": str(FORMAT_VERSION), "config": json.dumps(config, sort_keys=True),
              "fingerprint": compute_fingerprint(fmt, FORMAT_VERSION, config, tensors)}  # fmt: skip
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


def export_receiver_bundle(phase2_ckpt: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Write the receiver bundle of a phase-2 checkpoint: the INN and its settings only (no H, no w).

    Taking the mask off (``IPMN.recover``) runs the INN's put-off alone, so a receiver needs nothing else; H and
    w, which can put the owner's watermark on any image, stay in the operator's service bundle.

    Args:
        phase2_ckpt: a phase-2 (``InvertibleMaskModule``) checkpoint.
        path: the ``.safetensors`` file to write (atomically).

    Returns:
        ``path``.
    """
    configs, state = load_phase2(str(phase2_ckpt))
    _refuse_baseline(configs["embedder"], phase2_ckpt)
    config = {"inn": configs["inn"], "image_size": int(configs["embedder"]["image_size"]),
              "source": Path(phase2_ckpt).name}  # fmt: skip
    tensors = {k: v for k, v in _tensors(state, ("inn",)).items() if k != "watermark"}
    return _write(path, RECEIVER_FORMAT, config, tensors)


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
    calibration: dict[str, Any] | None = None,
    audit_null: dict[str, Any] | None = None,
) -> Path:
    """Write the verifier bundle (R, w, NC threshold) of an extractor checkpoint.

    Args:
        extractor_ckpt: the extractor-enhancement (phase 3b) checkpoint when there is one, else phase 1.
        path: the ``.safetensors`` file to write (atomically).
        threshold: NC above which an image verifies; default: phase 1's ``nc_threshold`` (0.95, paper §4).
        clean_nc_reference: NCs this R gives on clean images (no watermark), stored in the header so that
            ``ipmn verify`` can turn observed NCs into p-values; ``None``: no reference.
        calibration: where the reference came from (e.g. ``run``, ``clean_images``, ``source``), recorded
            with the threshold's origin under ``calibration`` so that a report can say what its verdict rests on.
        audit_null: what ``ipmn audit`` needs of the null models when the owner passes no ``--null``:
            ``{"source": str, "models": {name: [NC, ...]}, "genuine": [NC, ...]}``, the NCs this R gives on
            the answers of at least two independent null models (and of the genuine service) to the run's
            validation queries.

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
    if audit_null is not None:
        models = audit_null.get("models") or {}
        lists = [*models.values(), audit_null.get("genuine") or []]
        if len(models) < 2 or not all(math.isfinite(float(v)) and -1 <= v <= 1 for one in lists for v in one):
            raise ValueError("export_verifier_bundle: audit_null needs >= 2 null models of finite NCs in [-1, 1]")
        config["audit_null"] = {
            "source": str(audit_null.get("source", "")),
            "models": {str(k): [float(v) for v in one] for k, one in models.items()},
            "genuine": [float(v) for v in audit_null.get("genuine") or []],
        }
    origin = "export argument" if threshold != default_threshold else "the checkpoint's nc_threshold (paper §4: 0.95)"
    config["calibration"] = {
        "threshold": {"value": threshold, "from": origin, "checkpoint": Path(extractor_ckpt).name},
        "reference": None if clean_nc_reference is None else {**(calibration or {}), "size": len(reference)},
    }
    return _write(path, VERIFIER_FORMAT, config, _tensors(state, ("extractor",)))


def load_bundle(path: str | os.PathLike[str], expected_format: BundleFormat | tuple[BundleFormat, ...]) -> Bundle:
    """Read and check a bundle; never runs code from the file.

    Args:
        path: the ``.safetensors`` bundle.
        expected_format: ``ipmn-service``, ``ipmn-receiver`` or ``ipmn-verifier``, or a tuple of those accepted.

    Returns:
        The bundle, with every tensor on the CPU.

    Raises:
        BundleError: missing file, not a safetensors file (or corrupt), not an IPMN bundle, the other kind of
            bundle, an unsupported format version, a header field of the wrong type or out of range
            (``threshold`` in (0, 1), ``image_size`` in [8, 4096], ...), missing/mismatched tensors, tensors the
            kind must not hold (H or w in a receiver bundle), no fingerprint (written before bundles carried
            one: re-export) or a fingerprint that does not match the content (edited); the message names the
            file and the field.
    """
    file = Path(path).expanduser()
    accepted = (expected_format,) if isinstance(expected_format, str) else tuple(expected_format)
    want = " or a ".join(ROLE[f] for f in accepted)
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
    if fmt not in ROLE:
        raise BundleError(f"{file} is a safetensors file but not an IPMN bundle (header format {fmt!r})")
    if fmt not in accepted:
        raise BundleError(f"{file} is a {ROLE[fmt]}, but a {want} is needed here; pass the other file")
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
    check_config(file, fmt, config, tensors)
    check_tensor_names(file, fmt, tensors)
    missing = [] if "watermark" in tensors or fmt == RECEIVER_FORMAT else ["watermark"]
    wrong = []
    for kind in NETWORKS[fmt]:
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
    fingerprint = _check_fingerprint(file, fmt, version, config, tensors, header.get("fingerprint"))
    return Bundle(file, fmt, version, config, tensors, fingerprint)


def _check_fingerprint(
    file: Path, fmt: str, version: int, config: dict[str, Any], tensors: dict[str, Tensor], stored: str | None
) -> str:
    """The bundle's fingerprint, after checking that it matches the content (last: the clearest errors first).

    A bundle without one is refused rather than loaded with a warning: nothing was released before
    fingerprints, re-exporting costs seconds, and a loader that accepted unfingerprinted files would let
    anyone edit a bundle by deleting its fingerprint.
    """
    if not stored:
        raise BundleError(
            f"{file} has no fingerprint (written by ipmn-lightning {config.get('ipmn_version', '?')}, before bundles "
            "carried one); re-export it: run `ipmn pipeline` again on its output folder (finished phases are "
            "skipped, the bundles rewritten) or call export_service_bundle/export_receiver_bundle/"
            "export_verifier_bundle on its checkpoint"
        )
    actual = compute_fingerprint(fmt, version, config, tensors)
    if stored != actual:
        raise BundleError(
            f"{file} was edited after export: its header says fingerprint {stored} but its content (header and "
            f"tensors) hashes to {actual}; a changed threshold, reference or weight is refused. Use the bundle as "
            "exported (re-export it from its checkpoint)"
        )
    return actual
