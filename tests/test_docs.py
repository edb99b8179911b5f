"""The documentation points at files that exist: every measured result it cites is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CITED = re.compile(r"benchmarks/results/([A-Za-z0-9_.{},*-]+)")


def _expand(pattern: str) -> list[str]:
    """``a_{json,md}`` → ``a_json``, ``a_md`` (one brace group at a time)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [name for option in match.group(1).split(",") for name in _expand(head + option + tail)]


def test_every_cited_result_exists() -> None:
    missing = []
    for document in DOCUMENTS:
        for pattern in CITED.findall(document.read_text(encoding="utf-8")):
            pattern = pattern.rstrip(".,")
            if not pattern or pattern.endswith("/") or "gpu_" in pattern:  # the folder; GPU results need a GPU
                continue
            for name in _expand(pattern):
                if not list((REPO / "benchmarks" / "results").glob(name)):
                    missing.append(f"{document.relative_to(REPO)}: benchmarks/results/{name}")
    assert not missing, "cited but not in the repository (benchmarks/results/ was once ignored by git):\n" + "\n".join(
        missing
    )
