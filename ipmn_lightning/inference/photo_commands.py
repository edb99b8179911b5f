"""Photo mode of ``ipmn protect``, ``ipmn recover`` and ``ipmn verify`` (see :mod:`ipmn_lightning.inference.photos`).

- ``ipmn protect --protected PHOTO_OR_DIR --bundle service.safetensors --out DIR`` (no ``--mask``): every face of
  every photo protected in place; writes ``<out>/<stem>.png`` with the record in a text chunk. Every photo is
  processed before the first file is written, so a photo without a face stops the command with nothing written.
- ``ipmn recover --masked PROTECTED.png --bundle ... --out DIR``: a PNG carrying a record gives back the whole
  photo, ``<out>/<stem>.png``.
- ``ipmn verify --images PROTECTED.png --bundle verifier.safetensors``: R on each protected region's aligned crop
  at the verifier's size, one row per face (``name.png#0``, ``name.png#1``, ...).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

from PIL import Image

from ipmn_lightning.data.images import ImageReadError
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.inference.guards import (
    RoleError,
    check_no_clobber,
    check_not_inside_inputs,
    check_out_folder,
    list_images,
    probe_writable,
)
from ipmn_lightning.inference.photos import (
    PHOTO_RECORD_KEY,
    NoFaceError,
    PhotoRecordError,
    protect_photo,
    read_photo,
    read_photo_record,
    recover_photo,
    region_crops,
    save_protected_png,
)

__all__ = ["carries_record", "photo_ncs", "protect_photos", "recover_photos"]


def carries_record(file: Path) -> bool:
    """Whether ``file`` is a PNG with a photo record (read from the header chunks; the pixels are not decoded)."""
    try:
        with Image.open(file) as image:
            return image.format == "PNG" and PHOTO_RECORD_KEY in getattr(image, "text", {})
    except Exception:  # not an image: the command's own checks say so
        return False


def _write(folder: Path, outputs: list[tuple[Path, bytes]]) -> None:
    from ipmn_lightning.core.files import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for target, data in outputs:
        atomic_write_bytes(target, data)


def protect_photos(
    *,
    bundle: str,
    photos: str | list[str],
    out: str,
    donors: str | None = None,
    size: int | Literal["auto"] | None = None,
    device: str = "cpu",
) -> int:
    """Photo mode of ``ipmn protect``: see the module docstring. Returns 0; raises RoleError on bad input."""
    folder = check_out_folder(out)
    files = list_images(photos, "protected")
    check_not_inside_inputs(folder, {"protected": photos})
    targets = [folder / f"{file.stem}.png" for file in files]
    check_no_clobber(targets, files)
    model = IPMN.load(service_bundle=bundle, device=device)
    donor = None
    if donors is not None:
        from ipmn_lightning.inference.donors import DonorPicker, load_donors

        try:
            donor = DonorPicker(load_donors(donors))
        except ValueError as err:
            raise RoleError(f"--donors {donors}: {err}") from err
    from ipmn_lightning.faces.analysis import DlibFaceAnalyzer

    analyzer = DlibFaceAnalyzer()
    outputs: list[tuple[Path, bytes]] = []
    faces = 0
    for file, target in zip(files, targets):
        try:
            options = {} if size is None else {"size": size}  # None: protect_photo's default
            protected, record = protect_photo(read_photo(file), model, donor=donor, analyzer=analyzer, **options)
        except NoFaceError as err:
            raise RoleError(f"{file}: {err}") from err
        buffer = io.BytesIO()
        save_protected_png(buffer, protected, record)
        outputs.append((target, buffer.getvalue()))
        faces += len(record.regions)
    probe_writable(folder)
    _write(folder, outputs)
    print(f"protected {faces} face(s) in {len(files)} photo(s); wrote {out}")
    return 0


def recover_photos(
    *, bundle: str, masked: str | list[str], out: str, seed: int | None = None, device: str = "cpu"
) -> int:
    """Photo mode of ``ipmn recover``: each PNG's record gives its faces back; writes ``<out>/<stem>.png``."""
    folder = check_out_folder(out)
    files = list_images(masked, "masked")
    check_not_inside_inputs(folder, {"masked": masked})
    targets = [folder / f"{file.stem}.png" for file in files]
    check_no_clobber(targets, files)
    model = IPMN.load(service_bundle=bundle, device=device)
    outputs: list[tuple[Path, bytes]] = []
    for file, target in zip(files, targets):
        try:
            with Image.open(file) as image:
                image.load()
                record = read_photo_record(image)
                if record is None:
                    raise PhotoRecordError(
                        "it carries no photo record (the PNG text chunk `ipmn protect` writes in photo mode; "
                        "re-saving or converting the PNG drops it); recover aligned crops with --photo false"
                    )
                restored = recover_photo(image, model, record, seed=0 if seed is None else seed)
        except PhotoRecordError as err:
            raise RoleError(f"{file}: {err}") from err
        except OSError as err:
            raise ImageReadError(f"cannot read {file}: {err}") from err
        buffer = io.BytesIO()
        restored.save(buffer, format="PNG")
        outputs.append((target, buffer.getvalue()))
    probe_writable(folder)
    _write(folder, outputs)
    print(f"wrote {len(files)} recovered photo(s) to {out}")
    return 0


def photo_ncs(model: IPMN, file: Path) -> list[tuple[str, float, Image.Image]]:
    """``ipmn verify`` on a protected photo: ``(name#i, NC, crop)`` of R on each region's aligned crop."""
    try:
        with Image.open(file) as image:
            image.load()
            record = read_photo_record(image)
            if record is None:
                raise PhotoRecordError("it carries no photo record")
            crops = region_crops(image, record, model.image_size)
    except PhotoRecordError as err:
        raise RoleError(f"{file}: {err}") from err
    verdicts = model.verify(crops) if crops else []
    return [(f"{file}#{i}", v.nc, crop) for i, (v, crop) in enumerate(zip(verdicts, crops))]  # type: ignore[union-attr]
