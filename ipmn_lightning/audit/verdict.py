"""``ipmn audit run`` (also ``ipmn audit --bundle ...``): a model-level verdict on a suspect from its answers.

The verifier's R reads every answer of the suspect to the owner's challenge; the mean NC is compared with the
null of independent models (:mod:`ipmn_lightning.audit.statistics`), measured either on the answers of the
owner's null models to the *same* challenge (``--null DIR DIR ...``, the valid comparison), or, failing that, on
the null models' NCs that the pipeline recorded in the verifier bundle (``audit_null``; measured on the
pipeline's validation queries, so valid only for a challenge from the same source). ``audit.json`` keeps the
p-value, the statistic, ``n``, ``alpha``, the verdict and where the null came from; ``--figure`` is a histogram
of the suspect's, the null models' and (when the bundle records them) genuine x_wmf NCs.

With ``--reference`` (the owner's private key of the challenge, ``ipmn audit reference``) the statistic is the
keyed score instead (:mod:`ipmn_lightning.audit.keyed`): the share of each pair's watermark residual that the
answer reproduces, measured on the pixels rather than through R; the null models' answers (``--null``) are
scored the same way, and the mean NC is still reported beside it.

Exit code 0: the suspect is shown to carry the watermark at ``alpha``; 1: not shown; 2: bad input.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from ipmn_lightning.audit.challenge import read_challenge
from ipmn_lightning.audit.keyed import DEFAULT_SIGMA
from ipmn_lightning.audit.statistics import MIN_BETWEEN_SD, MIN_BETWEEN_SD_KEYED, audit_statistic, null_summary
from ipmn_lightning.core.files import atomic_path, atomic_write_text
from ipmn_lightning.inference.guards import (
    RoleError,
    batches,
    check_batch_size,
    check_device,
    check_report,
    list_images,
    run_guarded,
)
from ipmn_lightning.inference.options import ResizePolicy

__all__ = ["audit_run"]


def _ncs(model: Any, files: list[Path], batch_size: int, resize: ResizePolicy, desc: str) -> dict[str, float]:
    from ipmn_lightning.inference.role_work import read_images

    values: dict[str, float] = {}
    with contextlib.closing(batches(files, batch_size, desc)) as chunks:
        for chunk in chunks:
            for file, verdict in zip(chunk, model.verify(read_images(chunk, model.image_size, resize))):
                values[file.stem] = verdict.nc
    return values


def _keyed(reference: dict[str, Any], files: list[Path], resize: ResizePolicy, sigma: float, what: str) -> list[float]:
    """The keyed scores of the answers to the reference's pairs (file stem = pair id), in the reference's order."""
    import torch

    from ipmn_lightning.audit.keyed import keyed_scores
    from ipmn_lightning.core.images import pil_to_tensor
    from ipmn_lightning.inference.role_work import read_images

    by_id = {file.stem: file for file in files}
    missing = [i for i in reference["ids"] if i not in by_id]
    if missing:
        raise RoleError(
            f"{what}: {len(missing)} pair(s) of the reference have no answer (e.g. {missing[:3]}); pass the folder "
            "of answers to the reference's challenge"
        )
    size = int(reference["mask"].shape[-1])
    scores: list[float] = []
    for start in range(0, len(reference["ids"]), 64):
        ids = reference["ids"][start : start + 64]
        answers = torch.stack([pil_to_tensor(image) for image in read_images([by_id[i] for i in ids], size, resize)])
        chunk = slice(start, start + len(ids))
        with torch.inference_mode():
            scores += keyed_scores(answers, reference["mask"][chunk], reference["residual"][chunk], sigma).tolist()
    return scores


def _check_against(challenge: str | None, ids: set[str] | None, answers: dict[str, float], what: str) -> None:
    """With ``--challenge`` (its pair ids): the answers are exactly one per challenge pair (file stem = pair id)."""
    if ids is None:
        return
    missing, extra = sorted(ids - answers.keys()), sorted(answers.keys() - ids)
    if missing or extra:
        raise RoleError(
            f"{what}: the answers do not match --challenge {challenge} ({len(missing)} pair(s) unanswered, e.g. "
            f"{missing[:3]}; {len(extra)} file(s) that are no pair of it, e.g. {extra[:3]}); pass the folder of "
            "answers to exactly this challenge"
        )


def _figure(path: Path, suspect: list[float], null: dict[str, list[float]], genuine: list[float] | None,
            threshold: float | None, label: str = "NC of R(answer) with w") -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")  # no screen; never a GUI backend
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    values = [*suspect, *(v for vs in null.values() for v in vs), *(genuine or [])]
    low, high = (0.3, 1.0) if threshold is not None else (min(values), max(values) + 1e-9)
    bins = [low + (high - low) * i / 70 for i in range(71)]
    for name, values in null.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.2, label=f"null: {name}")
    if genuine:
        ax.hist(genuine, bins=bins, alpha=0.35, color="tab:green", label="genuine x_wmf")
    ax.hist(suspect, bins=bins, alpha=0.6, color="tab:red", label="suspect")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=0.8, label=f"per-image rule {threshold}")
    ax.set_xlabel(label)
    ax.set_ylabel("answers")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _shown(p_value: float) -> str:
    """A p-value as printed: below the smallest float64 it is "< 1e-300", not 0."""
    return f"{p_value:.3g}" if p_value > 1e-300 else "< 1e-300"


def audit_run(
    *,
    bundle: str,
    responses: str,
    report: str,
    null: list[str] | None = None,
    challenge: str | None = None,
    alpha: float = 1e-6,
    figure: str | None = None,
    reference: str | None = None,
    sigma: float = DEFAULT_SIGMA,
    min_between_sd: float | None = None,
    resize: ResizePolicy = "resize",
    batch_size: int = 64,
    device: str = "cpu",
    overwrite: bool = False,
) -> int:
    """Owner: does a suspect model carry the watermark? Exit code 0 if shown at ``alpha``, 1 if not, 2 on bad input.

    Args:
        bundle: the verifier bundle (``verifier.safetensors``).
        responses: the folder of the suspect's answers to the challenge (any names; ``ipmn audit query`` writes
            one); images of another size are brought to the bundle's (``--resize``).
        report: where to write ``audit.json``.
        null: folders of answers of at least two independent null models to the same challenge (``ipmn audit
            answer``); default: the null models the bundle records (``audit_null``).
        challenge: the challenge folder; when given, the answers must be exactly one per pair of it.
        alpha: the level at or below which the suspect is called a carrier of the watermark.
        figure: the histogram PNG; default: the report's name with ``.png``.
        reference: the challenge's private keyed reference (``ipmn audit reference``); with it the statistic is
            the mean keyed score, which needs ``--null`` (the null models' answers to the same challenge).
        sigma: the keyed score's high-pass (Gaussian standard deviation, pixels).
        min_between_sd: the smallest between-model standard deviation the null assumes; default: the
            statistic's (mean NC: 0.002, mean keyed score: 0.01).
        resize: ``resize`` (squash), ``crop`` (centre square) or ``reject`` for answers not at the bundle's size.
        batch_size: images per forward pass.
        device: ``cpu``, ``cuda``, ...
        overwrite: replace an existing report.
    """

    def run() -> int:
        from ipmn_lightning.inference.bundle import VERIFIER_FORMAT, load_bundle
        from ipmn_lightning.inference.facade import IPMN

        if not 0 < alpha < 1:
            raise RoleError(f"--alpha must be in (0, 1), got {alpha}")
        floor = min_between_sd
        if floor is None:
            floor = MIN_BETWEEN_SD if reference is None else MIN_BETWEEN_SD_KEYED
        if not (math.isfinite(floor) and floor >= 0):
            raise RoleError(f"--min_between_sd must be a number >= 0, got {min_between_sd}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise RoleError(f"--sigma must be a number > 0, got {sigma}")
        if reference is not None and not null:
            raise RoleError(
                "--reference: the keyed score needs --null DIR DIR (the null models' answers to this challenge); "
                "the bundle's audit_null holds NCs only"
            )
        check_batch_size(batch_size)
        check_device(device)
        loaded = load_bundle(bundle, VERIFIER_FORMAT)
        files = list_images(responses, "responses")
        null_files = {f"{i}:{Path(folder).name}": list_images(folder, "null") for i, folder in enumerate(null or [])}
        target = check_report(report, overwrite, [loaded.path, *files])
        picture = Path(figure).expanduser() if figure else target.with_suffix(".png")
        model = IPMN(verifier=loaded, device=device)
        # read (and hash-checked) once: the suspect's and every null model's answers are checked against it
        ids = {pair["id"] for pair in read_challenge(challenge)["pairs"]} if challenge is not None else None
        keyed_reference = None
        if reference is not None:
            from ipmn_lightning.audit.reference import read_reference

            keyed_reference = read_reference(reference, challenge)
        suspect = _ncs(model, files, batch_size, resize, "suspect")
        _check_against(challenge, ids, suspect, "--responses")
        recorded = loaded.config.get("audit_null") or {}
        null_keyed: dict[str, list[float]] = {}
        if null_files:
            null_ncs = {}
            for name, members in null_files.items():
                values = _ncs(model, members, batch_size, resize, f"null {name}")
                _check_against(challenge, ids, values, f"--null {name}")
                null_ncs[name] = list(values.values())
                if keyed_reference is not None:
                    null_keyed[name] = _keyed(keyed_reference, members, resize, sigma, f"--null {name}")
            source = "--null: null models' answers to this challenge"
        elif recorded.get("models"):
            null_ncs = {name: list(v) for name, v in recorded["models"].items()}
            source = f"the bundle's audit_null ({recorded.get('source', 'the pipeline')})"
        else:
            raise RoleError(
                "no null: pass --null DIR DIR (the answers of at least two independent null models to this "
                "challenge, from `ipmn audit answer`), or a verifier bundle exported with audit_null"
            )
        if len(null_ncs) < 2:
            raise RoleError(f"--null: the null needs at least 2 independent null models, got {len(null_ncs)}")
        nc_floor = MIN_BETWEEN_SD if keyed_reference is not None else floor
        nc_null = null_summary(null_ncs, nc_floor)
        nc_result = audit_statistic(list(suspect.values()), nc_null, alpha)
        genuine = recorded.get("genuine")
        if keyed_reference is None:
            fitted = nc_null
            result, scores, null_scores = nc_result, list(suspect.values()), null_ncs
        else:
            scores = _keyed(keyed_reference, files, resize, sigma, "--responses")
            fitted = null_summary(null_keyed, floor)
            result = {**audit_statistic(scores, fitted, alpha), "statistic_name": "mean keyed score"}
            null_scores, genuine = null_keyed, None
        summary: dict[str, Any] = {
            **result,
            "mean_nc": nc_result["statistic"],
            "nc_audit": {k: nc_result[k] for k in ("statistic", "z", "p_value", "verdict")},
            "bundle": str(bundle),
            "bundle_fingerprint": loaded.fingerprint,
            "responses": str(responses),
            "challenge": challenge,
            "null_source": source,
            "null": fitted,
            "per_image_threshold": float(model.threshold),
            "verified_per_image": sum(v > model.threshold for v in suspect.values()),
            "figure": str(picture),
            "answers": suspect,
        }
        if keyed_reference is not None:
            skipped = json.loads(keyed_reference["metadata"].get("skipped", "[]"))
            summary["keyed"] = {"reference": str(reference), "sigma": sigma, "scores": scores, "skipped_pairs": skipped}
        _figure(
            picture,
            scores,
            null_scores,
            genuine,
            None if keyed_reference else float(model.threshold),
            "NC of R(answer) with w" if keyed_reference is None else "keyed score (share of the residual)",
        )
        atomic_write_text(target, json.dumps(summary, indent=2) + "\n")
        verdict = "carries the watermark" if result["verdict"] == "watermarked" else "not shown to carry the watermark"
        print(
            f"suspect: {result['statistic_name']} {result['statistic']:.4f} over {result['n']} answers; null of "
            f"{len(null_scores)} independent models: {fitted['mean']:.4f} "
            f"(between-model sd {fitted['between_sd']:.4f}); "
            f"z {result['z']:.2f}, p-value {_shown(result['p_value'])}, effect size {result['effect_size']:.2f}"
        )
        print(f"verdict at alpha {alpha:g}: {verdict}; wrote {target} and {picture}", file=sys.stdout)
        return 0 if result["verdict"] == "watermarked" else 1

    return run_guarded(run)
