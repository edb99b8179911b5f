"""The record of a protected photo (its face regions, the bundle's fingerprint) and its PNG text chunk.

Re-exported by :mod:`ipmn_lightning.inference.photos`, the photo mode that writes and reads it.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.core.files import atomic_path

__all__ = [
    "PHOTO_RECORD_KEY",
    "FaceRegion",
    "NoFaceError",
    "PhotoRecord",
    "PhotoRecordError",
    "read_photo_record",
    "save_protected_png",
]

#: The PNG text chunk's keyword.
PHOTO_RECORD_KEY = "ipmn-photo-record"


class NoFaceError(IPMNError):
    """No face was found in a photo, so there is nothing to protect (and nothing is written)."""


class PhotoRecordError(IPMNError):
    """A protected photo has no readable record (the PNG text chunk), or it is for another bundle."""


@dataclass
class FaceRegion:
    """One protected face.

    Attributes:
        box: ``(left, top, right, bottom)`` photo pixels (right/bottom exclusive) holding every changed pixel.
        affine: 2x3, photo -> aligned crop coordinates.
        size: the side of the aligned crop the bundle processed.
    """

    box: tuple[int, int, int, int]
    affine: list[list[float]]
    size: int


@dataclass
class PhotoRecord:
    """What recovery needs; travels in the PNG as a text chunk (JSON).

    Attributes:
        regions: the protected faces, in the order they were protected.
        bundle_fingerprint: :func:`bundle_fingerprint` of the service bundle that protected them.
        version: the record format.
    """

    regions: list[FaceRegion] = field(default_factory=list)
    bundle_fingerprint: str = ""
    version: int = 1

    def to_json(self) -> str:
        """The record as compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PhotoRecord:
        """Parse :meth:`to_json`'s output.

        Raises:
            PhotoRecordError: not a record of a known version.
        """
        try:
            data = json.loads(text)
            if int(data.get("version", 0)) != 1:
                raise PhotoRecordError(f"photo record version {data.get('version')!r} is not supported (expected 1)")
            regions = [
                FaceRegion(
                    tuple(int(v) for v in r["box"]), [[float(v) for v in row] for row in r["affine"]], int(r["size"])
                )  # type: ignore[arg-type]
                for r in data["regions"]
            ]
            return cls(regions, str(data["bundle_fingerprint"]), 1)
        except PhotoRecordError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise PhotoRecordError(f"the photo record is corrupt ({err})") from err


def save_protected_png(target: str | os.PathLike[str] | io.BytesIO, image: Image.Image, record: PhotoRecord) -> None:
    """Write ``image`` as a PNG with ``record`` in a text chunk; atomically (temporary file + rename) for paths."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PHOTO_RECORD_KEY, record.to_json())
    if isinstance(target, io.BytesIO):
        image.save(target, format="PNG", pnginfo=info)
        return
    with atomic_path(Path(target)) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def read_photo_record(image: Image.Image) -> PhotoRecord | None:
    """The record in a PNG's text chunk, or None when there is none.

    Raises:
        PhotoRecordError: the chunk is there but corrupt.
    """
    text = getattr(image, "text", None)
    value = text.get(PHOTO_RECORD_KEY) if isinstance(text, dict) else None
    if value is None:
        value = image.info.get(PHOTO_RECORD_KEY)
    return None if value is None else PhotoRecord.from_json(str(value))
