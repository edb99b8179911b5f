"""Checkpoint reading: a tag from before the phases had one name is refused, naming what was found and expected.

The package was never released, so the pre-release tags (``watermark_pretrain``, ``invertible_mask``,
``stealing_attack``, ``extractor_enhance``) are not read as their phase any more (issue 22, point 8).
"""

from __future__ import annotations

import pytest
import torch

from ipmn_lightning.phases import CheckpointError, load_phase1, load_phase_checkpoint

OLD_TAGS = [("watermark_pretrain", "phase1"), ("invertible_mask", "phase2")]


@pytest.mark.parametrize(("old", "phase"), OLD_TAGS)
def test_old_checkpoint_tags_are_refused_naming_found_and_expected(checkpoints, tmp_path, old, phase):
    checkpoint = torch.load(checkpoints[phase], weights_only=True)
    checkpoint["ipmn_phase"] = old
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match=rf"phase tag '{old}'.*expected one of 'phase1', 'phase2'") as err:
        load_phase_checkpoint(tmp_path / "old.ckpt", "x_ckpt", phase)
    assert "x_ckpt" in str(err.value) and "old.ckpt" in str(err.value)


def test_today_s_tags_still_load(checkpoints):
    assert load_phase_checkpoint(checkpoints["phase1"], "x_ckpt", "phase1")["ipmn_phase"] == "phase1"
    configs, _ = load_phase1(checkpoints["phase1"])
    assert set(configs) == {"embedder", "extractor"}
    with pytest.raises(CheckpointError, match="expected 'phase3_enhance'"):
        load_phase_checkpoint(checkpoints["phase1"], "x_ckpt", "phase3_enhance")


def test_a_module_refuses_an_old_tag_on_reload(checkpoints):
    from ipmn_lightning.modules import WatermarkPretrainModule
    from tests.helpers import TINY_PHASE1

    checkpoint = torch.load(checkpoints["phase1"], weights_only=True)
    checkpoint["ipmn_phase"] = "watermark_pretrain"
    module = WatermarkPretrainModule(image_size=32, **TINY_PHASE1)
    with pytest.raises(CheckpointError, match="WatermarkPretrainModule has the phase tag 'watermark_pretrain'"):
        module.on_load_checkpoint(checkpoint)
