"""FaceSwapDataModule refuses batch sizes below 1 up front."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("batch_size", [0, -2])
def test_non_positive_batch_size_is_refused_up_front(batch_size):
    from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule

    with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {batch_size}"):
        FaceSwapDataModule(image_size=32, batch_size=batch_size, num_workers=0)
    with pytest.raises(ValueError, match="val_batch_size must be an integer >= 1"):
        FaceSwapDataModule(image_size=32, batch_size=2, val_batch_size=batch_size, num_workers=0)
