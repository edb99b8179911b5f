"""The phase table, and the manifests' old phase kinds (still read by ``workflows/manifest.py``)."""

from __future__ import annotations

import json

from ipmn_lightning.phases import LEGACY_KINDS, PHASES
from ipmn_lightning.workflows.manifest import load_manifest


def test_every_phase_is_keyed_by_its_name():
    assert list(PHASES) == ["phase1", "phase2", "phase3_steal", "phase3_enhance"]
    assert all(key == phase.key and phase.config == f"configs/{key}.yaml" for key, phase in PHASES.items())
    assert set(LEGACY_KINDS.values()) <= set(PHASES)


# The manifest reader is workflows/manifest.py's; this test moves to tests/workflows/test_manifest.py when
# that reader drops LEGACY_KINDS (then it must assert the refusal instead).
def test_old_manifest_kinds_are_read_as_today_s(tmp_path):
    phases = [{"name": "s", "kind": "steal", "checkpoint": "s.ckpt"}, {"name": "e", "kind": "enhance"}]
    (tmp_path / "manifest.json").write_text(json.dumps({"phases": phases}))
    assert [p["kind"] for p in load_manifest(tmp_path)["phases"]] == ["phase3_steal", "phase3_enhance"]
