"""``ipmn pipeline``: train every phase in order, chain their checkpoints, export the bundles, evaluate.

A pipeline file is the config of the command (``ipmn pipeline --config configs/demo/pipeline.yaml``)::

    output: runs/demo            # everything goes under here
    checkpoint: last             # or best: which checkpoint a phase hands to the next
    phases:
      - {name: phase1, config: configs/demo/phase1.yaml}
      - {name: phase2, config: configs/demo/phase2.yaml}
      - {name: steal_unet, config: configs/demo/phase3_steal.yaml, args: ["--model.init_args.stealer=unet"]}
      - {name: enhance, config: configs/demo/phase3_enhance.yaml}

A pipeline over real photos may start with a ``masks`` step that fills the mask store before phase 1
(``ipmn masks generate``; ``configs/faces/pipeline.yaml``)::

    masks: {generator: landmark, image_size: 128, workers: 2}   # store: <output>/masks_store

Each phase runs through the code path of ``ipmn fit`` (:func:`ipmn_lightning.training.lightning_cli.build_cli`) in
``<output>/<name>``, with its checkpoints pinned to ``<output>/<name>/checkpoints``. The ``phase1_ckpt``,
``phase2_ckpt`` and ``stealer_ckpt`` arguments a phase's model accepts are filled in from the earlier
phases (``stealer_ckpt``: every stealing phase). ``<output>/manifest.json`` is rewritten after every step:
phases, configs, arguments, checkpoints, final validation metrics, seeds, versions, wall times.

Running the same pipeline again skips finished phases (even if their config changed since: delete
``<output>/<name>`` to retrain one) and continues an interrupted one from its ``last.ckpt``. At the end it
writes ``<output>/bundles/{service,verifier}.safetensors`` and (``evaluate``) the report of
:mod:`ipmn_lightning.workflows.evaluation` (``<output>/report.md``, ``report.json``, ``examples.png``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint

from ipmn_lightning import __version__
from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule
from ipmn_lightning.inference.bundle import BundleError, export_service_bundle, export_verifier_bundle
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.phases import PHASE1, PHASE2, PHASE3_ENHANCE, PHASE3_STEAL, PHASES
from ipmn_lightning.training.lightning_cli import build_cli
from ipmn_lightning.workflows.evaluation import run_evaluation
from ipmn_lightning.workflows.manifest import MANIFEST, load_manifest

__all__ = [
    "MANIFEST",
    "MasksStep",
    "PhaseSpec",
    "clean_nc_reference",
    "export_bundles",
    "load_manifest",
    "newest_last_checkpoint",
    "phase_kind",
    "pipeline",
    "run_pipeline",
]

CKPT_ARGS = {phase.ckpt_argument: key for key, phase in PHASES.items()}


@dataclass
class PhaseSpec:
    """One phase of a pipeline.

    Args:
        name: the phase's folder under ``output`` and its key in the manifest (unique).
        config: the phase's YAML, as given to ``ipmn fit --config``.
        args: extra ``ipmn fit`` arguments for this phase only, e.g. ``["--model.init_args.stealer=unet"]``.
        held_out: a stealing phase whose model the enhancement never sees: trained like the others and scored in
            Table 10 as an unseen attacker (paper §4.4.1: the owner cannot know the attacker's architecture).
        stealers: an enhancement phase's stealing phases, by name (default: every earlier one not ``held_out``).
            ``["all"]`` gives it every earlier stealing phase, held-out ones included. The verifier bundle and the
            report's "enhanced R" come from the last enhancement phase with the default; the others are variants,
            reported beside it.
        checkpoint: a phase trained elsewhere: its checkpoint is used as it is (the config still says its kind).
    """

    name: str
    config: str
    args: list[str] = field(default_factory=list)
    held_out: bool = False
    stealers: list[str] | None = None
    checkpoint: str | None = None


@dataclass
class MasksStep:
    """The optional first step: generate the mask store x_m = MG(x_p, x_r) (``ipmn masks generate``).

    The store is filled before phase 1 and every phase reads it (``--data.mask_store``); a rerun finishes
    what an interrupted one left, as ``ipmn masks generate`` does.

    Args:
        generator: the mask generator (see ``ipmn masks generate``).
        image_size: side of the square masks (at least the phases' ``data.image_size``).
        workers: processes.
        seed: seed of the pairing.
        identity_sample: new masks checked with the recogniser for the identity statistics of the summary.
        root: the dataset folder (default: ``--data.root`` of the overrides, else of the first phase's config).
        source: ``celeba`` or ``folder`` (default: as ``root``, from ``--data.source``).
        store: the store folder (default ``<output>/masks_store``: the dataset folder is never written to).
    """

    generator: str = "landmark"
    image_size: int = 256
    workers: int = 1
    seed: int = 0
    identity_sample: int = 32
    root: str | None = None
    source: Literal["celeba", "folder"] | None = None
    store: str | None = None


def _data_setting(name: str, phases: list[PhaseSpec], extra: list[str]) -> Any:
    """``data.<name>`` as the first phase will see it: its config, then its args and the overrides (last wins)."""
    value = ((yaml.safe_load(Path(phases[0].config).read_text()) or {}).get("data") or {}).get(name)
    for arg in [*phases[0].args, *extra]:
        if arg.startswith(f"--data.{name}="):
            value = arg.split("=", 1)[1]
    return value


def _make_masks(step: MasksStep, phases: list[PhaseSpec], extra: list[str], out: Path, previous: dict) -> dict:
    """Run the masks step (skipped when an earlier run finished it); returns its manifest record."""
    from ipmn_lightning.faces.analysis import require_faces_extra
    from ipmn_lightning.workflows.masks import generate_masks

    require_faces_extra("the pipeline's masks step")
    root = step.root or _data_setting("root", phases, extra)
    source = step.source or _data_setting("source", phases, extra)
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


def _model_class(spec: PhaseSpec) -> type:
    """The LightningModule class a phase trains (``model.class_path`` of its YAML or of its args)."""
    path = Path(spec.config)
    if not path.is_file():
        raise FileNotFoundError(f"phase {spec.name!r}: no config file {path}")
    model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
    class_path = model.get("class_path") if isinstance(model, dict) else model
    for arg in spec.args:
        if arg.startswith(("--model.class_path=", "--model=")):
            class_path = arg.split("=", 1)[1]
    if not class_path:
        raise ValueError(f"phase {spec.name!r}: {path} has no model.class_path")
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module or "ipmn_lightning.modules"), name)


def phase_kind(model_class: type) -> str:
    """The phase key (:data:`~ipmn_lightning.phases.PHASES`) a module class trains (``other`` otherwise)."""
    phase = getattr(model_class, "phase", None)
    return phase if phase in PHASES else "other"


def _checkpoint_callbacks(config: str, dirpath: Path) -> str:
    """``--trainer.callbacks=[...]``: the YAML's callbacks, every ModelCheckpoint writing to ``dirpath``."""
    trainer = (yaml.safe_load(Path(config).read_text()) or {}).get("trainer") or {}
    callbacks = trainer.get("callbacks") or []
    callbacks = [callbacks] if isinstance(callbacks, dict) else list(callbacks)
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


def _relative(path: str | Path, root: Path) -> str:
    """``path`` relative to the output folder when inside it (the manifest survives moving the folder)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


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
    accepted = inspect.signature(type(cli.datamodule).__init__).parameters
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in cli.datamodule.hparams.items() if k in accepted}
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
    model_class: type,
    root: Path,
    done: dict[str, list[str]],
    extra: list[str],
    stealers: list[str] | None = None,
) -> list[str]:
    """The ``ipmn fit`` arguments of a phase, with the earlier phases' checkpoints injected."""
    accepted = inspect.signature(model_class.__init__).parameters
    callbacks = _checkpoint_callbacks(spec.config, root / "checkpoints")
    args = ["fit", "--config", spec.config, f"--trainer.default_root_dir={root}",
            "--trainer.enable_checkpointing=true", callbacks]  # fmt: skip
    for argument, source in CKPT_ARGS.items():
        if source == PHASE3_STEAL and argument in accepted and stealers is not None:
            args.append(f"--model.init_args.{argument}={json.dumps(stealers)}")
        elif argument in accepted and done[source]:
            value = json.dumps(done[source]) if source == PHASE3_STEAL else done[source][-1]
            args.append(f"--model.init_args.{argument}={value}")
    return [*args, *spec.args, *extra]


def pipeline(
    *,
    phases: list[PhaseSpec],
    output: str,
    checkpoint: Literal["last", "best"] = "last",
    overrides: list[str] | None = None,
    seed: int | None = None,
    evaluate: bool = True,
    masks: MasksStep | None = None,
) -> int:
    """Train the phases in order, chaining their checkpoints; then export the bundles and evaluate.

    Args:
        phases: the phases, in training order (phase 1, phase 2, stealing attacks, enhancement).
        output: folder of everything the pipeline writes (one sub-folder per phase, ``manifest.json``,
            ``bundles/``, the report).
        checkpoint: which checkpoint of a phase the next phases get: ``last`` or ``best`` (top-1 of its
            ModelCheckpoint's monitor).
        overrides: ``ipmn fit`` arguments appended to every phase, e.g. ``["--trainer.max_epochs=1"]``.
        seed: ``seed_everything`` of every phase (default: each config's own).
        evaluate: write the evaluation report at the end.
        masks: generate the mask store first (real photos; see :class:`MasksStep`).
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
                                "checkpoint": checkpoint, "overrides": extra, "versions": _versions(),
                                "phases": []}  # fmt: skip

    def save() -> None:
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")

    if masks is not None:
        manifest["masks"] = {"name": "masks", "kind": "masks", "status": "running"}
        save()
        try:
            manifest["masks"] = _make_masks(masks, phases, extra, out, earlier.get("masks") or {})
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
    main_enhancement: str | None = None
    started = time.time()
    for index, spec in enumerate(phases, 1):
        model_class = _model_class(spec)
        kind, root, step = phase_kind(model_class), out / spec.name, f"[{index}/{len(phases)}] {spec.name}"
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
            args = _phase_args(spec, model_class, root, done, extra, chosen)
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
        if kind == PHASE3_STEAL:
            record["held_out"] = spec.held_out
            stealing[spec.name] = (checkpoint_path, spec.held_out)
        if enhanced_on is not None:
            record["stealers"] = enhanced_on
            record["main"] = spec.stealers is None
            main_enhancement = checkpoint_path if spec.stealers is None else main_enhancement
        manifest["phases"].append(record)
        if kind in done:
            done[kind].append(checkpoint_path)
        save()
    if main_enhancement is not None:  # the bundle's R: the default protocol's, not a variant's
        done[PHASE3_ENHANCE].append(main_enhancement)
    manifest["run_time_s"] = time.time() - started
    manifest["wall_time_s"] = sum(p.get("wall_time_s", 0.0) for p in manifest["phases"])
    data = next((r["data"] for r in reversed(manifest["phases"]) if r.get("data")), None)
    manifest["bundles"] = export_bundles(out, done, data)
    save()
    if evaluate and done[PHASE1] and done[PHASE2]:
        print(f"evaluating into {out}", flush=True)
        report = run_evaluation(run=str(out))
        manifest["evaluation"] = {name: _relative(path, out) for name, path in report["files"].items()}
        save()
    print(f"done: {out / MANIFEST}")
    return 0


def clean_nc_reference(
    verifier: str | os.PathLike[str],
    data: dict[str, Any],
    service: str | os.PathLike[str] | None = None,
    limit: int = 1536,
) -> list[float]:
    """R's NCs on clean images of the test split, as 8-bit images: x_m, x_p and (with ``service``) x'_p.

    These are the images an owner must never confuse with watermarked ones; ``ipmn verify`` turns an
    observed NC into a p-value against them.

    Args:
        verifier: the verifier bundle (R, w).
        data: the data module's arguments (as recorded in the manifest).
        service: the service bundle, to add the recovered faces x'_p (z seeded per batch).
        limit: at most this many NCs.

    Returns:
        The NCs, in the test split's order (x_m, x_p, x'_p per batch).
    """
    model = IPMN.load(service_bundle=service, verifier_bundle=verifier)
    module = FaceSwapDataModule(**{**data, "num_workers": 0, "flip": False})
    module.setup("test")
    ncs: list[float] = []
    for index, batch in enumerate(module.test_dataloader()):
        sources = [batch["mask"], batch["protected"]]
        if model.inn is not None:
            sources.append(model.recover(model.protect(batch["protected"], batch["mask"]), seed=index)[0])
        for images in sources:
            ncs += [v.nc for v in model.verify(quantize_8bit(images))]
        if len(ncs) >= limit:
            break
    return ncs[:limit]


def export_bundles(out: Path, done: dict[str, list[str]], data: dict[str, Any] | None = None) -> dict[str, str]:
    """Write ``<out>/bundles/``: ``service.safetensors`` (phase 2), ``verifier.safetensors`` (R).

    With ``data`` (the data module's arguments), the verifier bundle also carries ``clean_nc_reference``: R's NCs
    on the clean images of the test split (:func:`clean_nc_reference`).
    """
    bundles: dict[str, str] = {}
    try:
        if done[PHASE2]:
            service = export_service_bundle(done[PHASE2][-1], out / "bundles" / "service.safetensors")
            bundles["service"] = str(service)
        extractor = (done[PHASE3_ENHANCE] or done[PHASE1] or [None])[-1]
        if extractor is not None:
            bundles["verifier"] = str(export_verifier_bundle(extractor, out / "bundles" / "verifier.safetensors"))
    except BundleError as err:  # a baseline run (HiDDeN): evaluated from its checkpoints, no bundles
        print(f"no bundles: {err}")
        return {}
    if extractor is not None and data:
        try:
            reference = clean_nc_reference(bundles["verifier"], data, bundles.get("service"))
        except (OSError, ValueError) as err:  # the data moved or changed: the bundle stays usable without it
            print(f"warning: verifier bundle without clean_nc_reference ({type(err).__name__}: {err})")
        else:
            export_verifier_bundle(extractor, bundles["verifier"], clean_nc_reference=reference)
            print(f"verifier bundle: {len(reference)} clean-image reference NCs (for p-values in ipmn verify)")
    for role, path in bundles.items():
        print(f"{role} bundle: {path}")
    return {role: _relative(path, out) for role, path in bundles.items()}


def run_pipeline(
    config: str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    output: str | None = None,
    evaluate: bool | None = None,
) -> dict[str, Any]:
    """Python entry point: run the pipeline file ``config``; returns the manifest.

    Args:
        config: the pipeline YAML (``output``, ``checkpoint``, ``phases``, optional ``overrides``, ``seed``,
            ``evaluate``).
        overrides: arguments appended to every phase after the file's own ``overrides``.
        output: replaces the file's ``output``.
        evaluate: replaces the file's ``evaluate``.
    """
    spec = yaml.safe_load(Path(config).read_text()) or {}
    unknown = set(spec) - {"output", "checkpoint", "phases", "overrides", "seed", "evaluate", "masks"}
    if unknown:
        raise ValueError(f"{config}: unknown pipeline keys {sorted(unknown)}")
    phases = [PhaseSpec(**p) for p in spec.get("phases") or []]
    out = output or spec["output"]
    code = pipeline(
        phases=phases, output=out, checkpoint=spec.get("checkpoint", "last"),
        overrides=[*(spec.get("overrides") or []), *(overrides or [])], seed=spec.get("seed"),
        evaluate=spec.get("evaluate", True) if evaluate is None else evaluate,
        masks=MasksStep(**spec["masks"]) if spec.get("masks") else None,
    )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"pipeline {config} stopped before the end; see {Path(out) / MANIFEST}")
    return json.loads((Path(out) / MANIFEST).read_text())
