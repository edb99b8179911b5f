"""The phases' training steps as the speed benchmarks time them, outside ``Trainer.fit``.

Each builder returns a closure that runs one optimisation step of the real module (its own ``training_step``),
with random inputs and, for the frozen earlier phases, random (non-trivial) weights: no checkpoint is needed.
:func:`step_row` turns a step's timing into its result row; :func:`fit_batch` halves a batch that does not fit.
Shared by ``speed_training.py``, ``speed_coupling.py``, ``speed_inference.py``, ``speed_ablations.py`` and ``gpu.py``.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the benchmarks import each other by file name
    sys.path.insert(0, str(HERE))

import hinet_reference  # noqa: E402
from harness import PAPER_BATCHES, BenchConfig, quiet, synchronize  # noqa: E402

from ipmn_lightning.data.watermark import default_watermark  # noqa: E402
from ipmn_lightning.modules import (  # noqa: E402
    ExtractorEnhanceModule,
    InvertibleMaskModule,
    StealingAttackModule,
    WatermarkPretrainModule,
)
from ipmn_lightning.nets.inn import DenseBlock  # noqa: E402
from ipmn_lightning.phases import build  # noqa: E402


def random_batch(batch: int, size: int, device: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.rand(batch, 3, size, size, generator=g).to(device) for k in ("protected", "replacement", "mask")
    } | {"index": torch.arange(batch, device=device)}


def net_configs(cfg: BenchConfig) -> dict[str, dict[str, Any]]:
    w, s = cfg.widths, cfg.image_size
    return {
        "embedder": {"image_size": s, "ngf": w["ngf"], "num_downs": None},
        "extractor": {"channels": w["extractor_channels"], "dilations": tuple(w["extractor_dilations"])},
        "inn": {"num_blocks": w["num_blocks"], "clamp": 2.0, "growth": w["growth"], "wavelet": "haar"},
        "stealer": {"name": "unet", "image_size": s, "ngf": w["stealer_ngf"]},
    }


def nontrivial_inn_(inn: torch.nn.Module, seed: int = 0, std: float = 0.01) -> None:
    """Every INN parameter ~ std * N(0, 1), conv5 included, so the network is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in inn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def compile_networks(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` in place: every dense block of an INN (their ``forward`` is where the time
    goes, and ``put_on``/``put_off``/``inverse`` are not ``forward``), any other network whole."""
    dense = [m for m in module.modules() if isinstance(m, (DenseBlock, hinet_reference.ReferenceDenseBlock))]
    for m in dense or [module]:
        m.compile()
    return module


def maybe_compile(module: torch.nn.Module, cfg: BenchConfig) -> torch.nn.Module:
    return compile_networks(module) if cfg.compile else module


def autocast_if(cfg: BenchConfig, bf16: bool) -> contextlib.AbstractContextManager:
    if bf16:
        return torch.autocast(device_type=cfg.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def attach_trainer(module: pl.LightningModule, optimizers: list[torch.optim.Optimizer]) -> pl.LightningModule:
    """Let ``module.training_step`` run outside ``Trainer.fit``, so the benchmark times the real step.

    A connected Trainer gives the step ``optimizers()``, ``toggled_optimizer``, ``manual_backward`` and
    ``clip_gradients``; ``self.log`` has no loop to log into outside a fit, so it is a no-op here.
    """
    with quiet():
        trainer = pl.Trainer(
            accelerator="cpu" if module.device.type == "cpu" else "auto", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
    trainer.strategy.connect(module)
    trainer.strategy.optimizers = optimizers
    module.trainer = trainer
    module.log = module.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return module


def phase1_step(
    cfg: BenchConfig, batch_size: int, bf16: bool = False, channels_last: bool = False
) -> tuple[Callable[[], None], dict]:
    """Phase 1: ``WatermarkPretrainModule.training_step`` (an H+R step on ℓ_IP, then a D step)."""
    w = cfg.widths
    with quiet():
        module = WatermarkPretrainModule(
            image_size=cfg.image_size, ngf=w["ngf"], extractor_channels=w["extractor_channels"],
            extractor_dilations=tuple(w["extractor_dilations"]), discriminator_widths=tuple(w["discriminator_widths"]),
            lambda_vgg=1.0 if cfg.vgg else 0.0, vgg_weights="random" if cfg.vgg else None,
        )  # fmt: skip
    module.to(cfg.device).train()
    batch = random_batch(batch_size, cfg.image_size, cfg.device, 1)
    if channels_last:
        module.to(memory_format=torch.channels_last)
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
    for net in (module.embedder, module.extractor, module.discriminator):
        maybe_compile(net, cfg)
    attach_trainer(module, module.configure_optimizers()[0])

    def step() -> None:
        with autocast_if(cfg, bf16), quiet():
            module.training_step(batch, 0)

    return step, {"module": module}


def phase2_module(cfg: BenchConfig) -> InvertibleMaskModule:
    """A phase-2 module with a (random) frozen H and the default watermark, no checkpoint needed."""
    w = cfg.widths
    with quiet():
        module = InvertibleMaskModule(
            image_size=cfg.image_size, num_blocks=w["num_blocks"], growth=w["growth"], lpips_net=None
        )
        module.build_frozen({"embedder": net_configs(cfg)["embedder"]})
    module.watermark.copy_(default_watermark(cfg.image_size))
    nontrivial_inn_(module.inn)
    return module.to(cfg.device).train()


def phase2_step(
    module: InvertibleMaskModule,
    inn: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    cfg: BenchConfig,
    bf16: bool = False,
    record: dict[str, Any] | None = None,
) -> Callable[[], None]:
    """Phase 2: ``InvertibleMaskModule.training_step`` with ``inn`` as the coupling network.

    The module's ``watermark_mask`` and ``run_inn`` are wrapped (once per module) so that each call stores
    ``h_s`` (frozen H) and ``inn_s`` (the rest of the step) in ``record``, seeds z from ``record["seed"]`` and,
    with ``record["capture"]`` set, keeps the outputs of the put-on/put-off pass.
    """
    opt = torch.optim.Adam(inn.parameters(), lr=1e-5, betas=(0.5, 0.999), eps=1e-6, weight_decay=1e-5)
    record = record if record is not None else {}
    maybe_compile(inn, cfg)
    if "watermark_mask" not in vars(module):
        attach_trainer(module, [opt])
        watermark_mask, run_inn = module.watermark_mask, module.run_inn

        def timed_h(mask: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            out = watermark_mask(mask)
            synchronize(cfg.device)
            module.bench_record["h_s"] = time.perf_counter() - t0
            return out

        def seeded_inn(protected: torch.Tensor, watermarked: torch.Tensor) -> dict[str, torch.Tensor]:
            rec = module.bench_record
            if rec.get("seed") is not None:
                torch.manual_seed(rec["seed"])  # the same z for ours and the reference
            out = run_inn(protected, watermarked)
            if rec.get("capture"):
                rec["outputs"] = {
                    k: out[k].detach().float().cpu() for k in ("masked_face", "recovered_face", "recovered_mask")
                }
            return out

        module.watermark_mask, module.run_inn = timed_h, seeded_inn  # type: ignore[method-assign]

    def step() -> None:
        t0 = time.perf_counter()
        saved, module.inn, module.bench_record = module.inn, inn, record
        module.trainer.strategy.optimizers = [opt]
        try:
            with autocast_if(cfg, bf16), quiet():
                module.training_step(batch, 0)
        finally:
            module.inn = saved
        synchronize(cfg.device)
        record["inn_s"] = time.perf_counter() - t0 - record["h_s"]

    return step


def steal_step(cfg: BenchConfig, batch_size: int, channels_last: bool = False) -> tuple[Callable[[], None], dict]:
    """Phase 3a: black-box query (frozen H + INN put-on, 8-bit) and an L2 step of the U-Net stealer."""
    configs = net_configs(cfg)
    with quiet():
        module = StealingAttackModule(image_size=cfg.image_size, stealer="unet", ngf=cfg.widths["stealer_ngf"])
        module.build_frozen({k: configs[k] for k in ("embedder", "inn", "extractor")})
    nontrivial_inn_(module.inn)
    module.to(cfg.device).train()
    maybe_compile(module.stealer, cfg)
    opt = module.configure_optimizers()["optimizer"]
    batch = random_batch(batch_size, cfg.image_size, cfg.device, 2)
    if channels_last:  # the stealer only: the frozen black box is the library's business
        module.stealer.to(memory_format=torch.channels_last)
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}

    return automatic_step(module, opt, batch), {"module": module}


def automatic_step(module: Any, opt: torch.optim.Optimizer, batch: dict) -> Callable[[], None]:
    """One optimisation step of a module trained with automatic optimisation (its own ``training_step``)."""

    def step() -> None:
        with quiet():
            loss = module.training_step(batch, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def enhance_step(cfg: BenchConfig, batch_size: int) -> tuple[Callable[[], None], dict]:
    """Phase 3b: the six sources (frozen H, INN on/off, one U-Net stealer) and an R step on all of them."""
    configs = net_configs(cfg)
    with quiet():
        module = ExtractorEnhanceModule(image_size=cfg.image_size)
        module.build_frozen(
            {"embedder": configs["embedder"], "inn": configs["inn"], "extractor": configs["extractor"],
             "stealers": [configs["stealer"]]}
        )  # fmt: skip
        module.extractor = build("extractor", configs["extractor"])  # R: trainable, not one of the frozen networks
    nontrivial_inn_(module.inn)
    module.watermark.copy_(default_watermark(cfg.image_size))
    module.to(cfg.device).train()
    maybe_compile(module.extractor, cfg)
    opt = module.configure_optimizers()["optimizer"]
    batch = random_batch(batch_size, cfg.image_size, cfg.device, 3)

    return automatic_step(module, opt, batch), {"module": module, "sources": 6}


def inference_nets(cfg: BenchConfig) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """(H, INN, watermark) in eval mode, the INN with non-trivial weights."""
    module = phase2_module(cfg).eval()
    return module.embedder, module.inn, module.watermark


def step_row(name: str, cfg: BenchConfig, key: str, batch: int, timing: dict[str, Any], **extra: Any) -> dict:
    paper = PAPER_BATCHES[key]
    peak = timing.get("peak_mem_mb")
    per_image = peak / batch if peak is not None else None
    return {
        "name": name,
        "batch": batch,
        "paper_batch": paper,
        "batch_note": cfg.batch_notes.get(key, "") if batch < paper else "",
        "image_size": cfg.image_size,
        "step_s": timing["median_s"],
        "images_per_s": batch / timing["median_s"],
        **timing,
        "peak_mem_mb_per_image": per_image,
        # activations grow linearly with the batch: what the paper's batch would need
        "est_peak_mem_mb_at_paper_batch": per_image * paper if per_image is not None else None,
        **extra,
    }


T = TypeVar("T")


def fit_batch(cfg: BenchConfig, key: str, run: Callable[[int], T], even: bool = False) -> T:
    """``run(batch)``; on CUDA out-of-memory, halve ``cfg.batches[key]`` (noting why) and try again."""
    while True:
        b = cfg.batches[key]
        try:
            return run(b)
        except torch.cuda.OutOfMemoryError:
            smaller = b // 2 - (b // 2) % 2 if even else b // 2
            if smaller < (2 if even else 1):
                raise
            gc.collect()
            torch.cuda.empty_cache()
            cfg.batches[key] = smaller
            cfg.batch_notes[key] = f"CUDA out of memory at batch {b}"
