"""Face analysis: detection, 68 landmarks and identity embeddings (dlib behind the ``faces`` extra).

Two small interfaces keep the rest of the library independent of dlib:

* :class:`FaceAnalyzer` finds a face and its 68 landmarks (the iBUG 300-W / dlib numbering: jaw 0-16,
  brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) in an ``(H, W, 3)`` uint8 RGB array. The mask
  generator needs nothing else, so tests can inject a fake one.
* :class:`IdentityEncoder` embeds a batch of images and says whether two embeddings are the same person
  (a distance and a threshold). :class:`DlibIdentityEncoder` is dlib's ResNet (128-d, Euclidean, same
  person below 0.6); another recogniser (an ArcFace checkpoint the user owns, for instance) plugs in by
  implementing :meth:`IdentityEncoder.embed_arrays`, :attr:`IdentityEncoder.threshold` and, if not
  Euclidean, :meth:`IdentityEncoder.distance`.

dlib's models ship inside the ``face-recognition-models`` wheel; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ipmn_lightning.core.errors import IPMNError

__all__ = [
    "FACES_EXTRA_HINT",
    "DlibFaceAnalyzer",
    "DlibIdentityEncoder",
    "FaceAnalyzer",
    "FacesExtraMissingError",
    "IdentityEncoder",
    "require_faces_extra",
    "to_uint8_array",
]

FACES_EXTRA_HINT = 'pip install "ipmn-lightning[faces]"'


class FacesExtraMissingError(IPMNError, ImportError):
    """The optional face-analysis packages (dlib, face-recognition-models, OpenCV) are not installed."""


def require_faces_extra(what: str = "face analysis") -> None:
    """Raise a clear error when the ``faces`` extra is missing.

    Args:
        what: the feature that needs the extra, for the message.

    Raises:
        FacesExtraMissingError: naming the missing packages and ``pip install "ipmn-lightning[faces]"``.
    """
    missing = [
        pkg
        for module, pkg in (
            ("dlib", "dlib-bin"),
            ("face_recognition_models", "face-recognition-models"),
            ("cv2", "opencv-python-headless"),
        )
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise FacesExtraMissingError(
            f"{what} needs the optional face packages ({', '.join(missing)} missing); install them with "
            f"`{FACES_EXTRA_HINT}` (the dlib models ship inside face-recognition-models; nothing is downloaded)."
        )


def _dlib_model(name: str) -> str:
    # Locate the file without importing face_recognition_models (its import pulls in pkg_resources).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        require_faces_extra()
        raise AssertionError("unreachable")
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the models with `{FACES_EXTRA_HINT}`.")
    return os.fspath(path)


def to_uint8_array(image: Tensor) -> np.ndarray:
    """Convert one image tensor to the array the analysers take.

    Args:
        image: ``(3, H, W)`` float in [0, 1].

    Returns:
        ``(H, W, 3)`` uint8 RGB, C-contiguous.
    """
    arr = image.detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(arr.permute(1, 2, 0).numpy())


class FaceAnalyzer(ABC):
    """Finds one face and its 68 landmarks in an image."""

    @abstractmethod
    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """The 68 landmarks of the largest face.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.

        Returns:
            ``(68, 2)`` float64 ``(x, y)`` pixel coordinates, or None when no face is found.
        """


class DlibFaceAnalyzer(FaceAnalyzer):
    """dlib's HOG face detector and 68-point shape predictor.

    Args:
        upsample: how many times the detector may upsample the image; it tries 0 first and upsamples
            only when no face is found, so large faces stay fast and small ones (< 80 px) are still found.

    Raises:
        FacesExtraMissingError: the ``faces`` extra is not installed.
    """

    def __init__(self, upsample: int = 1) -> None:
        require_faces_extra("DlibFaceAnalyzer")
        import dlib

        self.upsample = upsample
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(_dlib_model("shape_predictor_68_face_landmarks.dat"))

    def __getstate__(self) -> dict[str, object]:
        # dlib objects do not pickle; a worker process rebuilds them.
        return {"upsample": self.upsample}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(int(state["upsample"]))  # type: ignore[misc, call-overload]

    def detect(self, image: np.ndarray) -> object | None:
        """The largest face's dlib rectangle, or None.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
        """
        for up in range(self.upsample + 1):
            rects = self._detector(image, up)
            if len(rects):
                return max(rects, key=lambda r: r.width() * r.height())
        return None

    def shape(self, image: np.ndarray) -> object | None:
        """The largest face's dlib ``full_object_detection``, or None."""
        rect = self.detect(image)
        return None if rect is None else self._predictor(image, rect)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """See :meth:`FaceAnalyzer.landmarks`."""
        shape = self.shape(image)
        if shape is None:
            return None
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


class IdentityEncoder(ABC):
    """A face recogniser: embeddings, a distance and the same-person threshold.

    Attributes:
        threshold: two faces are the same person when their distance is below this.
    """

    threshold: float = 0.6

    @abstractmethod
    def embed_arrays(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Embed images given as arrays.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.

        Returns:
            ``(B, D)`` float64 embeddings (NaN rows where no face was found) and ``(B,)`` bool ``found``.
        """

    def embed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Embed a batch.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1].

        Returns:
            ``(B, D)`` float32 embeddings (NaN rows where no face was found) and ``(B,)`` bool ``found``.
        """
        emb, found = self.embed_arrays([to_uint8_array(x) for x in images])
        return torch.from_numpy(emb).float(), torch.from_numpy(found)

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """Row-wise distance (Euclidean here; override for cosine recognisers).

        Args:
            a: ``(B, D)`` embeddings.
            b: ``(B, D)`` embeddings.

        Returns:
            ``(B,)`` distances (NaN where either row is NaN).
        """
        return (a - b).norm(dim=1)

    def same_person(self, a: Tensor, b: Tensor) -> Tensor:
        """``(B,)`` bool: distance below :attr:`threshold` (False where either face is missing)."""
        d = self.distance(a, b)
        return torch.nan_to_num(d, nan=float("inf")) < self.threshold


class DlibIdentityEncoder(IdentityEncoder):
    """dlib's face recognition ResNet: 128-d embeddings, Euclidean distance, same person below 0.6.

    Args:
        analyzer: the detector and landmark model to align faces with (a new :class:`DlibFaceAnalyzer`
            by default).
        threshold: the same-person threshold (dlib's 0.6).
    """

    threshold = 0.6
    description = "dlib ResNet 128-d (face-recognition-models), Euclidean"

    def __init__(self, analyzer: DlibFaceAnalyzer | None = None, threshold: float = 0.6) -> None:
        require_faces_extra("DlibIdentityEncoder")
        import dlib

        self.analyzer = analyzer if analyzer is not None else DlibFaceAnalyzer()
        self.threshold = threshold
        self._net = dlib.face_recognition_model_v1(_dlib_model("dlib_face_recognition_resnet_model_v1.dat"))

    def embed_arrays(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`IdentityEncoder.embed_arrays`."""
        out = np.full((len(images), 128), np.nan)
        found = np.zeros(len(images), dtype=bool)
        for i, image in enumerate(images):
            shape = self.analyzer.shape(image)
            if shape is None:
                continue
            out[i] = np.asarray(self._net.compute_face_descriptor(image, shape), dtype=np.float64)
            found[i] = True
        return out, found
