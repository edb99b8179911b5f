"""Speed benchmark ``inference``: protect (H + put_on) and recover (put_off) under ``torch.inference_mode``.

``python benchmarks/speed_inference.py [speed.py options]`` runs this section alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the benchmarks import each other by file name
    sys.path.insert(0, str(HERE))

from harness import PAPER_BATCHES, BenchConfig, Budget, measure  # noqa: E402
from phase_steps import inference_nets, maybe_compile, random_batch  # noqa: E402


def bench_inference(cfg: BenchConfig, budget: Budget, mode: str = "inference_mode") -> list[dict]:
    """Per-image latency of protect (H + put_on) and recover (put_off) at the small and large batch."""
    embedder, inn, watermark = inference_nets(cfg)
    embedder_c, inn_c = maybe_compile(embedder, cfg), maybe_compile(inn, cfg)
    rows = []
    ctx = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    for key in ("infer_small", "infer_large"):
        b = cfg.batches[key]
        batch = random_batch(b, cfg.image_size, cfg.device, 4)
        with ctx():
            masked, lost = inn_c.put_on(batch["protected"], embedder_c(batch["mask"], watermark))
            z = torch.randn_like(lost)

        def protect(batch: dict[str, torch.Tensor] = batch) -> None:
            with ctx():
                inn_c.put_on(batch["protected"], embedder_c(batch["mask"], watermark))

        def recover(masked: torch.Tensor = masked, z: torch.Tensor = z) -> None:
            with ctx():
                inn_c.put_off(masked, z=z)

        for name, fn in (("protect", protect), ("recover", recover)):
            t = measure(fn, cfg, budget, 0.15)
            rows.append(
                {
                    "name": name,
                    "batch": b,
                    "paper_batch": PAPER_BATCHES[key],
                    "batch_note": cfg.batch_notes.get(key, "") if b < PAPER_BATCHES[key] else "",
                    "image_size": cfg.image_size,
                    "mode": mode,
                    "latency_ms_per_image": 1000 * t["median_s"] / b,
                    "batch_latency_ms": 1000 * t["median_s"],
                    "images_per_s": b / t["median_s"],
                    **t,
                }
            )
    return rows


if __name__ == "__main__":
    from speed import main

    main(["--sections", "inference", *sys.argv[1:]])
