"""``ipmn protect``, ``ipmn recover`` and ``ipmn verify``: the three roles of paper §3.1 on image files.

Each command takes one image file or a folder of them (``.png``, ``.jpg``, ...; not recursive), runs the
:class:`~ipmn_lightning.facade.IPMN` facade in batches (with a progress bar on folders) and writes lossless
PNG files atomically, named after the input file's stem. Images not at the bundle's size are resized
(``--resize resize``, the whole image squashed to a square) or refused (``--resize reject``).
The commands return 0 on success, 2 on bad input (with the reason on stderr); ``verify`` returns 1 when
an image does not verify.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from PIL import Image

from .data.images import IMAGE_EXTENSIONS, ImageReadError
from .utils import atomic_save_image, atomic_write_text

__all__ = ["RoleError", "protect", "recover", "verify"]

ResizePolicy = Literal["resize", "reject"]


class RoleError(ValueError):
    """Bad input to a role command: no images, unpaired files, an image of the wrong size."""


def list_images(path: str, what: str) -> list[Path]:
    """The image file ``path``, or the image files of folder ``path`` sorted by name."""
    source = Path(path).expanduser()
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise RoleError(f"--{what}: {source} is neither an image file nor a folder")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise RoleError(f"--{what}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {source}")
    return files


def _by_stem(files: list[Path], what: str) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for file in files:
        if file.stem in stems:
            raise RoleError(f"--{what}: {stems[file.stem].name} and {file.name} have the same name; keep one")
        stems[file.stem] = file
    return stems


def pair_by_stem(protected: list[Path], masks: list[Path]) -> list[tuple[Path, Path]]:
    """Pair protected faces with masks of the same file name stem; every file must have its partner."""
    faces, mask_files = _by_stem(protected, "protected"), _by_stem(masks, "mask")
    if len(protected) == 1 and len(masks) == 1:  # two single files pair whatever their names
        return [(protected[0], masks[0])]
    lonely = [f"--protected {faces[s]}" for s in faces if s not in mask_files]
    lonely += [f"--mask {mask_files[s]}" for s in mask_files if s not in faces]
    if lonely:
        raise RoleError("files without a partner of the same name:\n  " + "\n  ".join(lonely))
    return [(faces[s], mask_files[s]) for s in sorted(faces)]


def read_images(files: list[Path], size: int, resize: ResizePolicy) -> list[Image.Image]:
    """Open RGB images; with ``reject``, every file not ``size`` x ``size`` is listed in one error."""
    images, wrong = [], []
    for file in files:
        try:
            with Image.open(file) as img:
                images.append(img.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(f"cannot read image {file}: {err}") from err
        if images[-1].size != (size, size):
            wrong.append(f"{file} ({images[-1].size[0]}x{images[-1].size[1]})")
    if wrong and resize == "reject":
        raise RoleError(
            f"images not at the bundle's {size}x{size} (pass --resize resize to resize them):\n  " + "\n  ".join(wrong)
        )
    return images


def _batches(items: list, batch_size: int, desc: str) -> Iterator[list]:
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise RoleError(f"--batch_size must be >= 1, got {batch_size}")
    with tqdm(total=len(items), desc=desc, unit="img", disable=len(items) < 2, file=sys.stderr) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            yield chunk
            bar.update(len(chunk))


def _guard(run: Callable[[], int]) -> int:
    from .bundle import BundleError

    try:
        return run()
    except (RoleError, BundleError, ImageReadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def protect(
    *,
    bundle: str,
    protected: str,
    mask: str,
    out: str,
    resize: ResizePolicy = "resize",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Sender: put the watermarked mask on each protected face; writes ``<out>/<stem>.png`` (x_wmf).

    Args:
        bundle: the service bundle (``service.safetensors``).
        protected: a face image or a folder of them (x_p).
        mask: the mask image or a folder of masks (x_m), paired with the faces by file name stem.
        out: output folder.
        resize: what to do with images not at the bundle's size.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def run() -> int:
        from .facade import IPMN

        model = IPMN.load(service_bundle=bundle, device=device)
        pairs = pair_by_stem(list_images(protected, "protected"), list_images(mask, "mask"))
        for chunk in _batches(pairs, batch_size, "protect"):
            faces = read_images([f for f, _ in chunk], model.image_size, resize)
            masks = read_images([m for _, m in chunk], model.image_size, resize)
            for (face_file, _), image in zip(chunk, model.protect(faces, masks)):
                atomic_save_image(Path(out) / f"{face_file.stem}.png", image)
        print(f"wrote {len(pairs)} masked face(s) to {out}")
        return 0

    return _guard(run)


def recover(
    *,
    bundle: str,
    masked: str,
    out: str,
    seed: int | None = None,
    resize: ResizePolicy = "resize",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Receiver: take the mask off; writes ``<out>/<stem>_face.png`` (x'_p) and ``<stem>_mask.png`` (x'_wm).

    Args:
        bundle: the service bundle (``service.safetensors``).
        masked: a masked face (x_wmf, as written by ``ipmn protect``) or a folder of them.
        out: output folder.
        seed: seed of the Gaussian z (batch ``i`` uses ``seed + i``); ``None``: random.
        resize: what to do with images not at the bundle's size.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def run() -> int:
        from .facade import IPMN

        model = IPMN.load(service_bundle=bundle, device=device)
        files = list_images(masked, "masked")
        for index, chunk in enumerate(_batches(files, batch_size, "recover")):
            images = read_images(chunk, model.image_size, resize)
            faces, masks = model.recover(images, seed=None if seed is None else seed + index)
            for file, face, mask_image in zip(chunk, faces, masks):
                atomic_save_image(Path(out) / f"{file.stem}_face.png", face)
                atomic_save_image(Path(out) / f"{file.stem}_mask.png", mask_image)
        print(f"wrote {len(files)} recovered face(s) and mask(s) to {out}")
        return 0

    return _guard(run)


def verify(
    *,
    bundle: str,
    images: str,
    report: str | None = None,
    resize: ResizePolicy = "resize",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """IP verifier: does each image carry the owner's watermark? Exit code 0 if every image verifies, else 1.

    Prints a table of NC and verdict per image (verified when NC > the bundle's threshold, paper §4).

    Args:
        bundle: the verifier bundle (``verifier.safetensors``).
        images: an image or a folder of them (masked faces, recovered masks, suspected stolen outputs).
        report: also write the results to this JSON file.
        resize: what to do with images not at the bundle's size.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def run() -> int:
        from .facade import IPMN

        model = IPMN.load(verifier_bundle=bundle, device=device)
        files = list_images(images, "images")
        rows = []
        for chunk in _batches(files, batch_size, "verify"):
            verdicts = model.verify(read_images(chunk, model.image_size, resize))
            rows += [{"file": str(f), "nc": v.nc, "verified": v.verified} for f, v in zip(chunk, verdicts)]
        width = max(len(Path(r["file"]).name) for r in rows)
        print(f"{'image':<{width}}  {'NC':>7}  verdict")
        for row in rows:
            verdict = "verified" if row["verified"] else "NOT verified"
            print(f"{Path(row['file']).name:<{width}}  {row['nc']:7.4f}  {verdict}")
        passed = sum(r["verified"] for r in rows)
        print(f"{passed}/{len(rows)} image(s) verified (NC > {model.threshold})")
        summary = {
            "bundle": str(bundle),
            "threshold": model.threshold,
            "verified": passed,
            "total": len(rows),
            "all_verified": passed == len(rows),
            "images": rows,
        }
        if report is not None:
            atomic_write_text(report, json.dumps(summary, indent=2) + "\n")
        return 0 if summary["all_verified"] else 1

    return _guard(run)
