"""Photo mode in the wild: UTKFace faces placed on large procedural backgrounds, protected and recovered whole.

Makes ``--count`` photos in ``<out>/photos`` (never in the repository): each a procedurally generated background
of 800-2000 px a side (colour gradients, soft blobs, rectangles, fine noise) with one face of the folder's test
split (``folder_splits``: faces the bundle never trained on) scaled to 140-420 px, turned by up to ±12° and pasted
with a soft elliptical edge at a random position, saved as JPEG 92. Then, for every photo and each configuration
(crop size the bundle processes, paste mode, donor), with torch on 2 threads:

- faces found: the share of photos where ``protect_photo`` found a face whose box holds the pasted face's centre;
- SR_P (dlib, :class:`~ipmn_lightning.faces.privacy.PrivacySuccessRate`): the protected face, cropped from the
  protected photo around its box, not recognised as the same face cropped from the original photo (no face found
  counts as not recognised and is counted apart);
- recovery PSNR: ``recover_photo`` against the original photo over the pixels of the face boxes (8-bit; outside
  the boxes the photos are checked to be bit-identical);
- NC of R on the protected regions (with ``--verifier``), the share above the bundle's threshold;
- seconds per photo for protect and for recover.

Stage ``oracle`` is the mask stage with a perfect INN (it hands back the x_p it saw plus what the photo's round
trip changed in x_m): its recovery PSNR is the ceiling that photo mode's own geometry (paste, 8 bits, re-crop)
puts on any bundle, per crop size and paste mode.

Stage ``mask`` measures the same photos with the mask x_m pasted where x_wmf would go (no bundle: what a perfect
INN would share, since x_wmf is trained to look like x_m): the SR_P of the donor swap itself, for choosing the
donor, crop size and paste mode before a real-face bundle exists.

Donors: ``builtin`` (the package's synthetic default donor) or ``folder`` (40 faces of the folder's train split;
each face gets the one dlib finds least like it, ``DonorPicker``).

    nice -n 10 python benchmarks/photos_in_the_wild.py --faces ../shared/data/utkface \\
        --bundle runs/faces/bundles/service.safetensors --out runs/photos_bench --count 100

The committed results (no real-face bundle was trained yet; the ``--bundle`` then only gives the stages a size):
``photos_in_the_wild`` (``--main oracle,auto,replace,builtin --compare 0 --timing 20``), ``_donors``
(``--main oracle,auto,replace,folder --compare 0``), ``_options`` (``--stages oracle --sizes 64,128``, auto
sizes then in multiples of 16), ``_masks`` (``--main mask,64,residual,builtin --stages mask --sizes 64,128``) and
``_tiny_bundle`` (the tests' 32-px bundle, mechanics only).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.data.folder import folder_splits
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.inference.photos import NoFaceError, protect_photo, read_photo, recover_photo, region_crops


class _PassMask(torch.nn.Module):
    """H stand-in for the ``mask`` stage: the mask unchanged (no watermark)."""

    def forward(self, mask: torch.Tensor, watermark: torch.Tensor) -> torch.Tensor:
        return mask


class _MaskIsShared(torch.nn.Module):
    """INN stand-in for the ``mask`` stage: x_wmf = x_m, what a perfect INN would share (bundle-free)."""

    def put_on(self, protected: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mask, mask

    def put_off(self, masked: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        return masked, masked


class _OracleInn(_MaskIsShared):
    """INN stand-in for the ``oracle`` stage: shares x_m and, on put-off, gives back the x_p it was given plus
    whatever the photo's round trip (paste, 8 bits, re-crop) changed in x_m, so the recovery PSNR is photo mode's
    own ceiling; the regions come back last first, as :func:`recover_photo` takes them."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[torch.Tensor, torch.Tensor]] = []

    def put_on(self, protected: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.stack.append((protected.clone(), mask.clone()))
        return mask, mask

    def put_off(self, masked: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        protected, mask = self.stack.pop()
        return protected + (masked - mask), masked


def mask_stage(model: IPMN, oracle: bool = False, image_size: int = 64) -> IPMN:
    """A facade whose "protection" pastes the mask x_m itself: SR_P of the swap in the wild, without a bundle
    (``oracle``: and whose recovery is perfect up to what photo mode's geometry loses)."""
    stage = IPMN.__new__(IPMN)
    stage.device, stage.position, stage.image_size = torch.device("cpu"), "mask", image_size
    stage.embedder, stage.inn, stage.watermark = _PassMask(), _OracleInn() if oracle else _MaskIsShared(), None
    stage.watermark = torch.zeros(3, 8, 8)
    return stage


def faces_sized_networks() -> IPMN:
    """A facade with untrained networks of the faces pipeline's size (``configs/faces``: H ngf 16 residual, INN
    6 blocks of growth 16, 64 px): what a real-face bundle costs, for timing only."""
    from ipmn_lightning.phases import build

    model = IPMN.__new__(IPMN)
    model.device, model.position, model.image_size = torch.device("cpu"), "mask", 64
    model.embedder = build("embedder", {"image_size": 64, "ngf": 16, "num_downs": None, "residual": True}).eval()
    model.inn = build("inn", {"clamp": 2.0, "growth": 16, "num_blocks": 6, "wavelet": "haar"}).eval()
    model.watermark = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    return model


def timing(photos: list[dict], folder: Path, analyzer: object, count: int) -> dict:
    """Seconds per photo of protect and recover (defaults: each face at its own size) with faces-sized networks."""
    model = faces_sized_networks()
    protect_s, recover_s, sizes = [], [], []
    for item in photos[:count]:
        photo = read_photo(folder / item["file"])
        start = time.perf_counter()
        try:
            protected, record = protect_photo(photo, model, analyzer=analyzer)
        except NoFaceError:
            continue
        protect_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        recover_photo(protected, model, record)
        recover_s.append(time.perf_counter() - start)
        sizes += [r.size for r in record.regions]
    return {
        "photos": len(protect_s),
        "protect_seconds_per_photo": float(np.mean(protect_s)),
        "recover_seconds_per_photo": float(np.mean(recover_s)),
        "crop_sizes": sizes,
        "networks": "untrained, the faces pipeline's size (H ngf 16 residual; INN 6 blocks, growth 16; 64 px)",
    }


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A procedural background: a two-colour gradient, soft blobs, a few rectangles and fine noise."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
    base = (a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 10))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 12, width // 3)), int(rng.integers(height // 12, height // 3))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        else:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(2, 12))))
    noise = rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def make_photos(faces: list[Path], folder: Path, seed: int) -> list[dict]:
    """Write one photo per face into ``folder``; returns where each face was put."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    placed = []
    for index, face_file in enumerate(faces):
        width, height = int(rng.integers(800, 2001)), int(rng.integers(800, 2001))
        photo = background(rng, width, height)
        side = int(rng.integers(140, min(421, min(width, height) // 2)))
        angle = float(rng.uniform(-12, 12))
        with Image.open(face_file) as opened:
            face = opened.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
        # a soft elliptical edge, so the face sits in the photo as in a real one (no square seam to detect)
        alpha = Image.new("L", (side, side), 0)
        ImageDraw.Draw(alpha).ellipse((side * 0.04, side * 0.02, side * 0.96, side * 1.1), fill=255)
        alpha = alpha.filter(ImageFilter.GaussianBlur(side * 0.04))
        face = face.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        alpha = alpha.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        x = int(rng.integers(0, width - face.width))
        y = int(rng.integers(0, height - face.height))
        photo.paste(face, (x, y), alpha)
        name = f"photo_{index:03d}.jpg"
        photo.save(folder / name, quality=92)
        centre = (x + face.width / 2, y + face.height / 2)
        placed.append({"file": name, "source": face_file.name, "size": [width, height], "face_side": side,
                       "angle": angle, "centre": centre})  # fmt: skip
    return placed


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def grown(box: tuple[int, int, int, int], width: int, height: int, grow: float = 0.25) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    dx, dy = (right - left) * grow, (bottom - top) * grow
    return (max(0, int(left - dx)), max(0, int(top - dy)), min(width, int(right + dx)), min(height, int(bottom + dy)))


def run_config(model: IPMN, verifier: IPMN | None, photos: list[dict], folder: Path, config: dict, tools: dict) -> dict:
    """Every measurement of one configuration over ``photos`` (``stage`` ``mask``: x_m pasted, no recovery)."""
    from ipmn_lightning.faces.privacy import PrivacySuccessRate

    if config["stage"] in ("mask", "oracle"):
        model = mask_stage(model, oracle=config["stage"] == "oracle", image_size=tools["stage_image_size"])
        verifier = None

    encoder = tools["encoder"]
    srp = PrivacySuccessRate(encoder)
    found, psnrs, outside_ok, ncs, verified = 0, [], True, [], 0
    protect_s, recover_s = [], []
    for item in photos:
        original = read_photo(folder / item["file"])
        if isinstance(model.inn, _OracleInn):
            model.inn.stack.clear()  # a photo skipped before its recovery leaves its crops behind
        start = time.perf_counter()
        try:
            protected, record = protect_photo(
                original, model, donor=tools["donors"][config["donor"]], analyzer=tools["analyzer"],
                generator=tools["generator"], size=config["size"], paste=config["paste"],
            )  # fmt: skip
        except NoFaceError:
            protect_s.append(time.perf_counter() - start)
            continue
        protect_s.append(time.perf_counter() - start)
        cx, cy = item["centre"]
        hit = [r for r in record.regions if r.box[0] <= cx < r.box[2] and r.box[1] <= cy < r.box[3]]
        if not hit:
            continue
        found += 1
        region = hit[0]
        start = time.perf_counter()
        recovered = recover_photo(protected, model, record) if config["stage"] != "mask" else protected
        recover_s.append(time.perf_counter() - start)
        before, after, back = np.asarray(original), np.asarray(protected), np.asarray(recovered)
        inside = np.zeros(before.shape[:2], dtype=bool)
        for r in record.regions:
            inside[r.box[1] : r.box[3], r.box[0] : r.box[2]] = True
        outside_ok &= bool(np.array_equal(before[~inside], after[~inside]))
        if config["stage"] != "mask":
            psnrs.append(psnr(before[inside], back[inside]))
            outside_ok &= bool(np.array_equal(before[~inside], back[~inside]))
        left, top, right, bottom = grown(region.box, original.width, original.height)
        views = [np.ascontiguousarray(a[top:bottom, left:right]) for a in (after, before)]
        emb, ok = encoder.embed_arrays(views)
        srp.update_embeddings(
            torch.from_numpy(emb[:1]).float(), torch.from_numpy(ok[:1]), torch.from_numpy(emb[1:]).float(),
            torch.from_numpy(ok[1:]),
        )  # fmt: skip
        if verifier is not None:
            crop = region_crops(protected, type(record)([region], record.bundle_fingerprint), verifier.image_size)
            v = verifier.verify(crop)[0]
            ncs.append(v.nc)
            verified += int(v.verified)
    counts = srp.counts()
    return {
        **config,
        "photos": len(photos),
        "faces_found": found / len(photos),
        "srp": float(srp.compute()),
        "srp_counts": counts,
        "recovery_psnr_db_mean": float(np.mean(psnrs)) if psnrs else None,
        "recovery_psnr_db_median": float(np.median(psnrs)) if psnrs else None,
        "recovery_psnr_db_min": float(np.min(psnrs)) if psnrs else None,
        "share_psnr_at_least_30db": float(np.mean(np.array(psnrs) >= 30)) if psnrs else None,
        "outside_boxes_bit_identical": outside_ok,
        "nc_mean": float(np.mean(ncs)) if ncs else None,
        "verified": verified / found if ncs and found else None,
        "protect_seconds_per_photo": float(np.mean(protect_s)) if protect_s else None,
        "recover_seconds_per_photo": float(np.mean(recover_s)) if recover_s and psnrs else None,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Photo mode in the wild ({result['photos']} photos, {result['bundle_note']})",
        "",
        "| stage | crop px | paste | donor | photos | faces found | SR_P (dlib) "
        "| recovery PSNR in boxes, mean / median / min "
        "| ≥ 30 dB | outside boxes identical | R verified | protect s/photo | recover s/photo |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in result["configs"]:
        lines.append(
            f"| {r['stage']} | {r['size']} | {r['paste']} | {r['donor']} | {r['photos']} | "
            f"{f(r['faces_found'], '.1%')} | "
            f"{f(r['srp'], '.1%')} | {f(r['recovery_psnr_db_mean'], '.2f')} / {f(r['recovery_psnr_db_median'], '.2f')}"
            f" / {f(r['recovery_psnr_db_min'], '.2f')} dB | {f(r['share_psnr_at_least_30db'], '.0%')} | "
            f"{'yes' if r['outside_boxes_bit_identical'] else 'NO'} | {f(r['verified'], '.1%')} | "
            f"{f(r['protect_seconds_per_photo'], '.2f')} | {f(r['recover_seconds_per_photo'], '.2f')} |"
        )
    if result.get("timing_faces_sized_networks"):
        t = result["timing_faces_sized_networks"]
        lines += [
            "",
            f"With {t['networks']}, on {t['photos']} photos: protect {t['protect_seconds_per_photo']:.2f} s, "
            f"recover {t['recover_seconds_per_photo']:.2f} s per photo (crop sizes {sorted(set(t['crop_sizes']))}).",
        ]
    lines += ["", f"Torch threads: {result['threads']}; {result['machine']}; {result['seconds']:.0f} s in all.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", required=True, help="a folder of aligned face photos (e.g. ../shared/data/utkface)")
    parser.add_argument("--bundle", required=True, help="the service bundle")
    parser.add_argument("--verifier", default=None, help="the verifier bundle (optional: NC of R on the regions)")
    parser.add_argument("--out", required=True, help="working folder (photos are made here)")
    parser.add_argument("--count", type=int, default=100, help="photos for the main configuration")
    parser.add_argument("--compare", type=int, default=30, help="photos for the other configurations (0: none)")
    parser.add_argument("--sizes", default="64,128", help="crop sizes to compare (0: the bundle's)")
    parser.add_argument(
        "--main", default="protect,0,residual,builtin", help="the main configuration: stage,size,paste,donor"
    )
    parser.add_argument("--stages", default="protect", help="stages of the compared configurations (protect,mask)")
    parser.add_argument("--results", default="benchmarks/results/photos_in_the_wild", help="JSON/markdown stem")
    parser.add_argument("--bundle_note", default="", help="what the bundle is, for the table's title")
    parser.add_argument("--stage_image_size", type=int, default=64, help="the bundle size the mask/oracle stages mimic")
    parser.add_argument("--timing", type=int, default=0, help="also time N photos with faces-sized networks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    from ipmn_lightning.faces.analysis import DlibIdentityEncoder
    from ipmn_lightning.faces.generators import make_mask_generator
    from ipmn_lightning.inference.donors import DonorPicker

    splits = folder_splits(args.faces)
    faces = [Path(args.faces) / n for n in splits["test"][: args.count]]
    out = Path(args.out)
    photos = make_photos(faces, out / "photos", args.seed)
    model = IPMN.load(service_bundle=args.bundle)
    verifier = IPMN.load(verifier_bundle=args.verifier) if args.verifier else None
    encoder = DlibIdentityEncoder()
    donor_images = [read_photo(Path(args.faces) / n) for n in splits["train"][:40]]
    tools = {
        "encoder": encoder,
        "analyzer": encoder.analyzer,
        "generator": make_mask_generator("landmark", analyzer=encoder.analyzer),
        "donors": {"builtin": None, "folder": DonorPicker(donor_images, encoder)},
        "stage_image_size": args.stage_image_size,
    }
    stage, size, paste, donor = args.main.split(",")
    main_config = {
        "stage": stage,
        "size": size if size == "auto" else int(size) or model.image_size,
        "paste": paste,
        "donor": donor,
    }
    configs = [main_config]
    if args.compare:
        for st in args.stages.split(","):
            for s in [v if v == "auto" else int(v) or model.image_size for v in args.sizes.split(",")]:
                for p in ("residual", "replace"):
                    configs.append({"stage": st, "size": s, "paste": p, "donor": "builtin"})
            configs.append({**main_config, "stage": st, "donor": "folder"})
    seen, results = set(), []
    for index, config in enumerate(configs):
        key = (config["stage"], config["size"], config["paste"], config["donor"])
        if key in seen:
            continue
        seen.add(key)
        subset = photos if index == 0 else photos[: args.compare]
        row = run_config(model, verifier, subset, out / "photos", config, tools)
        print(json.dumps(row), flush=True)
        results.append(row)
    timed = timing(photos, out / "photos", tools["analyzer"], args.timing) if args.timing else None
    result = {
        "timing_faces_sized_networks": timed,
        "benchmark": "photos_in_the_wild",
        "bundle": args.bundle,
        "bundle_note": args.bundle_note or Path(args.bundle).name,
        "bundle_image_size": model.image_size,
        "verifier": args.verifier,
        "faces": args.faces,
        "photos": len(photos),
        "placements": photos,
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "seconds": time.perf_counter() - start,
        "configs": results,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(f"{args.results}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(f"{args.results}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
