"""``ipmn protect``, ``ipmn recover`` and ``ipmn verify``: the three roles of paper §3.1 on image files.

Each command takes one image file or a folder of them (``.png``, ``.jpg``, ...; not recursive; hidden files,
i.e. names starting with a dot such as macOS ``._name.png`` and the temporary files of an interrupted save,
are skipped), runs the :class:`~ipmn_lightning.inference.facade.IPMN` facade in batches (with a progress bar on
folders) and writes lossless PNG files atomically, named after the input file's stem. Images not at the
bundle's size are centre-cropped to their largest square and resized (``--resize crop``, the default: what
training does with photos, so a portrait photo keeps its proportions and loses its top and bottom edges),
squashed to a square whole (``--resize resize``) or refused (``--resize reject``). Large images are reduced
while they are read (JPEGs are decoded at 1/2 to 1/8 scale when that still leaves the bundle's size), so only
bundle-sized images are held in memory.

Pixel formats: 8-bit images of any PIL mode are converted to RGB; 16-bit greyscale (``I;16``) is scaled by
1/65535; 32-bit float images (``F``, e.g. float TIFF) must hold values in [0, 1] and are refused otherwise.

Everything is checked before the first file is written: the device, the bundle, every input file (readable
header, pixel count within PIL's decompression-bomb limit, size policy), file names (two inputs with the
same stem, ``x.png`` and ``x.bmp``, would write the same output), and the output folder (not a file, not an
input folder or inside one, never replacing an input file, writable). ``verify --report`` never replaces an
input or the bundle, and replaces an existing report only with ``--overwrite true``.

The commands return 0 on success, 2 on bad input (with the reason on stderr); ``verify`` returns 1 when an
image does not verify.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm.auto import tqdm

from ipmn_lightning.core.files import atomic_save_image, atomic_write_text
from ipmn_lightning.core.images import center_square_box, rgb_image
from ipmn_lightning.data.images import ImageReadError
from ipmn_lightning.inference.bundle import VERIFIER_FORMAT, BundleError, load_bundle
from ipmn_lightning.inference.facade import IPMN

__all__ = ["RoleError", "empirical_p_values", "fisher_combined_p_value", "protect", "recover", "verify"]

ResizePolicy = Literal["crop", "resize", "reject"]


class RoleError(ValueError):
    """Bad input to a role command: no images, unpaired files, an image of the wrong size, a bad output path."""


def _is_hidden(path: Path) -> bool:
    # dotfiles, macOS AppleDouble files (._name.png) and atomic_path's temporary files (.stem.XXXX.tmp.png)
    return path.name.startswith(".")


def list_images(path: str, what: str) -> list[Path]:
    """The image file ``path``, or the (non-hidden) image files of folder ``path`` sorted by name.

    Raises:
        RoleError: ``path`` is neither a file nor a folder, the folder has no images, or two of its images
            have the same stem (``x.png`` and ``x.bmp``: their outputs would replace each other).
    """
    source = Path(path).expanduser()
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise RoleError(f"--{what}: {source} is neither an image file nor a folder")
    files = sorted(
        p for p in source.iterdir() if p.is_file() and not _is_hidden(p) and p.suffix.lower() in IMG_EXTENSIONS
    )
    if not files:
        raise RoleError(f"--{what}: no images ({', '.join(IMG_EXTENSIONS)}) in {source}")
    _by_stem(files, what)
    return files


def _by_stem(files: list[Path], what: str) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for file in files:
        if file.stem in stems:
            raise RoleError(
                f"--{what}: {stems[file.stem].name} and {file.name} have the same name and would write the same "
                "output; keep one"
            )
        stems[file.stem] = file
    return stems


def pair_by_stem(protected: list[Path], masks: list[Path]) -> list[tuple[Path, Path]]:
    """Pair protected faces with masks of the same file name stem; every file must have its partner."""
    faces, mask_files = _by_stem(protected, "protected"), _by_stem(masks, "mask")
    if len(protected) == 1 and len(masks) == 1:  # two single files pair whatever their names
        pairs = [(protected[0], masks[0])]
    else:
        lonely = [f"--protected {faces[s]}" for s in faces if s not in mask_files]
        lonely += [f"--mask {mask_files[s]}" for s in mask_files if s not in faces]
        if lonely:
            raise RoleError("files without a partner of the same name:\n  " + "\n  ".join(lonely))
        pairs = [(faces[s], mask_files[s]) for s in sorted(faces)]
    for face, mask in pairs:
        if _same_file(face, mask):
            raise RoleError(
                f"--mask {mask} is the protected face itself: a face cannot be its own mask (it would hide nothing)"
            )
    return pairs


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def _open_error(file: Path, err: BaseException) -> ImageReadError:
    if isinstance(err, Image.DecompressionBombError):
        return ImageReadError(
            f"image {file} is too large to read safely ({err}); downscale it first (PIL's limit is "
            f"{Image.MAX_IMAGE_PIXELS * 2} pixels)"
        )
    return ImageReadError(f"cannot read image {file}: {err}")


def check_images(files: list[Path], size: int, resize: ResizePolicy) -> None:
    """Check every file before any work: a readable image header, a safe pixel count, the size policy.

    Raises:
        ImageReadError: a file is not an image, is unreadable or too large (decompression bomb).
        RoleError: with ``reject``, every file not ``size`` x ``size`` (listed in one error).
    """
    wrong = []
    for file in files:
        try:
            with Image.open(file) as img:
                width, height = img.size
        except Exception as err:  # PIL raises many types for broken files (OSError, EOFError, SyntaxError, ...)
            raise _open_error(file, err) from err
        if (width, height) != (size, size):
            wrong.append(f"{file} ({width}x{height})")
    if wrong and resize == "reject":
        raise RoleError(
            f"images not at the bundle's {size}x{size} (pass --resize crop or --resize resize to resize them):\n  "
            + "\n  ".join(wrong)
        )


def read_images(files: list[Path], size: int, resize: ResizePolicy) -> list[Image.Image]:
    """Open images as RGB at ``size`` x ``size``, reducing each as it is read (see the module docstring).

    Raises:
        ImageReadError: unreadable, too large, or a float/integer image outside its documented range.
        RoleError: with ``reject``, every file not ``size`` x ``size`` (listed in one error).
    """
    images, wrong = [], []
    for file in files:
        try:
            with Image.open(file) as img:
                original = img.size
                if resize != "reject" and img.format == "JPEG" and min(img.size) >= 2 * size:
                    img.draft("RGB", (size, size))  # libjpeg decodes at 1/2..1/8 scale, both sides >= size
                img.load()
                rgb = rgb_image(img)
                if resize == "crop" and rgb.width != rgb.height:
                    rgb = rgb.crop(center_square_box(*rgb.size))
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
                images.append(rgb.copy() if rgb is img else rgb)
        except Exception as err:  # PIL raises many types for broken files (OSError, EOFError, SyntaxError, ...)
            raise _open_error(file, err) from err
        if original != (size, size):
            wrong.append(f"{file} ({original[0]}x{original[1]})")
    if wrong and resize == "reject":
        raise RoleError(
            f"images not at the bundle's {size}x{size} (pass --resize crop or --resize resize to resize them):\n  "
            + "\n  ".join(wrong)
        )
    return images


def _batches(items: list, batch_size: int, desc: str) -> Iterator[list]:
    with tqdm(total=len(items), desc=desc, unit="img", disable=len(items) < 2, file=sys.stderr) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            yield chunk
            bar.update(len(chunk))


def _check_device(device: str) -> None:
    """Refuse an unknown or absent device before any work."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise RoleError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps): {err}") from err
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RoleError(f"--device {device}: this machine has no CUDA device; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise RoleError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    elif parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise RoleError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise RoleError(f"--device {device}: unsupported device type {parsed.type!r}; use cpu or cuda")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RoleError(f"--batch_size must be an integer >= 1, got {batch_size!r}")


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_out_folder(out: str) -> Path:
    """``--out`` must be a folder (or not exist yet) under a writable existing folder."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RoleError(f"--out {folder} is a file; pass a folder (it is created when missing)")
    anchor = _existing_ancestor(folder.absolute())
    if not anchor.is_dir():
        raise RoleError(f"--out {folder}: {anchor} is a file, so the folder cannot be created")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise RoleError(f"--out {folder}: {anchor} is not writable; pass a folder you can write to")
    return folder


def _check_not_inside_inputs(folder: Path, inputs: dict[str, str], what: str = "--out") -> None:
    """Refuse an output folder equal to or inside an input folder: outputs would replace or join the inputs."""
    resolved = folder.resolve()
    for name, value in inputs.items():
        source = Path(value).expanduser().resolve()
        if source.is_dir() and (resolved == source or source in resolved.parents):
            where = "is" if resolved == source else "is inside"
            raise RoleError(
                f"{what} {folder} {where} the --{name} folder {value}: the outputs would replace or mix with the "
                "inputs; pass another folder"
            )


def _check_no_clobber(outputs: Sequence[Path], inputs: Sequence[Path], what: str = "--out") -> None:
    """No output may land on an input file (e.g. ``--out .`` next to ``face.png``)."""
    sources = {p.resolve() for p in inputs}
    for output in outputs:
        if output.resolve() in sources:
            raise RoleError(
                f"{what}: writing {output} would replace the input file of the same name; pass another folder"
            )


def _probe_writable(folder: Path) -> None:
    """Create the folder and a temporary file in it (root ignores permission bits, so this is the real test)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".ipmn-write-test.")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise RoleError(f"--out {folder} is not writable: {err}") from err


def _write_all(chunks: Iterator[list], work: Callable[[list], list[tuple[Path, Image.Image]]], out: Path) -> list[Path]:
    """Run ``work`` on each chunk and save what it returns; a failure part-way names what was already written."""
    written: list[Path] = []
    with contextlib.closing(chunks):  # closes the progress bar before the error is printed
        for chunk in chunks:
            try:
                outputs = work(chunk)
            except (RoleError, ImageReadError) as err:
                if written:
                    raise type(err)(f"{err}\n({len(written)} output(s) were already written to {out})") from err
                raise
            for path, image in outputs:
                atomic_save_image(path, image)
                written.append(path)
    return written


def _guard(run: Callable[[], int]) -> int:
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
    resize: ResizePolicy = "crop",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Sender: put the watermarked mask on each protected face; writes ``<out>/<stem>.png`` (x_wmf).

    Args:
        bundle: the service bundle (``service.safetensors``).
        protected: a face image or a folder of them (x_p).
        mask: the mask image or a folder of masks (x_m), paired with the faces by file name stem; never the
            same file or folder as ``protected``.
        out: output folder; not an input folder nor inside one.
        resize: images not at the bundle's size: ``crop`` (centre square, resized), ``resize`` (squashed whole)
            or ``reject``.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def run() -> int:
        _check_batch_size(batch_size)
        _check_device(device)
        if _same_file(Path(protected).expanduser(), Path(mask).expanduser()):
            raise RoleError(
                f"--mask {mask} is the same as --protected: a face cannot be its own mask (it would hide nothing)"
            )
        folder = _check_out_folder(out)
        model = IPMN.load(service_bundle=bundle, device=device)
        pairs = pair_by_stem(list_images(protected, "protected"), list_images(mask, "mask"))
        check_images([f for pair in pairs for f in pair], model.image_size, resize)
        _check_not_inside_inputs(folder, {"protected": protected, "mask": mask})
        targets = [folder / f"{face.stem}.png" for face, _ in pairs]
        _check_no_clobber(targets, [f for pair in pairs for f in pair])
        _probe_writable(folder)

        def work(chunk: list[tuple[Path, Path]]) -> list[tuple[Path, Image.Image]]:
            faces = read_images([f for f, _ in chunk], model.image_size, resize)
            masks = read_images([m for _, m in chunk], model.image_size, resize)
            return [
                (folder / f"{face.stem}.png", image) for (face, _), image in zip(chunk, model.protect(faces, masks))
            ]

        _write_all(_batches(pairs, batch_size, "protect"), work, folder)
        print(f"wrote {len(pairs)} masked face(s) to {out}")
        return 0

    return _guard(run)


def recover(
    *,
    bundle: str,
    masked: str,
    out: str,
    seed: int | None = None,
    resize: ResizePolicy = "crop",
    batch_size: int = 8,
    device: str = "cpu",
) -> int:
    """Receiver: take the mask off; writes ``<out>/<stem>_face.png`` (x'_p) and ``<stem>_mask.png`` (x'_wm).

    Args:
        bundle: the service bundle (``service.safetensors``).
        masked: a masked face (x_wmf, as written by ``ipmn protect``) or a folder of them.
        out: output folder; not the ``masked`` folder nor inside it (the next run would read the outputs).
        seed: seed of the Gaussian z (batch ``i`` uses ``seed + i``); ``None``: random.
        resize: images not at the bundle's size: ``crop`` (centre square, resized), ``resize`` (squashed whole)
            or ``reject``.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def run() -> int:
        _check_batch_size(batch_size)
        _check_device(device)
        folder = _check_out_folder(out)
        model = IPMN.load(service_bundle=bundle, device=device)
        files = list_images(masked, "masked")
        check_images(files, model.image_size, resize)
        _check_not_inside_inputs(folder, {"masked": masked})
        targets = [folder / f"{f.stem}_{kind}.png" for f in files for kind in ("face", "mask")]
        _check_no_clobber(targets, files)
        _probe_writable(folder)
        batch_index = iter(range(len(files)))

        def work(chunk: list[Path]) -> list[tuple[Path, Image.Image]]:
            index = next(batch_index)
            images = read_images(chunk, model.image_size, resize)
            faces, masks = model.recover(images, seed=None if seed is None else seed + index)
            outputs = []
            for file, face, mask_image in zip(chunk, faces, masks):
                outputs += [(folder / f"{file.stem}_face.png", face), (folder / f"{file.stem}_mask.png", mask_image)]
            return outputs

        _write_all(_batches(files, batch_size, "recover"), work, folder)
        print(f"wrote {len(files)} recovered face(s) and mask(s) to {out}")
        return 0

    return _guard(run)


def empirical_p_values(ncs: Sequence[float], reference: Sequence[float]) -> list[float]:
    """Per-image p-values of NCs against ``N`` clean-image NCs: ``(1 + #{ref >= nc}) / (N + 1)``.

    The p-value is the chance that a clean image gives an NC at least as high; it is never below
    ``1 / (N + 1)``, whatever the NC.
    """
    n = len(reference)
    return [(1 + sum(r >= nc for r in reference)) / (n + 1) for nc in ncs]


def fisher_combined_p_value(p_values: Sequence[float]) -> tuple[float, float]:
    """Fisher's combination of independent p-values: ``X = -2 Σ ln p ~ χ²(2n)``; returns ``(X, P(χ²(2n) >= X))``."""
    n = len(p_values)
    statistic = -2.0 * sum(math.log(p) for p in p_values)
    survival = torch.special.gammaincc(torch.tensor(float(n), dtype=torch.float64),
                                       torch.tensor(statistic / 2.0, dtype=torch.float64))  # fmt: skip
    return statistic, float(survival)


def _check_report(report: str, overwrite: bool, protected_files: Sequence[Path]) -> Path:
    target = Path(report).expanduser()
    if target.is_dir():
        raise RoleError(f"--report {target} is a folder; pass a file name such as report.json")
    for source in protected_files:
        if target.exists() and _same_file(target, source):
            raise RoleError(f"--report {target} is an input of this command ({source}); it is never overwritten")
    if target.exists() and not overwrite:
        raise RoleError(f"--report {target} exists; pass --overwrite true to replace it, or another file name")
    anchor = _existing_ancestor(target.absolute().parent)
    if not anchor.is_dir():
        raise RoleError(f"--report {target}: {anchor} is a file, so the report cannot be written there")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise RoleError(f"--report {target}: {anchor} is not writable")
    return target


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

    Prints a table of NC and verdict per image (verified when NC > the bundle's threshold, paper §4) and, when
    a reference of NCs on clean images is available, how unlikely the observed NCs are for clean images: each
    image's empirical p-value ``(1 + #{reference NC >= NC}) / (N + 1)`` and the set's combined p-value
    (Fisher: ``-2 Σ ln p ~ χ²(2n)``, images taken as independent). A p-value from N reference NCs is never
    below ``1 / (N + 1)`` per image. The reference is ``--reference`` (clean faces: no watermark), else the
    bundle's ``clean_nc_reference``.

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
        _check_batch_size(batch_size)
        _check_device(device)
        loaded = load_bundle(bundle, VERIFIER_FORMAT)
        model = IPMN(verifier=loaded, device=device)
        files = list_images(images, "images")
        reference_files = list_images(reference, "reference") if reference is not None else []
        check_images(files + reference_files, model.image_size, resize)
        target = None
        if report is not None:
            target = _check_report(report, overwrite, [loaded.path, *files, *reference_files])

        def ncs(paths: list[Path], desc: str) -> list[float]:
            values: list[float] = []
            with contextlib.closing(_batches(paths, batch_size, desc)) as chunks:
                for chunk in chunks:
                    values += [v.nc for v in model.verify(read_images(chunk, model.image_size, resize))]
            return values

        observed = ncs(files, "verify")
        rows: list[dict[str, Any]] = [
            {"file": str(f), "nc": nc, "verified": bool(nc > model.threshold)} for f, nc in zip(files, observed)
        ]
        if reference_files:
            clean, source = ncs(reference_files, "reference"), f"--reference {reference}"
        else:
            clean, source = loaded.config.get("clean_nc_reference"), "the bundle's clean_nc_reference"
        p_values = empirical_p_values(observed, clean) if clean else None
        width = max(len(Path(r["file"]).name) for r in rows)
        print(f"{'image':<{width}}  {'NC':>7}  {'p-value':>8}  verdict")
        for index, row in enumerate(rows):
            verdict = "verified" if row["verified"] else "NOT verified"
            p_text = f"{p_values[index]:8.2g}" if p_values is not None else f"{'-':>8}"
            print(f"{Path(row['file']).name:<{width}}  {row['nc']:7.4f}  {p_text}  {verdict}")
            if p_values is not None:
                row["p_value"] = p_values[index]
        passed = sum(r["verified"] for r in rows)
        print(f"{passed}/{len(rows)} image(s) verified (NC > {model.threshold})")
        summary: dict[str, Any] = {
            "bundle": str(bundle),
            "threshold": model.threshold,
            "verified": passed,
            "total": len(rows),
            "all_verified": passed == len(rows),
        }
        if p_values is not None:
            statistic, combined = fisher_combined_p_value(p_values)
            floor = 1 / (len(clean) + 1)
            print(
                f"p-value (chance that clean images give NCs this high; Fisher's combination over {len(rows)} "
                f"image(s), against {len(clean)} clean-image NCs from {source}): {combined:.3g}; each image's "
                f"p-value is at least 1/(N+1) = {floor:.3g} with N = {len(clean)}, so smaller per-image p-values "
                "need a larger reference"
            )
            summary["p_value"] = {
                "combined": combined,
                "method": "fisher",
                "statistic": statistic,
                "degrees_of_freedom": 2 * len(rows),
                "reference_size": len(clean),
                "reference_source": source,
                "per_image_minimum": floor,
            }
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

    return _guard(run)
