"""Rendering the evaluation: ``report.md`` (each table beside the paper's numbers) and the Fig. 5/6-style grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid

from ipmn_lightning.core.files import atomic_save_image
from ipmn_lightning.core.images import tensor_to_pil
from ipmn_lightning.workflows.evaluation.paper import (
    ATTACKS,
    CLEAN,
    PAIRS,
    PAPER,
    PAPER_COLUMNS,
    TABLE2_COLUMNS,
    WATERMARKED,
)

__all__ = ["markdown_report", "privacy_markdown", "save_examples_figure"]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _md(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown section with one table."""
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def markdown_report(report: dict[str, Any]) -> str:
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
        *(privacy_markdown(report["table11"]) if report.get("table11") else []),
        "![examples](examples.png)", "", "Checkpoints: " + json.dumps(report["checkpoints"]), "",
    ])  # fmt: skip


def privacy_markdown(table: dict[str, Any]) -> list[str]:
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
def save_examples_figure(initial: Any, enhanced: Any | None, batch: dict[str, Tensor], path: Path, count: int) -> None:
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
