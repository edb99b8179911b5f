"""The pipeline's own check of its result: the run measured against stated targets before its bundles ship.

A pipeline file states its targets (``configs/demo/pipeline.yaml``)::

    targets: {sr_e: 0.95, fpr: 0.01, recovery_psnr: 30.0, sr_p: 0.90, batches: 16, min_images: 16}
    extra_budget: 256        # extra optimizer steps for the enhancement phase when an R target is missed (0: none)

:func:`measure` runs the report's own evaluation (:func:`ipmn_lightning.workflows.evaluation.run_evaluation`) on
the validation split, at most ``batches`` batches, into ``<output>/gate/``; :func:`check` reads the targets off
that report:

- ``sr_e``: SR_E of the verifier's R (the enhanced one; phase 1's when there is no enhancement) on x_wmf, x'_wm
  and x_sm (x_sm only when a stealer was trained), each at least the target;
- ``fpr``: its false-positive rate on the clean x_m and x_p, each at most the target;
- ``recovery_psnr``: PSNR (x_p, x'_p) of the 8-bit x_wmf, in dB, at least the target;
- ``sr_p``: SR_P of x_wmf (8-bit, no attack) with dlib's recogniser, at least the target; skipped, and said so,
  on synthetic faces or without the ``faces`` extra.

A validation split smaller than ``min_images`` fails the check: a rate over a handful of images proves nothing.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["GATE_FOLDER", "Targets", "check", "measure", "r_targets_only", "verdict_markdown"]

#: where the gate's measurement (report.md, report.json, examples.png of the validation split) is written
GATE_FOLDER = "gate"

#: the report's names of the watermarked sources (Table 4's keys) and the clean ones of the FPR target
SOURCES = {"masked_face": "x_wmf", "recovered_mask": "x'_wm", "stolen": "x_sm"}
CLEAN = {"mask": "x_m", "protected": "x_p"}


@dataclass
class Targets:
    """What a finished pipeline must reach on its validation split before its bundles are exported.

    Args:
        sr_e: least SR_E of the verifier's R on each of x_wmf, x'_wm and x_sm (paper Table 4: 100%; 0.95 leaves
            room for the demo's short training, and a broken R scores near 0, far below it).
        fpr: most false-positive rate on each of the clean x_m and x_p (paper: 0%; 1% allows one image in 100).
        recovery_psnr: least PSNR (x_p, x'_p) in dB of the 8-bit x_wmf. Our default, 30 dB: today's demo recovers
            32.0 dB on synthetic faces and 31.6 dB on UTKFace (README), runs differ by about 1 dB, and an INN that
            failed to train is far below (the 8-bit x_wmf alone, read as x'_p, is under 20 dB from x_p).
        sr_p: least SR_P of x_wmf (no attack; README measures 95.9% on UTKFace); skipped on synthetic faces or
            without the ``faces`` extra (dlib), and the verdict says so.
        batches: validation batches measured (the check stays cheap; ``None``: the whole split).
        min_images: fewest validation images the check accepts.
    """

    sr_e: float = 0.95
    fpr: float = 0.01
    recovery_psnr: float = 30.0
    sr_p: float = 0.90
    batches: int | None = 16
    min_images: int = 16


def measure(run: str | Path, targets: Targets) -> dict[str, Any]:
    """The evaluation report of a pipeline output on its validation split (``<run>/gate/report.*``).

    Args:
        run: the pipeline output folder (its manifest lists the finished phases' checkpoints and data).
        targets: gives the number of batches.

    Returns:
        The report of :func:`~ipmn_lightning.workflows.evaluation.run_evaluation`.
    """
    from ipmn_lightning.workflows.evaluation import run_evaluation

    return run_evaluation(run=str(run), split="val", limit_batches=targets.batches, out=str(Path(run) / GATE_FOLDER),
                          progress=False, examples=4)  # fmt: skip


def _row(name: str, value: float | None, bound: float, at_least: bool, unit: str = "") -> dict[str, Any]:
    passed = value is not None and (value >= bound if at_least else value <= bound)
    return {"target": name, "value": value, "bound": bound, "rule": ">=" if at_least else "<=", "unit": unit,
            "passed": passed}  # fmt: skip


def check(report: dict[str, Any], targets: Targets) -> dict[str, Any]:
    """Compare an evaluation report with the targets.

    Args:
        report: :func:`measure`'s report (``table2``, ``table4``, ``false_positive_rate``, ``table11``).
        targets: the bounds.

    Returns:
        ``{"status": "PASSED" | "FAILED", "split", "images", "targets", "checks": [...], "failed": [...],
        "skipped": [{"target", "why"}], "extractor"}``; each check ``{"target", "value", "bound", "rule",
        "unit", "passed"}``, ``failed`` the names of the missed ones.
    """
    r = "enhanced" if "enhanced" in report["table4"] else "phase1"
    checks = [
        _row(f"SR_E {r} R on {label}", report["table4"][r].get(source), targets.sr_e, True)
        for source, label in SOURCES.items()
        if source in report["table4"][r]
    ]
    fpr = report["false_positive_rate"][r]
    checks += [_row(f"FPR {r} R on clean {label}", fpr.get(s), targets.fpr, False) for s, label in CLEAN.items()]
    recovery = report["table2"]["recovered"].get("psnr_q8")
    checks.append(_row("recovery PSNR (x_p, x'_p) 8-bit", recovery, targets.recovery_psnr, True, " dB"))
    skipped = []
    if report.get("table11"):
        checks.append(_row("SR_P of x_wmf (8-bit, no attack)", report["table11"]["sr_p"]["masked_face"]["none"],
                           targets.sr_p, True))  # fmt: skip
    else:
        why = ("synthetic faces (no face recogniser applies)" if (report.get("data") or {}).get("source") == "synthetic"
               else "no face analyser (install the `faces` extra for dlib's recogniser)")  # fmt: skip
        skipped.append({"target": "SR_P of x_wmf", "why": why})
    if report["images"] < targets.min_images:
        checks.append(_row("validation images", float(report["images"]), float(targets.min_images), True))
    failed = [c["target"] for c in checks if not c["passed"]]
    return {"status": "FAILED" if failed else "PASSED", "split": report["split"], "images": report["images"],
            "extractor": r, "targets": asdict(targets), "checks": checks, "failed": failed,
            "skipped": skipped}  # fmt: skip


def r_targets_only(verdict: dict[str, Any]) -> bool:
    """Whether every missed target is one of R's (SR_E, FPR): the ones more enhancement training can fix."""
    return bool(verdict["failed"]) and all(name.startswith(("SR_E", "FPR")) for name in verdict["failed"])


def _value(check: dict[str, Any]) -> str:
    value = check["value"]
    if value is None:
        return "not measured"
    return f"{value:.2f}{check['unit']}" if check["unit"] else f"{value:.4g}" if value > 1 else f"{100 * value:.1f}%"


def _bound(check: dict[str, Any]) -> str:
    bound = check["bound"]
    return f"{bound:g}{check['unit']}" if check["unit"] or bound > 1 else f"{100 * bound:g}%"


def verdict_markdown(verdict: dict[str, Any]) -> str:
    """The verdict as a markdown section (the top of ``report.md``)."""
    lines = [f"# Result: {verdict['status']}", ""]
    if verdict["failed"]:
        lines += ["Missed: " + "; ".join(f"{c['target']} = {_value(c)} (target {c['rule']} {_bound(c)})"
                                         for c in verdict["checks"] if not c["passed"]) + ".",
                  "The bundles were not exported.", ""]  # fmt: skip
    lines += [f"Measured on the {verdict['split']} split ({verdict['images']} images) against the pipeline's targets:",
              "", "| target | measured | rule | result |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {c['target']} | {_value(c)} | {c['rule']} {_bound(c)} | {'pass' if c['passed'] else '**FAIL**'} |"
              for c in verdict["checks"]]  # fmt: skip
    lines += [f"| {s['target']} | skipped: {s['why']} | | |" for s in verdict["skipped"]]
    if verdict.get("extra_steps"):
        lines += ["", f"The enhancement trained {verdict['extra_steps']} extra steps (extra_budget) before this."]
    return "\n".join([*lines, ""])


def stamp_report(source: str | Path, target: str | Path, verdict: dict[str, Any]) -> dict[str, str]:
    """Write ``target``'s ``report.md``/``report.json``: ``source``'s report with the verdict on top.

    Args:
        source: a folder with an evaluation's ``report.md`` and ``report.json`` (the gate's, or the run's).
        target: where the stamped report goes (may be ``source``).
        verdict: :func:`check`'s verdict.

    Returns:
        ``{"report.md": path, "report.json": path}``.
    """
    import json

    from ipmn_lightning.core.files import atomic_write_text

    source, target = Path(source), Path(target)
    report = json.loads((source / "report.json").read_text())
    markdown = (source / "report.md").read_text()
    files = {"report.md": target / "report.md", "report.json": target / "report.json"}
    atomic_write_text(files["report.json"], json.dumps({"gate": verdict, **report}, indent=2, default=str) + "\n")
    atomic_write_text(files["report.md"], verdict_markdown(verdict) + "\n" + markdown)
    if source.resolve() != target.resolve() and (source / "examples.png").is_file():  # report.md links it
        shutil.copyfile(source / "examples.png", target / "examples.png")
        files["examples.png"] = target / "examples.png"
    return {k: str(v) for k, v in files.items()}
