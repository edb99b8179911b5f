"""One-shot GPU benchmark (issue 16): everything a first session on a GPU should measure, in one JSON.

    bash benchmarks/gpu.sh                                   # on the GPU machine: < 8 minutes on one modern GPU
    python benchmarks/gpu.py --out benchmarks/results/gpu.json
    python benchmarks/gpu.py --dry-run --out /tmp/gpu.json   # on CPU: tiny networks, every code path (seconds)

Sections (each one's rows are written as soon as it finishes, so a run cut short keeps what it measured):

* ``peak``: dense matmul throughput of this GPU: fp32 (TF32 off), TF32, bf16 (:func:`speed_peak.matmul_peak`).
* ``phases``: one optimisation step of each phase at the paper's batch sizes (phase 1: 8, phase 2: 32,
  stealing 16, enhancement 8) in ``fp32`` (TF32 off for matmuls and cuDNN), ``tf32`` (both on) and
  ``bf16`` (``torch.autocast(bfloat16)``, what ``trainer.precision="bf16-mixed"`` does; TF32 on): step time,
  images/s, peak CUDA memory, FLOPs, GFLOP/s and the fraction of the matching matmul peak.
* ``inn_impl``: the phase-2 step with the split dense block (channels-last; the library's default) and the
  concat one (HiNet's formulation, NCHW) under cuDNN, TF32 and bf16, at batch 8 (concat needs ~3 GB per image).
* ``channels_last``: the phase-1 and the stealing step with contiguous vs channels-last CNNs (TF32).
* ``compile``: the phase-2 step with ``torch.compile``-d dense blocks vs eager (bf16): compile and steady time.
* ``bf16_run``: a short phase-2 training run with the real ``InvertibleMaskModule`` under a Trainer
  (``bf16-mixed`` vs ``32-true``, same seed and synthetic data): the loss per step, NaNs, skipped steps.

The sizes fit 8 minutes on an A6000/H100 class GPU; ``--budget`` (seconds, default 450) skips what no longer
fits. Batches that run out of memory are halved and say so (``batch_note``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import phase_steps  # noqa: E402
from speed_peak import matmul_peak  # noqa: E402

SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def precision(kind: str) -> Iterator[None]:
    """TF32 off (``fp32``) or on (``tf32``, ``bf16``) for matmuls and cuDNN convolutions, restored after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = kind != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(cfg: harness.BenchConfig, kind: str) -> contextlib.AbstractContextManager:
    return torch.autocast(cfg.device, dtype=torch.bfloat16) if kind == "bf16" else contextlib.nullcontext()


def in_autocast(fn: Callable[[], Any], cfg: harness.BenchConfig, kind: str) -> Callable[[], Any]:
    """The whole step (forward, backward, optimizer) under autocast, as Lightning's bf16-mixed runs it."""

    def step() -> Any:
        with autocast(cfg, kind):
            return fn()

    return step


def make_config(dry_run: bool, budget: float, repeats: int | None) -> harness.BenchConfig:
    if dry_run:
        cfg = harness.make_config("cpu", quick=True, image_size=32, repeats=repeats or 1)
        cfg.batches.update(phase1=2, phase2=2, steal=2, enhance=2)
        cfg.matmul_size = 128
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on the GPU machine, or use --dry-run on CPU")
        cfg = harness.make_config("cuda", repeats=repeats or 3)
        cfg.batches = dict(harness.PAPER_BATCHES)
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
    cfg.budget_s = budget
    return cfg


def timing_row(
    name: str, cfg: harness.BenchConfig, key: str, batch: int, timing: dict, kind: str, **extra: Any
) -> dict:
    dtype = "bf16-autocast" if kind == "bf16" else "fp32"
    row = phase_steps.step_row(name, cfg, key, batch, timing, precision=kind, dtype=dtype, **extra)
    return row


def peak_for(row: dict, peak: dict) -> None:
    """Fraction of the matmul peak of the row's own precision (fp32 rows with TF32 off: fp32 peak)."""
    if not row.get("flops") or not row.get("median_s"):
        return
    kind = row["precision"] if row["precision"] in peak["best"] else "fp32"
    rate = row["flops"] / row["median_s"] / 1e9
    row.update(gflop=row["flops"] / 1e9, gflops_per_s=rate, peak_kind=kind, peak_gflops_per_s=peak["best"][kind],
               fraction_of_peak=rate / peak["best"][kind])  # fmt: skip


# --------------------------------------------------------------------------------------------- sections
def section_phases(
    cfg: harness.BenchConfig, budget: harness.Budget, peak: dict, precisions: tuple[str, ...] = PRECISIONS
) -> list[dict]:
    rows: list[dict] = []
    builders: dict[str, Callable[[int, str], Callable[[], Any]]] = {
        "phase1": lambda b, k: phase_steps.phase1_step(cfg, b, bf16=k == "bf16")[0],
        "phase2": lambda b, k: phase2_fn(cfg, b, k),
        "steal": lambda b, k: in_autocast(phase_steps.steal_step(cfg, b)[0], cfg, k),
        "enhance": lambda b, k: in_autocast(phase_steps.enhance_step(cfg, b)[0], cfg, k),
    }
    for key, build in builders.items():
        for kind in precisions:
            if budget.left() < 30 and not cfg.quick:
                rows.append({"name": key, "precision": kind, "skipped": "budget"})
                continue

            def run(b: int, key: str = key, kind: str = kind, build: Callable = build) -> dict:
                with precision(kind):
                    step = build(b, kind)
                    timing = harness.measure(step, cfg, budget, 0.1)
                return timing_row(key, cfg, key, b, timing, kind)

            rows.append(
                guarded(lambda run=run, key=key: phase_steps.fit_batch(cfg, key, run, even=key == "phase1"), key)
            )
            peak_for(rows[-1], peak)
            harness.collect(cfg)
            empty_cache(cfg)
    return rows


def phase2_fn(cfg: harness.BenchConfig, batch: int, kind: str, impl: str = "auto") -> Callable[[], None]:
    module = phase_steps.phase2_module(cfg)
    inn = module.inn
    if impl != "auto":
        from ipmn_lightning.nets.inn import InvertibleMaskNet

        inn = InvertibleMaskNet(**phase_steps.net_configs(cfg)["inn"], impl=impl).to(cfg.device).train()
        inn.load_state_dict(module.inn.state_dict())
    images = phase_steps.random_batch(batch, cfg.image_size, cfg.device, 0)
    return phase_steps.phase2_step(module, inn, images, cfg, bf16=kind == "bf16", record={})


def section_inn_impl(cfg: harness.BenchConfig, budget: harness.Budget, peak: dict) -> list[dict]:
    rows = []
    b = min(8, cfg.batches["phase2"])
    for kind in ("tf32", "bf16"):
        with precision(kind):
            steps = {impl: phase2_fn(cfg, b, kind, impl) for impl in ("split", "concat")}
            flops, memory = {}, {}
            for impl, fn in steps.items():  # one step each alone: FLOPs and peak memory (then timed interleaved)
                mem = harness.Memory(cfg.device, not cfg.quick)
                mem.reset()
                flops[impl] = harness.count_flops(fn, cfg)
                memory[impl] = mem.peak_mb()
            results = harness.measure_interleaved(steps, cfg, budget, 0.1)
        for impl, t in results.items():
            row = {"name": "phase2_inn_impl", "variant": impl, "precision": kind, "batch": b,
                   "layout": "channels_last" if impl == "split" else "NCHW", "flops": flops[impl],
                   "peak_mem_mb": memory[impl], "images_per_s": b / t["median_s"], **t}  # fmt: skip
            peak_for(row, peak)
            rows.append(row)
        del steps
        harness.collect(cfg)
        empty_cache(cfg)
    return rows


def section_channels_last(cfg: harness.BenchConfig, budget: harness.Budget, peak: dict) -> list[dict]:
    rows = []
    with precision("tf32"):
        for key, build in (("phase1", phase_steps.phase1_step), ("steal", phase_steps.steal_step)):
            b = cfg.batches[key]
            steps = {v: build(cfg, b, channels_last=v == "channels_last")[0] for v in ("contiguous", "channels_last")}
            for variant, t in harness.measure_interleaved(steps, cfg, budget, 0.1).items():
                rows.append({"name": f"{key}_memory_format", "variant": variant, "precision": "tf32", "batch": b, **t})
            del steps
            harness.collect(cfg)
            empty_cache(cfg)
    return rows


def section_compile(cfg: harness.BenchConfig, budget: harness.Budget, peak: dict) -> list[dict]:
    b = min(8, cfg.batches["phase2"])
    rows = []
    with precision("bf16"):
        eager = phase2_fn(cfg, b, "bf16")
        compiled_cfg = dataclasses.replace(cfg, compile=True)
        module = phase_steps.phase2_module(cfg)
        images = phase_steps.random_batch(b, cfg.image_size, cfg.device, 0)
        compiled = phase_steps.phase2_step(module, module.inn, images, compiled_cfg, bf16=True, record={})
        for variant, fn, variant_cfg in (("eager", eager, cfg), ("compiled", compiled, compiled_cfg)):
            # the compiled variant is not FLOP-counted: dynamo does not compile under the counter's dispatch mode
            t = harness.measure(fn, variant_cfg, budget, 0.15)
            rows.append({"name": "phase2_torch_compile", "variant": variant, "precision": "bf16", "batch": b,
                         "note": "compiled warmup_s includes the compilation", **t})  # fmt: skip
    return rows


def section_bf16_run(cfg: harness.BenchConfig, budget: harness.Budget, steps: int, lr: float) -> dict:
    """A short phase-2 run of the real module under a Trainer in bf16-mixed and in fp32: loss curves, NaNs."""
    import pytorch_lightning as pl

    from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule

    b = min(8, cfg.batches["phase2"])
    out: dict[str, Any] = {"steps": steps, "batch": b, "image_size": cfg.image_size, "lr": lr, "runs": {}}

    class Losses(pl.Callback):
        def __init__(self) -> None:
            self.losses: list[torch.Tensor] = []

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            loss = trainer.callback_metrics.get("train/loss")
            self.losses.append(loss.detach().clone() if loss is not None else torch.tensor(math.nan))

    for trainer_precision in ("32-true", "bf16-mixed"):
        pl.seed_everything(0, workers=True)
        module = phase_steps.phase2_module(cfg)  # random frozen H, non-trivial INN weights, same for both runs
        module.hparams.lr = lr
        data = FaceSwapDataModule(image_size=cfg.image_size, batch_size=b, num_workers=0 if cfg.quick else 4,
                                  synthetic_sizes=(steps * b, b, b), seed=0)  # fmt: skip
        losses = Losses()
        trainer = pl.Trainer(
            accelerator="gpu" if cfg.device == "cuda" else "cpu", devices=1, precision=trainer_precision,
            max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[losses], num_sanity_val_steps=0,
        )  # fmt: skip
        with precision("tf32"):
            start = time.perf_counter()
            trainer.fit(module, datamodule=data)
            harness.synchronize(cfg.device)
            seconds = time.perf_counter() - start
        curve = [float(v) for v in losses.losses]
        finite = [v for v in curve if math.isfinite(v)]
        k = max(1, len(finite) // 5)
        out["runs"][trainer_precision] = {
            "loss": curve,
            "first_mean": statistics.fmean(finite[:k]) if finite else None,
            "last_mean": statistics.fmean(finite[-k:]) if finite else None,
            "nan_steps": sum(not math.isfinite(v) for v in curve),
            "skipped_steps": int(module.skipped_steps),
            "seconds": seconds,
            "steps_per_s": len(curve) / seconds,
        }
        del module, trainer
        harness.collect(cfg)
        empty_cache(cfg)
    fp32, bf16 = out["runs"]["32-true"], out["runs"]["bf16-mixed"]
    if fp32["first_mean"] and bf16["first_mean"]:
        out["fp32_falls"] = fp32["last_mean"] < fp32["first_mean"]
        out["bf16_falls"] = bf16["last_mean"] < bf16["first_mean"]
        out["last_ratio_bf16_to_fp32"] = bf16["last_mean"] / fp32["last_mean"]
    return out


# ------------------------------------------------------------------------------------------------ run
def empty_cache(cfg: harness.BenchConfig) -> None:
    if cfg.device == "cuda":
        torch.cuda.empty_cache()


def guarded(fn: Callable[[], Any], name: str) -> Any:
    """Run a benchmark; an error becomes a row that says what failed (the rest of the run goes on)."""
    try:
        return fn()
    except Exception as err:  # one failing variant must not sink the one-shot run
        return {"name": name, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=3)}


SECTIONS = ("phases", "inn_impl", "channels_last", "bf16_run", "compile")


def run(
    cfg: harness.BenchConfig,
    out: Path,
    sections: tuple[str, ...] = SECTIONS,
    run_steps: int = 60,
    lr: float = 1e-4,
    precisions: tuple[str, ...] = PRECISIONS,
) -> dict:
    """Run ``sections`` and write the JSON to ``out`` after each; returns the results."""
    budget = harness.Budget(cfg.budget_s)
    torch.manual_seed(0)
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "dry_run": cfg.quick,
        "config": {**dataclasses.asdict(cfg), "paper_batches": harness.PAPER_BATCHES, "sections": list(sections)},
        "environment": harness.environment(cfg),
    }
    peak_rows = matmul_peak(cfg)
    results["peak"] = {"start": peak_rows, "best": {k: v["gflops_per_s"] for k, v in peak_rows.items()}}
    harness.write_json(out, results)
    for name in sections:
        # torch.compile of 48 dense blocks can take minutes: only with time to spare
        if budget.left() < (150 if name == "compile" else 20) and not cfg.quick:
            results[name] = {"skipped": f"budget: {budget.left():.0f} s left"}
            continue
        start = time.perf_counter()
        if name == "phases":
            results[name] = section_phases(cfg, budget, results["peak"], precisions)
        elif name == "inn_impl":
            results[name] = guarded(lambda: section_inn_impl(cfg, budget, results["peak"]), name)
        elif name == "channels_last":
            results[name] = guarded(lambda: section_channels_last(cfg, budget, results["peak"]), name)
        elif name == "compile":
            results[name] = guarded(lambda: section_compile(cfg, budget, results["peak"]), name)
        elif name == "bf16_run":
            results[name] = guarded(functools.partial(section_bf16_run, cfg, budget, run_steps, lr), name)
        results.setdefault("section_seconds", {})[name] = time.perf_counter() - start
        harness.write_json(out, results)  # what is measured so far survives a run cut short
    results["elapsed_s"] = budget.elapsed()
    harness.write_json(out, results)
    return results


def format_table(results: dict) -> str:
    env = results["environment"]
    lines = [f"{env.get('gpu') or env.get('cpu_model', '?')}, torch {env['torch']}"
             + (" (DRY RUN: tiny networks on CPU)" if results["dry_run"] else "")]  # fmt: skip
    lines.append("matmul peak GFLOP/s: " + ", ".join(f"{k} {v:.4g}" for k, v in results["peak"]["best"].items()))
    rows = [r for r in results.get("phases", []) if "median_s" in r]
    if rows:
        lines.append(harness.table(
            ["phase", "precision", "batch", "step s", "img/s", "peak MB", "GFLOP/s", "of peak", "note"],
            [[r["name"], r["precision"], r["batch"], r["step_s"], r["images_per_s"], r["peak_mem_mb"],
              r.get("gflops_per_s"), r.get("fraction_of_peak"), r["batch_note"]] for r in rows],
        ))  # fmt: skip
    for name in ("inn_impl", "channels_last", "compile"):
        section = results.get(name)
        if isinstance(section, list) and section:
            lines.append(harness.table(
                ["experiment", "variant", "precision", "batch", "median s", "warm-up s"],
                [[r["name"], r["variant"], r["precision"], r["batch"], r.get("median_s"), r.get("warmup_s")]
                 for r in section],
            ))  # fmt: skip
        elif section:
            lines.append(f"{name}: {section}")
    run_ = results.get("bf16_run")
    if isinstance(run_, dict) and "runs" in run_:
        for p, r in run_["runs"].items():
            lines.append(
                f"{p}: loss {harness.fmt(r['first_mean'])} -> {harness.fmt(r['last_mean'])} "
                f"over {run_['steps']} steps, "
                f"NaN steps {r['nan_steps']}, skipped {r['skipped_steps']}, {r['steps_per_s']:.3g} steps/s"
            )
    lines.append(f"elapsed {results.get('elapsed_s', 0):.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="one-shot GPU benchmark (issue 16); see benchmarks/README.md")
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny networks: every code path in seconds")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds (default 450: under 8 minutes)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per row (GPU 3, dry run 1)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    parser.add_argument("--run-steps", type=int, default=None, help="steps of the bf16/fp32 run (GPU 60, dry 3)")
    parser.add_argument("--run-lr", type=float, default=1e-4, help="learning rate of that run")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"of the phases section: {PRECISIONS}")
    args = parser.parse_args(argv)
    cfg = make_config(args.dry_run, args.budget, args.repeats)
    sections = harness.comma_list(args.sections)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; choose from {SECTIONS}")
    steps = args.run_steps or (3 if args.dry_run else 60)
    precisions = harness.comma_list(args.precisions)
    if set(precisions) - set(PRECISIONS):
        parser.error(f"--precisions: choose from {PRECISIONS}")
    results = run(cfg, args.out, sections, steps, args.run_lr, precisions)
    print(format_table(results))
    print(f"\nJSON written to {args.out}")
    return results


if __name__ == "__main__":
    main()
