"""``ipmn protect``, ``ipmn recover`` and ``ipmn verify``: the three roles of paper §3.1 on image files.

This module holds the commands' signatures and documentation only, and imports nothing heavy, so that
``ipmn protect --help`` answers without loading torch; the work is in
:mod:`ipmn_lightning.inference.role_work`, imported when a command runs.

Each command takes image files or folders of them (given as positional arguments, ``ipmn protect a.jpg
b.jpg ...``, or as ``--protected``/``--masked``/``--images``) (``.png``, ``.jpg``, ...; not recursive; hidden files,
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

from typing import Literal

from ipmn_lightning.inference.options import ResizePolicy

__all__ = ["protect", "recover", "verify"]


def protect(
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
    """Sender: put the watermarked mask on each protected face; writes ``<out>/<stem>.png`` (x_wmf).

    Args:
        bundle: the service bundle (``service.safetensors``).
        protected: a face image or a folder of them (x_p), or several (``ipmn protect a.jpg b.jpg ...``: the
            positional arguments); without ``mask``, a photo or a folder of photos
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
    from ipmn_lightning.inference.role_work import run_protect  # torch loads here, not for --help

    return run_protect(
        bundle=bundle,
        protected=protected,
        mask=mask,
        out=out,
        donors=donors,
        size=size,
        resize=resize,
        batch_size=batch_size,
        device=device,
    )


def recover(
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
    """Receiver: take the mask off; writes ``<out>/<stem>_face.png`` (x'_p) and ``<stem>_mask.png`` (x'_wm).

    Args:
        bundle: the receiver bundle (``receiver.safetensors``: the INN only) or the service bundle; both give
            the same outputs.
        masked: a masked face (x_wmf, as written by ``ipmn protect``) or a folder of them, or several (the
            positional arguments: ``ipmn recover protected/a.png protected/b.png ...``).
        out: output folder; not the ``masked`` folder nor inside it (the next run would read the outputs).
        seed: seed of the Gaussian z (batch ``i`` uses ``seed + i``); ``None``: random (photo mode: 0).
        photo: photo mode (a whole photo from ``ipmn protect PHOTO``, restored from its PNG record, written as
            ``<stem>.png``); ``None``: when the inputs carry a record; ``false``: aligned crops only.
        resize: images not at the bundle's size: ``crop`` (centre square, resized), ``resize`` (squashed whole)
            or ``reject``.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """
    from ipmn_lightning.inference.role_work import run_recover  # torch loads here, not for --help

    return run_recover(
        bundle=bundle,
        masked=masked,
        out=out,
        seed=seed,
        photo=photo,
        resize=resize,
        batch_size=batch_size,
        device=device,
    )


def verify(
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
        images: an image or a folder of them (masked faces, recovered masks, suspected stolen outputs), or
            several (the positional arguments: ``ipmn verify a.png b.png ...``).
        report: also write the results to this JSON file (never an input or the bundle).
        overwrite: replace an existing ``report``.
        reference: an image or a folder of clean faces (without the watermark) whose NCs form the reference.
        resize: images not at the bundle's size: ``crop`` (centre square, resized), ``resize`` (squashed whole)
            or ``reject``.
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda[:N]``.
    """
    from ipmn_lightning.inference.role_work import run_verify  # torch loads here, not for --help

    return run_verify(
        bundle=bundle,
        images=images,
        report=report,
        overwrite=overwrite,
        reference=reference,
        resize=resize,
        batch_size=batch_size,
        device=device,
    )
