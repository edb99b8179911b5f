"""Speed benchmark: the machine's dense matmul peak, the denominator of every row's ``fraction_of_peak``.

``speed.py`` measures it at the start and at the end of a run (the load of a shared machine changes) and between
the coupling comparison's pairs; ``gpu.py`` once per run.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the benchmarks import each other by file name
    sys.path.insert(0, str(HERE))

from harness import BenchConfig, timed  # noqa: E402

#: Matmul peaks measured per device: (dtype, TF32 allowed).
PEAK_KINDS = {
    "cpu": {"fp32": (torch.float32, False)},
    "cuda": {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False)},
}


def matmul_peak(cfg: BenchConfig, seconds: float = 2.0) -> dict[str, dict[str, Any]]:
    """The machine's dense matmul throughput now: square ``n x n`` products repeated for about ``seconds``.

    ``gflops_per_s`` = 2 n³ / median time (``best_gflops_per_s`` from the fastest call): the median, like the
    steps' median times, so that on a shared machine both carry the same kind of load. On CPU fp32 (at the run's
    thread count), on CUDA fp32 with TF32 off, fp32 with TF32 on, and bf16. It is the practical peak the steps'
    FLOP rates are divided by.
    """
    n = cfg.matmul_size or (256 if cfg.quick else 2048 if cfg.device == "cpu" else 8192)
    out: dict[str, dict[str, Any]] = {}
    for kind, (dtype, tf32) in PEAK_KINDS[cfg.device].items():
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            g = torch.Generator().manual_seed(0)
            matmul = functools.partial(
                torch.matmul, *(torch.randn(n, n, generator=g).to(device=cfg.device, dtype=dtype) for _ in range(2))
            )
            for _ in range(2):  # warm-up (thread pool, cuBLAS handles)
                timed(matmul, cfg.device)
            start = time.perf_counter()
            times: list[float] = []
            while len(times) < 5 or (time.perf_counter() - start < seconds and len(times) < 200):
                times.append(timed(matmul, cfg.device))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
        out[kind] = {"n": n, "dtype": str(dtype).replace("torch.", ""), "tf32": tf32, "calls": len(times),
                     "median_s": statistics.median(times), "best_s": min(times),
                     "gflops_per_s": 2 * n**3 / statistics.median(times) / 1e9,
                     "best_gflops_per_s": 2 * n**3 / min(times) / 1e9}  # fmt: skip
        del matmul
    return out


def peak_kind(cfg_device: str, dtype: str) -> str:
    """Which measured peak a row is compared with: bf16 rows with bf16; fp32 rows on CUDA with TF32 when cuDNN
    may use TF32 for convolutions (PyTorch's default), else fp32."""
    if dtype.startswith("bf16"):
        return "bf16"
    if cfg_device == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "fp32"


def add_throughput(rows: list[dict], peak: dict[str, Any], device: str, time_key: str = "median_s") -> None:
    """Add ``gflop`` (per call), ``gflops_per_s`` and ``fraction_of_peak`` to rows that have ``flops``."""
    for row in rows:
        flops, seconds = row.get("flops"), row.get(time_key)
        if not flops or not seconds:
            continue
        kind = peak_kind(device, row.get("dtype", "fp32"))
        rate = flops / seconds / 1e9
        row["gflop"] = flops / 1e9
        row["gflops_per_s"] = rate
        row["peak_kind"] = kind
        row["peak_gflops_per_s"] = peak["best"][kind]
        row["fraction_of_peak"] = rate / peak["best"][kind]
        if device == "cuda" and kind != "fp32":
            row["fraction_of_fp32_peak"] = rate / peak["best"]["fp32"]
