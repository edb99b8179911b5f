"""The three roles on image files with the demo bundles (issue 5 acceptance), through the real commands.

    python benchmarks/roles_check.py [--run runs/demo] [--n 10]

Writes N synthetic test-split faces and their masks as PNG files, then runs ``ipmn protect``,
``ipmn recover`` and ``ipmn verify`` (the console script, in subprocesses) and reports: PSNR of every
recovered face against its original, the verify exit codes and NC of the protected images, the recovered
masks and the original faces. Prints a table and writes JSON next to the run.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ipmn_lightning.core.files import atomic_save_image, atomic_write_text
from ipmn_lightning.data.images import load_image
from ipmn_lightning.data.synthetic import SyntheticFaceSwapDataset


def ipmn(*args: str) -> int:
    return subprocess.run(["ipmn", *args], check=False).returncode


def verify(bundle: Path, images: Path, report: Path) -> tuple[int, list[dict]]:
    code = ipmn("verify", "--bundle", str(bundle), "--images", str(images), "--report", str(report))
    return code, json.loads(report.read_text())["images"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    bundles = Path(args.run) / "bundles"
    service, verifier = bundles / "service.safetensors", bundles / "verifier.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        faces, masks, masked, recovered = (root / d for d in ("faces", "masks", "masked", "recovered"))
        data = SyntheticFaceSwapDataset(args.n, image_size=64, seed=0, split="test")
        for i in range(args.n):
            item = data[i]
            atomic_save_image(faces / f"face{i:02d}.png", item["protected"])
            atomic_save_image(masks / f"face{i:02d}.png", item["mask"])
        assert ipmn("protect", "--bundle", str(service), "--protected", str(faces), "--mask", str(masks),
                    "--out", str(masked)) == 0  # fmt: skip
        assert (
            ipmn("recover", "--bundle", str(service), "--masked", str(masked), "--out", str(recovered), "--seed", "0")
            == 0
        )
        psnr = []
        for i in range(args.n):
            original = load_image(faces / f"face{i:02d}.png", 64)
            back = load_image(recovered / f"face{i:02d}_face.png", 64)
            mse = torch.mean((original - back) ** 2).item()
            psnr.append(10 * math.log10(1 / mse))
        mask_dir = root / "recovered_masks"
        mask_dir.mkdir()
        for file in recovered.glob("*_mask.png"):
            file.rename(mask_dir / file.name)
        code_masked, rows_masked = verify(verifier, masked, root / "masked.json")
        code_masks, rows_masks = verify(verifier, mask_dir, root / "masks.json")
        code_faces, rows_faces = verify(verifier, faces, root / "faces.json")
    result = {
        "recovered_face_psnr_db": {"min": min(psnr), "mean": sum(psnr) / len(psnr), "all": psnr},
        "verify_protected": {
            "exit_code": code_masked,
            "verified": sum(r["verified"] for r in rows_masked),
            "nc_min": min(r["nc"] for r in rows_masked),
        },
        "verify_recovered_masks": {
            "exit_code": code_masks,
            "verified": sum(r["verified"] for r in rows_masks),
            "nc_min": min(r["nc"] for r in rows_masks),
        },
        "verify_original_faces": {
            "exit_code": code_faces,
            "verified": sum(r["verified"] for r in rows_faces),
            "nc_max": max(r["nc"] for r in rows_faces),
        },
        "n": args.n,
    }
    ok = (
        min(psnr) >= 30
        and code_masked == 0
        and code_masks == 0
        and code_faces == 1
        and result["verify_original_faces"]["verified"] == 0
    )
    print(json.dumps(result, indent=2))
    print("PASS" if ok else "MISS")
    atomic_write_text(Path(args.run) / "roles_check.json", json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
