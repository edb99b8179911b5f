"""``ipmn protect``, ``ipmn recover`` and ``ipmn verify``: the three roles of paper §3.1 on image files.

Each command takes one image file or a folder of them (``.png``, ``.jpg``, ...; not recursive; hidden files,
i.e. names starting with a dot such as macOS ``._name.png`` and the temporary files of an interrupted save,
are skipped), runs the :class:`~ipmn_lightning.inference.facade.IPMN` facade in batches (with a progress bar on
folders) and writes lossless PNG files atomically, named after the input file's stem. Images not at the
bundle's size are centre-cropped to their largest square and resized (``--resize crop``, the default: what
training does with photos, so a portrait photo keeps its proportions and loses its top and bottom edges),
squashed to a square whole (``--resize resize``) or refused (``--resize reject``). Files are read by the
library's one reader, :mod:`ipmn_lightning.data.images`, as training reads them: EXIF orientation applied (a
portrait phone JPEG stored sideways is read upright), and large images reduced while they are read (JPEGs are
decoded at 1/2 to 1/8 scale when that still leaves the bundle's size), so only bundle-sized images are held in
memory.

Pixel formats: 8-bit images of any PIL mode are converted to RGB; 16-bit greyscale (``I;16``) is scaled by
1/65535; 32-bit float images (``F``, e.g. float TIFF) must hold values in [0, 1] and are refused otherwise.

Everything is checked before the first file is written: the device, the bundle, every input file (decoded in
full, pixel count within PIL's decompression-bomb limit, not too small or elongated, size policy; ``.gif`` and
broken links refused by name), file names (two inputs with the
same stem, ``x.png`` and ``x.bmp``, would write the same output), and the output folder (not a file, not an
input folder or inside one, never replacing an input file, writable). ``verify --report`` never replaces an
input or the bundle, and replaces an existing report only with ``--overwrite true``. Those checks are in
:mod:`ipmn_lightning.inference.guards`; the p-values and set-level statement of ``verify`` in
:mod:`ipmn_lightning.inference.statistics`. Every command prints the bundle it used and its fingerprint on stderr
(``verify`` also records it in its report), to compare with the fingerprint recorded at export.

The commands return 0 on success, 2 on bad input (with the reason on stderr); ``verify`` returns 1 when an
image does not verify.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.core.images import pil_to_tensor
from ipmn_lightning.data.images import read_image
from ipmn_lightning.inference.bundle import RECEIVER_FORMAT, SERVICE_FORMAT, VERIFIER_FORMAT, Bundle, load_bundle
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.inference.guards import (
    ResizePolicy,
    RoleError,
    batches,
    check_batch_size,
    check_device,
    check_images,
    check_no_clobber,
    check_not_inside_inputs,
    check_out_folder,
    check_report,
    list_images,
    pair_by_stem,
    probe_writable,
    run_guarded,
    same_file,
    write_all,
)
from ipmn_lightning.inference.photo_commands import carries_record, photo_ncs, protect_photos, recover_photos
from ipmn_lightning.inference.statistics import empirical_p_values, near_duplicate_groups, set_statement, thumbnail

__all__ = ["RoleError", "empirical_p_values", "protect", "read_images", "recover", "verify"]

#: The roles' ``--resize`` policies as :func:`~ipmn_lightning.data.images.read_image` crops (``reject`` reads
#: only images already at the bundle's size, for which the crop changes nothing).
_CROPS = {"crop": "center", "resize": "none", "reject": "center"}


def read_images(files: list[Path], size: int, resize: ResizePolicy) -> list[Image.Image]:
    """Read images as RGB ``size`` x ``size`` with the library's one reader (:mod:`ipmn_lightning.data.images`).

    EXIF orientation applied, any pixel format converted, reduced as they are read; ``crop`` keeps the centred
    largest square, ``resize`` squashes the whole image, ``reject`` refuses any image not at ``size``.

    Raises:
        ImageReadError: unreadable, too large, or a float/integer image outside its documented range.
        RoleError: with ``reject``, every file not ``size`` x ``size`` (listed in one error).
    """
    if resize not in _CROPS:
        raise RoleError(f"--resize must be crop, resize or reject, got {resize!r}")
    if resize == "reject":
        check_images(files, size, resize)
    return [read_image(file, size, _CROPS[resize]) for file in files]


def _announce(bundle: Bundle) -> None:
    """Say on stderr which bundle a command runs with: its path, kind and fingerprint."""
    print(f"bundle: {bundle.path} ({bundle.role}), fingerprint {bundle.fingerprint}", file=sys.stderr)


def protect(
    *,
    bundle: str,
    protected: str,
    mask: str | None = None,
    out: str,
    donors: str | None = None,
    size: int | Literal["auto"] | None = None,
    resize: ResizePolicy = "crop",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Sender: put the watermarked mask on each protected face; writes ``<out>/<stem>.png`` (x_wmf).

    Args:
        bundle: the service bundle (``service.safetensors``).
        protected: a face image or a folder of them (x_p); without ``mask``, a photo or a folder of photos
            (photo mode: every face found, swapped with a donor, protected and pasted back into the whole photo,
            :mod:`ipmn_lightning.inference.photo_commands`).
        mask: the mask image or a folder of masks (x_m), paired with the faces by file name stem; never the
            same file or folder as ``protected``. Omit it for photo mode.
        out: output folder; not an input folder nor inside one.
        donors: photo mode: a folder of donor faces (each face gets the one dlib finds least like it); default:
            the built-in synthetic donor.
        size: photo mode: side of the aligned face crop the bundle processes; ``auto``: each face at its own
            resolution (up to 256 px); default: photo mode's default (see ``protect_photo``).
        resize: images not at the bundle's size: ``crop`` (centre square, resized), ``resize`` (squashed whole)
            or ``reject``.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def run() -> int:
        check_batch_size(batch_size)
        check_device(device)
        if mask is None:
            return protect_photos(bundle=bundle, photos=protected, out=out, donors=donors, size=size, device=device)
        if same_file(Path(protected).expanduser(), Path(mask).expanduser()):
            raise RoleError(
                f"--mask {mask} is the same as --protected: a face cannot be its own mask (it would hide nothing)"
            )
        folder = check_out_folder(out)
        loaded = load_bundle(bundle, SERVICE_FORMAT)
        model = IPMN(service=loaded, device=device)
        _announce(loaded)
        pairs = pair_by_stem(list_images(protected, "protected"), list_images(mask, "mask"))
        check_images([f for pair in pairs for f in pair], model.image_size, resize)
        check_not_inside_inputs(folder, {"protected": protected, "mask": mask})
        targets = [folder / f"{face.stem}.png" for face, _ in pairs]
        check_no_clobber(targets, [f for pair in pairs for f in pair])
        probe_writable(folder)

        def work(chunk: list[tuple[Path, Path]]) -> list[tuple[Path, Image.Image]]:
            faces = read_images([f for f, _ in chunk], model.image_size, resize)
            masks = read_images([m for _, m in chunk], model.image_size, resize)
            return [
                (folder / f"{face.stem}.png", image) for (face, _), image in zip(chunk, model.protect(faces, masks))
            ]

        write_all(batches(pairs, batch_size, "protect"), work, folder)
        print(f"wrote {len(pairs)} masked face(s) to {out}")
        return 0

    return run_guarded(run)


def recover(
    *,
    bundle: str,
    masked: str,
    out: str,
    seed: int | None = None,
    photo: bool | None = None,
    resize: ResizePolicy = "crop",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Receiver: take the mask off; writes ``<out>/<stem>_face.png`` (x'_p) and ``<stem>_mask.png`` (x'_wm).

    Args:
        bundle: the receiver bundle (``receiver.safetensors``: the INN only) or the service bundle; both give
            the same outputs.
        masked: a masked face (x_wmf, as written by ``ipmn protect``) or a folder of them.
        out: output folder; not the ``masked`` folder nor inside it (the next run would read the outputs).
        seed: seed of the Gaussian z (batch ``i`` uses ``seed + i``); ``None``: random (photo mode: 0).
        photo: photo mode (a whole photo from ``ipmn protect PHOTO``, restored from its PNG record, written as
            ``<stem>.png``); ``None``: when the inputs carry a record; ``false``: aligned crops only.
        resize: images not at the bundle's size: ``crop`` (centre square, resized), ``resize`` (squashed whole)
            or ``reject``.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def run() -> int:
        check_batch_size(batch_size)
        check_device(device)
        files = list_images(masked, "masked")
        if photo or (photo is None and any(carries_record(f) for f in files)):
            return recover_photos(bundle=bundle, masked=masked, out=out, seed=seed, device=device)
        folder = check_out_folder(out)
        loaded = load_bundle(bundle, (RECEIVER_FORMAT, SERVICE_FORMAT))
        model = IPMN(service=loaded, device=device)
        _announce(loaded)
        check_images(files, model.image_size, resize)
        check_not_inside_inputs(folder, {"masked": masked})
        targets = [folder / f"{f.stem}_{kind}.png" for f in files for kind in ("face", "mask")]
        check_no_clobber(targets, files)
        probe_writable(folder)
        batch_index = iter(range(len(files)))

        def work(chunk: list[Path]) -> list[tuple[Path, Image.Image]]:
            index = next(batch_index)
            images = read_images(chunk, model.image_size, resize)
            faces, masks = model.recover(images, seed=None if seed is None else seed + index)
            outputs = []
            for file, face, mask_image in zip(chunk, faces, masks):
                outputs += [(folder / f"{file.stem}_face.png", face), (folder / f"{file.stem}_mask.png", mask_image)]
            return outputs

        write_all(batches(files, batch_size, "recover"), work, folder)
        print(f"wrote {len(files)} recovered face(s) and mask(s) to {out}")
        return 0

    return run_guarded(run)


def verify(
    *,
    bundle: str,
    images: str,
    report: str | None = None,
    overwrite: bool = False,
    reference: str | None = None,
    resize: ResizePolicy = "crop",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """IP verifier: does each image carry the owner's watermark? Exit code 0 if every image verifies, else 1.

    Prints a table of NC and verdict per image (verified when NC > the bundle's threshold, paper §4), with each
    image's empirical p-value ``(1 + #{reference NC >= NC}) / (N + 1)`` when a reference of NCs on clean images
    is available (never below ``1 / (N + 1)``), then one set-level statement
    (:func:`~ipmn_lightning.inference.statistics.set_statement`): near-duplicates (the same image re-encoded or
    resized) count once, only images that pass the threshold count, and the count of verified distinct images
    is compared with the per-image false-positive rate measured on the reference (its 95% Clopper-Pearson upper
    bound) by an exact binomial tail. No p-values are combined: the images of a set are not independent draws
    from the reference's distribution (copies, a selected subset, another domain). The reference is
    ``--reference`` (clean faces: no watermark), else the bundle's ``clean_nc_reference``. The report also
    records the bundle's fingerprint and calibration (where its threshold and reference came from).

    Args:
        bundle: the verifier bundle (``verifier.safetensors``).
        images: an image or a folder of them (masked faces, recovered masks, suspected stolen outputs).
        report: also write the results to this JSON file (never an input or the bundle).
        overwrite: replace an existing ``report``.
        reference: an image or a folder of clean faces (without the watermark) whose NCs form the reference.
        resize: images not at the bundle's size: ``crop`` (centre square, resized), ``resize`` (squashed whole)
            or ``reject``.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def run() -> int:
        check_batch_size(batch_size)
        check_device(device)
        loaded = load_bundle(bundle, VERIFIER_FORMAT)
        model = IPMN(verifier=loaded, device=device)
        files = list_images(images, "images")
        reference_files = list_images(reference, "reference") if reference is not None else []
        check_images(files + reference_files, model.image_size, resize)
        target = None
        if report is not None:
            target = check_report(report, overwrite, [loaded.path, *files, *reference_files])

        _announce(loaded)
        looks: list[Any] = []

        def ncs(paths: list[Path], desc: str, keep: bool = False) -> list[float]:
            values: list[float] = []
            with contextlib.closing(batches(paths, batch_size, desc)) as chunks:
                for chunk in chunks:
                    pictures = read_images(chunk, model.image_size, resize)
                    values += [v.nc for v in model.verify(pictures)]
                    if keep:  # the thumbnails that near-duplicates are found by
                        looks.extend(thumbnail(pil_to_tensor(picture)) for picture in pictures)
            return values

        # a protected photo (its PNG record) gives one row per face: R on each region's crop at the bundle's size
        plain = [f for f in files if not carries_record(f)]
        labelled = list(zip(map(str, plain), ncs(plain, "verify", keep=True))) if plain else []
        for f in files:
            if f not in plain:
                for name, nc, crop in photo_ncs(model, f):
                    labelled.append((name, nc))
                    looks.append(thumbnail(pil_to_tensor(crop)))  # copies of one photo collapse like any copy
        observed = [nc for _, nc in labelled]
        rows: list[dict[str, Any]] = [
            {"file": name, "nc": nc, "verified": bool(nc > model.threshold)} for name, nc in labelled
        ]
        if reference_files:
            clean, source = ncs(reference_files, "reference"), f"--reference {reference}"
        else:
            clean, source = loaded.config.get("clean_nc_reference"), "the bundle's clean_nc_reference"
        p_values = empirical_p_values(observed, clean) if clean else None
        groups = near_duplicate_groups(torch.stack(looks))
        width = max(len(Path(r["file"]).name) for r in rows)
        print(f"{'image':<{width}}  {'NC':>7}  {'p-value':>8}  verdict")
        for index, row in enumerate(rows):
            verdict = "verified" if row["verified"] else "NOT verified"
            p_text = f"{p_values[index]:8.2g}" if p_values is not None else f"{'-':>8}"
            print(f"{Path(row['file']).name:<{width}}  {row['nc']:7.4f}  {p_text}  {verdict}")
            row["near_duplicate_group"] = groups[index]
            if p_values is not None:
                row["p_value"] = p_values[index]
        passed = sum(r["verified"] for r in rows)
        print(f"{passed}/{len(rows)} image(s) verified (NC > {model.threshold})")
        summary: dict[str, Any] = {
            "bundle": str(bundle),
            "bundle_fingerprint": loaded.fingerprint,
            "calibration": loaded.config.get("calibration"),
            "threshold": model.threshold,
            "verified": passed,
            "total": len(rows),
            "all_verified": passed == len(rows),
        }
        statement = set_statement(observed, groups, float(model.threshold), clean)
        statement["reference_source"] = source if clean else None
        print(f"set: {statement['statement']}")
        summary["set_statement"] = statement
        if p_values is not None:
            floor = 1 / (len(clean) + 1)
            print(
                f"per-image p-values against {len(clean)} clean-image NCs from {source}: each is at least "
                f"1/(N+1) = {floor:.3g}, and holds only for images like the reference's"
            )
            summary["p_value"] = {"reference_size": len(clean), "reference_source": source,
                                  "per_image_minimum": floor}  # fmt: skip
        else:
            note = (
                "no p-value: no reference NCs of clean images; pass --reference DIR (clean faces without the "
                "watermark) or use a verifier bundle exported with clean_nc_reference"
            )
            print(note)
            summary["p_value"] = None
            summary["p_value_note"] = note
        summary["images"] = rows
        if target is not None:
            atomic_write_text(target, json.dumps(summary, indent=2) + "\n")
        return 0 if summary["all_verified"] else 1

    return run_guarded(run)
