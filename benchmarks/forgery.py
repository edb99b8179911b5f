"""Forgery suite (issue 25): can someone make a photo verify as the owner's without being the service?

    nice python benchmarks/forgery.py --faces ../shared/data/utkface --bundles runs/demo/bundles \\
        --out benchmarks/results/forgery_demo

Real faces from the folder's test split (``folder_splits``: never trained on), at the bundles' size:

- ``--sources`` faces are protected by the service (each with a train-split face as its mask x_m): the public
  protected images x_wmf the attacker collects; ``--targets`` other test faces are the clean photos c it forges
  on (their own x_wmf, the genuine reference, use other train-split masks);
- each attack makes a forgery f from c, and the verifier bundle's R judges it (``NC > threshold``); the table
  gives the share that verifies and PSNR(f, c), 8-bit.

The attacks (the copy attack of Kutter et al., SPIE 2000; averaging of Yang et al., NeurIPS 2024; noise pasting
of Saberi et al., ICLR 2024, as in facebookresearch/videoseal ``quality_metric/eval_watermark_forging.py``):

- ``residual-{gauss,median}-k{1,10,100}-x{1,2,4}``: the high-pass residual x_wmf − denoise(x_wmf) (Gaussian
  σ = 1 or a 3 × 3 median) averaged over k sources (k = 1: the one-shot copy from a single image), amplified ×a
  and added to c;
- ``noise-paste``: the service protects a noise image (anyone may query it), f = 0.9·c + 0.1·x_wmf(noise);
- ``service-bundle``: c + 0.1·(H(c, w) − c), which needs H and w, i.e. the service bundle: since the receiver
  bundle holds neither, only the operator can do it;
- each of them again after JPEG 90 (Pillow's default 4:2:0 chroma), and the references: clean c, genuine x_wmf
  of the targets, and x_wmf after JPEG 90.

Residuals come from the sources only: no forgery uses a protected image of its own target. Writes
``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ipmn_lightning.attacks.distortions import jpeg
from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.core.images import pil_to_tensor
from ipmn_lightning.data.folder import folder_splits
from ipmn_lightning.data.images import read_image
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.metrics.functional import normalized_correlation, quantize_8bit


def gaussian_blur(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """(B, 3, H, W) blurred by a separable Gaussian of ``sigma`` (reflect padding)."""
    radius = max(1, round(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(images.device)
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def median3(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) through a 3 × 3 median filter (reflect padding)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    patches = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # (B, C, H, W, 3, 3)
    return patches.reshape(*patches.shape[:4], 9).median(dim=-1).values


DENOISERS = {"gauss": gaussian_blur, "median": median3}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) over the batch of two (B, 3, H, W) images in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())


def read_faces(root: Path, names: list[str], size: int) -> torch.Tensor:
    return torch.stack([pil_to_tensor(read_image(root / name, size)) for name in names])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", required=True, help="a folder of aligned face photos (its test split is used)")
    parser.add_argument("--bundles", required=True, help="folder with service.safetensors and verifier.safetensors")
    parser.add_argument("--out", required=True, help="results stem (writes .json and .md)")
    parser.add_argument("--sources", type=int, default=100, help="public protected images the attacker has")
    parser.add_argument("--targets", type=int, default=100, help="clean photos forged on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    bundles = Path(args.bundles)
    model = IPMN.load(bundles / "service.safetensors", bundles / "verifier.safetensors")
    size, threshold = model.image_size, float(model.threshold)
    splits = folder_splits(args.faces)
    names, others = splits["test"], splits["train"]
    random.Random(args.seed).shuffle(names)
    random.Random(args.seed + 1).shuffle(others)
    if len(names) < args.sources + args.targets or len(others) < args.sources + args.targets:
        raise SystemExit(f"--faces: {len(names)} test photos, {args.sources + args.targets} needed; lower the counts")
    root = Path(args.faces)
    sources = read_faces(root, names[: args.sources], size)
    targets = read_faces(root, names[args.sources : args.sources + args.targets], size)
    # masks x_m: other people's faces (the train split: a mask's identity is not a protected face)
    source_masks = read_faces(root, others[: args.sources], size)
    target_masks = read_faces(root, others[args.sources : args.sources + args.targets], size)

    def protect(faces: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return torch.cat([model.protect(f, m) for f, m in zip(faces.split(32), masks.split(32))])

    def verified(images: torch.Tensor) -> tuple[float, float]:
        with torch.inference_mode():
            ncs = torch.cat([normalized_correlation(model.extractor(b), model.verifier_watermark) for b in
                             quantize_8bit(images.clamp(0, 1)).split(64)])  # fmt: skip
        return float((ncs > threshold).float().mean()), float(ncs.mean())

    public = protect(sources, source_masks)  # what the attacker collects: 8-bit x_wmf of other people's faces
    genuine = protect(targets, target_masks)
    rows: list[dict] = []

    def add(name: str, forged: torch.Tensor, family: str) -> None:
        for compressed in (False, True):
            images = jpeg(forged.clamp(0, 1), 90) if compressed else quantize_8bit(forged.clamp(0, 1))
            share, mean_nc = verified(images)
            rows.append({"attack": name + (" + JPEG 90" if compressed else ""), "family": family,
                         "verified": share, "mean_nc": mean_nc, "psnr_to_clean": psnr(images, targets)})  # fmt: skip

    share, mean_nc = verified(targets)
    rows.append({"attack": "clean c (reference)", "family": "reference", "verified": share, "mean_nc": mean_nc,
                 "psnr_to_clean": float("inf")})  # fmt: skip
    for compressed in (False, True):
        images = jpeg(genuine, 90) if compressed else genuine
        share, mean_nc = verified(images)
        rows.append({"attack": "genuine x_wmf (reference)" + (" + JPEG 90" if compressed else ""),
                     "family": "reference", "verified": share, "mean_nc": mean_nc,
                     "psnr_to_clean": psnr(images, targets)})  # fmt: skip
    for denoiser, denoise in DENOISERS.items():
        residuals = public - denoise(public)
        for k in (1, 10, 100):
            if k > args.sources:
                continue
            # one residual per target, each the mean of k different sources (k = 1: a one-shot copy)
            pick = torch.stack([torch.randperm(args.sources, generator=torch.Generator().manual_seed(i))[:k]
                                for i in range(args.targets)])  # fmt: skip
            mean_residual = residuals[pick].mean(1)
            for amplify in (1, 2, 4):
                add(f"residual-{denoiser}-k{k}-x{amplify}", targets + amplify * mean_residual, "residual")
    noise = torch.rand(args.targets, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    add("noise-paste (α 0.1)", 0.9 * targets + 0.1 * protect(noise, noise), "noise")
    with torch.inference_mode():
        stamped = torch.cat([model.embedder(t, model.watermark) for t in targets.split(32)])
    add("service-bundle c + 0.1·(H(c, w) − c)", targets + 0.1 * (stamped - targets), "service")

    result = {
        "benchmark": "forgery suite (issue 25)",
        "faces": str(args.faces),
        "bundles": str(bundles),
        "verifier_threshold": threshold,
        "image_size": size,
        "sources": args.sources,
        "targets": args.targets,
        "rows": rows,
        "wall_s": round(time.perf_counter() - start, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Forgery suite: {bundles} on {args.targets} clean test faces of {args.faces}, {args.sources} public sources",
        "",
        f"R verifies when NC > {threshold}; PSNR is of the forgery to the clean photo (8-bit).",
        "",
        "| attack | verified | mean NC | PSNR to clean, dB |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['attack']} | {100 * r['verified']:.0f}% | {r['mean_nc']:.3f} | {r['psnr_to_clean']:.1f} |"
              for r in rows]  # fmt: skip
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
