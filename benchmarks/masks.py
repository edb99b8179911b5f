"""Benchmark ``ipmn masks generate`` (the ``landmark`` generator) on a folder of real faces.

Fills a mask store for every face of the folder (each paired with another face), then measures with dlib's
recogniser: speed (pairs/s), faces detected in the masks, identity moved (masks not recognised as their
x_p; mean distances mask<->x_p and mask<->x_r), the scene kept (PSNR between mask and x_p outside the face
region), and SR_P on the unmodified masks and under each attack of Table 11. Writes JSON and a grid.

    nice -n 5 python benchmarks/masks.py --root ../shared/data/utkface --image_size 128

The store goes to a temporary folder by default (``--store``), never into the dataset or the repository.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ipmn_lightning.core.files import atomic_save_image, atomic_write_text
from ipmn_lightning.data.images import load_image
from ipmn_lightning.data.mask_store import read_pairs
from ipmn_lightning.faces.generators import LandmarkMaskGenerator, face_region
from ipmn_lightning.faces.privacy import table11_attacks
from ipmn_lightning.workflows.masks import generate_masks

_W: dict = {}


def _init(image_root: str, store: str, size: int, attack_every: int) -> None:
    from ipmn_lightning.faces.analysis import DlibIdentityEncoder

    torch.set_num_threads(1)
    _W.update(
        enc=DlibIdentityEncoder(),
        root=Path(image_root),
        store=Path(store),
        size=size,
        attack_every=attack_every,
        attacks=table11_attacks(seed=0),
    )


def _arr(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())


def _face(img: np.ndarray):
    enc = _W["enc"]
    shape = enc.analyzer.shape(img)
    if shape is None:
        return None, None
    emb = np.asarray(enc._net.compute_face_descriptor(img, shape), dtype=np.float64)
    return emb, np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _evaluate(task: tuple[int, str, str]) -> dict:
    index, protected, mask = task
    size = _W["size"]
    xp = load_image(_W["root"] / protected, size, "center")
    xm = load_image(_W["store"] / mask, size, "center")
    ep, lp = _face(_arr(xp))
    em, lm = _face(_arr(xm))
    out: dict = {"protected": protected, "ep": ep, "em": em}
    if lp is not None:
        region = face_region([lp] if lm is None else [lp, lm], size, size, dilate=0.05)
        outside = ~region
        diff = (xm - xp).permute(1, 2, 0).numpy()[outside]
        mse = float((diff**2).mean()) if diff.size else 0.0
        out["psnr_outside"] = min(100.0, 10 * math.log10(1.0 / mse)) if mse > 0 else 100.0
        out["outside_fraction"] = float(outside.mean())
    if _W["attack_every"] and index % _W["attack_every"] == 0:
        out["attacked"] = {}
        for name, attack in _W["attacks"].items():
            if name == "none":
                continue
            out["attacked"][name] = _face(_arr(attack(xm[None])[0]))[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="folder of face images (source: folder)")
    ap.add_argument("--image_size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default=None, help="mask store (default: a fresh temporary folder)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    ap.add_argument("--attack_sample", type=int, default=1000, help="masks evaluated under each attack")
    ap.add_argument("--shape", type=float, default=1.0)
    ap.add_argument("--jaw_shape", type=float, default=0.5)
    ap.add_argument("--blend", default="poisson")
    ap.add_argument("--color", default="lab")
    ap.add_argument("--out", default="benchmarks/results/masks_utkface.json")
    ap.add_argument("--grid", default="benchmarks/results/masks_utkface_grid.png")
    args = ap.parse_args()

    root = Path(args.root).expanduser().resolve()
    tmp = None
    if args.limit:
        # A folder of links to the first N images, so the pairing covers exactly those.
        tmp = Path(tempfile.mkdtemp(prefix="ipmn-masks-bench-"))
        names = sorted(p.name for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        (tmp / "images").mkdir()
        for name in names[: args.limit]:
            os.symlink(root / name, tmp / "images" / name)
        image_root = tmp / "images"
    else:
        image_root = root
    store = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="ipmn-masks-store-"))
    gen = LandmarkMaskGenerator(shape=args.shape, jaw_shape=args.jaw_shape, blend=args.blend, color=args.color)
    t0 = time.perf_counter()
    summary = generate_masks(
        image_root, "folder", store, gen, args.image_size, workers=args.workers, progress=True, identity_sample=0
    )
    gen_s = time.perf_counter() - t0
    records = read_pairs(store)
    n_images = sum(1 for p in image_root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))

    attack_every = max(1, math.ceil(len(records) / args.attack_sample)) if args.attack_sample else 0
    tasks = [(i, r.protected, r.mask) for i, r in enumerate(records)]
    t1 = time.perf_counter()
    ctx = mp.get_context("spawn")
    init = (str(image_root), str(store), args.image_size, attack_every)
    from tqdm.auto import tqdm

    with ctx.Pool(args.workers, initializer=_init, initargs=init) as pool:
        results = list(tqdm(pool.imap(_evaluate, tasks, chunksize=8), total=len(tasks), desc="evaluating", unit="pair"))
    eval_s = time.perf_counter() - t1

    by_p = {r["protected"]: r for r in results}
    thr = 0.6
    d_mp, d_mr, moved, found_m, psnr = [], [], [], [], []
    for rec, res in zip(records, results):
        found_m.append(res["em"] is not None)
        ep, er = res["ep"], by_p.get(rec.replacement, {}).get("ep")
        if ep is None:
            continue
        if res["em"] is None:
            moved.append(True)
        else:
            dp = float(np.linalg.norm(res["em"] - ep))
            moved.append(dp >= thr)
            if er is not None:
                d_mp.append(dp)
                d_mr.append(float(np.linalg.norm(res["em"] - er)))
        if "psnr_outside" in res:
            psnr.append(res["psnr_outside"])
    srp: dict = {}
    names = ["none", *[n for n in table11_attacks() if n != "none"]]
    for name in names:
        total = not_rec = no_face = 0
        for res in results:
            if res["ep"] is None or (name != "none" and "attacked" not in res):
                continue
            emb = res["em"] if name == "none" else res["attacked"][name]
            total += 1
            if emb is None:
                no_face += 1
                not_rec += 1
            elif np.linalg.norm(emb - res["ep"]) >= thr:
                not_rec += 1
        srp[name] = {"sr_p": not_rec / max(total, 1), "images": total, "no_face": no_face}

    psnr_arr = np.array(psnr)
    report = {
        "images_in_folder": n_images,
        "image_size": args.image_size,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "generator": {
            "name": "landmark",
            "shape": args.shape,
            "jaw_shape": args.jaw_shape,
            "blend": args.blend,
            "color": args.color,
        },
        "masks": len(records),
        "failed": summary["failed"],
        "failures": summary["failures"],
        "repaired": len(summary["repaired"]),
        "generate_seconds": round(gen_s, 1),
        "pairs_per_s": round(summary["generated"] / gen_s, 2),
        "evaluate_seconds": round(eval_s, 1),
        "face_detected_in_mask": float(np.mean(found_m)),
        "not_recognised_as_protected": float(np.mean(moved)),
        "mean_distance_mask_protected": float(np.mean(d_mp)),
        "mean_distance_mask_replacement": float(np.mean(d_mr)),
        "psnr_outside_face": {
            "definition": "PSNR(x_m, x_p) over the pixels outside the convex hull of x_p's and x_m's 68 dlib "
            "landmarks dilated by 5% of the face width; per image, capped at 100 dB (identical pixels)",
            "mean": float(psnr_arr.mean()),
            "min": float(psnr_arr.min()),
            "share_at_least_30db": float((psnr_arr >= 30).mean()),
        },
        "sr_p": srp,
        "sr_p_recogniser": "dlib ResNet, Euclidean distance, not recognised when >= 0.6 or no face found",
        "attacks": "gaussian_noise std 0.001, gaussian_blur 7x7 sigma 1.4, jpeg quality 30 "
        f"(every {attack_every}th mask)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))

    # 8 rows x 4 triples (x_p | x_r | x_m), 64 px tiles, spread over the store.
    tile, picks = 64, records[:: max(1, len(records) // 32)][:32]
    grid = torch.ones(3, 8 * (tile + 2), 4 * (3 * tile + 8))
    for n, rec in enumerate(picks):
        row, col = divmod(n, 4)
        for j, path in enumerate((image_root / rec.protected, image_root / rec.replacement, store / rec.mask)):
            y, x = row * (tile + 2), col * (3 * tile + 8) + j * tile
            grid[:, y : y + tile, x : x + tile] = load_image(path, tile, "center")
    atomic_save_image(args.grid, grid)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.store:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
