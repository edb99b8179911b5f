"""Real faces: detection, landmarks and identity (dlib), the ``landmark`` mask generator, and SR_P.

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
from ipmn_lightning.faces.generate import generate_masks
from ipmn_lightning.faces.privacy import PrivacySuccessRate, RecoveryUtility, table11_attacks
from ipmn_lightning.faces.swap import GENERATORS, LandmarkMaskGenerator, MaskGenerator, MaskOutcome, face_region

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
    "generate_masks",
    "require_faces_extra",
    "table11_attacks",
]
