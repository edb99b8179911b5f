"""Data: synthetic faces, CelebA and image-folder readers, the mask store and FaceSwapDataModule."""

from .datamodule import FaceSwapDataModule
from .mask_store import FaceSwapPairsDataset, MaskStoreError, PairRecord
from .synthetic import SyntheticFaceSwapDataset, render_face
from .watermark import default_watermark, load_watermark

__all__ = [
    "FaceSwapDataModule",
    "FaceSwapPairsDataset",
    "MaskStoreError",
    "PairRecord",
    "SyntheticFaceSwapDataset",
    "default_watermark",
    "load_watermark",
    "render_face",
]
