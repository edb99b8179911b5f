"""Photo mode: protect every face of a whole photo, and give the whole photo back to an authorised receiver.

The sender's side of paper §3.1 (Fig. 1) on a photo as people take it, not on an aligned crop:

1. every face is found (dlib's detector and 68 landmarks, :class:`~ipmn_lightning.faces.analysis.DlibFaceAnalyzer`);
2. it is aligned by a similarity onto the template of :mod:`ipmn_lightning.faces.align` and cropped at its own
   resolution (``size="auto"``, our default: a multiple of the bundle's size up to 256 px; H and the INN are
   fully convolutional, w is resized), or at a fixed ``size``;
3. its mask x_m is made on the fly by the built-in ``landmark`` generator with a donor identity (``donor``: a
   face image or a :class:`~ipmn_lightning.inference.donors.DonorPicker`; by default the built-in synthetic
   donor, :func:`default_donor`);
4. the crop is protected by the service bundle (x_wmf = f(x_p, H(x_m, w))) and pasted back into the
   full-resolution photo: the upsampled x_wmf replaces the face (``paste="replace"``, our default), or only
   what changed, ``x_wmf - x_p``, is added (``paste="residual"``: the photo's own detail, and part of the
   identity, stays). Either way with a feathered edge inside the crop's footprint: every pixel outside the
   face boxes is bit-identical to the input. ``benchmarks/photos_in_the_wild.py`` measured the choices.

What recovery needs (the boxes, the alignments, the crop size, the bundle's fingerprint) is a
:class:`PhotoRecord`, saved as a PNG text chunk by :func:`save_protected_png`. :func:`recover_photo` takes each
region off in reverse order: it warps the protected crop out, runs the INN's put-off and adds what the recovery
changed (``x'_p - x_wmf``) back into the photo, so pixels outside the boxes stay bit-identical again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ipmn_lightning.core.images import rgb_image
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.inference.photo_record import (
    PHOTO_RECORD_KEY,
    FaceRegion,
    NoFaceError,
    PhotoRecord,
    PhotoRecordError,
    read_photo_record,
    save_protected_png,
)
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.phases import put_on_mask

__all__ = [
    "PHOTO_RECORD_KEY",
    "FaceRegion",
    "NoFaceError",
    "PhotoRecord",
    "PhotoRecordError",
    "bundle_fingerprint",
    "default_donor",
    "find_faces",
    "protect_photo",
    "read_photo",
    "read_photo_record",
    "recover_photo",
    "region_crops",
    "save_protected_png",
]

#: Masks are made on crops of at least this side: dlib's landmarks and the face swap need the pixels (the
#: pipeline makes its masks at 128 px too), the mask is then resized to the processing size.
MASK_MIN_SIZE = 128
#: Detection runs on a copy whose longer side is at most this (dlib's HOG detector costs ~ the pixel count;
#: a face of 80 px in a 2000-px photo is still 40 px there, which the one upsampling step finds).
DETECT_MAX_SIDE = 1024

#: ``size="auto"`` processes a face at its own resolution up to this side (the INN carries over to 256 px).
AUTO_MAX_SIZE = 256

Paste = Literal["residual", "replace"]


def _align() -> Any:
    """The module :mod:`ipmn_lightning.faces.align`, imported on first use.

    The ``faces`` package's ``__init__`` loads its SR_P metric (torchmetrics), which importing the inference
    layer must not (tests/test_layers.py).
    """
    from ipmn_lightning.faces import align

    return align


# ------------------------------------------------------------------ helpers
def read_photo(path: str | os.PathLike[str]) -> Image.Image:
    """A photo file at full resolution, upright (EXIF orientation applied) and 8-bit RGB.

    Raises:
        ImageReadError: missing, truncated or not an image (the message names the file).
    """
    from ipmn_lightning.data.images import ImageReadError

    try:
        with Image.open(path) as opened:
            opened.load()
            return _upright(opened)
    except Exception as err:  # PIL raises many types for broken files
        raise ImageReadError(f"cannot read photo {path}: {err}") from err


def _upright(photo: Image.Image) -> Image.Image:
    upright = ImageOps.exif_transpose(photo)
    return rgb_image(upright if upright is not None else photo).copy()


def bundle_fingerprint(ipmn: IPMN) -> str:
    """A short SHA-256 of the INN's weights: which service protected a photo.

    The INN alone, so that the receiver (whose bundle holds the INN and neither H nor w, issue 25's least
    privilege) checks a photo's record as the service does; phase 2 trains the INN on its one frozen H, so the INN
    identifies the pair.
    """
    if ipmn.inn is None:
        raise RuntimeError("photo mode needs the INN: load a service or a receiver bundle")
    cached = getattr(ipmn, "_photo_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, tensor in sorted(ipmn.inn.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    value = digest.hexdigest()[:16]
    ipmn._photo_fingerprint = value  # type: ignore[attr-defined]
    return value


def default_donor(size: int = 256) -> Image.Image:
    """The built-in donor identity: a synthetic face (:mod:`ipmn_lightning.data.synthetic`, seed 0).

    Nobody's face, made offline; dlib finds its landmarks. See the README's "Protect a photo" for the SR_P
    measured with it against donors picked from a folder.
    """
    from ipmn_lightning.core.images import tensor_to_pil
    from ipmn_lightning.data.synthetic import render_face, sample_identity, sample_scene

    rng = np.random.default_rng(0)
    return tensor_to_pil(render_face(sample_identity(rng), sample_scene(rng), size))


def find_faces(analyzer: Any, image: np.ndarray) -> list[np.ndarray]:
    """Every face's 68 landmarks in an ``(H, W, 3)`` uint8 RGB photo, largest first.

    A :class:`~ipmn_lightning.faces.analysis.DlibFaceAnalyzer` detects on a copy at most :data:`DETECT_MAX_SIDE`
    pixels long (upsampling once when nothing is found) and fits the landmarks at full resolution; another
    analyser gives its ``faces(image)`` if it has one, else its single ``landmarks(image)``.
    """
    if hasattr(analyzer, "faces"):
        return [np.asarray(f, np.float64) for f in analyzer.faces(image)]
    detector, predictor = getattr(analyzer, "_detector", None), getattr(analyzer, "_predictor", None)
    if detector is None or predictor is None:
        one = analyzer.landmarks(image)
        return [] if one is None else [np.asarray(one, np.float64)]
    import cv2
    import dlib

    h, w = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = (
        image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    )
    rects: list[Any] = []
    for up in range(int(getattr(analyzer, "upsample", 1)) + 1):
        rects = list(detector(small, up))
        if rects:
            break
    rects.sort(key=lambda r: -r.width() * r.height())
    faces = []
    for r in rects:
        full = dlib.rectangle(
            round(r.left() / scale), round(r.top() / scale), round(r.right() / scale), round(r.bottom() / scale)
        )
        shape = predictor(image, full)
        faces.append(np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64))
    return faces


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 or float [0, 255] -> ``(1, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0).div(255.0)


def _to_array(batch: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] -> ``(H, W, 3)`` float32 in [0, 255]."""
    return batch[0].detach().cpu().clamp(0, 1).mul(255).permute(1, 2, 0).numpy().astype(np.float32)


def _feather(size: int) -> np.ndarray:
    """``(size, size)`` float32 weight: 1 inside, a linear ramp to 0 over the outer 1/16 of the crop."""
    ramp = max(2.0, size / 16)
    idx = np.arange(size, dtype=np.float32) + 0.5
    edge = np.minimum(idx, size - idx) / ramp
    line = np.clip(edge, 0, 1)
    return np.minimum(line[:, None], line[None, :])


def _paste(photo: np.ndarray, region: FaceRegion, layer: np.ndarray, mode: Paste) -> None:
    """Paste a crop-space ``layer`` into ``photo`` (uint8, in place) inside ``region.box`` only.

    ``residual``: ``photo += alpha * up(layer)`` (layer is a difference); ``replace``: ``photo = alpha *
    up(layer) + (1 - alpha) * photo``. ``up`` is the inverse alignment (bicubic: a smooth upsampling of a
    small crop), ``alpha`` :func:`_feather` mapped the same way (0 outside the crop's footprint).
    """
    import cv2

    left, top, right, bottom = region.box
    if right <= left or bottom <= top:
        return
    affine = np.asarray(region.affine, np.float64).copy()
    affine[:, 2] += affine[:, :2] @ np.array([left, top], np.float64)  # box pixel -> crop coordinates
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    dsize = (right - left, bottom - top)
    up = cv2.warpAffine(layer, affine, dsize, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(_feather(region.size), affine, dsize, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    alpha = np.clip(alpha, 0, 1)[..., None]
    window = photo[top:bottom, left:right].astype(np.float32)
    out = window + alpha * up if mode == "residual" else alpha * up + (1 - alpha) * window
    photo[top:bottom, left:right] = np.clip(np.round(out), 0, 255).astype(np.uint8)


def _sized_watermark(ipmn: IPMN, size: int) -> torch.Tensor:
    """The watermark w at the processing size (bilinear when the crop is not the bundle's size).

    H is fully convolutional, so it runs at any size once w matches the mask's.
    """
    w = ipmn.watermark
    assert w is not None
    if w.shape[-1] == size and w.shape[-2] == size:
        return w
    batch = w.unsqueeze(0) if w.dim() == 3 else w
    return F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


@torch.inference_mode()
def _protect_crop(ipmn: IPMN, face: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x_wmf ``(1, 3, S, S)`` on the 8-bit grid, at the crop's own size ``S``."""
    device = ipmn.device
    watermark = _sized_watermark(ipmn, face.shape[-1])
    masked, _ = put_on_mask(ipmn.inn, ipmn.embedder, watermark, face.to(device), mask.to(device), ipmn.position)
    return quantize_8bit(masked.clamp(0, 1)).cpu()


@torch.inference_mode()
def _recover_crop(ipmn: IPMN, masked: torch.Tensor, seed: int) -> torch.Tensor:
    """x'_p ``(1, 3, S, S)`` in [0, 1]: the INN's put-off with a seeded Gaussian z, at the crop's size."""
    generator = torch.Generator(device=ipmn.device).manual_seed(seed)
    face, _ = ipmn.inn.put_off(masked.to(ipmn.device), generator=generator)  # type: ignore[union-attr]
    return face.clamp(0, 1).cpu()


def _auto_size(landmarks: np.ndarray, margin: float, smallest: int) -> int:
    """The crop side that keeps a face at its own resolution: its aligned crop's side in photo pixels.

    Rounded to a multiple of the bundle's size (H's U-Net halves the size once per level, down to one pixel at
    the bundle's size), at most :data:`AUTO_MAX_SIZE`.
    """
    scale = float(np.sqrt(abs(np.linalg.det(_align().alignment_affine(landmarks, 1, margin)[:, :2]))))
    steps = max(1, min(AUTO_MAX_SIZE // smallest, round(1 / scale / smallest)))
    return int(steps * smallest)


def _donor_parts(donor: Image.Image, analyzer: Any) -> tuple[torch.Tensor, np.ndarray]:
    """The donor as ``(1, 3, S, S)`` and its landmarks, aligned onto the template like every protected face."""
    array = np.asarray(_upright(donor))
    faces = find_faces(analyzer, array)
    if not faces:
        raise NoFaceError("no face found in the donor image; give a clear, frontal face as the donor")
    affine = _align().alignment_affine(faces[0], MASK_MIN_SIZE)
    crop = _align().warp_face(array, affine, MASK_MIN_SIZE)
    return _to_tensor(crop), _align().apply_affine(affine, faces[0])


# -------------------------------------------------------------------- roles
def protect_photo(
    photo: Image.Image,
    ipmn: IPMN,
    *,
    donor: Image.Image | Callable[[np.ndarray], Image.Image] | None = None,
    analyzer: Any = None,
    generator: Any = None,
    size: int | Literal["auto"] | None = "auto",
    margin: float | None = None,
    paste: Paste = "replace",
) -> tuple[Image.Image, PhotoRecord]:
    """Sender on a whole photo: every face swapped, watermarked and hidden (see the module docstring).

    Args:
        photo: any PIL image; turned upright by its EXIF orientation and converted to 8-bit RGB.
        ipmn: a facade with a service bundle.
        donor: the identity put on every face (a face image), or a picker called with each face's aligned crop
            (``(S, S, 3)`` uint8) that returns the donor image for it
            (:class:`~ipmn_lightning.inference.donors.DonorPicker`); None: :func:`default_donor`.
        analyzer: finds faces and landmarks (:func:`find_faces`); None: dlib's.
        generator: the mask generator; None: ``make_mask_generator("landmark")`` with ``analyzer``.
        size: side of the aligned crop the bundle processes; None: the bundle's size; ``auto``: each face at its
            own resolution in the photo (a multiple of the bundle's size, up to :data:`AUTO_MAX_SIZE`); our default,
            chosen by ``benchmarks/photos_in_the_wild.py`` (see the README's "Protect a photo").
        margin: the frame around each face (:func:`ipmn_lightning.faces.align.template_points`); None: its
            ``DEFAULT_MARGIN``.
        paste: ``replace`` (paste the upsampled x_wmf; our default: measured SR_P 97% against 88% for
            ``residual`` on in-the-wild photos) or ``residual`` (add what changed: the photo's own detail stays,
            and with it part of the identity).

    Returns:
        The protected photo (RGB, the input's size; every pixel outside the record's boxes equals the upright
        input) and its :class:`PhotoRecord`.

    Raises:
        NoFaceError: no face in the photo (or in the donor).
    """
    from ipmn_lightning.faces.generators import make_mask_generator

    if paste not in ("residual", "replace"):
        raise ValueError(f"paste must be 'residual' or 'replace', got {paste!r}")
    fingerprint = bundle_fingerprint(ipmn)
    if analyzer is None:
        from ipmn_lightning.faces.analysis import DlibFaceAnalyzer

        analyzer = DlibFaceAnalyzer()
    upright = _upright(photo)
    array = np.array(upright, dtype=np.uint8)
    faces = find_faces(analyzer, array)
    if not faces:
        raise NoFaceError(
            f"no face found in the {upright.width}x{upright.height} photo; photo mode protects faces dlib can "
            "detect (frontal, at least about 40 px between chin and brows); nothing was written"
        )
    if generator is None:
        generator = make_mask_generator("landmark", analyzer=analyzer)
    # a picker (ipmn_lightning.inference.donors.DonorPicker) chooses per face; an image is every face's donor
    pick = donor if callable(donor) else None
    fixed = None
    if pick is None:
        fixed = _donor_parts(donor if donor is not None else default_donor(), analyzer)  # type: ignore[arg-type]
    parts_of: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
    margin = _align().DEFAULT_MARGIN if margin is None else margin
    out = array.copy()
    regions = []
    height, width = array.shape[:2]
    for landmarks in faces:
        side = int(size or ipmn.image_size) if size != "auto" else _auto_size(landmarks, margin, ipmn.image_size)
        affine = _align().alignment_affine(landmarks, side, margin)
        region = FaceRegion(_align().crop_box(affine, side, width, height), affine.tolist(), side)
        # x_p from the photo as protected so far (an overlapping earlier face is already swapped), so that
        # recovery, undoing the faces in reverse order, sees the same pixels
        face = _to_tensor(_align().warp_face(out, affine, side))
        mask_side = max(side, MASK_MIN_SIZE)
        mask_affine = _align().alignment_affine(landmarks, mask_side, margin)
        mask_face = _to_tensor(_align().warp_face(out, mask_affine, mask_side))
        if pick is not None:
            chosen = pick(_align().warp_face(out, mask_affine, mask_side))
            if id(chosen) not in parts_of:
                parts_of[id(chosen)] = _donor_parts(chosen, analyzer)
            donor_face, donor_landmarks = parts_of[id(chosen)]
        else:
            donor_face, donor_landmarks = fixed  # type: ignore[misc]
        outcome = generator.generate(
            mask_face, donor_face, [_align().apply_affine(mask_affine, landmarks)], [donor_landmarks]
        )[0]
        if outcome.mask is None:
            raise NoFaceError(f"the face at {region.box} could not be swapped: {outcome.reason}")
        mask = outcome.mask.unsqueeze(0)
        if mask_side != side:
            mask = F.interpolate(mask, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        masked = _protect_crop(ipmn, face, quantize_8bit(mask))
        layer = _to_array(masked) - (_to_array(face) if paste == "residual" else 0.0)
        _paste(out, region, layer, paste)
        regions.append(region)
    return Image.fromarray(out), PhotoRecord(regions, fingerprint)


def recover_photo(
    protected: Image.Image, ipmn: IPMN, record: PhotoRecord | None = None, *, seed: int = 0
) -> Image.Image:
    """Receiver on a whole photo: every protected face taken off, the rest of the photo unchanged.

    Args:
        protected: the protected photo (as :func:`save_protected_png` wrote it).
        ipmn: a facade with the service bundle that protected it.
        record: the regions; None reads them from the image's text chunk (:func:`read_photo_record`).
        seed: seed of the Gaussian z of each region's put-off (region ``i`` uses ``seed + i``).

    Returns:
        The recovered photo (RGB); outside the record's boxes bit-identical to ``protected``.

    Raises:
        PhotoRecordError: no record given or in the image, or the record is for another bundle.
    """
    if record is None:
        record = read_photo_record(protected)
        if record is None:
            raise PhotoRecordError(
                "this image carries no photo record (the PNG text chunk ipmn protect writes in photo mode): "
                "recover the PNG exactly as `ipmn protect PHOTO` wrote it (re-saving or converting it drops the "
                "chunk), or use folder mode (--masked) for aligned 64-px crops"
            )
    fingerprint = bundle_fingerprint(ipmn)
    if record.bundle_fingerprint != fingerprint:
        raise PhotoRecordError(
            f"this photo was protected with another service bundle (fingerprint {record.bundle_fingerprint}, "
            f"this bundle's is {fingerprint}); recover it with the bundle that protected it"
        )
    out = np.array(_upright(protected), dtype=np.uint8)
    for index in reversed(range(len(record.regions))):
        region = record.regions[index]
        affine = np.asarray(region.affine, np.float64)
        masked = _to_tensor(_align().warp_face(out, affine, region.size))
        face = _recover_crop(ipmn, quantize_8bit(masked), seed + index)
        _paste(out, region, _to_array(face) - _to_array(masked), "residual")
    return Image.fromarray(out)


def region_crops(image: Image.Image, record: PhotoRecord, size: int) -> list[Image.Image]:
    """Each protected region's aligned crop, resized to ``size`` (the verifier's): what R reads."""
    array = np.array(_upright(image), dtype=np.uint8)
    crops = []
    for region in record.regions:
        crop = _align().warp_face(array, np.asarray(region.affine, np.float64), region.size)
        picture = Image.fromarray(crop.astype(np.uint8))
        crops.append(picture if region.size == size else picture.resize((size, size), Image.Resampling.LANCZOS))
    return crops
