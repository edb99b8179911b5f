"""What ``ipmn protect``, ``ipmn recover`` and ``ipmn verify`` do (:mod:`ipmn_lightning.inference.roles`).

:mod:`~ipmn_lightning.inference.roles` holds the commands' signatures and documentation and imports this
module when a command runs, so ``--help`` never loads torch. The checks on inputs and outputs are in
:mod:`~ipmn_lightning.inference.guards`, photo mode in :mod:`~ipmn_lightning.inference.photo_commands`.
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
    RoleError,
    batches,
    check_batch_size,
    check_device,
    check_images,
    check_no_clobber,
    check_not_inside_inputs,
    check_out_folder,
    check_report,
    input_paths,
    list_images,
    pair_by_stem,
    probe_writable,
    run_guarded,
    same_file,
    write_all,
)
from ipmn_lightning.inference.options import ResizePolicy
from ipmn_lightning.inference.photo_commands import carries_record, photo_ncs, protect_photos, recover_photos
from ipmn_lightning.inference.statistics import empirical_p_values, near_duplicate_groups, set_statement, thumbnail

__all__ = ["read_images", "run_protect", "run_recover", "run_verify"]

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


def run_protect(
    *,
    bundle: str,
    protected: str | list[str],
    mask: str | None = None,
    out: str,
    donors: str | None = None,
    size: int | Literal["auto"] | None = None,
    resize: ResizePolicy = "crop",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Run ``ipmn protect`` (:func:`ipmn_lightning.inference.roles.protect` documents the arguments)."""

    def run() -> int:
        check_batch_size(batch_size)
        check_device(device)
        if mask is None:
            return protect_photos(bundle=bundle, photos=protected, out=out, donors=donors, size=size, device=device)
        if any(same_file(Path(a).expanduser(), Path(mask).expanduser()) for a in input_paths(protected)):
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


def run_recover(
    *,
    bundle: str,
    masked: str | list[str],
    out: str,
    seed: int | None = None,
    photo: bool | None = None,
    resize: ResizePolicy = "crop",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Run ``ipmn recover`` (:func:`ipmn_lightning.inference.roles.recover` documents the arguments)."""

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


def run_verify(
    *,
    bundle: str,
    images: str | list[str],
    report: str | None = None,
    overwrite: bool = False,
    reference: str | None = None,
    resize: ResizePolicy = "crop",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Run ``ipmn verify`` (:func:`ipmn_lightning.inference.roles.verify` documents the arguments)."""

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
