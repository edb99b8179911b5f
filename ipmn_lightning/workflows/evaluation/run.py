"""``ipmn evaluate`` and the pipeline's report: compute the tables, then write report.md, report.json, examples.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl

from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule
from ipmn_lightning.modules import InvertibleMaskModule
from ipmn_lightning.training.lightning_cli import data_settings
from ipmn_lightning.workflows.evaluation.compute import (
    extraction_module,
    extraction_tables,
    privacy_table,
    run_checkpoints,
)
from ipmn_lightning.workflows.evaluation.paper import PAPER
from ipmn_lightning.workflows.evaluation.report import markdown_report, save_examples_figure

__all__ = ["evaluate", "run_evaluation"]


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
    checkpoints, data = run_checkpoints(run) if run else (empty, {})
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
    initial = extraction_module(checkpoints, datamodule.image_size, enhanced=False)
    initial_metrics = test(initial)
    enhanced = extraction_module(checkpoints, datamodule.image_size, True) if checkpoints["enhance_ckpt"] else None
    enhanced_metrics = test(enhanced) if enhanced is not None else None
    variants = {
        name: test(extraction_module(checkpoints, datamodule.image_size, True, variant["ckpt"]))
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
    tables = extraction_tables(
        image_metrics, initial_metrics, enhanced_metrics, initial.stealer_names, variants, unseen
    )
    if privacy is None:
        from ipmn_lightning.faces.analysis import FacesExtraMissingError, require_faces_extra

        try:
            require_faces_extra()
            privacy = datamodule.source != "synthetic"
        except FacesExtraMissingError:
            privacy = False
    tables["table11"] = privacy_table(initial, loader, limit_batches) if privacy else None
    report = {"split": split, "images": count, "checkpoints": checkpoints, "data": data, "paper": PAPER,
              **tables, "metrics": metrics}  # fmt: skip
    files = {name: target / name for name in ("report.md", "report.json", "examples.png")}
    report["files"] = {k: str(v) for k, v in files.items()}
    second = enhanced.cpu() if enhanced is not None else None
    save_examples_figure(initial.cpu(), second, next(iter(loader)), files["examples.png"], examples)
    atomic_write_text(files["report.json"], json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(files["report.md"], markdown_report(report))
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
