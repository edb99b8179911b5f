"""Speed benchmark ``coupling``: the phase-2 step with our INN against the HiNet formulation.

Same weights, inputs and noise, measured interleaved in the same run (benchmarks/hinet_reference.py): the
throughput ratio ours/reference and the max abs difference of the outputs. Run by ``speed_training.py``, whose
phase-2 rows it returns.
"""

from __future__ import annotations

import functools
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the benchmarks import each other by file name
    sys.path.insert(0, str(HERE))

import hinet_reference  # noqa: E402
from harness import BenchConfig, Budget, FlopCount, Memory, collect, count_flops, timed  # noqa: E402
from phase_steps import phase2_module, phase2_step, random_batch, step_row  # noqa: E402
from speed_peak import matmul_peak  # noqa: E402


def bench_coupling(cfg: BenchConfig, budget: Budget) -> tuple[dict, list[dict]]:
    """Phase-2 step with our INN and with the HiNet reference (same weights, inputs and z), interleaved."""
    b = cfg.batches["phase2"]
    module = phase2_module(cfg)
    reference = hinet_reference.from_invertible_mask_net(module.inn).train()
    batch = random_batch(b, cfg.image_size, cfg.device, 0)
    rec_ours: dict[str, Any] = {"seed": 1234, "capture": True}
    rec_ref: dict[str, Any] = {"seed": 1234, "capture": True}
    ours = phase2_step(module, module.inn, batch, cfg, False, rec_ours)
    ref = phase2_step(module, reference, batch, cfg, False, rec_ref)

    # warm-up (also the equality check: same weights, inputs and noise before any update)
    mem = Memory(cfg.device, not cfg.quick)
    mem.reset()
    flops_ours, flops_ref = FlopCount(cfg), FlopCount(cfg)
    warm_ours = timed(flops_ours.wrap(ours), cfg.device)
    mem_ours = mem.peak_mb()
    mem.reset()
    warm_ref = timed(flops_ref.wrap(ref), cfg.device)
    mem_ref = mem.peak_mb()
    flops_h = count_flops(functools.partial(module.watermark_mask, batch["mask"]), cfg)  # frozen H, left out below
    diffs = {k: float((rec_ours["outputs"][k] - rec_ref["outputs"][k]).abs().max()) for k in rec_ours["outputs"]}
    rec_ours["capture"] = rec_ref["capture"] = False
    rec_ours.pop("outputs")
    rec_ref.pop("outputs")

    # at least one interleaved pair: this is the acceptance measurement
    repeats = max(1, budget.repeats(warm_ours + warm_ref, cfg.coupling_repeats, 0.35))
    t_ours, t_ref, inn_ours, inn_ref, h_ours = [], [], [], [], []
    mm_peak: list[float] = []  # the matmul peak measured between the pairs: the same load as the steps
    for _ in range(repeats):  # interleaved so that load changes hit both alike
        mm_peak.append(matmul_peak(cfg, seconds=0.2 if cfg.quick else 1.0)["fp32"]["gflops_per_s"])
        t_ours.append(timed(ours, cfg.device))
        inn_ours.append(rec_ours["inn_s"])
        h_ours.append(rec_ours["h_s"])
        t_ref.append(timed(ref, cfg.device))
        inn_ref.append(rec_ref["inn_s"])
    mm_peak.append(matmul_peak(cfg, seconds=0.2 if cfg.quick else 1.0)["fp32"]["gflops_per_s"])

    def timing(times: list[float], warm: float, peak: float | None, flops: int | None) -> dict[str, Any]:
        return {"warmup_s": warm, "timed_from_warmup": False, "times_s": times, "median_s": statistics.median(times),
                "min_s": min(times), "repeats": len(times), "peak_mem_mb": peak, "mem_kind": mem.kind,
                "flops": flops}  # fmt: skip

    rows = [
        step_row("phase2", cfg, "phase2", b, timing(t_ours, warm_ours, mem_ours, flops_ours.flops), dtype="fp32",
             inn="ipmn_lightning InvertibleMaskNet (impl=auto)", frozen_h_s=statistics.median(h_ours)),
        step_row("phase2_hinet_reference", cfg, "phase2", b, timing(t_ref, warm_ref, mem_ref, flops_ref.flops),
             dtype="fp32", inn="benchmarks/hinet_reference.py HiNetReference"),
    ]  # fmt: skip
    ours_s, ref_s = statistics.median(inn_ours), statistics.median(inn_ref)
    ratio = ref_s / ours_s
    # each pair ran back to back under the same load: the spread of the pair ratios shows the noise
    pair_ratios = [r / o for o, r in zip(inn_ours, inn_ref)]
    max_diff = max(diffs.values())
    coupling = {
        "batch": b,
        "image_size": cfg.image_size,
        "num_blocks": cfg.widths["num_blocks"],
        "growth": cfg.widths["growth"],
        "impl": module.inn.impl,
        "impl_resolved": "split" if cfg.device == "cpu" else "concat",
        "ours_step_s": ours_s,
        "reference_step_s": ref_s,
        "ours_times_s": inn_ours,
        "reference_times_s": inn_ref,
        "ours_images_per_s": b / ours_s,
        "reference_images_per_s": b / ref_s,
        "speedup": ratio,
        "speedup_pairs": pair_ratios,
        "speedup_min_max": [min(pair_ratios), max(pair_ratios)],
        "speedup_full_step": statistics.median(t_ref) / statistics.median(t_ours),
        "max_abs_diff": max_diff,
        "max_abs_diff_per_output": diffs,
        "required_speedup": 1.3 if cfg.device == "cpu" else 1.0,
        "required_max_abs_diff": 1e-5,
        "speedup_ok": ratio >= (1.3 if cfg.device == "cpu" else 1.0),
        "equal_ok": max_diff <= 1e-5,
        "note": "coupling network step only (frozen H excluded); speedup = ratio of the medians of "
        "interleaved (ours, reference) pairs",
        # FLOPs of the coupling network step alone (the frozen H's forward subtracted), for the fraction of peak
        "ours_flops": flops_ours.flops - flops_h if flops_ours.flops and flops_h is not None else None,
        "reference_flops": flops_ref.flops - flops_h if flops_ref.flops and flops_h is not None else None,
        "dtype": "fp32",
        # fp32 matmul GFLOP/s (median of ~1 s of calls) before every pair and after the last one
        "interleaved_peak_gflops_per_s": mm_peak,
    }
    del module, reference, ours, ref
    collect(cfg)
    return coupling, rows
