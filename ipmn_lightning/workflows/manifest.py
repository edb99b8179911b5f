"""The manifest of a pipeline's output folder (``manifest.json``), read by the pipeline and the evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ipmn_lightning.phases import LEGACY_KINDS

__all__ = ["MANIFEST", "load_manifest"]

MANIFEST = "manifest.json"


def load_manifest(output: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a pipeline output folder, with checkpoint paths resolved (empty if none yet)."""
    file = Path(output) / MANIFEST
    if not file.is_file():
        return {}
    manifest = json.loads(file.read_text())
    for record in manifest.get("phases", []):
        record["kind"] = LEGACY_KINDS.get(record.get("kind"), record.get("kind"))
        for key in ("checkpoint", "last_checkpoint"):
            if record.get(key):
                record[key] = str(Path(output) / record[key])
    return manifest
