"""The service's work on photos: protect, recover and verify, behind one lock, all in memory.

Two modes, chosen when the engine is built:

- ``photo`` (the default): every face of a photo is found (dlib), protected and pasted back into the full photo
  (:mod:`ipmn_lightning.inference.photos`); what recovery needs travels in the PNG's text chunk.
- ``crop``: the upload is an aligned face crop, as in ``ipmn protect``'s folder mode. ``/protect`` centre-crops
  it to a square, makes its mask x_m with the ``landmark`` generator and a donor identity (or takes an uploaded
  mask) and returns x_wmf at the bundle's size; ``/recover`` takes the mask off such an image.

The networks run one request at a time (a lock): torch already uses every core for one image, and a second
concurrent forward pass would only double the memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from ipmn_lightning.core.images import pil_to_tensor, tensor_to_pil
from ipmn_lightning.data.images import fit_image
from ipmn_lightning.inference import photos as _photos
from ipmn_lightning.inference.bundle import RECEIVER_FORMAT, SERVICE_FORMAT, VERIFIER_FORMAT, Bundle, load_bundle
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.serve.limits import HTTPProblem

__all__ = ["MODES", "RECORD_KEY", "ServiceEngine", "bundle_summary"]

#: ``photo``: whole photos, faces found and pasted back; ``crop``: aligned face crops (folder mode).
MODES = ("photo", "crop")

#: The PNG text chunk of a crop-mode protected image: the mode, the bundle's fingerprint and the image size.
RECORD_KEY = "ipmn-serve"
#: Side at which crop mode finds landmarks and makes the mask: dlib needs a face of about 80 px (our default).
_MASK_SIZE = 128


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_summary(bundle: Bundle) -> dict[str, Any]:
    """What ``/health`` says of a bundle: file name, format, version, image size, ipmn version, SHA-256.

    Nothing secret: no weights, no watermark, no threshold-independent data.
    """
    return {
        "file": bundle.path.name,
        "format": bundle.format,
        "format_version": bundle.version,
        "image_size": bundle.image_size,
        "ipmn_version": bundle.config.get("ipmn_version"),
        "sha256": _sha256(bundle.path),
    }


def png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    """``image`` as lossless PNG bytes, with ``text`` as tEXt chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@dataclass
class _Donor:
    """The replacement identity x_r of crop mode: the image ``(3, S, S)`` in [0, 1] and its landmarks."""

    image: torch.Tensor
    landmarks: np.ndarray


class ServiceEngine:
    """The bundles of one service and the three operations on uploaded photos.

    Args:
        service: ``service.safetensors`` (H, the INN, w): ``/protect``.
        receiver: the receiver's bundle (``receiver.safetensors``: the INN only; a service bundle works too):
            ``/recover``.
        verifier: ``verifier.safetensors`` (R, w, threshold): ``/verify``.
        device: where the networks run.
        donor: the donor face file (the identity put on every face); ``None``: a built-in synthetic face (no
            download, no real person).
        mode: ``photo`` or ``crop`` (see the module docstring).
        work_dir: the only folder the engine may write to (photo mode's temporary PNGs); nothing else is written.

    Raises:
        ipmn_lightning.inference.bundle.BundleError: a bundle is missing, corrupt or of the wrong kind.
    """

    def __init__(
        self,
        service: str | os.PathLike[str],
        receiver: str | os.PathLike[str],
        verifier: str | os.PathLike[str],
        device: str = "cpu",
        donor: str | os.PathLike[str] | None = None,
        work_dir: str | os.PathLike[str] = ".",
        mode: str = "photo",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        service_bundle = load_bundle(service, SERVICE_FORMAT)
        receiver_bundle = load_bundle(receiver, (RECEIVER_FORMAT, SERVICE_FORMAT))
        verifier_bundle = load_bundle(verifier, VERIFIER_FORMAT)
        self.sender = IPMN(service_bundle, device=device)
        self.receiver = IPMN(receiver_bundle, device=device)
        self.verifier = IPMN(verifier=verifier_bundle, device=device)
        self.image_size = self.sender.image_size
        self.mode = mode
        self.summary = {
            "service": bundle_summary(service_bundle),
            "receiver": bundle_summary(receiver_bundle),
            "verifier": bundle_summary(verifier_bundle),
        }
        self.work_dir = Path(work_dir)
        self._donor_file = None if donor is None else Path(donor)
        self._donor: _Donor | None = None
        self._generator: Any = None
        self._donor_image: Image.Image | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------- crop mode
    def _mask_generator(self) -> Any:
        """The ``landmark`` generator, built on first use (dlib and OpenCV: the ``faces`` extra)."""
        if self._generator is None:
            from ipmn_lightning.faces.analysis import DlibFaceAnalyzer, FacesExtraMissingError
            from ipmn_lightning.faces.generators import make_mask_generator

            try:
                self._generator = make_mask_generator("landmark", analyzer=DlibFaceAnalyzer())
            except FacesExtraMissingError as err:
                raise HTTPProblem(
                    501, f"making the mask needs the faces extra (pip install 'ipmn-lightning[faces]'): {err}"
                ) from err
        return self._generator

    def _donor_face(self) -> _Donor:
        """Crop mode's x_r at :data:`_MASK_SIZE` with its landmarks, found once."""
        if self._donor is not None:
            return self._donor
        generator = self._mask_generator()
        if self._donor_file is not None:
            with Image.open(self._donor_file) as img:
                candidates = [pil_to_tensor(fit_image(img, _MASK_SIZE))]
        else:
            from ipmn_lightning.data.synthetic import render_face, sample_identity, sample_scene

            rngs = (np.random.default_rng(seed) for seed in range(32))
            candidates = (render_face(sample_identity(r), sample_scene(r), _MASK_SIZE) for r in rngs)
        for face in candidates:
            marks = generator.landmarks((face.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            if marks is not None:
                self._donor = _Donor(face, np.asarray(marks, np.float64))
                return self._donor
        raise HTTPProblem(500, "no face found in the donor image; pass another --donor")

    def _make_mask(self, face: torch.Tensor) -> torch.Tensor:
        donor = self._donor_face()
        outcome = self._mask_generator().generate(face[None], donor.image[None], None, [donor.landmarks])[0]
        if outcome.mask is None:
            raise HTTPProblem(422, f"{outcome.reason} (crop mode takes an aligned face crop, or send a mask)")
        return outcome.mask

    def _record(self) -> dict[str, str]:
        record = {"mode": "crop", "service_sha256": self.summary["service"]["sha256"], "size": self.image_size}
        return {RECORD_KEY: json.dumps(record, sort_keys=True)}

    # -------------------------------------------------------------- the roles
    def protect(self, photo: Image.Image, mask: Image.Image | None = None) -> bytes:
        """Sender: the protected photo as PNG bytes.

        Args:
            photo: the upright RGB photo (photo mode) or aligned face crop (crop mode).
            mask: crop mode only: the face's mask x_m; ``None`` makes it with the ``landmark`` generator.

        Raises:
            HTTPProblem: 422 when no face is found, 501 when the mask cannot be made here.
        """
        with self._lock:
            if self.mode == "photo":
                generator = self._mask_generator()  # dlib's analyzer and the generator, built once
                if self._donor_image is None and self._donor_file is not None:
                    with Image.open(self._donor_file) as img:
                        self._donor_image = img.convert("RGB")
                try:
                    image, record = _photos.protect_photo(
                        photo, self.sender, donor=self._donor_image, analyzer=generator.analyzer, generator=generator
                    )
                except _photos.NoFaceError as err:
                    raise HTTPProblem(422, str(err)) from err
                buffer = io.BytesIO()
                _photos.save_protected_png(buffer, image, record)
                return buffer.getvalue()
            # PIL images into the facade: it resizes them to the bundle's size with Lanczos, as files are read
            face = fit_image(photo, _MASK_SIZE)
            x_m = mask if mask is not None else tensor_to_pil(self._make_mask(pil_to_tensor(face)))
            return png_bytes(self.sender.protect(face, x_m), self._record())

    def recover(self, protected: Image.Image) -> bytes:
        """Receiver: the recovered photo (or face, crop mode) as PNG bytes, z seeded for reproducible answers."""
        with self._lock:
            if self.mode == "photo":
                try:
                    return png_bytes(_photos.recover_photo(protected, self.receiver))
                except _photos.PhotoRecordError as err:
                    raise HTTPProblem(400, str(err)) from err
            face, _ = self.receiver.recover(protected, seed=0)
            return png_bytes(face)

    def verify(self, image: Image.Image) -> dict[str, Any]:
        """IP verifier: R's NC, the threshold and the verdict ``NC > threshold`` (paper §4).

        A photo with a photo record is judged on each protected region's aligned crop (``regions``; the photo
        verifies when every region does, and ``nc`` is the lowest); any other image as a whole.
        """
        record = _photos.read_photo_record(image) if self.mode == "photo" else None
        with self._lock:
            if record is None or not record.regions:
                verdict = self.verifier.verify(image)
                return {"nc": verdict.nc, "threshold": verdict.threshold, "verified": verdict.verified}
            verdicts = self.verifier.verify(_photos.region_crops(image, record, self.verifier.image_size))
        regions = [{"box": list(r.box), "nc": v.nc, "verified": v.verified} for r, v in zip(record.regions, verdicts)]
        return {
            "nc": min(v.nc for v in verdicts),
            "threshold": verdicts[0].threshold,
            "verified": all(v.verified for v in verdicts),
            "regions": regions,
        }
