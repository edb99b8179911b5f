"""Does the verdict survive the way images travel, and can it be forged? Real faces through a run's bundles.

    python benchmarks/robustness.py --run runs/demo --faces ../shared/data/utkface --out robustness.json

Faces come from a folder's test split (the library's deterministic folder split); each face x_p is protected
with the next face of the split as its mask x_m (another real person, a fair carrier without running a mask
generator). ``--faces synthetic`` takes the built-in synthetic test split and its true masks instead. Every
image is resized to the bundles' size first. Reported:

- SR_E on x_wmf as written (8-bit PNG) and after each distortion: JPEG at several qualities, a resize round
  trip, blur, noise;
- the false-positive rate on clean faces x_p and masks x_m, as they are and after JPEG 75;
- the transplant forgery: the high-pass detail (x - blur(x)) of ``--donors`` public protected images (from the
  validation split), averaged, added to each clean test face; its PSNR against the clean face and the share
  of forged faces that verify (at 1x and 2x strength).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from ipmn_lightning.attacks.distortions import gaussian_blur, gaussian_noise, jpeg, resize_round_trip
from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.core.images import pil_to_tensor
from ipmn_lightning.data.folder import folder_splits
from ipmn_lightning.data.synthetic import SyntheticFaceSwapDataset
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.metrics.functional import quantize_8bit

ATTACKS = {
    "none": lambda x: x,
    "jpeg90": lambda x: jpeg(x, 90),
    "jpeg75": lambda x: jpeg(x, 75),
    "jpeg50": lambda x: jpeg(x, 50),
    "resize0.5": lambda x: quantize_8bit(resize_round_trip(x, 0.5)),
    "blur1.0": lambda x: quantize_8bit(gaussian_blur(x, 1.0)),
    "noise0.01": lambda x: quantize_8bit(gaussian_noise(x, 0.01, torch.Generator().manual_seed(0))),
}


def load_faces(root: Path, files: list[str], size: int) -> torch.Tensor:
    images = []
    for name in files:
        with Image.open(root / name) as image:
            images.append(pil_to_tensor(image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)))
    return torch.stack(images)


def synthetic_faces(split: str, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = SyntheticFaceSwapDataset(count, size, split=split)
    items = [data[i] for i in range(count)]
    return torch.stack([i["protected"] for i in items]), torch.stack([i["mask"] for i in items])


def verify_rate(model: IPMN, images: torch.Tensor) -> dict[str, float]:
    verdicts = [v for i in range(0, len(images), 64) for v in model.verify(images[i : i + 64])]
    ncs = torch.tensor([v.nc for v in verdicts])
    return {
        "verified": sum(v.verified for v in verdicts) / len(verdicts),
        "nc_mean": float(ncs.mean()),
        "nc_min": float(ncs.min()),
        "nc_max": float(ncs.max()),
    }


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((10 * torch.log10(1 / (a - b).pow(2).flatten(1).mean(1))).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="pipeline output folder holding bundles/")
    parser.add_argument("--faces", required=True, help="a folder of real face photos, or 'synthetic'")
    parser.add_argument("--limit", type=int, default=None, help="at most this many test faces")
    parser.add_argument("--donors", type=int, default=10, help="public protected images the forger uses")
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    bundles = Path(args.run) / "bundles"
    model = IPMN.load(bundles / "service.safetensors", bundles / "verifier.safetensors")
    size = model.image_size
    started = time.perf_counter()
    if args.faces == "synthetic":
        faces, masks = synthetic_faces("test", args.limit or 256, size)
        donor_faces, donor_masks = synthetic_faces("val", args.donors, size)
    else:
        root = Path(args.faces)
        splits = folder_splits(root)
        faces = load_faces(root, splits["test"][: args.limit] if args.limit else splits["test"], size)
        masks = faces.roll(1, dims=0)  # each face carries the previous face of the split as its mask
        donor_faces = load_faces(root, splits["val"][: args.donors + 1], size)
        donor_faces, donor_masks = donor_faces[:-1], donor_faces[1:]
    masked = torch.cat([model.protect(faces[i : i + 64], masks[i : i + 64]) for i in range(0, len(faces), 64)])
    donors = model.protect(donor_faces, donor_masks)

    result: dict[str, object] = {
        "run": str(args.run),
        "faces": args.faces,
        "image_size": size,
        "test_faces": len(faces),
        "threshold": model.threshold,
        "psnr_masked_face_vs_mask": psnr(masked, masks),
        "sr_e_masked_face": {name: verify_rate(model, attack(masked)) for name, attack in ATTACKS.items()},
        "fpr": {
            "protected": verify_rate(model, faces),
            "protected_jpeg75": verify_rate(model, jpeg(faces, 75)),
            "mask": verify_rate(model, masks),
        },
    }
    detail = (donors - gaussian_blur(donors, 1.0)).mean(0, keepdim=True)
    forgery = {}
    for strength in (1.0, 2.0):
        forged = quantize_8bit(faces + strength * detail)
        forgery[f"x{strength:g}"] = {"psnr_vs_clean": psnr(forged, faces), **verify_rate(model, forged)}
    result["forgery_transplant"] = {"donors": args.donors, **forgery}
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
