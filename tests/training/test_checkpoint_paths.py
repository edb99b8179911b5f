"""``ipmn fit --ckpt_path``: remote and crafted checkpoints are loaded weights-only, other phases' are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ipmn_lightning.console.main import main
from tests.helpers.hostile import EvilPayload, LocalServer

TINY_PHASE1_YAML = """
trainer: {fast_dev_run: true, accelerator: cpu, devices: 1, logger: false, enable_progress_bar: false}
model:
  class_path: ipmn_lightning.modules.WatermarkPretrainModule
  init_args: {ngf: 4, extractor_channels: 8, extractor_dilations: [1, 2], discriminator_widths: [4, 8, 8, 8],
              lambda_vgg: 0.0, vgg_weights: null}
data: {source: synthetic, image_size: 32, batch_size: 2, synthetic_sizes: [4, 2, 2], num_workers: 0}
"""


def fit_args(*extra: str) -> list[str]:
    """``ipmn fit`` of a tiny phase 1 on synthetic faces (one fast_dev_run step)."""
    Path("tiny_phase1.yaml").write_text(TINY_PHASE1_YAML)
    return ["fit", "--config", "tiny_phase1.yaml", *extra]


def test_remote_ckpt_path_is_loaded_weights_only(tmp_path, capsys):
    served = tmp_path / "served"
    served.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": EvilPayload(marker)}, served / "evil.ckpt")
    assert not marker.exists()
    with LocalServer(served) as server:
        url = f"http://127.0.0.1:{server.port}/evil.ckpt"
        code = main(fit_args(f"--ckpt_path={url}"))
    assert not marker.exists(), "loading the remote checkpoint ran code from it"
    assert code == 2
    assert "weights-only" in capsys.readouterr().err


def test_local_evil_ckpt_path_and_weights_only_false_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": EvilPayload(marker)}, tmp_path / "evil.ckpt")
    assert main(fit_args(f"--ckpt_path={tmp_path / 'evil.ckpt'}")) == 2
    assert not marker.exists()
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert main(fit_args("--weights_only=false")) == 2
    assert "--weights_only false is refused" in capsys.readouterr().err


def test_ckpt_path_of_another_phase_is_refused(checkpoints, capsys):
    code = main(fit_args(f"--ckpt_path={checkpoints['phase2']}"))
    err = capsys.readouterr().err
    assert code == 2 and "'phase2'" in err and "'phase1'" in err
    # a URL is not read before training starts: the module itself refuses the other phase's checkpoint
    from ipmn_lightning.modules import WatermarkPretrainModule
    from ipmn_lightning.phases import CheckpointError
    from tests.helpers import TINY_PHASE1

    module = WatermarkPretrainModule(image_size=32, **TINY_PHASE1)
    with pytest.raises(CheckpointError, match="phase 'phase2' but WatermarkPretrainModule"):
        module.on_load_checkpoint(torch.load(checkpoints["phase2"], weights_only=True))
