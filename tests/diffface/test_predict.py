"""The multi-GPU Lightning generation of DiffFace masks (one shard per process) at tiny widths."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from ipmn_lightning.data.mask_store import check_store
from ipmn_lightning.diffface.generator import DiffFaceMaskGenerator
from ipmn_lightning.diffface.predict import ShardIndices, generate_masks_lightning, tool_options
from tests.fakes.faces import FakeAnalyzer, FakeEncoder, face_folder
from tests.helpers.diffface import FAST, dlib_checkpoint


def test_shards_and_tool_options():
    assert [ShardIndices(3)[i] for i in range(len(ShardIndices(3)))] == [0, 1, 2]
    gen, trainer = tool_options({"checkpoint": "c", "devices": 2, "strategy": "ddp", "seed": 1})
    assert gen == {"checkpoint": "c", "seed": 1} and trainer == {"devices": 2, "strategy": "ddp"}


def test_lightning_predict_fills_a_store_resumably(tmp_path):
    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(2, 2, 2))
    gen = DiffFaceMaskGenerator(str(dlib_checkpoint(tmp_path)), **FAST, background_weight=10.0, device="cpu")
    gen._analyzer, gen._encoder = FakeAnalyzer(), FakeEncoder()
    kw = {"image_size": 32, "progress": False, "identity_sample": 0, "accelerator": "cpu", "devices": 1}
    summary = generate_masks_lightning(root, gen, **kw)
    assert summary["generated"] == 6 and summary["failed"] == 0 and summary["store_rows_done"] == 6
    store = root / "masks_store"
    assert check_store(store, root, 32) == []
    assert (store / ".generate" / "rows-0-of-1.jsonl").is_file()
    again = generate_masks_lightning(root, gen, **kw)
    assert again["generated"] == 0 and again["already_done"] == 6


DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from tests.fakes.faces import FakeAnalyzer, FakeEncoder
from ipmn_lightning.diffface.generator import DiffFaceMaskGenerator
from ipmn_lightning.diffface.predict import generate_masks_lightning

gen = DiffFaceMaskGenerator({ckpt!r}, timestep_respacing=8, skip_timesteps=2, masking_threshold=3,
                            background_weight=0.0, device="cpu")
gen._analyzer, gen._encoder = FakeAnalyzer(), FakeEncoder()
summary = generate_masks_lightning({root!r}, gen, image_size=32, progress=False, identity_sample=0,
                                   accelerator="cpu", devices=2, strategy="ddp")
print("SUMMARY", summary.get("store_rows_done"), summary.get("world_size"))
"""


def test_two_process_ddp_generation_fills_each_shard(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "faces"
    face_folder(root, size=32, per_split=(4, 2, 2))
    ckpt = dlib_checkpoint(tmp_path)
    tests = str(Path(__file__).resolve().parents[2])  # the repository root, for `import tests.fakes`
    script = tmp_path / "gen.py"
    script.write_text(DDP_SCRIPT.format(tests=tests, ckpt=str(ckpt), root=str(root)))
    # strategy="ddp" re-runs the command line in the second process, so it runs in a subprocess of its own
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    store = root / "masks_store"
    logs = sorted(p.name for p in (store / ".generate").glob("rows-*-of-2.jsonl"))
    assert logs == ["rows-0-of-2.jsonl", "rows-1-of-2.jsonl"]
    assert check_store(store, root, 32) == []
    assert "SUMMARY 8 2" in result.stdout  # rank 0 reports every shard's rows after the fold
