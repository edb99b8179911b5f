"""Speed benchmark ``data``: triplets/s of each source through ``FaceSwapDataModule.train_dataloader()``.

The fake datasets come from the generators of ``tests/fakes`` (real on-disk layouts). ``speed.py`` adds the ratio
to the phase-2 step's images/s they have to feed. ``python benchmarks/speed_data.py [speed.py options]`` runs
this section alone.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the benchmarks import each other by file name
    sys.path.insert(0, str(HERE))
REPO = HERE.parent

from harness import BenchConfig, Budget  # noqa: E402

from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule  # noqa: E402


def _load_script(name: str) -> Any:
    import importlib.util

    path = REPO / "tests" / "fakes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path}: the fake-data generators of tests/fakes are needed for the data benchmark")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_fake_datasets(folder: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """Fake CelebA (178x218 JPEGs like the real aligned images, mask store of PNGs) and a fake image folder."""
    celeba = _load_script("make_fake_celeba").make_fake_celeba(folder / "celeba", n=n, size=178, seed=seed)
    images = _load_script("make_fake_folder").make_fake_folder(folder / "folder", n=n, size=178, seed=seed)
    return {"celeba": Path(celeba), "folder": Path(images)}


def loader_throughput(dm: FaceSwapDataModule, seconds: float, max_images: int) -> dict[str, Any]:
    """Triplets per second out of ``dm.train_dataloader()`` after the first batch (worker start-up)."""
    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    startup = time.perf_counter() - t0
    count, batches, epochs = 0, 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and count < max_images:
        try:
            batch = next(it)
        except StopIteration:
            epochs += 1
            it = iter(loader)
            continue
        count += batch["protected"].shape[0]
        batches += 1
    elapsed = time.perf_counter() - t0
    shape = tuple(first["protected"].shape)
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:  # persistent workers would otherwise live until garbage collection
        shutdown()
    del it, loader, first
    return {
        "images_per_s": count / elapsed if elapsed > 0 else math.nan,
        "images": count,
        "batches": batches,
        "epoch_restarts": epochs,
        "seconds": elapsed,
        "startup_s": startup,
        "batch_shape": list(shape),
    }


def bench_data(cfg: BenchConfig, budget: Budget, root: Path | None = None) -> list[dict]:
    """Triplets/s of the synthetic, CelebA (JPEG + mask store) and folder (mask store) sources."""
    rows = []
    b = cfg.batches["data"]
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ipmn_speed_")))
        t0 = time.perf_counter()
        roots = make_fake_datasets(root, cfg.data_images)
        gen_s = time.perf_counter() - t0
        sources = [
            ("synthetic", {"source": "synthetic", "synthetic_sizes": (10**6, 4, 4)},
             "procedural faces rendered in the workers"),
            ("celeba", {"source": "celeba", "root": str(roots["celeba"])},
             "x_p, x_r: 178x218 JPEGs (img_align_celeba); x_m: PNG from the mask store; upscaled to image_size"),
            ("folder", {"source": "folder", "root": str(roots["folder"])},
             "image folder (PNG/JPEG mix, 178x222) + mask store"),
        ]  # fmt: skip
        for name, kwargs, what in sources:
            dm = FaceSwapDataModule(
                image_size=cfg.image_size, batch_size=b, num_workers=cfg.workers, seed=0, check_store=False, **kwargs
            )
            result = loader_throughput(dm, cfg.data_seconds, 40 * b)
            rows.append({"source": name, "what": what, "workers": cfg.workers, "batch": b,
                         "image_size": cfg.image_size, **result})  # fmt: skip
    for row in rows:
        row["fake_data_generation_s"] = gen_s
    return rows


if __name__ == "__main__":
    from speed import main

    main(["--sections", "data", *sys.argv[1:]])
