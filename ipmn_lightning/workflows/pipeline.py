"""``ipmn pipeline``: train every phase in order, chain their checkpoints, export the bundles, evaluate.

The pipeline file and each phase's settings: :mod:`ipmn_lightning.workflows.pipeline_spec`.

Each phase runs through the code path of ``ipmn fit`` (:func:`ipmn_lightning.training.lightning_cli.build_cli`) in
``<output>/<name>`` (``--trainer.default_root_dir``), so its checkpoints are ``<output>/<name>/checkpoints``
(the CLI's default checkpoint; a config's own ModelCheckpoints are pinned there). The ``phase1_ckpt``,
``phase2_ckpt`` and ``stealer_ckpt`` arguments a phase's model accepts are filled in from the earlier
phases (``stealer_ckpt``: every stealing phase). ``<output>/manifest.json`` is rewritten after every step:
phases, configs, arguments, checkpoints, final validation metrics, seeds, versions, wall times.

Running the same pipeline again skips finished phases (even if their config changed since: delete
``<output>/<name>`` to retrain one) and continues an interrupted one from its ``last.ckpt``. At the end it
writes ``<output>/bundles/{service,receiver,verifier}.safetensors`` (:mod:`ipmn_lightning.workflows.bundles`) and
(``evaluate``) the report of :mod:`ipmn_lightning.workflows.evaluation` (``<output>/report.md``, ``report.json``,
``examples.png``).

A pipeline with ``targets`` (:mod:`ipmn_lightning.workflows.targets`) checks its own result first, on the
validation split: a run that misses an R target (SR_E, FPR) trains the enhancement up to ``extra_budget`` more
steps and measures again; a run that still misses one exports no bundles, says FAILED and which target (with the
measured value) in the manifest and ``report.md``/``report.json``, and exits with :data:`TARGETS_MISSED`. No
bundles rather than marked ones: a ``bundles.FAILED/`` folder is still a pair of files that load and protect,
and one copied elsewhere loses its mark; the checkpoints stay for a look, and a rerun measures again.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning
import torch
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint

from ipmn_lightning import __version__
from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.phases import PHASE1, PHASE2, PHASE3_ENHANCE, PHASE3_STEAL, PHASES
from ipmn_lightning.training.lightning_cli import build_cli, has_model_checkpoint, parse_config
from ipmn_lightning.workflows.bundles import bundle_fingerprints, clean_nc_reference, export_bundles
from ipmn_lightning.workflows.bundles import relative_to as _relative
from ipmn_lightning.workflows.evaluation import run_evaluation
from ipmn_lightning.workflows.manifest import MANIFEST, load_manifest
from ipmn_lightning.workflows.pipeline_spec import (
    MasksStep,
    PhaseSpec,
    model_class,
    phase_kind,
    phase_settings,
    read_pipeline_file,
)
from ipmn_lightning.workflows.targets import (
    GATE_FOLDER,
    Targets,
    check,
    measure,
    r_targets_only,
    stamp_report,
    verdict_markdown,
)

__all__ = [
    "MANIFEST",
    "TARGETS_MISSED",
    "MasksStep",
    "PhaseSpec",
    "Targets",
    "clean_nc_reference",
    "export_bundles",
    "load_manifest",
    "newest_last_checkpoint",
    "phase_kind",
    "pipeline",
    "run_pipeline",
]

CKPT_ARGS = {phase.ckpt_argument: key for key, phase in PHASES.items()}

#: the exit code of a run that missed its targets (1: interrupted, 2: bad input)
TARGETS_MISSED = 3


def _make_masks(step: MasksStep, first: Namespace, out: Path, previous: dict) -> dict:
    """Run the masks step (skipped when an earlier run finished it); returns its manifest record.

    ``first``: the first phase's merged settings (:func:`phase_settings`): its ``data.root`` and ``data.source``.
    """
    from ipmn_lightning.faces.analysis import require_faces_extra
    from ipmn_lightning.workflows.masks import generate_masks

    require_faces_extra("the pipeline's masks step")
    root = step.root or first.get("data.root")
    source = step.source or first.get("data.source")
    if not root or source not in ("celeba", "folder"):
        raise ValueError(
            f"the masks step needs a dataset of real photos: got data.root={root!r}, data.source={source!r}; "
            "pass --overrides+=--data.root=DIR (and --data.source=folder or celeba) or set masks.root/source"
        )
    store = Path(step.store) if step.store else out / "masks_store"
    record = {"name": "masks", "kind": "masks", "root": str(root), "source": source, "store": _relative(store, out),
              "generator": step.generator, "image_size": step.image_size}  # fmt: skip
    if previous.get("status") == "finished" and (store / "pairs.csv").is_file():
        print(f"masks: finished earlier ({store}), skipped")
        return {**previous, "reused": True}
    print(f"masks: filling {store} from {root} ({step.generator}, {step.image_size} px)", flush=True)
    tic = time.time()
    summary = generate_masks(root, source=source, store=store, generator=step.generator,
                             image_size=step.image_size, workers=step.workers, seed=step.seed,
                             identity_sample=step.identity_sample)  # fmt: skip
    return {**record, "status": "finished", "summary": summary, "wall_time_s": time.time() - tic}


def _checkpoint_callbacks(config: str | os.PathLike[str] | list[Any], dirpath: Path) -> str:
    """``--trainer.callbacks=[...]``: a config's callbacks, every ModelCheckpoint writing to ``dirpath``.

    Args:
        config: the merged ``trainer.callbacks`` of a phase, or a config file (parsed as ``ipmn fit`` does; a
            trainer overlay without a model is parsed with the base module).
        dirpath: the phase's ``checkpoints`` folder.
    """
    if isinstance(config, (str, os.PathLike)):
        config = parse_config(["fit", "--model=ipmn_lightning.modules.IPMNModule", "--config", str(config)])
        config = config.get("trainer.callbacks") or []
    callbacks = [c.as_dict() if isinstance(c, Namespace) else c for c in config]
    callbacks = [{"class_path": c} if isinstance(c, str) else c for c in callbacks]
    checkpoints = [
        c for c in callbacks if isinstance(c, dict) and str(c.get("class_path", "")).endswith("ModelCheckpoint")
    ]
    if not checkpoints:
        checkpoints = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint"}]
        callbacks.append(checkpoints[0])
    for index, callback in enumerate(checkpoints):
        init_args = dict(callback.get("init_args") or {}, dirpath=str(dirpath))
        if index == 0:
            # always last.ckpt: with the version counter a rerun would write last-v1.ckpt and leave the next
            # phase (and the next resume) reading the stale last.ckpt
            init_args.update(save_last=True, enable_version_counter=False)
        callback["init_args"] = init_args
    return "--trainer.callbacks=" + json.dumps(callbacks)


def newest_last_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The newest ``last*.ckpt`` of a checkpoint folder (``last.ckpt``, or a ``last-vN.ckpt`` of an older rerun).

    Args:
        folder: a phase's ``checkpoints`` folder.

    Returns:
        The most recently written one, or ``None`` when there is none.
    """
    candidates = [p for p in Path(folder).glob("last*.ckpt") if p.is_file() and not p.name.startswith(".")]
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name)) if candidates else None


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "pytorch_lightning": pytorch_lightning.__version__, "ipmn_lightning": __version__}  # fmt: skip


def _fit(spec: PhaseSpec, args: list[str], root: Path, mode: str) -> dict[str, Any]:
    """Run ``ipmn fit`` in-process; the phase's record (status, checkpoints, metrics, seed, data)."""
    cli = build_cli(args)
    trainer = cli.trainer
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    pinned = [c for c in callbacks if c.dirpath and Path(c.dirpath).resolve() == (root / "checkpoints").resolve()]
    callback = (pinned or callbacks or [None])[0]
    last = getattr(callback, "last_model_path", "") or ""
    best = getattr(callback, "best_model_path", "") or last
    chosen = best if mode == "best" else (last or best)
    if not chosen or not Path(chosen).is_file():
        raise RuntimeError(f"phase {spec.name!r} saved no checkpoint; keep checkpointing on in {spec.config}")
    # the data module's arguments as parsed (every --config and override), for the bundles and the evaluation
    data = cli.config[cli.subcommand]["data"].as_dict()
    return {
        "status": "finished" if trainer.state.status.value == "finished" else trainer.state.status.value,
        "checkpoint": _relative(chosen, root.parent),
        "last_checkpoint": _relative(last, root.parent) if last else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        "seed": cli.config[cli.subcommand].get("seed_everything"),
        "data": data,
    }


def _enhancement_stealers(spec: PhaseSpec, stealing: dict[str, tuple[str, bool]]) -> list[str]:
    """The names of the earlier stealing phases an enhancement phase trains against."""
    if spec.stealers is None:
        return [name for name, (_, held_out) in stealing.items() if not held_out]
    if spec.stealers == ["all"]:
        return list(stealing)
    unknown = [name for name in spec.stealers if name not in stealing]
    if unknown:
        raise ValueError(
            f"phase {spec.name!r}: stealers {unknown} are not earlier stealing phases of this pipeline "
            f"(earlier ones: {list(stealing)}); list them before {spec.name!r}"
        )
    return list(spec.stealers)


def _phase_args(
    spec: PhaseSpec,
    settings: Namespace,
    data: str | None,
    root: Path,
    done: dict[str, list[str]],
    extra: list[str],
    stealers: list[str] | None = None,
) -> list[str]:
    """The ``ipmn fit`` arguments of a phase, with the earlier phases' checkpoints injected.

    ``settings``: the phase's merged settings; its ``model.init_args`` are the arguments its module accepts.
    """
    accepted = (settings.get("model.init_args") or Namespace()).keys()
    args = ["fit", *(["--config", str(data)] if data else []), "--config", spec.config,
            f"--trainer.default_root_dir={root}", "--trainer.enable_checkpointing=true"]  # fmt: skip
    callbacks = settings.get("trainer.callbacks")
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
    if has_model_checkpoint(callbacks):  # the config's own checkpoints; otherwise the CLI's default writes there
        args.append(_checkpoint_callbacks(callbacks, root / "checkpoints"))
    for argument, source in CKPT_ARGS.items():
        if source == PHASE3_STEAL and argument in accepted and stealers is not None:
            args.append(f"--model.init_args.{argument}={json.dumps(stealers)}")
        elif argument in accepted and done[source]:
            value = json.dumps(done[source]) if source == PHASE3_STEAL else done[source][-1]
            args.append(f"--model.init_args.{argument}={value}")
    return [*args, *spec.args, *extra]


def _gate(
    out: Path,
    targets: Targets,
    extra_budget: int,
    enhancement: tuple[PhaseSpec, dict[str, Any]] | None,
    mode: str,
    save: Any,
) -> dict[str, Any]:
    """Measure the run against its targets; train the enhancement more (within ``extra_budget``) while only R's miss.

    Args:
        out: the pipeline output.
        targets: the bounds.
        extra_budget: extra optimizer steps the main enhancement phase may train in all (over every rerun).
        enhancement: the main enhancement phase and its manifest record (updated in place), or ``None``.
        mode: which checkpoint a phase hands on (``last``/``best``).
        save: rewrites the manifest.

    Returns:
        The verdict of :func:`~ipmn_lightning.workflows.targets.check` (``extra_steps``: the steps it added).
    """
    print(f"checking the targets on the validation split ({out / GATE_FOLDER})", flush=True)
    verdict = check(measure(out, targets), targets)
    while verdict["failed"] and enhancement is not None and r_targets_only(verdict):
        spec, record = enhancement
        left = extra_budget - record.get("extra_steps", 0)
        if left <= 0 or not record.get("args") or not record.get("global_step"):
            break
        root = out / spec.name
        last = newest_last_checkpoint(root / "checkpoints")
        print(f"missed {verdict['failed']}: training {spec.name} {left} more steps (extra_budget)", flush=True)
        # a resume with a later step budget: the same phase, its optimizer and schedule continue where they were
        budget = ("--ckpt_path=", "--trainer.max_steps=", "--trainer.max_epochs=")
        args = [a for a in record["args"] if not a.startswith(budget)]
        total = record["global_step"] + left
        args += ["--trainer.max_epochs=-1", f"--trainer.max_steps={total}", f"--ckpt_path={last}"]
        tic = time.time()
        result = _fit(spec, args, root, mode)
        record.update(result, extra_steps=record.get("extra_steps", 0) + result["global_step"] - record["global_step"],
                      wall_time_s=record.get("wall_time_s", 0.0) + time.time() - tic)  # fmt: skip
        save()
        verdict = check(measure(out, targets), targets)
        verdict["extra_steps"] = record["extra_steps"]
    return verdict


def pipeline(
    *,
    phases: list[PhaseSpec],
    output: str,
    data: str | None = None,
    checkpoint: Literal["last", "best"] = "last",
    overrides: list[str] | None = None,
    seed: int | None = None,
    evaluate: bool = True,
    masks: MasksStep | None = None,
    targets: Targets | None = None,
    extra_budget: int = 0,
) -> int:
    """Train the phases in order, chaining their checkpoints; then export the bundles and evaluate.

    Args:
        phases: the phases, in training order (phase 1, phase 2, stealing attacks, enhancement).
        output: folder of everything the pipeline writes (one sub-folder per phase, ``manifest.json``,
            ``bundles/``, the report).
        data: the data config (e.g. ``configs/data/synthetic.yaml``), applied to every phase before its own
            config as an extra ``--config``.
        checkpoint: which checkpoint of a phase the next phases get: ``last`` or ``best`` (top-1 of its
            first ModelCheckpoint's monitor: a config's ``checkpoint.monitor``).
        overrides: ``ipmn fit`` arguments appended to every phase, e.g. ``["--trainer.max_epochs=1"]``.
        seed: ``seed_everything`` of every phase (default: each config's own).
        evaluate: write the evaluation report at the end.
        masks: generate the mask store first (real photos; see :class:`MasksStep`).
        targets: check the run on its validation split before exporting the bundles
            (:class:`~ipmn_lightning.workflows.targets.Targets`); ``None`` or ``evaluate`` off: not checked (a
            warning says so, and the manifest's ``gate``).
        extra_budget: extra optimizer steps the main enhancement phase may train when only R's targets are missed.

    Returns:
        0; 1 when a phase was interrupted; :data:`TARGETS_MISSED` when the run missed its targets.
    """
    names = [p.name for p in phases]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"pipeline phases need unique names, got {names}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    earlier = load_manifest(out)
    previous = {r["name"]: r for r in earlier.get("phases", [])}
    extra = [*([f"--seed_everything={seed}"] if seed is not None else []), *(overrides or [])]
    manifest: dict[str, Any] = {"format": "ipmn-pipeline", "format_version": 1, "output": str(output),
                                "data": data, "checkpoint": checkpoint, "overrides": extra, "versions": _versions(),
                                "phases": []}  # fmt: skip

    def save() -> None:
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")

    if masks is not None:
        manifest["masks"] = {"name": "masks", "kind": "masks", "status": "running"}
        save()
        try:
            first = phase_settings(phases[0], data, extra)
            manifest["masks"] = _make_masks(masks, first, out, earlier.get("masks") or {})
        except BaseException as err:
            manifest["masks"].update(status="failed", error=f"{type(err).__name__}: {err}")
            raise
        finally:
            save()
        # the phases read the generated store (a --data.mask_store of the overrides still wins), by its absolute
        # path so that the manifest's data settings hold from any working directory (ipmn evaluate --run)
        extra = [f"--data.mask_store={(out / manifest['masks']['store']).resolve()}", *extra]

    done: dict[str, list[str]] = {key: [] for key in PHASES}
    stealing: dict[str, tuple[str, bool]] = {}  # stealing phase name -> (checkpoint, held out)
    nulls: dict[str, str] = {}  # null model phase name -> checkpoint
    main_enhancement: str | None = None
    enhancement: tuple[PhaseSpec, dict[str, Any]] | None = None  # the main enhancement phase and its record
    started = time.time()
    for index, spec in enumerate(phases, 1):
        settings = phase_settings(spec, data, extra)
        kind, root, step = phase_kind(model_class(settings)), out / spec.name, f"[{index}/{len(phases)}] {spec.name}"
        record = previous.get(spec.name, {})
        enhanced_on = _enhancement_stealers(spec, stealing) if kind == PHASE3_ENHANCE else None
        if spec.checkpoint is not None:
            if not Path(spec.checkpoint).is_file():
                raise FileNotFoundError(f"phase {spec.name!r}: checkpoint {spec.checkpoint} does not exist")
            print(f"{step} ({kind}): using {spec.checkpoint}")
            record = {"status": "finished", "checkpoint": _relative(spec.checkpoint, out), "given": True}
        elif record.get("status") == "finished" and Path(record.get("checkpoint") or "").is_file():
            print(f"{step} ({kind}): finished earlier, skipped")
            for key in ("checkpoint", "last_checkpoint"):
                record[key] = record.get(key) and _relative(record[key], out)
            record["reused"] = True
        else:
            chosen = None if enhanced_on is None else [stealing[name][0] for name in enhanced_on]
            args = _phase_args(spec, settings, data, root, done, extra, chosen)
            last = newest_last_checkpoint(root / "checkpoints") or root / "checkpoints" / "last.ckpt"
            resumed = last.is_file()
            args += [f"--ckpt_path={last}"] if resumed else []
            print(f"{step} ({kind}): {'resuming from ' + str(last) if resumed else 'training'}", flush=True)
            entry = {
                "name": spec.name,
                "kind": kind,
                "config": spec.config,
                "args": args,
                "status": "running",
                "resumed_from": _relative(last, out) if resumed else None,
            }
            manifest["phases"].append(entry)
            save()
            tic = time.time()
            try:
                entry.update(_fit(spec, args, root, checkpoint))
            except BaseException as err:
                # Lightning turns Ctrl-C into a graceful stop and sys.exit(1); argument errors exit with 2
                interrupted = isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and err.code == 1)
                stopped = "interrupted" if interrupted else "failed"
                entry.update(status=stopped, error=f"{type(err).__name__}: {err}")
                raise
            finally:
                entry["wall_time_s"] = time.time() - tic
                save()
            if entry["status"] != "finished":
                print(f"{spec.name} stopped ({entry['status']}); run the pipeline again to continue")
                return 1
            record = manifest["phases"].pop()
        record.update(name=spec.name, kind=kind, config=spec.config)
        checkpoint_path = str(out / record["checkpoint"])
        target = settings.get("model.init_args.target") or "watermarked"
        if kind == PHASE3_STEAL and target != "watermarked":  # a null model of the audit (issue 24), not a thief
            record["null"] = target
            nulls[spec.name] = checkpoint_path
        elif kind == PHASE3_STEAL:
            record["held_out"] = spec.held_out
            stealing[spec.name] = (checkpoint_path, spec.held_out)
        if enhanced_on is not None:
            record["stealers"] = enhanced_on
            record["main"] = spec.stealers is None
            main_enhancement = checkpoint_path if spec.stealers is None else main_enhancement
            enhancement = (spec, record) if spec.stealers is None else enhancement
        manifest["phases"].append(record)
        if kind in done and not record.get("null"):
            done[kind].append(checkpoint_path)
        save()
    if main_enhancement is not None:  # the bundle's R: the default protocol's, not a variant's
        done[PHASE3_ENHANCE].append(main_enhancement)
    manifest["run_time_s"] = time.time() - started
    manifest["wall_time_s"] = sum(p.get("wall_time_s", 0.0) for p in manifest["phases"])
    verdict = None
    if targets is None:
        print("warning: this pipeline states no targets: its result is not checked before the bundles are exported")
    elif not evaluate:  # evaluate: false measures nothing (a dry run of the chaining), the check included
        print("warning: evaluate is off: the targets are not checked before the bundles are exported")
        manifest["gate"] = {"status": "NOT CHECKED", "why": "evaluate: false"}
    elif not (done[PHASE1] and done[PHASE2]):
        print("warning: the targets need phase 1 and phase 2; not checked")
        manifest["gate"] = {"status": "NOT CHECKED", "why": "no phase 1 and phase 2"}
    else:
        verdict = manifest["gate"] = _gate(out, targets, extra_budget, enhancement, checkpoint, save)
        if enhancement is not None and checkpoint == "best":  # more training may have found a better one
            done[PHASE3_ENHANCE][-1] = main_enhancement = str(out / enhancement[1]["checkpoint"])
        manifest["status"] = verdict["status"]
        if verdict["status"] == "FAILED":
            files = stamp_report(out / GATE_FOLDER, out, verdict)
            manifest["evaluation"] = {name: _relative(path, out) for name, path in files.items()}
            manifest["bundles"] = None
            save()
            print(verdict_markdown(verdict))
            print(f"FAILED: missed {', '.join(verdict['failed'])}; no bundles exported ({out / MANIFEST})")
            return TARGETS_MISSED
        save()
    data = next((r["data"] for r in reversed(manifest["phases"]) if r.get("data")), None)
    manifest["bundles"] = export_bundles(out, done, data, nulls)
    # recorded outside the bundles, so that an edited bundle with a recomputed fingerprint is still caught
    manifest["bundle_fingerprints"] = bundle_fingerprints(manifest["bundles"], out)
    save()
    if evaluate and done[PHASE1] and done[PHASE2]:
        print(f"evaluating into {out}", flush=True)
        report = run_evaluation(run=str(out))
        files = stamp_report(out, out, verdict) if verdict is not None else {}
        manifest["evaluation"] = {name: _relative(path, out) for name, path in {**report["files"], **files}.items()}
        save()
    print(f"done ({verdict['status'] if verdict else 'targets not checked'}): {out / MANIFEST}")
    return 0


def run_pipeline(
    config: str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    output: str | None = None,
    evaluate: bool | None = None,
) -> dict[str, Any]:
    """Python entry point: run the pipeline file ``config``; returns the manifest.

    Args:
        config: the pipeline YAML (``output``, ``checkpoint``, ``phases``, optional ``data``, ``overrides``,
            ``seed``, ``evaluate``, ``masks``, ``targets``, ``extra_budget``).
        overrides: arguments appended to every phase after the file's own ``overrides``.
        output: replaces the file's ``output``.
        evaluate: replaces the file's ``evaluate``.
    """
    spec = read_pipeline_file(config)
    phases = [PhaseSpec(**p) for p in spec.get("phases") or []]
    out = output or spec["output"]
    code = pipeline(
        phases=phases, output=out, data=spec.get("data"), checkpoint=spec.get("checkpoint", "last"),
        overrides=[*(spec.get("overrides") or []), *(overrides or [])], seed=spec.get("seed"),
        evaluate=spec.get("evaluate", True) if evaluate is None else evaluate,
        masks=MasksStep(**spec["masks"]) if spec.get("masks") else None,
        targets=Targets(**spec["targets"]) if spec.get("targets") else None, extra_budget=spec.get("extra_budget", 0),
    )  # fmt: skip
    if code == TARGETS_MISSED:
        gate = json.loads((Path(out) / MANIFEST).read_text())["gate"]
        raise RuntimeError(f"pipeline {config} FAILED its targets {gate['failed']}; see {Path(out) / 'report.md'}")
    if code != 0:
        raise RuntimeError(f"pipeline {config} stopped before the end; see {Path(out) / MANIFEST}")
    return json.loads((Path(out) / MANIFEST).read_text())
