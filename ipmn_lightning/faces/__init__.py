"""Real faces: detection, landmarks and identity (dlib), the mask generators, and SR_P (bottom layer).

Importing this package needs no optional package; using dlib or OpenCV needs the ``faces`` extra
(``pip install "ipmn-lightning[faces]"``), and a missing one raises
:class:`~ipmn_lightning.faces.analysis.FacesExtraMissingError` naming that command.
"""

from __future__ import annotations

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
from ipmn_lightning.faces.privacy import PrivacySuccessRate, RecoveryUtility, table11_attacks

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
