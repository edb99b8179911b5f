"""Write a tiny fake image-folder dataset (nested folders, mixed PNG/JPEG) with a mask store.

Usage::

    python tests/fakes/make_fake_folder.py OUT_DIR [--n 10] [--size 40] [--seed 0] [--no-masks]

or ``make_fake_folder(root, n=10, size=40)`` from Python. See tests/fakes/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

_REPO = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("tests") is None:  # run as a script (python tests/fakes/make_fake_folder.py)
    sys.path.insert(0, str(_REPO))

from ipmn_lightning.core.files import atomic_save_image  # noqa: E402
from ipmn_lightning.data.folder import folder_splits, split_of  # noqa: E402
from tests.fakes.make_fake_celeba import STORE_DIR, fake_face, write_masks  # noqa: E402

__all__ = ["STORE_DIR", "fake_folder_names", "make_fake_folder"]

_MIN_HELD_OUT = 2


def fake_folder_names(n: int) -> list[str]:
    """``n`` relative paths that the default ``folder_splits`` puts >= 2 in val and >= 2 in test.

    Candidates ``person_<k>/face_<c>.<png|jpg>`` are taken in order while their split (a hash of the
    path, :func:`~ipmn_lightning.data.folder.split_of` with the default fractions and seed) still
    needs images, so the choice is deterministic.
    """
    if n < 3 * _MIN_HELD_OUT:
        raise ValueError(f"make_fake_folder: n must be >= {3 * _MIN_HELD_OUT}, got {n}.")
    quota = {"val": _MIN_HELD_OUT, "test": _MIN_HELD_OUT}
    quota["train"] = n - sum(quota.values())
    names: list[str] = []
    c = 0
    while len(names) < n:
        ext = "jpg" if c % 2 == 1 else "png"
        name = f"person_{c % 3}/face_{c:04d}.{ext}"
        split = split_of(name)
        if quota[split] > 0:
            quota[split] -= 1
            names.append(name)
        c += 1
    return sorted(names)


def make_fake_folder(root: str | Path, n: int = 10, size: int = 40, with_masks: bool = True, seed: int = 0) -> Path:
    """Write a fake folder dataset under ``root``.

    Layout: ``root/person_<k>/face_<c>.png|.jpg`` (``size`` wide, ``size * 5 // 4`` tall), split
    by the default :func:`~ipmn_lightning.data.folder.folder_splits` (val and test get >= 2 images
    each), and a mask store in ``root/masks_store`` (``pairs.csv`` + ``masks/person_<k>/face_<c>.png``).
    ``folder_splits(root)`` skips the store folder because it holds a ``pairs.csv``.

    Args:
        root: output folder (created); it is also the image folder.
        n: number of images, at least 6.
        size: image width in pixels.
        with_masks: write the mask store.
        seed: content and pairing seed.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    width, height = size, size * 5 // 4
    rng = np.random.default_rng(seed)
    for name in fake_folder_names(n):
        pixels = fake_face(rng, width, height, rng.uniform(0.3, 0.95, size=3))
        extra = {"quality": 95} if name.endswith(".jpg") else {}
        atomic_save_image(root / name, Image.fromarray(pixels), **extra)
    if with_masks:
        write_masks(root, root / STORE_DIR, folder_splits(root), None, seed)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n", type=int, default=10, help="number of images (>= 6)")
    parser.add_argument("--size", type=int, default=40, help="image width in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-masks", action="store_true", help="skip the mask store")
    args = parser.parse_args(argv)
    root = make_fake_folder(args.out_dir, args.n, args.size, not args.no_masks, seed=args.seed)
    print(f"fake image folder written to {root}")


if __name__ == "__main__":
    main()
