"""``ipmn masks convert-diffface`` and ``ipmn masks generate --generator diffface`` through the console entry."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from ipmn_lightning.console.main import main
from ipmn_lightning.diffface.convert import load_diffface
from tests.fakes.adm_reference import TINY, make_adm_state_dict
from tests.fakes.faces import face_folder


def test_convert_command_writes_loadable_safetensors(tmp_path, capsys):
    model = tmp_path / "Model.pt"
    torch.save({k: v.float() for k, v in make_adm_state_dict(TINY).items()}, model)
    out = tmp_path / "diffface.safetensors"
    arch = ["--image_size=16", "--model_channels=32", "--channel_mult=[1, 2, 2]", "--attention_resolutions=[8, 4]",
            "--num_head_channels=16", "--id_dim=12"]  # fmt: skip
    args = ["masks", "convert-diffface", str(model), str(out), *arch]
    assert main(args) == 0, capsys.readouterr().err
    net, encoder = load_diffface(out)
    assert encoder == "arcface" and net.config["id_dim"] == 12
    # the default (DiffFace's 256-px) architecture does not fit: the error names the arguments to pass
    assert main(["masks", "convert-diffface", str(model), str(tmp_path / "x.safetensors")]) == 1
    assert "channel_mult" in capsys.readouterr().err


def test_generate_diffface_errors_name_the_flag(tmp_path, capsys):
    pytest.importorskip("cv2")
    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(2, 2, 2))
    base = ["masks", "generate", "--root", str(root), "--source", "folder", "--generator", "diffface"]
    assert main(base) == 1
    assert "--generator.checkpoint" in capsys.readouterr().err
    assert main([*base, "--generator.checkpoint", str(tmp_path / "none.ckpt")]) == 1
    assert "none.ckpt" in capsys.readouterr().err


def test_generate_diffface_refuses_workers_and_shard_instead_of_ignoring_them(tmp_path, capsys):
    pytest.importorskip("cv2")
    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(2, 2, 2))
    ckpt = tmp_path / "tiny.safetensors"
    base = ["masks", "generate", "--root", str(root), "--source", "folder", "--generator", "diffface",
            "--generator.checkpoint", str(ckpt)]  # fmt: skip
    assert main([*base, "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "--workers 2" in err and "--generator.devices" in err and "Lightning predict" in err
    assert main([*base, "--shard", "1/2"]) == 1
    err = capsys.readouterr().err
    assert "--shard 1/2" in err and "--generator.num_nodes" in err
    assert not (root / "masks_store").exists()  # refused before anything was written
