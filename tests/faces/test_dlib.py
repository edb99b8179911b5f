"""The real dlib path on the package's synthetic faces (dlib finds a face in most of them at 128 px)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("dlib")
pytest.importorskip("cv2")

from ipmn_lightning.console.main import main as run_tool
from ipmn_lightning.data.mask_store import check_store
from ipmn_lightning.faces.analysis import DlibFaceAnalyzer, DlibIdentityEncoder, to_uint8_array
from ipmn_lightning.faces.generators import LandmarkMaskGenerator
from ipmn_lightning.faces.privacy import PrivacySuccessRate
from tests.fakes.faces import face_folder


def test_dlib_landmarks_swap_and_embeddings(tmp_path: Path) -> None:
    from ipmn_lightning.data.synthetic import render_face, sample_identity, sample_scene

    analyzer = DlibFaceAnalyzer()
    faces, marks = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        img = render_face(sample_identity(rng), sample_scene(rng), 128)
        lm = analyzer.landmarks(to_uint8_array(img))
        if lm is not None:
            faces.append(img)
            marks.append(lm)
        if len(faces) == 2:
            break
    assert len(faces) == 2, "dlib found no face in the synthetic faces"
    assert marks[0].shape == (68, 2)
    p, r = faces[0][None], faces[1][None]
    mask = LandmarkMaskGenerator(analyzer=analyzer)(p, r)
    enc = DlibIdentityEncoder(analyzer)
    emb, found = enc.embed(torch.cat([p, r, mask, torch.zeros_like(p)]))
    assert emb.shape == (4, 128) and found.tolist()[:2] == [True, True] and not found[3]
    assert enc.distance(emb[:1], emb[:1]).item() == 0.0
    srp = PrivacySuccessRate(encoder=enc)
    srp.update(p, p)
    assert srp.compute().item() == 0.0  # x_p is recognised as itself


def test_cli_generate_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "faces"
    analyzer = DlibFaceAnalyzer()
    resized = lambda img: torch.nn.functional.interpolate(img[None], size=96, mode="bilinear", antialias=True)[0]  # noqa: E731
    face_folder(root, 128, (3, 2, 2), accept=lambda img: analyzer.landmarks(to_uint8_array(resized(img))) is not None)
    args = ["--root", str(root), "--source", "folder", "--image_size", "96"]
    assert run_tool(["masks", "generate", *args, "--identity_sample", "2", "--progress", "false"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert summary["generated"] == 7 and summary["failed"] == 0
    assert run_tool(["masks", "check", *args]) == 0
    assert check_store(root / "masks_store", root, 96) == []
