"""SR_P of You et al.'s mosaic (Table 11's baseline row) on real faces, with dlib's recogniser.

For the first ``--count`` faces of the folder's test split (``folder_splits``, sorted), at each
``--sizes`` (centre crop, resized, as training reads them): x_p's landmarks (dlib), x_m = mosaic(x_p) in
8 bits (:class:`~ipmn_lightning.faces.generators.MosaicMaskGenerator`), then SR_P (the share not recognised as
x_p; no face found counts as not recognised and is counted apart) without attack and under the three
attacks of Table 11. x_p itself under the same attacks is the control (SR_P near 0: the recogniser does
recognise the unprotected faces).

    nice -n 19 python benchmarks/mosaic_privacy.py --root ../shared/data/utkface --out mosaic_privacy.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.data.folder import folder_splits
from ipmn_lightning.data.images import load_image
from ipmn_lightning.faces.analysis import to_uint8_array
from ipmn_lightning.faces.generators import MOSAIC_BLOCK, MOSAIC_DILATE, MosaicMaskGenerator, mosaic_block_size
from ipmn_lightning.faces.privacy import PrivacySuccessRate, table11_attacks


def measure(
    root: str, count: int, size: int, block: float, block_px: int | None, dilate: float, batch: int = 25
) -> dict:
    """SR_P of the mosaic and of x_p at one image size (see the module docstring)."""
    from ipmn_lightning.faces.analysis import DlibIdentityEncoder

    encoder = DlibIdentityEncoder()
    gen = MosaicMaskGenerator(block, block_px, dilate, analyzer=encoder.analyzer)
    names = folder_splits(root)["test"][:count]
    rows = ("mosaic", "protected")
    rates = {row: {a: PrivacySuccessRate(encoder) for a in table11_attacks()} for row in rows}
    attacks = {row: table11_attacks(seed=0) for row in rows}
    no_landmarks, blocks = 0, []
    start = time.perf_counter()
    for i in range(0, len(names), batch):
        x = torch.stack([load_image(Path(root) / n, size, "center") for n in names[i : i + batch]])
        x = x.mul(255).round().div(255)  # x_p in 8 bits, like the mosaic
        reference = encoder.embed(x)
        landmarks = [gen.landmarks(to_uint8_array(p)) for p in x]
        outcomes = gen.generate(x, x, landmarks)
        no_landmarks += sum(lm is None for lm in landmarks)
        blocks += [mosaic_block_size(lm, block, block_px) for lm in landmarks if lm is not None]
        images = {"mosaic": torch.stack([p if o.mask is None else o.mask for p, o in zip(x, outcomes)]), "protected": x}
        for row in rows:
            for a, metric in rates[row].items():
                metric.update(attacks[row][a](images[row]), reference)
    mean_block = round(sum(blocks) / max(len(blocks), 1), 2)
    return {
        "image_size": size,
        "images": len(names),
        "sr_p": {row: {a: float(m.compute()) for a, m in per.items()} for row, per in rates.items()},
        "counts": {row: {a: m.counts() for a, m in per.items()} for row, per in rates.items()},
        "no_landmarks": no_landmarks,
        "block_px": {"min": min(blocks, default=0), "max": max(blocks, default=0), "mean": mean_block},
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a folder of face photos (e.g. ../shared/data/utkface)")
    parser.add_argument("--count", type=int, default=200, help="faces of the test split")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--block", type=float, default=MOSAIC_BLOCK, help="block side, fraction of the face width")
    parser.add_argument("--block_px", type=int, default=None, help="block side in pixels (overrides --block)")
    parser.add_argument("--dilate", type=float, default=MOSAIC_DILATE)
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {
        "benchmark": "mosaic_privacy",
        "recogniser": "dlib ResNet 128-d, Euclidean, same person below 0.6",
        "attacks": list(table11_attacks()),
        "settings": {"block": args.block, "block_px": args.block_px, "dilate": args.dilate, "split": "test"},
        "machine": platform.platform(),
        "paper_you_et_al": {a: 1.0 for a in table11_attacks()},
        "results": [measure(args.root, args.count, s, args.block, args.block_px, args.dilate) for s in args.sizes],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
