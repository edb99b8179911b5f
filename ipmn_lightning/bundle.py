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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from . import __version__
from .metrics import NC_THRESHOLD
from .modules.base import CheckpointError, load_phase_checkpoint
from .modules.blackbox import PHASE1, build, extractor_config, load_phase2
from .utils import atomic_path

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
ENHANCE_PHASE = "extractor_enhance"
BundleFormat = Literal["ipmn-service", "ipmn-verifier"]
_NETWORKS = {SERVICE_FORMAT: ("embedder", "inn"), VERIFIER_FORMAT: ("extractor",)}
_ROLE = {
    SERVICE_FORMAT: "service bundle (H and the INN)",
    VERIFIER_FORMAT: "verifier bundle (R and the watermark)",
}


class BundleError(ValueError):
    """A bundle file is missing, unreadable, of the other kind, of an unsupported version or incomplete."""


@dataclass
class Bundle:
    """A loaded bundle.

    Attributes:
        path: the file it was read from.
        format: ``ipmn-service`` or ``ipmn-verifier``.
        version: the format version.
        config: the JSON header: ``image_size``, the networks' configs (``embedder``/``inn`` or
            ``extractor``), ``threshold`` (verifier), ``ipmn_version``, ``source`` (checkpoint it came from).
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
    from safetensors.torch import save_file

    header = {"format": fmt, "format_version": str(FORMAT_VERSION),
              "config": json.dumps({**config, "ipmn_version": __version__}, sort_keys=True)}  # fmt: skip
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return target


def export_service_bundle(phase2_ckpt: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Write the service bundle (H, the INN, w, image size) of a phase-2 checkpoint.

    Args:
        phase2_ckpt: a phase-2 (``InvertibleMaskModule``) checkpoint.
        path: the ``.safetensors`` file to write (atomically).

    Returns:
        ``path``.
    """
    configs, state = load_phase2(str(phase2_ckpt))
    size = int(configs["embedder"]["image_size"])
    config = {**configs, "image_size": size, "source": Path(phase2_ckpt).name}
    return _write(path, SERVICE_FORMAT, config, _tensors(state, ("embedder", "inn")))


def _extractor_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Tensor], float]:
    """R's config, the state dict and the NC threshold of a phase-1 or an extractor-enhancement checkpoint."""
    try:
        checkpoint = load_phase_checkpoint(path, "extractor_ckpt", PHASE1)
        hparams = checkpoint["hyper_parameters"]
        threshold = float(hparams.get("nc_threshold", NC_THRESHOLD))
        return extractor_config(hparams), checkpoint["state_dict"], threshold
    except CheckpointError as err:
        if "is a checkpoint of phase" in str(err) and repr(ENHANCE_PHASE) not in str(err):
            hint = "a verifier bundle takes a phase-1 or an extractor-enhancement checkpoint"
            raise CheckpointError(f"{err}; {hint}") from err
        if repr(ENHANCE_PHASE) not in str(err):
            raise
    checkpoint = load_phase_checkpoint(path, "extractor_ckpt", ENHANCE_PHASE)
    frozen = checkpoint.get("ipmn_frozen") or {}
    if "extractor" not in frozen:
        raise CheckpointError(f"extractor_ckpt: {path} does not record its extractor; re-save it")
    return frozen["extractor"], checkpoint["state_dict"], NC_THRESHOLD


def export_verifier_bundle(
    extractor_ckpt: str | os.PathLike[str], path: str | os.PathLike[str], threshold: float | None = None
) -> Path:
    """Write the verifier bundle (R, w, NC threshold) of an extractor checkpoint.

    Args:
        extractor_ckpt: the extractor-enhancement (phase 3b) checkpoint when there is one, else phase 1.
        path: the ``.safetensors`` file to write (atomically).
        threshold: NC above which an image verifies; default: phase 1's ``nc_threshold`` (0.95, paper §4).

    Returns:
        ``path``.
    """
    extractor, state, default_threshold = _extractor_checkpoint(str(extractor_ckpt))
    config = {
        "extractor": {**extractor, "dilations": list(extractor["dilations"])},
        "image_size": int(state["watermark"].shape[-1]),
        "threshold": float(default_threshold if threshold is None else threshold),
        "source": Path(extractor_ckpt).name,
    }
    return _write(path, VERIFIER_FORMAT, config, _tensors(state, ("extractor",)))


def load_bundle(path: str | os.PathLike[str], expected_format: BundleFormat) -> Bundle:
    """Read and check a bundle; never runs code from the file.

    Args:
        path: the ``.safetensors`` bundle.
        expected_format: ``ipmn-service`` or ``ipmn-verifier``.

    Returns:
        The bundle, with every tensor on the CPU.

    Raises:
        BundleError: missing file, not a safetensors file (or corrupt), not an IPMN bundle, the other kind of
            bundle, an unsupported format version, or missing/mismatched tensors; the message names the file.
    """
    from safetensors import safe_open

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
    bundle = Bundle(file, fmt, version, config, tensors)
    missing = [] if "watermark" in tensors else ["watermark"]
    for kind in _NETWORKS[fmt]:
        if kind not in config:
            raise BundleError(f"{file}: the header has no {kind!r} config; re-export the bundle")
        expected = build(kind, config[kind]).state_dict()
        missing += [f"{kind}.{k}" for k in expected if f"{kind}.{k}" not in tensors]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise BundleError(f"{file} is incomplete: missing tensors {shown}; re-export the bundle")
    return bundle
