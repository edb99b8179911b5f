"""The harness shared by the speed benchmarks (``speed.py``, ``speed_*.py``) and ``gpu.py``.

What to run and at which sizes (:class:`BenchConfig`, :func:`make_config`), the wall-clock :class:`Budget`,
timing (:func:`measure`, :func:`measure_interleaved`) with peak memory (:class:`Memory`) and FLOP counting
(:class:`FlopCount`), the JSON and table output
(:func:`environment`, :func:`write_json`, :func:`table`) and the command-line options of ``speed.py``
(:func:`build_parser`, :func:`config_from_args`). What each number means is in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark

SCHEMA_VERSION = 2  # 2: FLOPs, GFLOP/s and fraction of the measured matmul peak (issue 16)


MiB = 1024 * 1024


#: Batch sizes of the paper (§4: phase 1 8, phase 2 32) and of the shipped configs (stealing 16,
#: enhancement 8); inference is timed at batch 1 and 32.
PAPER_BATCHES = {"phase1": 8, "phase2": 32, "steal": 16, "enhance": 8, "infer_small": 1, "infer_large": 32, "data": 32}


#: Network widths of the paper / the configs.
PAPER_WIDTHS: dict[str, Any] = {
    "ngf": 64,
    "extractor_channels": 128,
    "extractor_dilations": (2, 2, 2, 2, 4, 4, 4, 4, 1),
    "discriminator_widths": (64, 128, 256, 512),
    "num_blocks": 16,
    "growth": 32,
    "stealer_ngf": 64,
}


#: Tiny widths for --quick and the smoke test (same code paths, seconds instead of minutes).
TINY_WIDTHS: dict[str, Any] = {
    "ngf": 4,
    "extractor_channels": 8,
    "extractor_dilations": (1, 2),
    "discriminator_widths": (4, 8, 8, 8),
    "num_blocks": 2,
    "growth": 4,
    "stealer_ngf": 4,
}


# Why CPU batches are below the paper's (the full run must fit 10 minutes on 2 cores, measured
# under load; see README). Phase 2 needs ~1.2 GB per 256-px image, the enhancement step ~5 GB.
CPU_BATCHES = {"phase1": 2, "phase2": 2, "steal": 4, "enhance": 2, "infer_small": 1, "infer_large": 4, "data": 32}


@dataclass
class BenchConfig:
    """What to run and at which sizes.

    Attributes:
        device: ``cpu`` or ``cuda``.
        image_size: side of the square images.
        batches: batch size per benchmark (keys of :data:`PAPER_BATCHES`).
        batch_notes: why a batch is below the paper's, per benchmark.
        widths: network widths (:data:`PAPER_WIDTHS` or :data:`TINY_WIDTHS`).
        repeats: timed steps after the warm-up (the budget may lower it, down to 0: the warm-up is reported).
        coupling_repeats: interleaved (ours, reference) pairs of the coupling comparison (at least 1).
        warmup: untimed steps first.
        workers: DataLoader workers (the data module's default: 2).
        data_images: fake CelebA / folder images generated for the data benchmark.
        data_seconds: how long each data source is timed (at most).
        threads: torch intra-op threads (``None``: leave torch's default).
        vgg: include phase 1's perceptual loss (VGG16 to relu2_2, random weights: same cost).
        bf16: also time phases 1-2 under bf16 autocast (CUDA only).
        compile: ``torch.compile`` the networks (compile time and steady state are reported).
        ablations: also run the before/after measurements.
        budget_s: wall-clock budget; repeats are cut to fit.
        quick: tiny smoke run.
        flops: count each step's FLOPs (``FlopCounterMode``, during the first warm-up call).
        matmul_size: side of the square matmuls that measure the machine's peak (default 2048 on CPU, 8192 on
            CUDA, 256 when quick).
    """

    device: str = "cpu"
    image_size: int = 256
    batches: dict[str, int] = field(default_factory=lambda: dict(PAPER_BATCHES))
    batch_notes: dict[str, str] = field(default_factory=dict)
    widths: dict[str, Any] = field(default_factory=lambda: dict(PAPER_WIDTHS))
    repeats: int = 3
    coupling_repeats: int = 4
    warmup: int = 1
    workers: int = 2
    data_images: int = 200
    data_seconds: float = 6.0
    threads: int | None = None
    vgg: bool = True
    bf16: bool = False
    compile: bool = False
    ablations: bool = False
    budget_s: float = 540.0
    quick: bool = False
    flops: bool = True
    matmul_size: int | None = None


def make_config(
    device: str = "cpu",
    quick: bool = False,
    repeats: int | None = None,
    threads: int | None = None,
    image_size: int | None = None,
    **overrides: Any,
) -> BenchConfig:
    """The default plan for a device.

    CPU: paper widths at 256 px, batches from :data:`CPU_BATCHES` (each reduction noted). CUDA: the
    paper's batches, bf16 rows. ``quick``: tiny widths at 64 px (32 px for the tests), batch 2.

    Args:
        device: ``cpu`` or ``cuda``.
        quick: tiny smoke-run sizes.
        repeats: timed steps (default 2 on CPU, 5 on CUDA, 1 when quick).
        threads: torch threads.
        image_size: override the image size.
        **overrides: any other :class:`BenchConfig` field.

    Returns:
        The configuration.
    """
    cfg = BenchConfig(device=device, threads=threads)
    if quick:
        cfg.quick = True
        cfg.image_size = 64
        cfg.widths = dict(TINY_WIDTHS)
        cfg.batches = {k: (1 if k == "infer_small" else 2) for k in PAPER_BATCHES}
        cfg.batch_notes = {k: "quick smoke run" for k in PAPER_BATCHES if k != "infer_small"}
        cfg.repeats = 1
        cfg.coupling_repeats = 1
        cfg.data_images = 12
        cfg.data_seconds = 1.0
        cfg.vgg = False
        cfg.budget_s = 120.0
    elif device == "cpu":
        cfg.repeats = 2
        cfg.batches = dict(CPU_BATCHES)
        reasons = {
            "phase1": "2-core CPU: a batch-8 step takes ~2 min (10-minute budget)",
            "phase2": "CPU: ~1.2 GB per image (reference ~3 GB), batch 32 exceeds RAM; minutes per step",
            "steal": "2-core CPU: 10-minute budget",
            "enhance": "2-core CPU: 10-minute budget; ~4.7 GB per image (6 sources through R), batch 8 exceeds RAM",
            "infer_large": "2-core CPU: 10-minute budget (batch 32 takes ~1 min per call)",
        }
        cfg.batch_notes = {k: v for k, v in reasons.items() if cfg.batches[k] < PAPER_BATCHES[k]}
    else:
        cfg.repeats = 5
        cfg.coupling_repeats = 5
        cfg.bf16 = True
        cfg.workers = 2
    if repeats is not None:
        cfg.repeats = repeats
        cfg.coupling_repeats = max(repeats, 1)
    if image_size is not None:
        cfg.image_size = image_size
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"make_config: unknown field {key!r}")
        setattr(cfg, key, value)
    return cfg


# ------------------------------------------------------------------------------------------ timing
class Budget:
    """Wall-clock budget shared by the benchmarks; repeats are cut so the run finishes in time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def repeats(self, step_s: float, wanted: int, share: float) -> int:
        """How many of ``wanted`` steps of ``step_s`` fit into ``share`` of the time left (may be 0)."""
        if step_s <= 0:
            return wanted
        return max(0, min(wanted, int(share * max(self.left(), 0.0) / step_s)))


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the next peak RSS is measured from a low base."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Memory:
    """Peak memory of a code region: CPU resident set (VmHWM) or CUDA memory allocated."""

    def __init__(self, device: str, collect: bool = True) -> None:
        self.device = device
        self.collect = collect
        self.kind = "cuda_max_allocated" if device == "cuda" else "rss_peak_delta"
        self.base = 0.0

    @staticmethod
    def _status_kb(field_name: str) -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field_name + ":"):
                        return float(line.split()[1])
        except OSError:
            return None
        return None

    def reset(self) -> None:
        if self.collect:  # about 0.5 s with Lightning imported: skipped in quick runs
            gc.collect()
        if self.device != "cuda":
            _malloc_trim()
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = float(torch.cuda.memory_allocated())
            return
        try:  # writing 5 resets the peak RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            rss = self._status_kb("VmRSS")
            self.kind = "rss_peak_delta"
            self.base = (rss or 0.0) * 1024
        except OSError:  # no /proc: the lifetime max RSS only says something when it grows
            import resource

            self.kind = "ru_maxrss_delta"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0

    def peak_mb(self) -> float | None:
        if self.device == "cuda":
            return (torch.cuda.max_memory_allocated() - self.base) / MiB
        if self.kind == "rss_peak_delta":
            hwm = self._status_kb("VmHWM")
            return None if hwm is None else max(hwm * 1024 - self.base, 0.0) / MiB
        import resource

        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0 - self.base, 0.0) / MiB


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds of one call of ``fn`` (``torch.utils.benchmark`` synchronises CUDA around it)."""
    synchronize(device)
    return benchmark.Timer("fn()", globals={"fn": fn}).timeit(1).median


class FlopCount:
    """FLOPs of one call of a step, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    It counts the matrix products and convolutions (forward and backward, 2 FLOPs per multiply-add), the work a
    dense-matmul peak can be compared with; element-wise operations, normalisations and the optimizer add memory
    traffic, not FLOPs. Off when ``cfg.flops`` is false or the networks are compiled (the counter does not see
    inside compiled graphs).
    """

    def __init__(self, cfg: BenchConfig) -> None:
        self.enabled = cfg.flops and not cfg.compile
        self.flops: int | None = None

    def wrap(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        if not self.enabled:
            return fn

        def counted() -> Any:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                out = fn()
            self.flops = int(counter.get_total_flops())
            return out

        return counted


def count_flops(fn: Callable[[], Any], cfg: BenchConfig) -> int | None:
    """FLOPs of one call of ``fn`` (see :class:`FlopCount`), ``None`` when counting is off."""
    flops = FlopCount(cfg)
    flops.wrap(fn)()
    return flops.flops


def measure(
    fn: Callable[[], Any],
    cfg: BenchConfig,
    budget: Budget,
    share: float,
    warmup: int | None = None,
) -> dict[str, Any]:
    """Warm up, then time ``fn`` up to ``cfg.repeats`` times (fewer if the budget share runs out).

    When not even one timed call fits the budget, the warm-up call is reported instead
    (``timed_from_warmup``: it includes one-off costs, so it over-estimates the step time).

    Returns:
        ``warmup_s`` (first call; includes compilation and the FLOP counting), ``times_s``, ``median_s``,
        ``min_s``, ``repeats``, ``timed_from_warmup``, ``peak_mem_mb`` (over warm-up and timed calls),
        ``mem_kind`` and ``flops`` (of one call, ``None`` when not counted).
    """
    mem = Memory(cfg.device, not cfg.quick)
    mem.reset()
    flops = FlopCount(cfg)
    n_warm = cfg.warmup if warmup is None else warmup
    warm = [timed(flops.wrap(fn) if i == 0 else fn, cfg.device) for i in range(n_warm)]
    if flops.flops is None and flops.enabled:  # no warm-up call: count in an extra, untimed one
        flops.wrap(fn)()
    estimate = min(warm) if warm else 0.0
    repeats = budget.repeats(estimate, cfg.repeats, share)
    times = [timed(fn, cfg.device) for _ in range(repeats)]
    from_warmup = not times
    if from_warmup:
        times = warm[-1:] if warm else [timed(fn, cfg.device)]
    return {
        "warmup_s": warm[0] if warm else None,
        "timed_from_warmup": from_warmup,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": len(times) if not from_warmup else 0,
        "peak_mem_mb": mem.peak_mb(),
        "mem_kind": mem.kind,
        "flops": flops.flops,
    }


def measure_interleaved(
    fns: dict[str, Callable[[], Any]], cfg: BenchConfig, budget: Budget, share: float
) -> dict[str, dict[str, Any]]:
    """Warm each variant up once, then time them round-robin so that load changes hit all alike."""
    warm = {k: timed(fn, cfg.device) for k, fn in fns.items()}
    repeats = max(1, budget.repeats(sum(warm.values()), cfg.repeats, share))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn, cfg.device))
    return {
        k: {"warmup_s": warm[k], "times_s": v, "median_s": statistics.median(v), "min_s": min(v), "repeats": len(v)}
        for k, v in times.items()
    }


# ------------------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the warnings of calling Lightning modules without a Trainer (self.log, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def collect(cfg: BenchConfig) -> None:
    if not cfg.quick:
        gc.collect()


# ------------------------------------------------------------------------------------------ output
def environment(cfg: BenchConfig) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": cfg.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    with contextlib.suppress(OSError, ValueError):
        info["ram_gb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    with contextlib.suppress(OSError):
        info["loadavg"] = list(os.getloadavg())
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    if cfg.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def write_json(path: str | os.PathLike[str], results: dict) -> Path:
    """Write ``results`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ arguments
def comma_list(value: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")`` (the ``--sections`` of speed.py and gpu.py)."""
    return tuple(s.strip() for s in value.split(",") if s.strip())


def build_parser() -> argparse.ArgumentParser:
    """The options of ``speed.py`` (and of every ``speed_<name>.py`` run as a script)."""
    parser = argparse.ArgumentParser(description="IPMN speed benchmarks (issue 7); see benchmarks/README.md")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default speed_<device>[_quick].json)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every code path")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps after warm-up (CPU 2, CUDA 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds; repeats are cut to fit (default 540)")
    parser.add_argument("--no-vgg", action="store_true", help="phase 1 without the VGG perceptual loss")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (off: it does not pay here)")
    parser.add_argument("--ablations", action="store_true", help="also run the before/after experiments")
    parser.add_argument("--sections", default="training,inference,data", help="comma list of sections to run")
    parser.add_argument("--data-root", type=Path, default=None, help="folder for the fake datasets (default: temp)")
    parser.add_argument(
        "--batch", action="append", default=[], metavar="NAME=N",
        help=f"override a batch size ({', '.join(PAPER_BATCHES)}), e.g. --batch phase2=4",
    )  # fmt: skip
    return parser


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> BenchConfig:
    """The :class:`BenchConfig` of parsed :func:`build_parser` options (``parser.error`` on a bad ``--batch``)."""
    overrides: dict[str, Any] = {}
    if args.budget is not None:
        overrides["budget_s"] = args.budget
    cfg = make_config(args.device, args.quick, args.repeats, args.threads, args.image_size, **overrides)
    cfg.vgg = cfg.vgg and not args.no_vgg
    cfg.compile = args.compile
    cfg.ablations = args.ablations
    for item in args.batch:
        name, _, value = item.partition("=")
        if name not in PAPER_BATCHES or not value.isdigit():
            parser.error(f"--batch {item!r}: use NAME=N with NAME in {list(PAPER_BATCHES)}")
        cfg.batches[name] = int(value)
        if int(value) < PAPER_BATCHES[name]:
            cfg.batch_notes.setdefault(name, "set on the command line")
    return cfg
