from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("cv2")

from ipmn_lightning.data.mask_store import check_store, make_pairs, read_pairs, write_pairs
from ipmn_lightning.faces.generators import LandmarkMaskGenerator
from ipmn_lightning.workflows.masks import STATE_DIR, generate_masks, parse_shard
from tests.fakes.faces import FakeAnalyzer, face_folder

FAKES = Path(__file__).resolve().parents[2] / "tests" / "fakes" / "faces.py"


def _gen() -> LandmarkMaskGenerator:
    return LandmarkMaskGenerator(analyzer=FakeAnalyzer())


def _mtimes(store: Path) -> dict[str, int]:
    return {p.relative_to(store).as_posix(): p.stat().st_mtime_ns for p in (store / "masks").glob("*.png")}


def test_fills_a_store_that_passes_check(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    face_folder(root)
    summary = generate_masks(root, "folder", None, _gen(), 48, progress=False, identity_sample=0)
    store = root / "masks_store"
    assert summary["pairs_csv_created"] and summary["generated"] == 8 and summary["failed"] == 0
    assert set(summary["per_split"]) == {"train", "val", "test"}
    assert check_store(store, root, 48) == []
    json.dumps(summary)  # JSON-able
    # Nothing left to do: a rerun writes nothing.
    before = _mtimes(store)
    again = generate_masks(root, "folder", None, _gen(), 48, progress=False, identity_sample=0)
    assert again["already_done"] == 8 and again["generated"] == 0
    assert _mtimes(store) == before


def test_no_face_is_repaired_or_reported_and_dropped(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    names = face_folder(root, black=1)
    black = names[-1]
    store = tmp_path / "store"
    # Make the black image the replacement of some row, so that row needs re-pairing.
    records = make_pairs({"train": [n for n in names if n != black] + [black]}, seed=0)
    write_pairs(store, records)
    needs_repair = next(r.protected for r in records if r.replacement == black)
    summary = generate_masks(root, "folder", store, _gen(), 48, progress=False, identity_sample=0)
    assert [f["protected"] for f in summary["failures"]] == [black]
    assert summary["failures"][0]["reason"] == "no face found in the protected image"
    assert [r["protected"] for r in summary["repaired"]] == [needs_repair]
    assert summary["repaired"][0]["replacement"] not in (black, needs_repair)
    assert summary["pairs_csv_updated"]
    final = read_pairs(store)
    assert black not in {r.protected for r in final} | {r.replacement for r in final}
    assert not list((store / "masks").glob(Path(black).stem + "*"))  # never a copy of x_p


def test_shards_split_the_rows_without_overlap(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    face_folder(root, per_split=(6, 3, 3))
    a = generate_masks(root, "folder", None, _gen(), 48, shard="0/2", progress=False, identity_sample=0)
    store = root / "masks_store"
    assert check_store(store, root, 48) != []  # half done
    b = generate_masks(root, "folder", None, _gen(), 48, shard="1/2", progress=False, identity_sample=0)
    assert a["generated"] + b["generated"] == 12 and a["generated"] and b["generated"]
    assert check_store(store, root, 48) == []
    logs = [json.loads(line) for p in (store / STATE_DIR).glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(logs) == len({row["protected"] for row in logs}) == 12


def test_parse_shard() -> None:
    assert parse_shard("2/5") == (2, 5) and parse_shard(None) == (0, 1)
    for bad in ("5/5", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_killed_midway_resumes_without_redoing_masks(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    face_folder(root, per_split=(8, 2, 2))
    store = tmp_path / "store"
    log = store / STATE_DIR / "rows-0-of-1.jsonl"
    env = {**os.environ, "PYTHONPATH": str(FAKES.parents[2])}
    proc = subprocess.Popen([sys.executable, str(FAKES), str(root), str(store), "0.15"], env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                break
            assert proc.poll() is None, "the generator finished or died before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no mask was logged in time")
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    done = {json.loads(line)["mask"] for line in log.read_text().splitlines()[:-1]}  # the last may be cut
    assert 2 <= len(done) < 12
    before = _mtimes(store)
    # Every mask file present is complete (atomic writes); temporary files are hidden.
    assert all(not name.startswith(".") for name in before)
    summary = generate_masks(root, "folder", store, _gen(), 48, progress=False, identity_sample=0)
    assert summary["already_done"] >= len(done)
    assert summary["already_done"] + summary["generated"] == 12
    after = _mtimes(store)
    assert all(after[m] == before[m] for m in done)  # not regenerated
    assert check_store(store, root, 48) == []


def test_cli_without_the_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    import importlib.util

    from ipmn_lightning.console.main import main as run_tool

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    face_folder(tmp_path / "faces")
    assert run_tool(["masks", "generate", "--root", str(tmp_path / "faces"), "--source", "folder"]) == 1
    assert 'pip install "ipmn-lightning[faces]"' in capsys.readouterr().err
