"""Speed benchmark ``training``: one optimisation step of every phase (bf16 rows too on CUDA).

Phases 1, 3a and 3b run the modules' own ``training_step`` (:mod:`phase_steps`); phase 2's rows come from the
coupling comparison (:mod:`speed_coupling`). ``python benchmarks/speed_training.py [speed.py options]`` runs this
section alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the benchmarks import each other by file name
    sys.path.insert(0, str(HERE))

from harness import BenchConfig, Budget, collect, measure  # noqa: E402
from phase_steps import (  # noqa: E402
    enhance_step,
    fit_batch,
    phase1_step,
    phase2_module,
    phase2_step,
    random_batch,
    steal_step,
    step_row,
)
from speed_coupling import bench_coupling  # noqa: E402


def bench_training(cfg: BenchConfig, budget: Budget) -> tuple[list[dict], dict]:
    """Training rows (phases 1, 2, 2-reference, 3a, 3b; bf16 rows on CUDA) and the coupling comparison."""
    rows: list[dict] = []
    dtypes = [False, True] if (cfg.bf16 and cfg.device == "cuda") else [False]

    def phase1(b: int, bf16: bool) -> dict:
        step, _ = phase1_step(cfg, b, bf16)
        return step_row("phase1" + ("_bf16" if bf16 else ""), cfg, "phase1", b, measure(step, cfg, budget, 0.15),
                    dtype="bf16-autocast" if bf16 else "fp32", includes_vgg=cfg.vgg)  # fmt: skip

    for bf16 in dtypes:
        rows.append(fit_batch(cfg, "phase1", lambda b, bf16=bf16: phase1(b, bf16), even=True))
        collect(cfg)

    coupling, phase2_rows = fit_batch(cfg, "phase2", lambda b: bench_coupling(cfg, budget))
    rows.extend(phase2_rows)

    if cfg.bf16 and cfg.device == "cuda":

        def phase2_bf16(b: int) -> dict:
            module = phase2_module(cfg)
            step = phase2_step(module, module.inn, random_batch(b, cfg.image_size, cfg.device, 0), cfg, True, {})
            return step_row("phase2_bf16", cfg, "phase2", b, measure(step, cfg, budget, 0.1), dtype="bf16-autocast")

        rows.append(fit_batch(cfg, "phase2", phase2_bf16))
        collect(cfg)

    def steal(b: int) -> dict:
        step, _ = steal_step(cfg, b)
        return step_row("steal_unet", cfg, "steal", b, measure(step, cfg, budget, 0.15), dtype="fp32")

    rows.append(fit_batch(cfg, "steal", steal))
    collect(cfg)

    def enhance(b: int) -> dict:
        step, info = enhance_step(cfg, b)
        return step_row("enhance", cfg, "enhance", b, measure(step, cfg, budget, 0.35), dtype="fp32",
                    extractor_images_per_step=b * info["sources"])  # fmt: skip

    rows.append(fit_batch(cfg, "enhance", enhance))
    collect(cfg)
    return rows, coupling


if __name__ == "__main__":
    from speed import main

    main(["--sections", "training", *sys.argv[1:]])
