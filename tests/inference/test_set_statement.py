"""``ipmn verify``'s set-level statement: never "watermarked" for clean images, copies or a selected subset.

The tiny fixtures' R does not find w in their x_wmf (their NCs, about 0.36, sit below the clean faces' 0.40-0.47,
and the barely trained INN gives nearly the same image for every face), so the positive case at the command
level replaces R's NCs (``IPMN.verify``) by those of a working R; the statistics are tested on their own too.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from ipmn_lightning.console.main import main
from ipmn_lightning.core.images import pil_to_tensor, tensor_to_pil
from ipmn_lightning.inference.bundle import export_verifier_bundle
from ipmn_lightning.inference.facade import IPMN, Verification
from ipmn_lightning.inference.statistics import (
    binomial_tail,
    clopper_pearson_upper,
    empirical_p_values,
    fisher_combined_p_value,
    near_duplicate_groups,
    set_statement,
    thumbnail,
)
from tests.helpers import write_faces


@pytest.fixture(scope="module")
def shifted_verifier(checkpoints, tmp_path_factory) -> Path:
    """A verifier whose reference comes from another domain: clean NCs far below what these faces give."""
    folder = tmp_path_factory.mktemp("shifted")
    reference = [0.05 + 0.001 * i for i in range(100)]
    return export_verifier_bundle(checkpoints["phase1"], folder / "v.safetensors", clean_nc_reference=reference)


def run_verify(bundle: Path, images: Path, report: str) -> dict:
    assert main(["verify", "--bundle", str(bundle), "--images", str(images), "--report", report]) in (0, 1)
    return json.loads(Path(report).read_text())


def jpeg(image: torch.Tensor, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    tensor_to_pil(image).save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_formulas():
    assert clopper_pearson_upper(0, 20) == pytest.approx(1 - 0.05 ** (1 / 20))
    assert clopper_pearson_upper(0, 1000) == pytest.approx(0.002991, rel=1e-3)
    assert clopper_pearson_upper(3, 100) == pytest.approx(0.0757, rel=1e-2)  # Beta(0.95; 4, 97)
    assert binomial_tail(2, 5, 0.1) == pytest.approx(1 - 0.9**5 - 5 * 0.1 * 0.9**4)
    assert binomial_tail(0, 5, 0.1) == 1.0 and binomial_tail(6, 5, 0.1) == 0.0
    assert binomial_tail(3, 3, 0.01) == pytest.approx(1e-6)


def test_many_clean_images_against_another_domain_are_not_watermarked(shifted_verifier, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=24)
    for mask in masks.iterdir():  # 48 clean images: faces and their masks
        mask.rename(faces / f"m_{mask.name}")
    report = run_verify(shifted_verifier, faces, "r.json")
    statement = report["set_statement"]
    assert report["verified"] == 0 and statement["watermarked"] is False and statement["distinct_images"] >= 30
    p_values = [row["p_value"] for row in report["images"]]
    assert max(p_values) == pytest.approx(1 / 101)  # every image beats the whole mismatched reference ...
    assert fisher_combined_p_value(p_values)[1] < 1e-40  # ... which Fisher's method called "watermarked"
    assert "no set-level claim" in capsys.readouterr().out


def test_copies_of_one_image_count_once(shifted_verifier, tmp_path):
    faces, _ = write_faces(tmp_path, n=1)
    original = pil_to_tensor(Image.open(next(faces.iterdir())).convert("RGB"))
    copies = tmp_path / "copies"
    copies.mkdir()
    for index in range(100):
        jpeg(original, 30 + index % 70).save(copies / f"copy{index:03d}.png")
    report = run_verify(shifted_verifier, copies, "r.json")
    statement = report["set_statement"]
    assert statement["images"] == 100 and statement["distinct_images"] == 1 and statement["watermarked"] is False
    assert {row["near_duplicate_group"] for row in report["images"]} == {0}


def test_a_selected_top_subset_of_clean_images_is_not_watermarked(checkpoints, tmp_path):
    faces, masks = write_faces(tmp_path, n=24)
    model = IPMN.load(verifier_bundle=export_verifier_bundle(checkpoints["phase1"], tmp_path / "plain.safetensors"))
    ncs = {p: model.verify(Image.open(p)).nc for p in sorted(masks.iterdir())}
    # a reference matched to the faces' domain: the masks' NCs
    bundle = export_verifier_bundle(
        checkpoints["phase1"], tmp_path / "v.safetensors", clean_nc_reference=list(ncs.values())
    )
    ranked = sorted(faces.iterdir(), key=lambda p: -model.verify(Image.open(p)).nc)
    top = tmp_path / "top"
    top.mkdir()
    for path in ranked[:8]:
        path.rename(top / path.name)
    statement = run_verify(bundle, top, "r.json")["set_statement"]
    assert statement["watermarked"] is False and statement["verified_distinct"] == 0


def test_distinct_verified_images_give_a_positive_statement(shifted_verifier, tmp_path, monkeypatch, capsys):
    """The images are distinct faces; R's NCs are those of a working R (module docstring)."""
    faces, _ = write_faces(tmp_path, n=12)

    def working_r(self, image):
        count = len(image) if isinstance(image, list) else 1
        return [Verification(0.99, True, float(self.threshold))] * count

    monkeypatch.setattr(IPMN, "verify", working_r)
    report = run_verify(shifted_verifier, faces, "r.json")
    statement = report["set_statement"]
    assert report["all_verified"] and statement["verified_distinct"] == statement["distinct_images"] == 12
    upper = clopper_pearson_upper(0, 100)
    assert statement["false_positive_rate_upper"] == pytest.approx(upper)
    assert statement["binomial_tail"] == pytest.approx(upper**12) and statement["watermarked"] is True
    assert "the set carries the watermark" in capsys.readouterr().out


def test_statement_counts_groups_by_their_median_and_never_images_that_fail():
    reference = [0.1] * 1000  # no false positive in 1,000: per-image rate at most 0.003
    one_lucky_copy = set_statement([0.99, 0.2, 0.2], [0, 0, 0], 0.95, reference)
    assert one_lucky_copy["verified_distinct"] == 0 and not one_lucky_copy["watermarked"]
    near_misses = set_statement([0.94] * 50, list(range(50)), 0.95, reference)
    assert near_misses["verified_distinct"] == 0 and near_misses["binomial_tail"] == 1.0
    assert not near_misses["watermarked"]
    single = set_statement([0.99], [0], 0.95, reference)  # one image is never a set-level claim at 1e-3
    assert single["binomial_tail"] == pytest.approx(clopper_pearson_upper(0, 1000)) and not single["watermarked"]
    weak = set_statement([0.99] * 3, [0, 1, 2], 0.95, [0.1] * 10)  # a small reference gives a weak claim
    assert weak["false_positive_rate_upper"] > 0.25 and not weak["watermarked"]
    strong = set_statement([0.99] * 3, [0, 1, 2], 0.95, reference)
    assert strong["watermarked"] and strong["binomial_tail"] < 1e-7
    none = set_statement([0.99] * 3, [0, 1, 2], 0.95, None)
    assert none["watermarked"] is None and "no set-level claim" in none["statement"]


def test_near_duplicates_are_the_same_image_up_to_jpeg_and_resizing(tmp_path):
    faces, _ = write_faces(tmp_path, n=6, size=64)
    images = [pil_to_tensor(Image.open(p).convert("RGB")) for p in sorted(faces.iterdir())]
    variants = []
    for image in images:
        variants += [image, pil_to_tensor(jpeg(image, 30)), pil_to_tensor(jpeg(image, 90))]
        small = torch.nn.functional.interpolate(image[None], size=32, mode="bilinear", antialias=True)
        variants.append(torch.nn.functional.interpolate(small, size=64, mode="bilinear")[0])
    groups = near_duplicate_groups(torch.stack([thumbnail(v) for v in variants]))
    assert groups == [i // 4 for i in range(24)]
    assert empirical_p_values([0.5], [0.1] * 9) == [0.1] and not math.isnan(thumbnail(images[0]).sum())
