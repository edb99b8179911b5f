"""Look at and time the built-in synthetic faces.

Saves a PNG grid of (protected | replacement | mask) triplets, then measures rendering speed
(triplets per second, one thread) at 64 and 256 px and prints it as JSON.

    python benchmarks/synthetic_grid.py --out synthetic_grid.png
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image

from ipmn_lightning.data.synthetic import SyntheticFaceSwapDataset
from ipmn_lightning.data.watermark import default_watermark


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def make_grid(
    triplets: int = 8, size: int = 128, small_size: int = 64, per_row: int = 4, seed: int = 0, pad: int = 4
) -> np.ndarray:
    """Rows of `per_row` triplets at `size` px, then one row of triplets at `small_size` px (upscaled)."""
    ds = SyntheticFaceSwapDataset(triplets, size, seed=seed, split="train")
    small = SyntheticFaceSwapDataset(per_row, small_size, seed=seed + 1, split="train")
    cell = size + pad
    rows = (triplets + per_row - 1) // per_row + 1
    width = per_row * (3 * cell + 2 * pad)
    grid = np.full((rows * cell + pad, width, 3), 255, dtype=np.uint8)
    for n in range(triplets + per_row):
        if n < triplets:
            sample, r, c = ds[n], n // per_row, n % per_row
        else:
            sample, r, c = small[n - triplets], rows - 1, (n - triplets)
        for k, key in enumerate(("protected", "replacement", "mask")):
            img = _to_uint8(sample[key])
            if img.shape[0] != size:
                img = np.kron(img, np.ones((size // img.shape[0], size // img.shape[0], 1), dtype=np.uint8))
            y = pad + r * cell
            x = pad + c * (3 * cell + 2 * pad) + k * cell
            grid[y : y + size, x : x + size] = img
    return grid


def measure(size: int, seconds: float = 3.0) -> float:
    """Triplets per second at `size` px on the current thread count."""
    ds = SyntheticFaceSwapDataset(10**9, size, seed=123)
    ds[0]  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds[n]
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="synthetic_grid.png", help="where to save the grid PNG")
    parser.add_argument("--watermark-out", default=None, help="also save the default watermark PNG here")
    parser.add_argument("--triplets", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per speed measurement")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    args = parser.parse_args()

    Image.fromarray(make_grid(args.triplets, args.size, seed=args.seed)).save(args.out)
    result: dict[str, object] = {"grid": args.out}
    if args.watermark_out:
        Image.fromarray(_to_uint8(default_watermark(256))).save(args.watermark_out)
        result["watermark"] = args.watermark_out
    if not args.no_speed:
        torch.set_num_threads(1)
        result["threads"] = 1
        for size in (64, 256):
            result[f"triplets_per_s_{size}px"] = round(measure(size, args.seconds), 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
