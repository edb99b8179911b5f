"""Plain helpers for the role-command tests: folder snapshots and ``ipmn protect`` argument lists."""

from __future__ import annotations

from pathlib import Path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` (not recursive) by name, with its bytes: to check nothing was written there."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def protect_args(service: Path, faces: Path, masks: Path, out: str | Path, *extra: str) -> list[str]:
    """The argument list of ``ipmn protect`` with the service bundle, faces, masks and output folder given."""
    return ["protect", "--bundle", str(service), "--protected", str(faces), "--mask", str(masks), "--out", str(out),
            *extra]  # fmt: skip
