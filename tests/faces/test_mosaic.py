"""You et al.'s mosaic baseline: the pixelation, the ``mosaic`` mask generator and its Table 11 row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("cv2")

import ipmn_lightning.faces.analysis as analysis
from ipmn_lightning.data.images import load_image
from ipmn_lightning.data.mask_store import check_store, read_pairs
from ipmn_lightning.data.synthetic import render_face, sample_identity, sample_scene
from ipmn_lightning.faces.analysis import to_uint8_array
from ipmn_lightning.faces.generators import (
    GENERATORS,
    MOSAIC_DILATE,
    MosaicMaskGenerator,
    face_region,
    make_mask_generator,
    mosaic,
    mosaic_block_size,
    pixelate,
)
from ipmn_lightning.workflows.evaluation.compute import privacy_table as _privacy
from ipmn_lightning.workflows.evaluation.report import privacy_markdown as _privacy_markdown
from ipmn_lightning.workflows.masks import generate_masks
from tests.fakes.faces import FakeAnalyzer, FakeEncoder, face_folder


def _faces(n: int, size: int = 64) -> torch.Tensor:
    out = []
    for i in range(n):
        rng = np.random.default_rng(200 + i)
        out.append(render_face(sample_identity(rng), sample_scene(rng), size))
    return torch.stack(out)


def _cells(region: np.ndarray, block: int) -> np.ndarray:
    """The mosaic cell of each pixel, on the grid anchored at the region's bounding box (-1 outside)."""
    ys, xs = np.nonzero(region)
    rows, cols = np.mgrid[0 : region.shape[0], 0 : region.shape[1]]
    cell = ((rows - ys.min()) // block) * 10_000 + (cols - xs.min()) // block
    return np.where(region, cell, -1)


@pytest.mark.parametrize("block", [1, 3, 7])
def test_pixelate_keeps_the_outside_and_makes_each_block_one_colour(block: int) -> None:
    rng = np.random.default_rng(block)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rows, cols = np.mgrid[0:40, 0:50]
    region = ((rows - 21) / 13.0) ** 2 + ((cols - 24) / 17.0) ** 2 <= 1  # an ellipse off the grid origin
    out = pixelate(image, region, block)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[~region], image[~region])  # bit for bit outside
    cells = _cells(region, block)
    for c in np.unique(cells[region]):
        inside = cells == c
        # one colour per block: the rounded mean of the block's region pixels (nothing from outside leaks in)
        expected = np.round(image[inside].astype(np.float64).mean(0))
        assert (out[inside] == expected).all(), c
    if block == 1:
        assert np.array_equal(out, image)
    else:
        assert np.abs(out[region].astype(int) - image[region]).mean() > 10  # random pixels are averaged away
    with pytest.raises(ValueError, match="at least 1 pixel"):
        pixelate(image, region, 0)


def test_mosaic_pixelates_the_landmark_face_region() -> None:
    image = to_uint8_array(_faces(1)[0])
    lm = FakeAnalyzer().landmarks(image)
    width = lm[:, 0].max() - lm[:, 0].min()
    assert mosaic_block_size(lm) == round(width / 8) and mosaic_block_size(lm, 0.25) == round(width / 4)
    assert mosaic_block_size(lm, 0.25, block_px=5) == 5
    region = face_region([lm], 64, 64, dilate=MOSAIC_DILATE)
    for kwargs, block in (({}, mosaic_block_size(lm)), ({"block_px": 5}, 5)):
        out = mosaic(image, lm, **kwargs)  # type: ignore[arg-type]
        assert np.array_equal(out[~region], image[~region])
        cells = _cells(region, block)
        for c in np.unique(cells[region]):
            assert (out[cells == c] == out[cells == c][0]).all()
        assert not np.array_equal(out[region], image[region])
    # a wider dilation covers more of the image
    assert (mosaic(image, lm, dilate=0.2) != image).any(-1).sum() > (mosaic(image, lm) != image).any(-1).sum()


def test_mosaic_generator_ignores_the_replacement_and_fails_without_a_face() -> None:
    assert "mosaic" in GENERATORS and isinstance(make_mask_generator("mosaic"), MosaicMaskGenerator)
    gen = MosaicMaskGenerator(analyzer=FakeAnalyzer())
    x = _faces(3)
    out = gen(x, x.roll(1, 0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out, gen(x, x.flip(0)))  # x_r plays no part
    for i in range(3):
        p = to_uint8_array(x[i])
        assert np.array_equal(to_uint8_array(out[i]), mosaic(p, gen.landmarks(p)))
    black = torch.zeros_like(x[:1])
    (failed,) = gen.generate(black, x[:1])
    assert failed.mask is None and failed.reason == "no face found in the protected image"
    with pytest.raises(ValueError, match="no face found"):
        gen(black, x[:1])


def test_masks_generate_mosaic_fills_a_store_that_passes_check(tmp_path: Path, monkeypatch, capsys) -> None:
    from ipmn_lightning.console.main import main

    monkeypatch.setattr(analysis, "DlibFaceAnalyzer", FakeAnalyzer)  # the generator's landmarks, without dlib
    root = tmp_path / "faces"
    face_folder(root)
    args = ["--root", str(root), "--source", "folder", "--image_size", "48"]
    options = ["--generator", "mosaic", "--identity_sample", "0", "--progress", "false"]
    assert main(["masks", "generate", *args, *options]) == 0
    assert '"generator": "mosaic"' in capsys.readouterr().out
    store = root / "masks_store"
    assert check_store(store, root, 48) == []
    assert main(["masks", "check", *args]) == 0
    for record in read_pairs(store):  # x_m = mosaic(x_p), whatever x_r is
        p = to_uint8_array(load_image(root / record.protected, 48, "center"))
        m = to_uint8_array(load_image(store / record.mask, 48, "center"))
        assert np.array_equal(m, mosaic(p, FakeAnalyzer().landmarks(p)))
    # the library entry point takes the name too
    again = generate_masks(root, "folder", tmp_path / "other", "mosaic", 48, progress=False, identity_sample=0)
    assert again["generator"] == "mosaic" and again["failed"] == 0 and check_store(tmp_path / "other", root, 48) == []


class _RecordingEncoder(FakeEncoder):
    """The fake recogniser (mean colour), with the fake landmarks as its analyser, keeping what it embeds."""

    def __init__(self) -> None:
        self.analyzer = FakeAnalyzer()
        self.seen: list[np.ndarray] = []

    def embed_arrays(self, images):  # type: ignore[no-untyped-def]
        self.seen.append(np.stack(images))
        return super().embed_arrays(images)


class _Module:
    """Stands in for the extraction module: x_wmf is the negative of x_p (another identity), x_m half of it."""

    def cpu(self) -> _Module:
        return self

    def eval(self) -> _Module:
        return self

    def sources(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        p = batch["protected"]
        return {"masked_face": 1 - p, "mask": p * 0.5, "recovered_face": p}


def test_table11_has_the_mosaic_row(monkeypatch) -> None:
    encoders: list[_RecordingEncoder] = []

    def make() -> _RecordingEncoder:
        encoders.append(_RecordingEncoder())
        return encoders[-1]

    monkeypatch.setattr(analysis, "DlibIdentityEncoder", make)
    x = _faces(5, 48)
    x[4] = 0  # no face: no reference, no landmarks
    loader = [{"protected": x[:3]}, {"protected": x[3:]}]
    table = _privacy(_Module(), loader, None)
    assert set(table["sr_p"]) == {"masked_face", "mask", "mosaic"}
    assert set(table["sr_p"]["mosaic"]) == {"none", "gaussian_noise", "gaussian_blur", "jpeg"}
    assert table["mosaic"]["no_landmarks"] == 1 and table["mosaic"]["block_px"] is None
    counts = table["counts"]["mosaic"]["none"]
    assert counts["total"] == 4 and counts["reference_missing"] == 1
    # the mosaic keeps each face's mean colour, which is all the fake recogniser sees: recognised, SR_P 0;
    # x_wmf (the negative) is another identity to it
    assert table["sr_p"]["mosaic"]["none"] == 0.0 and table["sr_p"]["masked_face"]["none"] == 1.0
    # what was recognised is exactly mosaic(x_p) in 8 bits
    fake = FakeAnalyzer()
    expected = np.stack([mosaic(p, fake.landmarks(p)) for p in map(to_uint8_array, x[:3])])
    assert any(s.shape == expected.shape and np.array_equal(s, expected) for s in encoders[0].seen)
    text = "\n".join(_privacy_markdown(table))
    row = next(line for line in text.splitlines() if line.startswith("| Mosaic (You et al.) |"))
    assert row.count("0.0%") == 4 and row.endswith(" | 0/0/0/0 |")
    paper = next(line for line in text.splitlines() if line.startswith("| paper: You et al."))
    assert paper.count("100.0%") == 4
    assert "0.125 of the face width" in text and "1 x_p without landmarks" in text


def test_mosaic_privacy_benchmark_writes_its_json(tmp_path: Path, monkeypatch) -> None:
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mosaic_privacy.py"
    spec = importlib.util.spec_from_file_location("mosaic_privacy", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(analysis, "DlibIdentityEncoder", _RecordingEncoder)
    root = tmp_path / "faces"
    face_folder(root, per_split=(2, 1, 3))
    out = tmp_path / "mosaic.json"
    assert bench.main(["--root", str(root), "--count", "2", "--sizes", "32", "48", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["image_size"] for r in result["results"]] == [32, 48]
    for r in result["results"]:
        assert r["images"] == 2 and r["no_landmarks"] == 0 and set(r["sr_p"]) == {"mosaic", "protected"}
        assert set(r["sr_p"]["mosaic"]) == set(result["attacks"]) == {"none", "gaussian_noise", "gaussian_blur", "jpeg"}
        assert r["counts"]["protected"]["none"] == {"total": 2, "recognised": 2, "no_face": 0, "reference_missing": 0}
        assert r["block_px"]["min"] >= 1
