"""Data: synthetic faces, CelebA and image-folder readers, the mask store (torch only).

``FaceSwapDataModule`` (Lightning) is in :mod:`ipmn_lightning.datamodules.face_swap`, not imported here, so the
inference layer reads images without importing Lightning.
"""

from ipmn_lightning.data.mask_store import FaceSwapPairsDataset, MaskStoreError, PairRecord
from ipmn_lightning.data.synthetic import SyntheticFaceSwapDataset, render_face
from ipmn_lightning.data.watermark import default_watermark, load_watermark

__all__ = [
    "FaceSwapPairsDataset",
    "MaskStoreError",
    "PairRecord",
    "SyntheticFaceSwapDataset",
    "default_watermark",
    "load_watermark",
    "render_face",
]
