"""Data: synthetic faces, CelebA and image-folder readers, the mask store (torch only).

``FaceSwapDataModule`` (Lightning) is in :mod:`ipmn_lightning.data.datamodule`, not imported here, so the
inference layer reads images without importing Lightning.
"""

from .mask_store import FaceSwapPairsDataset, MaskStoreError, PairRecord
from .synthetic import SyntheticFaceSwapDataset, render_face
from .watermark import default_watermark, load_watermark

__all__ = [
    "FaceSwapPairsDataset",
    "MaskStoreError",
    "PairRecord",
    "SyntheticFaceSwapDataset",
    "default_watermark",
    "load_watermark",
    "render_face",
]
