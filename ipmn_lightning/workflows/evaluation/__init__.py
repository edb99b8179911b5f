"""``ipmn evaluate``: the paper's evaluation (Tables 2, 3, 4, 10, Fig. 5/6) of a trained pipeline.

The numbers come from the phase modules' own ``test_step`` (run by a ``Trainer`` on the test or validation
split), so the report measures exactly what training logs:

- Table 2 from :class:`~ipmn_lightning.modules.InvertibleMaskModule` (PSNR/SSIM/LPIPS of the three image
  pairs, float and 8-bit);
- Tables 3, 4 and 10 and the false-positive rates from
  :class:`~ipmn_lightning.modules.ExtractorEnhanceModule`, built from the phase-1, phase-2 and stealer
  checkpoints twice: once with the phase-1 R (the "initial" extractor) and once with the enhanced R;
- Table 11 (privacy, SR_P) with an offline face recogniser (dlib's, the ``faces`` extra): x_wmf as the
  sender shares it (8-bit), without attack and under the paper's three attacks, x_m for reference, and
  the utility (x'_p recognised as x_p).

Outputs (written atomically): ``report.md`` (each table beside the paper's numbers), ``report.json`` and
``examples.png`` (a Fig. 5/6-style grid).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid

from ipmn_lightning.core.files import atomic_save_image, atomic_write_text
from ipmn_lightning.core.images import tensor_to_pil
from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule
from ipmn_lightning.faces.privacy import (
    TABLE11_BLUR_KERNEL,
    TABLE11_BLUR_SIGMA,
    TABLE11_JPEG_QUALITY,
    TABLE11_NOISE_STD,
)
from ipmn_lightning.modules import ExtractorEnhanceModule, InvertibleMaskModule
from ipmn_lightning.phases import PHASE3_ENHANCE, PHASE3_STEAL, PHASES, build, load_phase_checkpoint, load_submodule
from ipmn_lightning.training.lightning_cli import data_settings
from ipmn_lightning.workflows.manifest import load_manifest

__all__ = ["PAPER", "evaluate", "run_evaluation"]

PAPER: dict[str, Any] = {
    "table2": {
        "recovered": {"psnr": 41.05, "ssim": 0.982, "lpips": 0.005262},
        "masked": {"psnr": 53.65, "ssim": 0.998, "lpips": 0.000092},
        "recovered_mask": {"psnr": 55.97, "ssim": 0.998, "lpips": 0.000070},
        "masked_vs_mask": {"psnr": 37.33, "ssim": 0.969, "lpips": 0.022964},  # Table 5, w embedded on x_m
    },
    "table3": {"nc": 0.99, "sr_e": 1.0},
    "table4": {"phase1": 0.0, "enhanced": 1.0},
    "table10": {"cnet": 0.74, "res9": 0.92, "res16": 0.93, "unet": 1.0},
    "false_positive_rate": 0.0,
    "table11": {"none": 1.0, "gaussian_noise": 1.0, "gaussian_blur": 1.0, "jpeg": 1.0},
    "table11_you": {"none": 1.0, "gaussian_noise": 1.0, "gaussian_blur": 1.0, "jpeg": 1.0},  # mosaic, ref. [36]
}
ATTACKS = {"none": "without attack", "gaussian_noise": f"Gaussian noise σ {TABLE11_NOISE_STD}",
           "gaussian_blur": f"Gaussian blur {TABLE11_BLUR_KERNEL}×{TABLE11_BLUR_KERNEL} σ {TABLE11_BLUR_SIGMA}",
           "jpeg": f"JPEG {TABLE11_JPEG_QUALITY}"}  # fmt: skip
PAIRS = {"recovered": "(x_p, x'_p)", "masked": "(x_wm, x_wmf)", "recovered_mask": "(x_wm, x'_wm)",
         "masked_vs_mask": "(x_m, x_wmf)"}  # fmt: skip
WATERMARKED = {"masked_face": "x_wmf", "recovered_mask": "x'_wm", "stolen": "x_sm"}
CLEAN = {"mask": "x_m", "protected": "x_p", "recovered_face": "x'_p"}
TABLE2_COLUMNS = ("PSNR", "SSIM", "LPIPS")
PAPER_COLUMNS = tuple(f"paper {c}" for c in TABLE2_COLUMNS)


def _run_checkpoints(run: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoints of a pipeline run and its data settings.

    Besides each phase's ``*_ckpt`` (every stealer; the last checkpoint of each other phase, the enhancement the
    default protocol's), ``held_out`` lists the stealers the enhanced R never saw and ``enhance_variants`` the
    other enhancement phases (``{name: {"ckpt": path, "held_out": [stealer checkpoints it did not see]}}``).
    """
    manifest = load_manifest(run)
    if not manifest:
        raise FileNotFoundError(f"{run} has no manifest.json; pass a folder written by `ipmn pipeline`")
    finished = [p for p in manifest["phases"] if p.get("status") == "finished"]
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


def _extraction_module(
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


def _tables(
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
def _privacy(module: Any, loader: Any, limit_batches: int | None) -> dict[str, Any]:
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


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _md(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown section with one table."""
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _markdown(report: dict[str, Any]) -> str:
    """``report.md``: every table with the paper's numbers beside ours."""
    columns = (("psnr", 2), ("ssim", 4), ("lpips", 6), ("psnr_q8", 2), ("ssim_q8", 4), ("lpips_q8", 6))
    paper = PAPER["table2"]
    rows2 = report["table2"].items()
    t2 = [[PAIRS[p], *(_fmt(row.get(k), d) for k, d in columns),
           *(_fmt(paper[p][k], d) for k, d in columns[:3])] for p, row in rows2]  # fmt: skip
    extractors = list(report["table3"])
    sources = list(report["table3"][extractors[0]])
    t3 = [[f"{r} R", *(x for s in sources for x in (_fmt(rows[s]["nc"], 3), _pct(rows[s]["sr_e"])))]
          for r, rows in report["table3"].items()]  # fmt: skip
    t4 = [
        [f"{r} R", *(_pct(v) for v in rows.values()), _pct(PAPER["table4"].get(r.partition(":")[0]))]
        for r, rows in report["table4"].items()
    ]
    seen = report.get("table10_seen") or {}

    def mark(r: str, name: str) -> str:
        if r == "phase1" or r not in seen:
            return ""
        return " (seen)" if seen[r].get(name) else " (unseen)"

    t10 = [[name, *(x for r in extractors for x in (_fmt(rows[r]["nc"], 3), _pct(rows[r]["sr_e"]) + mark(r, name))),
            _pct(PAPER["table10"].get(name))] for name, rows in report["table10"].items()]  # fmt: skip
    fpr = [[f"{r} R", *(_pct(v) for v in rows.values())] for r, rows in report["false_positive_rate"].items()]
    per_r = [f"{kind} {r} R" for r in extractors for kind in ("NC", "SR_E")]
    return "\n".join([
        f"# IPMN evaluation ({report['split']} split, {report['images']} images)", "",
        *_md("Table 2: privacy protection (float and 8-bit x_wmf)",
             ["pair", *TABLE2_COLUMNS, *(f"{c} 8-bit" for c in TABLE2_COLUMNS), *PAPER_COLUMNS], t2),
        "LPIPS is reported only when its backbone weights are in the torch hub cache.", "",
        *_md("Table 3: NC / SR_E per source (paper: NC 0.99, SR_E 100% on each)",
             ["extractor", *(f"{k} {WATERMARKED[s]}" for s in sources for k in ("NC", "SR_E"))], t3),
        *(["x_sm: the outputs of every stealer of Table 10 together, seen and unseen.", ""]
          if len(report["table10"]) > 1 else []),
        *_md("Table 4: SR_E of the initial and the enhanced R (paper: 0% → 100%)",
             ["extractor", *(WATERMARKED[s] for s in sources), "paper"], t4),
        *_md("Table 10: SR_E against each stealing model", ["stealer", *per_r, "paper"],
             t10 or [["(none trained)", *("–" for _ in per_r), "–"]]),
        "(seen): the stealer was in that R's enhancement; (unseen): held out, R never saw its output (paper "
        "§4.4.1: the owner cannot know the attacker's architecture). The paper's numbers read as enhancement on "
        "UNet alone.", "",
        *_md("False-positive rate on clean sources (target 0%)", ["extractor", *CLEAN.values()], fpr),
        *(_privacy_markdown(report["table11"]) if report.get("table11") else []),
        "![examples](examples.png)", "", "Checkpoints: " + json.dumps(report["checkpoints"]), "",
    ])  # fmt: skip


def _privacy_markdown(table: dict[str, Any]) -> list[str]:
    """Table 11 in the paper's layout, with the counts behind each rate."""

    def pct(value: float) -> str:
        return f"{100 * value:.1f}%"

    counts = table["counts"]["masked_face"]["none"]
    rows = []
    labels = {"masked_face": "IPMN: x_wmf (8-bit)", "mask": "x_m alone (reference)", "mosaic": "Mosaic (You et al.)"}
    for image, label in labels.items():
        if image not in table["sr_p"]:
            continue
        no_face = "/".join(str(c["no_face"]) for c in table["counts"][image].values())
        rows.append(
            [label, *(pct(table["sr_p"][image][a]) if a in table["sr_p"][image] else "–" for a in ATTACKS), no_face]
        )
    rows.append(["paper: proposed method (Baidu's recogniser)", *(pct(PAPER["table11"][a]) for a in ATTACKS), "–"])
    rows.append(["paper: You et al. [36] (Baidu's recogniser)", *(pct(PAPER["table11_you"][a]) for a in ATTACKS), "–"])
    mosaic = table.get("mosaic")
    mosaic_note: list[str] = []
    if mosaic:
        size = f"{mosaic['block_px']} px" if mosaic["block_px"] else f"{mosaic['block']:g} of the face width"
        mosaic_note = [
            f"Mosaic: x_p's landmark face region (grown by {mosaic['dilate']:g} of the face width) pixelated "
            f"in blocks of {size}, 8-bit; {mosaic['no_landmarks']} x_p without landmarks kept as they are.",
            "",
        ]
    utility = table["utility_counts"]
    return [
        *_md(f"Table 11: SR_P, images not recognised as x_p (recogniser: {table['recogniser']})",
             ["images", *ATTACKS.values(), "no face found (per attack)"], rows),
        f"{counts['total']} faces with a face found in x_p ({counts['reference_missing']} without, left out); "
        "an image with no face found counts as not recognised.", "", *mosaic_note,
        f"Utility: x'_p recognised as x_p: {pct(table['utility'])} ({utility['recognised']} of {utility['total']}).",
        "",
    ]  # fmt: skip


@torch.no_grad()
def _figure(initial: Any, enhanced: Any | None, batch: dict[str, Tensor], path: Path, count: int) -> None:
    """A Fig. 5/6-style grid: one labelled row per image kind, one column per example."""
    batch = {k: v[:count] for k, v in batch.items()}
    src = initial.sources(batch, torch.Generator().manual_seed(0))
    image_watermark = initial.watermark.dim() == 3  # not a bit message (the HiDDeN baseline)
    rows = [
        ("x_p", batch["protected"]),
        ("x_m", batch["mask"]),
        *([("w", initial.watermark.expand_as(batch["mask"]))] if image_watermark else []),
        ("x_wm", initial.embedder(batch["mask"], initial.watermark)),
        ("x_wmf", src["masked_face"]),
        ("x'_p", src["recovered_face"]),
        ("x'_wm", src["recovered_mask"]),
    ]
    stolen = [(f"x_sm {k[7:]}", v) for k, v in src.items() if k.startswith("stolen_")]
    rows += stolen
    inputs = [
        ("x_wmf", src["masked_face"]),
        ("x'_wm", src["recovered_mask"]),
        *stolen,
        ("x_p", batch["protected"]),
    ]
    for label, module in (("R1", initial), ("R2", enhanced)):
        if module is not None and image_watermark:
            rows += [(f"{label}({name})", module.extractor(image)) for name, image in inputs]
    size = batch["protected"].shape[-1]
    grid = make_grid(
        torch.cat([r.float().clamp(0, 1) for _, r in rows]),
        nrow=len(batch["protected"]),
        padding=2,
        pad_value=1.0,
    )
    canvas = Image.new("RGB", (grid.shape[-1] + 90, grid.shape[-2]), "white")
    canvas.paste(tensor_to_pil(grid), (90, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (label, _) in enumerate(rows):
        draw.text((4, 2 + i * (size + 2) + size // 2 - 6), label, fill="black")
    atomic_save_image(path, canvas)


def run_evaluation(
    *,
    run: str | None = None,
    phase1_ckpt: str | None = None,
    phase2_ckpt: str | None = None,
    stealer_ckpt: list[str] | None = None,
    held_out_stealer_ckpt: list[str] | None = None,
    enhance_ckpt: str | None = None,
    data_config: str | None = None,
    split: Literal["test", "val"] = "test",
    limit_batches: int | None = None,
    out: str | None = None,
    accelerator: str = "auto",
    examples: int = 6,
    progress: bool = True,
    lpips_net: Literal["alex", "vgg", "squeeze"] | None = "alex",
    privacy: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a pipeline output (or explicit checkpoints) and write the report; returns its contents.

    Args:
        run: a pipeline output folder; its ``manifest.json`` gives the checkpoints and the data settings.
        phase1_ckpt: phase-1 checkpoint (instead of, or replacing, the run's).
        phase2_ckpt: phase-2 checkpoint.
        stealer_ckpt: stealing-attack checkpoints.
        held_out_stealer_ckpt: more stealing-attack checkpoints, marked unseen for the enhanced R (Table 10).
        enhance_ckpt: extractor-enhancement checkpoint (optional: without it only the phase-1 R is reported).
        data_config: a YAML whose ``data`` section picks the evaluation images, e.g. ``configs/data/synthetic.yaml``
            (default: the run's).
        split: evaluate on the ``test`` or the ``val`` split.
        limit_batches: evaluate only this many batches.
        out: report folder (default: ``run``, else ``evaluation``).
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        examples: columns of the example grid.
        progress: show Lightning's progress bar.
        lpips_net: LPIPS backbone of Table 2, used only when its weights are in the torch hub cache.
        privacy: add Table 11 (SR_P and utility with dlib's recogniser; needs the ``faces`` extra). Default:
            on for photos (``data.source`` celeba or folder) when the extra is installed.
    """
    empty = {"stealer_ckpt": [], "enhance_ckpt": None, "held_out": [], "enhance_variants": {}}
    checkpoints, data = _run_checkpoints(run) if run else (empty, {})
    given = {"phase1_ckpt": phase1_ckpt, "phase2_ckpt": phase2_ckpt, "enhance_ckpt": enhance_ckpt}
    checkpoints.update({k: v for k, v in given.items() if v is not None})
    if stealer_ckpt is not None:
        checkpoints["stealer_ckpt"] = list(stealer_ckpt)
        checkpoints["held_out"] = []
    if held_out_stealer_ckpt:
        checkpoints["stealer_ckpt"] = [*checkpoints["stealer_ckpt"], *held_out_stealer_ckpt]
        checkpoints["held_out"] = [*checkpoints["held_out"], *held_out_stealer_ckpt]
    for needed in ("phase1_ckpt", "phase2_ckpt"):
        if not checkpoints.get(needed):
            raise ValueError(f"evaluate needs {needed}: pass --run <pipeline output> or --{needed}")
    if data_config is not None:
        data = data_settings(data_config)
    if not data:
        raise ValueError("evaluate needs the data settings: pass --run or --data_config <data yaml>")
    datamodule = FaceSwapDataModule(**data)
    datamodule.setup("validate" if split == "val" else "test")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    target = Path(out or run or "evaluation")
    trainer_args = dict(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=progress, default_root_dir=target,
                        limit_test_batches=1.0 if limit_batches is None else limit_batches)  # fmt: skip

    def test(module: pl.LightningModule) -> dict[str, float]:
        results = pl.Trainer(**trainer_args).test(module, loader, verbose=False)[0]
        return {k: float(v) for k, v in results.items()}

    path2 = checkpoints["phase2_ckpt"]
    image_metrics = test(
        InvertibleMaskModule.load_from_checkpoint(path2, map_location="cpu", weights_only=True, lpips_net=lpips_net)
    )
    initial = _extraction_module(checkpoints, datamodule.image_size, enhanced=False)
    initial_metrics = test(initial)
    enhanced = _extraction_module(checkpoints, datamodule.image_size, True) if checkpoints["enhance_ckpt"] else None
    enhanced_metrics = test(enhanced) if enhanced is not None else None
    variants = {
        name: test(_extraction_module(checkpoints, datamodule.image_size, True, variant["ckpt"]))
        for name, variant in checkpoints.get("enhance_variants", {}).items()
    }
    names = dict(zip(checkpoints["stealer_ckpt"], initial.stealer_names))
    unseen = {"enhanced": [names[p] for p in checkpoints.get("held_out", []) if p in names],
              **{f"enhanced:{n}": [names[p] for p in v["held_out"] if p in names]
                 for n, v in checkpoints.get("enhance_variants", {}).items()}}  # fmt: skip
    count = (
        len(loader.dataset) if limit_batches is None else min(len(loader.dataset), limit_batches * loader.batch_size)
    )
    metrics = {"phase2": image_metrics, "phase1_R": initial_metrics, "enhanced_R": enhanced_metrics,
               **{f"enhanced_R:{name}": m for name, m in variants.items()}}  # fmt: skip
    tables = _tables(image_metrics, initial_metrics, enhanced_metrics, initial.stealer_names, variants, unseen)
    if privacy is None:
        from ipmn_lightning.faces.analysis import FacesExtraMissingError, require_faces_extra

        try:
            require_faces_extra()
            privacy = datamodule.source != "synthetic"
        except FacesExtraMissingError:
            privacy = False
    tables["table11"] = _privacy(initial, loader, limit_batches) if privacy else None
    report = {"split": split, "images": count, "checkpoints": checkpoints, "data": data, "paper": PAPER,
              **tables, "metrics": metrics}  # fmt: skip
    files = {name: target / name for name in ("report.md", "report.json", "examples.png")}
    report["files"] = {k: str(v) for k, v in files.items()}
    second = enhanced.cpu() if enhanced is not None else None
    _figure(initial.cpu(), second, next(iter(loader)), files["examples.png"], examples)
    atomic_write_text(files["report.json"], json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(files["report.md"], _markdown(report))
    return report


def evaluate(
    *,
    run: str | None = None,
    phase1_ckpt: str | None = None,
    phase2_ckpt: str | None = None,
    stealer_ckpt: list[str] | None = None,
    held_out_stealer_ckpt: list[str] | None = None,
    enhance_ckpt: str | None = None,
    data_config: str | None = None,
    split: Literal["test", "val"] = "test",
    limit_batches: int | None = None,
    out: str | None = None,
    accelerator: str = "auto",
    privacy: bool | None = None,
) -> int:
    """Write ``report.md``, ``report.json`` and ``examples.png``: the paper's Tables 2, 3, 4, 10 and Fig. 5/6.

    Args:
        run: a pipeline output folder (``ipmn pipeline``'s ``output``); its manifest gives everything else.
        phase1_ckpt: phase-1 checkpoint (overrides the run's).
        phase2_ckpt: phase-2 checkpoint (overrides the run's).
        stealer_ckpt: stealing-attack checkpoints (overrides the run's).
        held_out_stealer_ckpt: stealers the enhanced R never saw, scored as unseen in Table 10.
        enhance_ckpt: extractor-enhancement checkpoint (overrides the run's).
        data_config: a YAML whose ``data`` section gives the evaluation images, e.g. ``configs/data/synthetic.yaml``
            (default: the run's).
        split: ``test`` or ``val``.
        limit_batches: evaluate only this many batches.
        out: report folder (default: the run folder, else ``evaluation``).
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        privacy: add Table 11 (SR_P with dlib's recogniser; ``faces`` extra). Default: on for photos.
    """
    report = run_evaluation(
        run=run,
        phase1_ckpt=phase1_ckpt,
        phase2_ckpt=phase2_ckpt,
        stealer_ckpt=stealer_ckpt,
        held_out_stealer_ckpt=held_out_stealer_ckpt,
        enhance_ckpt=enhance_ckpt,
        data_config=data_config,
        split=split,
        limit_batches=limit_batches,
        out=out,
        accelerator=accelerator,
        privacy=privacy,
    )
    print(Path(report["files"]["report.md"]).read_text())
    print("wrote " + ", ".join(report["files"].values()))
    return 0
