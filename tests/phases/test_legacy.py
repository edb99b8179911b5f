"""Checkpoints and manifests written before the phases had one name still load."""

from __future__ import annotations

import json

import pytest
import torch

from ipmn_lightning.phases import CheckpointError, load_phase_checkpoint
from ipmn_lightning.workflows.manifest import load_manifest


@pytest.mark.parametrize(("old", "new"), [("watermark_pretrain", "phase1"), ("invertible_mask", "phase2")])
def test_old_checkpoint_tags_load_as_their_phase(checkpoints, tmp_path, old, new):
    checkpoint = torch.load(checkpoints[new], weights_only=True)
    checkpoint["ipmn_phase"] = old
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert load_phase_checkpoint(tmp_path / "old.ckpt", "x_ckpt", new)["ipmn_phase"] == new
    with pytest.raises(CheckpointError, match="expected 'phase3_enhance'"):
        load_phase_checkpoint(tmp_path / "old.ckpt", "x_ckpt", "phase3_enhance")


def test_old_manifest_kinds_are_read_as_today_s(tmp_path):
    phases = [{"name": "s", "kind": "steal", "checkpoint": "s.ckpt"}, {"name": "e", "kind": "enhance"}]
    (tmp_path / "manifest.json").write_text(json.dumps({"phases": phases}))
    assert [p["kind"] for p in load_manifest(tmp_path)["phases"]] == ["phase3_steal", "phase3_enhance"]
