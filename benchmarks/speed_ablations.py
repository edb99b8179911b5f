"""Speed benchmark ``ablations``: the before/after measurements of the findings table (benchmarks/README.md).

INN implementations in the phase-2 step, channels-last CNNs, ``no_grad`` vs ``inference_mode``,
``torch.compile`` of the dense blocks and data-loading workers; the variants of one experiment are timed
interleaved. ``python benchmarks/speed_ablations.py [speed.py options]`` runs this section alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the benchmarks import each other by file name
    sys.path.insert(0, str(HERE))

import hinet_reference  # noqa: E402
from harness import BenchConfig, Budget, collect, measure_interleaved  # noqa: E402
from phase_steps import (  # noqa: E402
    compile_networks,
    inference_nets,
    net_configs,
    phase1_step,
    phase2_module,
    phase2_step,
    random_batch,
    steal_step,
)
from speed_data import loader_throughput  # noqa: E402

from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule  # noqa: E402
from ipmn_lightning.nets.inn import InvertibleMaskNet  # noqa: E402


def bench_ablations(cfg: BenchConfig, budget: Budget) -> list[dict]:
    """Before/after measurements of the candidate optimisations (see README's findings table).

    Variants of one experiment are timed interleaved (round-robin) in the same process.
    """
    rows: list[dict] = []

    def add(name: str, results: dict[str, dict[str, Any]], batch: int, **extra: Any) -> None:
        base = next(iter(results.values()))["median_s"]
        for variant, t in results.items():
            rows.append({"name": name, "variant": variant, "batch": batch, "image_size": cfg.image_size,
                         "images_per_s": batch / t["median_s"], "speedup_vs_first": base / t["median_s"],
                         **t, **extra})  # fmt: skip

    # 1. INN implementations in the phase-2 step: HiNet reference, our concat (NCHW), our split (channels-last)
    b = cfg.batches["phase2"]
    module = phase2_module(cfg)
    batch = random_batch(b, cfg.image_size, cfg.device, 0)
    reference = hinet_reference.from_invertible_mask_net(module.inn).train()
    concat = InvertibleMaskNet(**net_configs(cfg)["inn"], impl="concat").to(cfg.device).train()
    concat.load_state_dict(module.inn.state_dict())
    split = InvertibleMaskNet(**net_configs(cfg)["inn"], impl="split").to(cfg.device).train()
    split.load_state_dict(module.inn.state_dict())
    recs: dict[str, dict[str, Any]] = {"hinet_reference": {}, "ours_concat_nchw": {}, "ours_split_channels_last": {}}
    nets = dict(zip(recs, (reference, concat, split)))
    steps = {k: phase2_step(module, nets[k], batch, cfg, False, recs[k]) for k in recs}
    add("phase2_inn_impl", measure_interleaved(steps, cfg, budget, 0.2), b)
    del module, reference, concat, split, nets, steps
    collect(cfg)

    # 2. channels_last for the CNNs (phase-1 step; the stealer's step)
    b = cfg.batches["phase1"]
    steps = {v: phase1_step(cfg, b, channels_last=v == "channels_last")[0] for v in ("contiguous", "channels_last")}
    add("phase1_memory_format", measure_interleaved(steps, cfg, budget, 0.25), b)
    b = cfg.batches["steal"]
    steps = {v: steal_step(cfg, b, channels_last=v == "channels_last")[0] for v in ("contiguous", "channels_last")}
    add("steal_memory_format", measure_interleaved(steps, cfg, budget, 0.2), b)
    del steps
    collect(cfg)

    # 3. no_grad vs inference_mode (protect = H + put_on, small batch)
    embedder, inn, watermark = inference_nets(cfg)
    b = cfg.batches["infer_small"]
    x = random_batch(b, cfg.image_size, cfg.device, 5)

    def protect(ctx: Callable[[], Any]) -> Callable[[], None]:
        def fn() -> None:
            with ctx():
                inn.put_on(x["protected"], embedder(x["mask"], watermark))

        return fn

    modes = {"no_grad": protect(torch.no_grad), "inference_mode": protect(torch.inference_mode)}
    add("protect_grad_mode", measure_interleaved(modes, cfg, budget, 0.1), b)

    # 4. torch.compile of the INN's dense blocks (put_on under inference_mode): compile time, steady state
    compiled = InvertibleMaskNet(**net_configs(cfg)["inn"]).to(cfg.device).eval()
    compiled.load_state_dict(inn.state_dict())
    compile_networks(compiled)

    def put_on(net: torch.nn.Module) -> Callable[[], None]:
        def fn() -> None:
            with torch.inference_mode():
                net.put_on(x["protected"], x["mask"])

        return fn

    try:
        result = measure_interleaved({"eager": put_on(inn), "compiled": put_on(compiled)}, cfg, budget, 0.15)
        add("put_on_torch_compile", result, b, note="compiled warmup_s includes compilation")
    except Exception as err:  # a missing compiler must not sink the benchmark
        rows.append({"name": "put_on_torch_compile", "variant": "compiled", "error": f"{type(err).__name__}: {err}"})
    # 5. data loading: no workers vs the configured workers (synthetic source)
    for workers in sorted({0, cfg.workers}):
        dm = FaceSwapDataModule(image_size=cfg.image_size, batch_size=cfg.batches["data"], num_workers=workers,
                                synthetic_sizes=(10**6, 4, 4), seed=0)  # fmt: skip
        r = loader_throughput(dm, cfg.data_seconds, 20 * cfg.batches["data"])
        rows.append({"name": "data_synthetic_workers", "variant": f"workers={workers}", "batch": cfg.batches["data"],
                     "median_s": r["seconds"], **r})  # fmt: skip
    return rows


if __name__ == "__main__":
    from speed import main

    main(["--sections", "ablations", *sys.argv[1:]])
