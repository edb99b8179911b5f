"""The mask store: precomputed face-swap masks x_m and the (x_p, x_r, x_m) triplets they belong to.

A mask store is a folder::

    store/
      pairs.csv            header "split,protected,replacement,mask", one row per protected face
      masks/000001.png     x_m for the row whose protected face is 000001.jpg (lossless PNG)

``protected`` and ``replacement`` are POSIX paths relative to the dataset's image folder
(``img_align_celeba/`` for CelebA, the folder itself for an image folder); ``mask`` is relative to
the store; no path may be absolute or contain ``..``. x_m is the face swap MG(x_p, x_r): x_p's scene
and background with x_r's identity (DiffFace in the paper), computed offline because it costs minutes
per pair.

Workflow: :func:`make_pairs` decides the triplets, a face-swap tool writes one mask per row
(:func:`save_mask`), :func:`write_pairs` writes ``pairs.csv``, and :func:`check_store` (also
``ipmn masks check``) lists every problem before training starts.

Modules: :mod:`~ipmn_lightning.data.mask_store.pairs` (``pairs.csv``, :class:`PairRecord`,
:class:`MaskStoreError`), :mod:`~ipmn_lightning.data.mask_store.check` (:func:`check_store`,
:func:`validate_store`) and :mod:`~ipmn_lightning.data.mask_store.dataset` (:func:`save_mask`,
:class:`FaceSwapPairsDataset`).
"""

from ipmn_lightning.data.mask_store.check import check_store, validate_store
from ipmn_lightning.data.mask_store.dataset import FaceSwapPairsDataset, save_mask
from ipmn_lightning.data.mask_store.pairs import (
    MASK_DIR,
    PAIRS_FILE,
    PAIRS_HEADER,
    MaskStoreError,
    PairRecord,
    make_pairs,
    read_pairs,
    write_pairs,
)

__all__ = [
    "MASK_DIR",
    "PAIRS_FILE",
    "PAIRS_HEADER",
    "FaceSwapPairsDataset",
    "MaskStoreError",
    "PairRecord",
    "check_store",
    "make_pairs",
    "read_pairs",
    "save_mask",
    "validate_store",
    "write_pairs",
]
