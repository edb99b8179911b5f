"""Real faces: detection, landmarks and identity (dlib), the mask generators, and SR_P (bottom layer).

Importing this package needs no optional package; using dlib or OpenCV needs the ``faces`` extra
(``pip install "ipmn-lightning[faces]"``), and a missing one raises
:class:`~ipmn_lightning.faces.analysis.FacesExtraMissingError` naming that command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ipmn_lightning.faces.analysis import (
    FACES_EXTRA_HINT,
    DlibFaceAnalyzer,
    DlibIdentityEncoder,
    FaceAnalyzer,
    FacesExtraMissingError,
    IdentityEncoder,
    require_faces_extra,
)
from ipmn_lightning.faces.generators import GENERATORS, LandmarkMaskGenerator, MaskGenerator, MaskOutcome, face_region

if TYPE_CHECKING:
    from ipmn_lightning.faces.privacy import PrivacySuccessRate, RecoveryUtility, table11_attacks

#: Names of faces.privacy, imported on first use: its metrics are torchmetrics ``Metric``s, which the inference
#: layer (photo mode's alignment and mask generation import this package) must not load.
_PRIVACY = ("PrivacySuccessRate", "RecoveryUtility", "table11_attacks")


def __getattr__(name: str) -> Any:
    """``PrivacySuccessRate``, ``RecoveryUtility`` and ``table11_attacks`` from :mod:`.privacy`, on first use."""
    if name in _PRIVACY:
        from ipmn_lightning.faces import privacy

        return getattr(privacy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FACES_EXTRA_HINT",
    "GENERATORS",
    "DlibFaceAnalyzer",
    "DlibIdentityEncoder",
    "FaceAnalyzer",
    "FacesExtraMissingError",
    "IdentityEncoder",
    "LandmarkMaskGenerator",
    "MaskGenerator",
    "MaskOutcome",
    "PrivacySuccessRate",
    "RecoveryUtility",
    "face_region",
    "require_faces_extra",
    "table11_attacks",
]
