"""Write a tiny fake CelebA (the real file layout) with a mask store, for tests and demos.

Usage::

    python tests/fakes/make_fake_celeba.py OUT_DIR [--n 12] [--size 48] [--seed 0]
        [--no-masks] [--no-identities]

or ``make_fake_celeba(root, n=12, size=48)`` from Python. The images are random colour blobs around a
face-like ellipse (no real faces, no network), deterministic from the seed. See tests/fakes/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

_REPO = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("tests") is None:  # run as a script (python tests/fakes/make_fake_celeba.py)
    sys.path.insert(0, str(_REPO))

from ipmn_lightning.core.files import atomic_save_image, atomic_write_text  # noqa: E402
from ipmn_lightning.data.mask_store import make_pairs, save_mask, write_pairs  # noqa: E402

__all__ = ["STORE_DIR", "blend_mask", "fake_face", "make_fake_celeba", "write_masks"]

#: The mask store folder inside a fake dataset root (the data module's default place).
STORE_DIR = "masks_store"


def fake_face(rng: np.random.Generator, width: int, height: int, skin: np.ndarray) -> np.ndarray:
    """A face-like picture: a gradient background, random colour blobs and a centred ellipse.

    Args:
        rng: the random generator (consumed).
        width: image width.
        height: image height.
        skin: ``(3,)`` float colour in [0, 1] of the ellipse (the "identity").

    Returns:
        ``(height, width, 3)`` uint8.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= max(height - 1, 1)
    xx /= max(width - 1, 1)
    top, bottom = rng.uniform(0.0, 1.0, size=(2, 3)).astype(np.float32)
    img = top + (bottom - top) * yy[..., None]
    for _ in range(6):
        cx, cy = rng.uniform(0.0, 1.0, size=2)
        sigma = rng.uniform(0.05, 0.25)
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        alpha = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))[..., None]
        img = img * (1 - alpha) + colour * alpha
    face = (((xx - 0.5) / 0.32) ** 2 + ((yy - 0.5) / 0.4) ** 2 <= 1.0)[..., None]
    img = np.where(face, skin.astype(np.float32), img)
    for ex in (0.38, 0.62):  # eyes
        eye = np.exp(-((xx - ex) ** 2 + (yy - 0.42) ** 2) / (2 * 0.03**2))[..., None]
        img = img * (1 - eye) + 0.1 * eye
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def blend_mask(protected: Image.Image, replacement: Image.Image) -> Image.Image:
    """A stand-in face swap: x_r's centre alpha-blended onto x_p through a soft ellipse.

    Args:
        protected: x_p, the scene kept outside the ellipse.
        replacement: x_r, the identity pasted inside (resized to x_p's size if needed).

    Returns:
        The mask x_m, an RGB image the size of ``protected``.
    """
    p = np.asarray(protected.convert("RGB"), dtype=np.float32) / 255.0
    r_img = replacement.convert("RGB")
    if r_img.size != protected.size:
        r_img = r_img.resize(protected.size, Image.Resampling.BICUBIC)
    r = np.asarray(r_img, dtype=np.float32) / 255.0
    h, w = p.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = np.sqrt(((xx - (w - 1) / 2) / (0.34 * w)) ** 2 + ((yy - (h - 1) / 2) / (0.42 * h)) ** 2)
    alpha = np.clip((1.0 - radius) / 0.25, 0.0, 1.0)[..., None]
    out = alpha * r + (1.0 - alpha) * p
    return Image.fromarray((np.clip(out, 0.0, 1.0) * 255.0).round().astype(np.uint8))


def write_masks(
    image_root: Path,
    store: Path,
    splits: dict[str, list[str]],
    identities: dict[str, int] | None,
    seed: int,
) -> None:
    """Pair the images, write one blended mask per pair and ``pairs.csv`` into ``store``."""
    records = make_pairs(splits, identities, seed=seed)
    for rec in records:
        with Image.open(image_root / rec.protected) as p, Image.open(image_root / rec.replacement) as r:
            save_mask(store, rec, blend_mask(p, r))
    write_pairs(store, records)


def make_fake_celeba(
    root: str | Path,
    n: int = 12,
    size: int = 48,
    with_masks: bool = True,
    with_identities: bool = True,
    seed: int = 0,
) -> Path:
    """Write a fake CelebA under ``root``.

    Layout: ``img_align_celeba/000001.jpg``... (``size`` wide and ``size * 218 // 178`` tall, like
    CelebA's 178x218), ``list_eval_partition.txt`` (every split has at least 2 images, train first),
    ``identity_CelebA.txt`` (``max(2, n // 3)`` identities, neighbours differ, so every split holds
    at least two identities), and a mask store in ``root/masks_store`` (``pairs.csv`` +
    ``masks/000001.png``..., each mask the size of its protected image).

    Args:
        root: output folder (created).
        n: number of images, at least 6.
        size: image width in pixels.
        with_masks: write the mask store.
        with_identities: write ``identity_CelebA.txt`` (and pair across identities).
        seed: content and pairing seed.

    Returns:
        ``root`` as a Path.
    """
    if n < 6:
        raise ValueError(f"make_fake_celeba: n must be >= 6 (2 images per split), got {n}.")
    root = Path(root)
    image_dir = root / "img_align_celeba"
    width, height = size, size * 218 // 178
    n_held = max(2, n // 10)
    n_train = n - 2 * n_held
    n_ids = max(2, n // 3)
    rng = np.random.default_rng(seed)
    skins = rng.uniform(0.3, 0.95, size=(n_ids, 3))
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    ids = {name: 100 + i % n_ids for i, name in enumerate(names)}
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    partition_lines = []
    for i, name in enumerate(names):
        pixels = fake_face(rng, width, height, skins[i % n_ids])
        atomic_save_image(image_dir / name, Image.fromarray(pixels), quality=95)
        part = 0 if i < n_train else 1 if i < n_train + n_held else 2
        splits[("train", "val", "test")[part]].append(name)
        partition_lines.append(f"{name} {part}\n")
    atomic_write_text(root / "list_eval_partition.txt", "".join(partition_lines))
    if with_identities:
        atomic_write_text(root / "identity_CelebA.txt", "".join(f"{k} {v}\n" for k, v in ids.items()))
    if with_masks:
        write_masks(image_dir, root / STORE_DIR, splits, ids if with_identities else None, seed)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n", type=int, default=12, help="number of images (>= 6)")
    parser.add_argument("--size", type=int, default=48, help="image width in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-masks", action="store_true", help="skip the mask store")
    parser.add_argument("--no-identities", action="store_true", help="skip identity_CelebA.txt")
    args = parser.parse_args(argv)
    root = make_fake_celeba(args.out_dir, args.n, args.size, not args.no_masks, not args.no_identities, seed=args.seed)
    print(f"fake CelebA written to {root}")


if __name__ == "__main__":
    main()
