"""Rerunning a phase into the same folder: ``last.ckpt`` stays the newest checkpoint, and is the one resumed."""

from __future__ import annotations

from pathlib import Path

import torch


def test_rerunning_a_phase_keeps_last_ckpt_the_newest(tmp_path):
    import json
    import os

    from pytorch_lightning.callbacks import ModelCheckpoint

    from ipmn_lightning.modules import WatermarkPretrainModule
    from ipmn_lightning.workflows.pipeline import _checkpoint_callbacks, newest_last_checkpoint
    from tests.helpers import TINY_PHASE1, tiny_data, tiny_trainer

    Path("phase.yaml").write_text("trainer: {}\n")
    folder = tmp_path / "run" / "phase1" / "checkpoints"
    callbacks = json.loads(_checkpoint_callbacks("phase.yaml", folder).split("=", 1)[1])
    steps = []
    for _ in range(2):  # the same phase trained twice into the same folder (a rerun)
        callback = ModelCheckpoint(**callbacks[0]["init_args"])
        trainer = tiny_trainer(enable_checkpointing=True, callbacks=[callback], max_steps=1 + len(steps))
        trainer.fit(WatermarkPretrainModule(image_size=32, **TINY_PHASE1), datamodule=tiny_data())
        steps.append(trainer.global_step)
    assert sorted(p.name for p in folder.glob("last*.ckpt")) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == steps[-1]
    # a folder left by an older version that did write last-v1.ckpt: the newest one is resumed from
    (folder / "last-v1.ckpt").write_bytes((folder / "last.ckpt").read_bytes())
    os.utime(folder / "last.ckpt", ns=(1, 1))
    assert newest_last_checkpoint(folder) == folder / "last-v1.ckpt"
    assert newest_last_checkpoint(tmp_path / "nothing") is None
