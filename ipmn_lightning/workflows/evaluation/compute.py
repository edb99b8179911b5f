"""Computing the evaluation: the phase modules' own ``test_step`` over the run's checkpoints, and SR_P (Table 11).

The numbers come from a ``Trainer`` on the test or validation split, so the report measures exactly what
training logs; the privacy table runs dlib's recogniser on x_wmf as the sender shares it (8-bit).
"""

from __future__ import annotations

from typing import Any

import torch

from ipmn_lightning.modules import ExtractorEnhanceModule
from ipmn_lightning.phases import PHASE3_ENHANCE, PHASE3_STEAL, PHASES, build, load_phase_checkpoint, load_submodule
from ipmn_lightning.workflows.evaluation.paper import ATTACKS, CLEAN, PAIRS, WATERMARKED
from ipmn_lightning.workflows.manifest import load_manifest

__all__ = ["extraction_module", "extraction_tables", "privacy_table", "run_checkpoints"]


def run_checkpoints(run: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoints of a pipeline run and its data settings.

    Besides each phase's ``*_ckpt`` (every stealer; the last checkpoint of each other phase, the enhancement the
    default protocol's), ``held_out`` lists the stealers the enhanced R never saw and ``enhance_variants`` the
    other enhancement phases (``{name: {"ckpt": path, "held_out": [stealer checkpoints it did not see]}}``).
    """
    manifest = load_manifest(run)
    if not manifest:
        raise FileNotFoundError(f"{run} has no manifest.json; pass a folder written by `ipmn pipeline`")
    # null models (phase 3a with a target other than x_wmf) are the audit's, not thieves: not evaluated as stealers
    finished = [p for p in manifest["phases"] if p.get("status") == "finished" and not p.get("null")]
    of_kind = {k: [p["checkpoint"] for p in finished if p["kind"] == k] for k in PHASES}
    checkpoints = {  # every stealer; the last checkpoint of each other phase
        PHASES[k].ckpt_argument: paths if k == PHASE3_STEAL else (paths or [None])[-1] for k, paths in of_kind.items()
    }
    stealers = {p["name"]: p["checkpoint"] for p in finished if p["kind"] == PHASE3_STEAL}
    enhancements = [p for p in finished if p["kind"] == PHASE3_ENHANCE]
    main = [p for p in enhancements if p.get("main", True)]
    if main:
        checkpoints["enhance_ckpt"] = main[-1]["checkpoint"]

    held_out = {p["name"] for p in finished if p["kind"] == PHASE3_STEAL and p.get("held_out")}

    def unseen(record: dict[str, Any] | None) -> list[str]:
        # an enhancement recorded before named stealers existed saw every stealer that was not held out
        seen = record.get("stealers") if record is not None else None
        return [path for name, path in stealers.items() if (name in held_out if seen is None else name not in seen)]

    checkpoints["held_out"] = unseen(main[-1] if main else None)
    checkpoints["enhance_variants"] = {
        p["name"]: {"ckpt": p["checkpoint"], "held_out": unseen(p)} for p in enhancements if not p.get("main", True)
    }
    data = next((p["data"] for p in reversed(finished) if p.get("data")), None)
    return checkpoints, data or {}


def extraction_module(
    checkpoints: dict[str, Any], image_size: int, enhanced: bool, enhance_ckpt: str | None = None
) -> Any:
    """An extractor-enhancement module with the black box, the stealers and R (phase-1 or enhanced)."""
    module = ExtractorEnhanceModule(
        image_size=image_size,
        phase1_ckpt=checkpoints["phase1_ckpt"],
        phase2_ckpt=checkpoints["phase2_ckpt"],
        stealer_ckpt=checkpoints["stealer_ckpt"],
    )
    module.load_frozen()
    if enhanced:
        path = enhance_ckpt or checkpoints["enhance_ckpt"]
        state = load_phase_checkpoint(path, "enhance_ckpt", PHASE3_ENHANCE)
        module.extractor = build("extractor", state["ipmn_frozen"]["extractor"])
        load_submodule(module.extractor, state["state_dict"], "extractor", f"enhance_ckpt {path}")
    return module.eval()


def extraction_tables(
    image: dict[str, float],
    initial: dict[str, float],
    enhanced: dict[str, float] | None,
    stealers: list[str],
    variants: dict[str, dict[str, float]] | None = None,
    unseen: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The report's tables from the ``test/`` metrics of the evaluation runs.

    Args:
        image: phase 2's metrics.
        initial: the phase-1 R's extraction metrics.
        enhanced: the enhanced R's (``None``: no enhancement).
        stealers: the stealers' metric names, in order.
        variants: other enhanced Rs' metrics, by phase name (reported as ``enhanced:<name>``).
        unseen: per extractor key, the stealers it never saw in training (Table 10's seen/unseen marks).
    """
    table2 = {}
    for pair in PAIRS:
        row = {}
        for suffix in ("", "_q8"):
            for name in ("psnr", "ssim", "lpips", "psnr_y", "ssim_y"):
                if f"test/{name}_{pair}{suffix}" in image:
                    row[name + suffix] = image[f"test/{name}_{pair}{suffix}"]
        table2[pair] = row
    extractors = {"phase1": initial, **({"enhanced": enhanced} if enhanced is not None else {}),
                  **{f"enhanced:{name}": m for name, m in (variants or {}).items()}}  # fmt: skip
    sources = [s for s in WATERMARKED if s != "stolen" or stealers]
    table3 = {
        r: {s: {"nc": m[f"test/nc_{s}"], "sr_e": m[f"test/sr_e_{s}"]} for s in sources} for r, m in extractors.items()
    }
    table4 = {r: {s: v["sr_e"] for s, v in rows.items()} for r, rows in table3.items()}
    table10: dict[str, Any] = {}
    for name in stealers:
        key = "stolen" if len(stealers) == 1 else f"stolen_{name}"
        table10[name] = {r: {"nc": m[f"test/nc_{key}"], "sr_e": m[f"test/sr_e_{key}"]} for r, m in extractors.items()}
    fpr = {r: {s: m[f"test/fpr_{s}"] for s in CLEAN} for r, m in extractors.items()}
    # the phase-1 R never saw a stealer; an enhanced R saw all but its unseen ones
    seen = {r: {name: r != "phase1" and name not in (unseen or {}).get(r, []) for name in stealers}
            for r in extractors}  # fmt: skip
    return {
        "table2": table2,
        "table3": table3,
        "table4": table4,
        "table10": table10,
        "table10_seen": seen,
        "false_positive_rate": fpr,
    }


@torch.no_grad()
def privacy_table(module: Any, loader: Any, limit_batches: int | None) -> dict[str, Any]:
    """Table 11: SR_P of x_wmf (8-bit, as shared), of x_m and of You et al.'s mosaic, and the utility of x'_p.

    The mosaic baseline is :func:`~ipmn_lightning.faces.generators.mosaic` of x_p (8-bit), with the landmarks of
    the recogniser's own face analyser; an x_p in which no landmarks are found is kept unmosaicked (and
    counted in ``mosaic["no_landmarks"]``); with dlib's recogniser that face has no reference either and is
    left out of every rate.

    Args:
        module: an extraction module (its ``sources`` give x_wmf and x'_p, z seeded per batch).
        loader: the evaluation images.
        limit_batches: at most this many batches.

    Returns:
        ``recogniser``, ``sr_p`` (``{"masked_face": {attack: rate}, "mask": {"none": rate}, "mosaic":
        {attack: rate}}``), ``counts`` (the raw counts of each rate, including faces not found), ``mosaic``
        (its settings and ``no_landmarks``), ``utility`` and ``utility_counts``.
    """
    from ipmn_lightning.faces.analysis import DlibIdentityEncoder
    from ipmn_lightning.faces.generators import MosaicMaskGenerator
    from ipmn_lightning.faces.privacy import PrivacySuccessRate, RecoveryUtility, table11_attacks

    encoder = DlibIdentityEncoder()
    mosaic = MosaicMaskGenerator(analyzer=getattr(encoder, "analyzer", None))
    # x_m is the reference row (the mask alone, no attack); x_wmf, what the sender shares, meets every attack,
    # and so does the mosaic baseline (You et al.)
    rates = {
        "masked_face": {a: PrivacySuccessRate(encoder) for a in ATTACKS},
        "mask": {"none": PrivacySuccessRate(encoder)},
        "mosaic": {a: PrivacySuccessRate(encoder) for a in ATTACKS},
    }
    attacks = {image: table11_attacks(seed=0) for image in rates}  # one noise stream per row, as before
    utility = RecoveryUtility(encoder)
    no_landmarks = 0
    module = module.cpu().eval()
    for index, batch in enumerate(loader):
        if limit_batches is not None and index >= limit_batches:
            break
        sources = module.sources(batch, torch.Generator().manual_seed(index))  # 8-bit, as the files arrive
        protected = batch["protected"]
        reference = encoder.embed(protected)
        outcomes = mosaic.generate(protected, protected)
        no_landmarks += sum(o.mask is None for o in outcomes)
        images = {
            "masked_face": sources["masked_face"],
            "mask": sources["mask"],
            "mosaic": torch.stack([x if o.mask is None else o.mask for x, o in zip(protected, outcomes)]),
        }
        for image, per_attack in rates.items():
            for attack, metric in per_attack.items():
                metric.update(attacks[image][attack](images[image]), reference)
        utility.update(sources["recovered_face"], reference)
    return {
        "recogniser": f"{getattr(encoder, 'description', type(encoder).__name__)}, same person below "
        f"{encoder.threshold}",
        "sr_p": {image: {a: float(m.compute()) for a, m in per.items()} for image, per in rates.items()},
        "counts": {image: {a: m.counts() for a, m in per.items()} for image, per in rates.items()},
        "mosaic": {
            "block": mosaic.block,
            "block_px": mosaic.block_px,
            "dilate": mosaic.dilate,
            "no_landmarks": no_landmarks,
        },
        "utility": float(utility.compute()),
        "utility_counts": utility.counts(),
    }
