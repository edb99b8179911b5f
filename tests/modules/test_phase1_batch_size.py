"""Phase 1 refuses an odd batch size before it trains a step."""

from __future__ import annotations

import pytest


def test_odd_batch_size_is_refused_before_phase_1_trains():
    from ipmn_lightning.modules import WatermarkPretrainModule
    from tests.helpers import TINY_PHASE1, tiny_data, tiny_trainer

    module = WatermarkPretrainModule(image_size=32, **TINY_PHASE1)
    trainer = tiny_trainer()
    with pytest.raises(ValueError, match=r"even batch size .* --data\.batch_size=4"):
        trainer.fit(module, datamodule=tiny_data(batch_size=3))
    assert trainer.global_step == 0
