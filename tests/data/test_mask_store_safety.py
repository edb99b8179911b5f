"""``pairs.csv`` safety: paths escaping the image folder are refused, spreadsheet-formula names are escaped."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("field", ["protected", "replacement"])
@pytest.mark.parametrize("value", ["../outside.jpg", "faces/../../outside.jpg"])
def test_pairs_csv_paths_escaping_the_image_folder_are_refused(tmp_path, field, value):
    from ipmn_lightning.data.mask_store import MaskStoreError, read_pairs

    row = {"protected": "a.jpg", "replacement": "b.jpg", field: value}
    (tmp_path / "pairs.csv").write_text(f"split,protected,replacement,mask\ntrain,{row['protected']},"
                                        f"{row['replacement']},masks/a.png\n")  # fmt: skip
    with pytest.raises(MaskStoreError, match=f"line 2: {field} .* must stay inside the image folder"):
        read_pairs(tmp_path)


def test_pairs_csv_formula_names_are_escaped_and_read_back(tmp_path):
    from ipmn_lightning.data.mask_store import PairRecord, read_pairs, write_pairs

    names = ["=cmd|' /C calc'!A0.jpg", "+1.jpg", "-2.jpg", "@sum.jpg", "'quoted.jpg", "plain.jpg"]
    records = [
        PairRecord("train", name, names[(i + 1) % len(names)], f"masks/{'=' if i == 0 else ''}{i}.png")
        for i, name in enumerate(names)
    ]
    write_pairs(tmp_path, records)
    text = (tmp_path / "pairs.csv").read_text()
    for line in text.splitlines()[1:]:
        for cell in line.split(",")[1:]:
            assert not cell.lstrip('"').startswith(("=", "+", "-", "@")), line
    assert read_pairs(tmp_path) == records
