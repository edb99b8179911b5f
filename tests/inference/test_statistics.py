"""The p-values of ``ipmn verify``: the formulas, a reference folder of clean faces, the bundle's reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipmn_lightning.console.main import main
from tests.helpers import write_faces


def test_verify_p_value_from_a_reference_folder(verifier, tmp_path, capsys):
    import json

    from ipmn_lightning import IPMN
    from ipmn_lightning.inference.statistics import empirical_p_values

    faces, masks = write_faces(tmp_path, n=4)
    assert main(["verify", "--bundle", str(verifier), "--images", str(faces), "--report", "r0.json"]) in (0, 1)
    out = capsys.readouterr().out
    assert "no p-value" in out and "--reference" in out
    assert json.loads(Path("r0.json").read_text())["p_value"] is None
    code = main(["verify", "--bundle", str(verifier), "--images", str(faces), "--reference", str(masks),
                 "--report", "r1.json"])  # fmt: skip
    assert code in (0, 1)
    out = capsys.readouterr().out
    assert "Fisher" not in out and "at least 1/(N+1) = 0.2" in out  # no combined p-value any more
    report = json.loads(Path("r1.json").read_text())
    model = IPMN.load(verifier_bundle=verifier)
    from PIL import Image

    clean = [model.verify(Image.open(p)).nc for p in sorted(masks.iterdir())]
    observed = [row["nc"] for row in report["images"]]
    expected = empirical_p_values(observed, clean)
    assert [row["p_value"] for row in report["images"]] == pytest.approx(expected)
    assert "combined" not in report["p_value"] and report["set_statement"]["watermarked"] is False
    assert report["p_value"]["reference_size"] == 4 and report["p_value"]["per_image_minimum"] == pytest.approx(0.2)


def test_p_value_formulas():
    import math

    from ipmn_lightning.inference.statistics import empirical_p_values, fisher_combined_p_value

    assert empirical_p_values([0.9, 0.5, 0.1], [0.2, 0.4, 0.6, 0.8]) == [0.2, 0.6, 1.0]
    assert fisher_combined_p_value([0.3])[1] == pytest.approx(0.3)  # chi2(2) survival of -2 ln p is p
    p1, p2 = 0.2, 0.05
    assert fisher_combined_p_value([p1, p2])[1] == pytest.approx(p1 * p2 * (1 - math.log(p1 * p2)))


def test_verifier_bundle_carries_a_clean_nc_reference(checkpoints, tmp_path, capsys):
    import json

    from ipmn_lightning.inference.bundle import export_verifier_bundle, load_bundle

    bundle = export_verifier_bundle(checkpoints["phase1"], tmp_path / "v.safetensors",
                                    clean_nc_reference=[0.1, 0.2, 0.3])  # fmt: skip
    assert load_bundle(bundle, "ipmn-verifier").config["clean_nc_reference"] == [0.1, 0.2, 0.3]
    faces, _ = write_faces(tmp_path, n=2)
    assert main(["verify", "--bundle", str(bundle), "--images", str(faces), "--report", "r.json"]) in (0, 1)
    report = json.loads(Path("r.json").read_text())
    assert report["p_value"]["reference_size"] == 3 and "clean_nc_reference" in report["p_value"]["reference_source"]
    with pytest.raises(ValueError, match="clean_nc_reference"):
        export_verifier_bundle(checkpoints["phase1"], tmp_path / "w.safetensors", clean_nc_reference=[float("nan")])
