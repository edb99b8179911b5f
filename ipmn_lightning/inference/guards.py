"""The file guards of ``ipmn protect``, ``ipmn recover`` and ``ipmn verify``: everything checked before work.

Listing and pairing the input images (hidden files skipped; other files that are not images skipped with a
note; an unsupported image format such as ``.gif`` or a broken link refused by name; links to a file already
listed collapsed into one, with a note; two inputs with the same stem refused), the device and batch size,
every input file decoded in full before any work (so a truncated file stops the command before its first
output), its size (too small or too elongated refused, upscaling announced on stderr) and size policy, the
output folder (not a file, not an input folder or inside one, never replacing an input file, writable; created
only when the first output is written, so a failed command leaves no empty folder), the ``verify --report``
file, and the helper that writes the outputs batch by batch and says what was already written when a batch
fails.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image
from tqdm.auto import tqdm

from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.core.files import atomic_save_image
from ipmn_lightning.data.images import (
    IMAGE_EXTENSIONS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    Crop,
    ImageReadError,
    image_size_of,
    read_image,
    size_problem,
)
from ipmn_lightning.inference.options import ResizePolicy

__all__ = [
    "ResizePolicy",
    "RoleError",
    "batches",
    "check_batch_size",
    "check_device",
    "check_images",
    "check_no_clobber",
    "check_not_inside_inputs",
    "check_out_folder",
    "check_report",
    "input_paths",
    "list_images",
    "pair_by_stem",
    "probe_writable",
    "refuse_wrong_sizes",
    "run_guarded",
    "same_file",
    "write_all",
]

T = TypeVar("T")


class RoleError(IPMNError):
    """Bad input to a role command: no images, unpaired files, an image of the wrong size, a bad output path."""


def _is_hidden(path: Path) -> bool:
    # dotfiles, macOS AppleDouble files (._name.png) and atomic_path's temporary files (.stem.XXXX.tmp.png)
    return path.name.startswith(".")


def input_paths(value: str | Sequence[str]) -> list[str]:
    """The paths of a command's input: one path (``--protected DIR``) or several (``ipmn protect a.jpg b.jpg``)."""
    return [value] if isinstance(value, str) else [str(v) for v in value]


def list_images(path: str | Sequence[str], what: str) -> list[Path]:
    """The image file ``path``, or the (non-hidden) image files of folder ``path`` sorted by name, each real file once.

    Several paths (files or folders, ``ipmn protect a.jpg b.jpg holidays/``) give their images in the order
    given, each real file once, with the same checks over all of them (no two images with one stem).

    Files of a folder that are not images (``notes.txt``) and subfolders are skipped, with a note on stderr
    for the files; two names of one real file (a link to a file already listed) are collapsed into one (the
    file's own name is kept over a link's), with a note on stderr saying how many.

    Raises:
        RoleError: ``path`` is neither a file nor a folder, is or holds a broken link or an image format the
            library does not read (``.gif``, ...), the folder has no images, or two of its images have the
            same stem (``x.png`` and ``x.bmp``: their outputs would replace each other).
    """
    if not isinstance(path, str):
        paths = input_paths(path)
        if not paths:
            raise RoleError(f"--{what}: no input given; pass image files or folders")
        files = _one_name_per_file([f for one in paths for f in list_images(one, what)], what)
        _by_stem(files, what)
        return files
    source = Path(path).expanduser()
    if source.is_symlink() and not source.exists():
        raise RoleError(f"--{what}: {source} is a broken link (it points to {os.readlink(source)}, which is missing)")
    if source.is_file():
        if source.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS:
            raise RoleError(f"--{what}: {source}: {_unsupported(source)}")
        return [source]
    if not source.is_dir():
        raise RoleError(f"--{what}: {source} is neither an image file nor a folder")
    files, problems, skipped = [], [], []
    for entry in sorted(source.iterdir()):
        if _is_hidden(entry):
            continue
        if entry.is_symlink() and not entry.exists():
            problems.append(f"{entry}: broken link (it points to {os.readlink(entry)}, which is missing)")
        elif entry.is_dir():
            continue  # not recursive (documented)
        elif entry.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS:
            problems.append(f"{entry}: {_unsupported(entry)}")
        elif entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file():
            files.append(entry)
        else:
            skipped.append(entry.name)
    if problems:
        raise RoleError(f"--{what} {source}: cannot take these files (fix or remove them):\n  " + "\n  ".join(problems))
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"note: --{what}: skipped {len(skipped)} file(s) that are not images: {shown}", file=sys.stderr)
    files = _one_name_per_file(files, what)
    if not files:
        raise RoleError(f"--{what}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {source}")
    _by_stem(files, what)
    return files


def _unsupported(file: Path) -> str:
    return (
        f"unsupported image format {file.suffix.lower()}; convert it to PNG or JPEG (the readers take "
        f"{', '.join(IMAGE_EXTENSIONS)})"
    )


def _one_name_per_file(files: list[Path], what: str) -> list[Path]:
    """Collapse names of one real file (links), keeping the file's own name over a link's, else the first."""
    by_real: dict[Path, list[Path]] = {}
    for file in files:
        by_real.setdefault(file.resolve(), []).append(file)
    kept, collapsed = [], []
    for names in by_real.values():
        own = [n for n in names if not n.is_symlink()]
        keep = own[0] if own else names[0]
        kept.append(keep)
        collapsed += [f"{n.name} (= {keep.name})" for n in names if n != keep]
    if collapsed:
        shown = ", ".join(collapsed[:5]) + (f" and {len(collapsed) - 5} more" if len(collapsed) > 5 else "")
        print(
            f"note: --{what}: collapsed {len(collapsed)} link(s) to a file already listed, so each file is read "
            f"once: {shown}",
            file=sys.stderr,
        )
    return sorted(kept)


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
        if same_file(face, mask):
            raise RoleError(
                f"--mask {mask} is the protected face itself: a face cannot be its own mask (it would hide nothing)"
            )
    return pairs


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (``False`` when either cannot be resolved)."""
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def refuse_wrong_sizes(wrong: list[str], size: int, resize: ResizePolicy) -> None:
    """With ``reject``, refuse the listed ``"file (WxH)"`` images that are not ``size`` x ``size``, in one error."""
    if wrong and resize == "reject":
        raise RoleError(
            f"images not at the bundle's {size}x{size} (pass --resize crop or --resize resize to resize them):\n  "
            + "\n  ".join(wrong)
        )


#: ``--resize`` policies as :func:`~ipmn_lightning.data.images.read_image` crops, for the decoding check.
_CHECK_CROPS: dict[str, Crop] = {"crop": "center", "resize": "none", "reject": "center"}

_LISTED = 5


def _listing(lines: list[str]) -> str:
    more = f"\n  ... and {len(lines) - _LISTED} more" if len(lines) > _LISTED else ""
    return "\n  " + "\n  ".join(lines[:_LISTED]) + more


def check_images(files: list[Path], size: int, resize: ResizePolicy) -> None:
    """Check every file before any work: header, size, size policy, then a full decode of each.

    Decoding every file up front (not only its header) means a truncated or corrupt file stops the command
    before its first output is written; it costs one extra read of the inputs. An image smaller than the
    bundle's ``size`` (but not refused) is upscaled: a warning on stderr lists them.

    Raises:
        ImageReadError: a file is not an image, is truncated, unreadable, too large (decompression bomb), or
            a float/integer image outside its range.
        RoleError: images too small or too elongated (:func:`~ipmn_lightning.data.images.size_problem`), or,
            with ``reject``, every file not ``size`` x ``size`` (each listed in one error).
    """
    wrong, refused, upscaled = [], [], []
    for file in files:
        width, height = image_size_of(file)
        problem = size_problem(width, height, size)
        if problem is not None:
            refused.append(f"{file}: {problem}")
        elif (width, height) != (size, size):
            wrong.append(f"{file} ({width}x{height})")
            if min(width, height) < size:
                upscaled.append(f"{file} ({width}x{height})")
    if refused:
        raise RoleError(f"{len(refused)} image(s) cannot be used for the bundle's {size}x{size}:" + _listing(refused))
    refuse_wrong_sizes(wrong, size, resize)
    crop = _CHECK_CROPS.get(resize, "center")
    for file in files:
        read_image(file, size, crop)
    if upscaled:
        print(
            f"warning: {len(upscaled)} image(s) smaller than the bundle's {size}x{size} are upscaled (the outputs "
            "are blurrier than the bundle allows):" + _listing(upscaled),
            file=sys.stderr,
        )


def batches(items: list[T], batch_size: int, desc: str) -> Iterator[list[T]]:
    """``items`` in chunks of ``batch_size``, with a progress bar on stderr for two or more items."""
    with tqdm(total=len(items), desc=desc, unit="img", disable=len(items) < 2, file=sys.stderr) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            yield chunk
            bar.update(len(chunk))


def check_device(device: str) -> None:
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


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size that is not an integer >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RoleError(f"--batch_size must be an integer >= 1, got {batch_size!r}")


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_out_folder(out: str) -> Path:
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


def check_not_inside_inputs(folder: Path, inputs: dict[str, str | Sequence[str]], what: str = "--out") -> None:
    """Refuse an output folder equal to or inside an input folder: outputs would replace or join the inputs."""
    resolved = folder.resolve()
    for name, value in ((name, one) for name, given in inputs.items() for one in input_paths(given)):
        source = Path(value).expanduser().resolve()
        if source.is_dir() and (resolved == source or source in resolved.parents):
            where = "is" if resolved == source else "is inside"
            raise RoleError(
                f"{what} {folder} {where} the --{name} folder {value}: the outputs would replace or mix with the "
                "inputs; pass another folder"
            )


def check_no_clobber(outputs: Sequence[Path], inputs: Sequence[Path], what: str = "--out") -> None:
    """No output may land on an input file (e.g. ``--out .`` next to ``face.png``)."""
    sources = {p.resolve() for p in inputs}
    for output in outputs:
        if output.resolve() in sources:
            raise RoleError(
                f"{what}: writing {output} would replace the input file of the same name; pass another folder"
            )


def probe_writable(folder: Path) -> None:
    """Write a temporary file in ``folder``, or in its nearest existing parent when it does not exist yet.

    Root ignores permission bits, so writing is the real test. A missing folder is not created here: it is
    created with the first output (:func:`write_all`), so a command that fails leaves no empty folder.
    """
    target = folder if folder.is_dir() else _existing_ancestor(folder.absolute())
    try:
        fd, name = tempfile.mkstemp(dir=target, prefix=".ipmn-write-test.")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise RoleError(f"--out {folder} is not writable: {err}") from err


def check_report(report: str, overwrite: bool, inputs: Sequence[Path]) -> Path:
    """``verify --report``: a file name, never an input (nor the bundle), replaced only with ``overwrite``."""
    target = Path(report).expanduser()
    if target.is_dir():
        raise RoleError(f"--report {target} is a folder; pass a file name such as report.json")
    for source in inputs:
        if target.exists() and same_file(target, source):
            raise RoleError(f"--report {target} is an input of this command ({source}); it is never overwritten")
    if target.exists() and not overwrite:
        raise RoleError(f"--report {target} exists; pass --overwrite true to replace it, or another file name")
    anchor = _existing_ancestor(target.absolute().parent)
    if not anchor.is_dir():
        raise RoleError(f"--report {target}: {anchor} is a file, so the report cannot be written there")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise RoleError(f"--report {target}: {anchor} is not writable")
    return target


def write_all(
    chunks: Iterator[list[T]], work: Callable[[list[T]], list[tuple[Path, Image.Image]]], out: Path
) -> list[Path]:
    """Run ``work`` on each chunk and save what it returns; a failure part-way names what was already written.

    ``out`` (and any missing parent) is created just before the first output is saved; if the command fails
    before any output is saved, the folders it created are removed again.
    """
    written: list[Path] = []
    created = [p for p in (out.absolute(), *out.absolute().parents) if not p.exists()]
    try:
        with contextlib.closing(chunks):  # closes the progress bar before the error is printed
            for chunk in chunks:
                try:
                    outputs = work(chunk)
                except (RoleError, ImageReadError) as err:
                    if written:
                        raise type(err)(f"{err}\n({len(written)} output(s) were already written to {out})") from err
                    raise
                for path, image in outputs:
                    if not written:
                        out.mkdir(parents=True, exist_ok=True)
                    atomic_save_image(path, image)
                    written.append(path)
    finally:
        if not written:
            for folder in created:  # deepest first; only empty folders this call made
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return written


def run_guarded(run: Callable[[], int]) -> int:
    """Run a command; bad input (any ``IPMNError``: role, bundle, image, face...) prints ``error: ...``, returns 2."""
    try:
        return run()
    except IPMNError as err:  # RoleError, BundleError, ImageReadError, NoFaceError, ...: all say what to fix
        print(f"error: {err}", file=sys.stderr)
        return 2
