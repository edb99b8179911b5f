"""The ``ipmn masks pairs|check|generate`` commands: typed functions that :mod:`ipmn_lightning.console.main` lists.

``ipmn masks generate --generator NAME`` takes its names from the one registry,
:data:`~ipmn_lightning.faces.generators.GENERATORS`; a generator that fills a store its own way names its
command as its :attr:`~ipmn_lightning.faces.generators.MaskGenerator.driver`, so no generator is special-cased here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ipmn_lightning.data.folder import dataset_layout
from ipmn_lightning.data.images import DatasetLayoutError
from ipmn_lightning.data.mask_store import check_store, make_pairs, write_pairs
from ipmn_lightning.faces.analysis import FacesExtraMissingError, require_faces_extra
from ipmn_lightning.faces.generators import GENERATORS, generator_class, resolve_path
from ipmn_lightning.workflows.masks import generate_masks

__all__ = ["GENERATOR_FLAG", "GeneratorName", "masks_check", "masks_generate", "masks_pairs", "rewrite_generator_flags"]

#: The ``--generator`` choices: the registry's names (``Literal`` of a tuple is the ``Literal`` of its items), so
#: the command's signature and help list exactly what :func:`~ipmn_lightning.faces.generators.make_mask_generator`
#: builds.
GeneratorName = Literal[tuple(GENERATORS)]  # type: ignore[valid-type]

#: ``--generator.KEY`` flags are passed to ``masks_generate`` as ``--generator_options.KEY``.
GENERATOR_FLAG = "--generator."


def rewrite_generator_flags(args: Sequence[str]) -> list[str]:
    """``--generator.checkpoint X`` -> ``--generator_options.checkpoint X`` (jsonargparse dict items)."""
    return ["--generator_options." + a[len(GENERATOR_FLAG) :] if a.startswith(GENERATOR_FLAG) else a for a in args]


def masks_pairs(
    *,
    root: str,
    source: Literal["celeba", "folder"] = "celeba",
    store: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> int:
    """Write ``pairs.csv`` for a dataset: a deterministic (protected, replacement) pairing per split.

    Run your face-swap generator (e.g. the official DiffFace code) over the rows and save each mask at
    the row's ``mask`` path inside the store; then ``ipmn masks check`` validates the result.

    Args:
        root: the dataset folder (CelebA: the folder holding ``img_align_celeba/``).
        source: dataset layout.
        store: mask store folder (default ``<root>/masks_store``).
        seed: seed of the pairing.
        overwrite: replace an existing ``pairs.csv``.
    """
    root_path = Path(root).expanduser()
    store_path = Path(store).expanduser() if store else root_path / "masks_store"
    if (store_path / "pairs.csv").exists() and not overwrite:
        print(f"error: {store_path / 'pairs.csv'} exists; pass --overwrite true to replace it", file=sys.stderr)
        return 1
    try:
        image_root, splits, identities = dataset_layout(source, root_path)
    except DatasetLayoutError as err:
        print(
            f"error: {err} Pairing needs at least 2 photos in each split it fills: about {_ENOUGH_PHOTOS} photos "
            "or more in all.",
            file=sys.stderr,
        )
        return 2
    too_few = _too_few_photos(image_root, splits)
    if too_few:
        print(f"error: {too_few}", file=sys.stderr)
        return 2
    try:
        records = make_pairs(splits, identities, seed=seed, root=image_root)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    store_path.mkdir(parents=True, exist_ok=True)
    write_pairs(store_path, records)
    counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
    print(f"wrote {store_path / 'pairs.csv'}: {len(records)} pairs {counts}")
    return 0


#: About how many photos a folder needs for the hash split (about 80/10/10) to give val and test 2 photos each
#: or none (with 60 photos, val or test gets exactly one about once in 40 folders).
_ENOUGH_PHOTOS = 60


def _too_few_photos(image_root: Path, splits: dict[str, list[str]]) -> str | None:
    """Why the splits cannot be paired (a split of a single photo has no other to swap with), or ``None``."""
    lonely = [name for name, files in splits.items() if len(files) == 1]
    if not lonely:
        return None
    total = sum(len(files) for files in splits.values())
    counts = ", ".join(f"{name} {len(files)}" for name, files in splits.items())
    return (
        f"{image_root} has {total} photo(s), too few to pair: split(s) {', '.join(lonely)} got a single photo "
        f"({counts}), and each photo is paired with another photo of its split. Each split that gets a photo "
        f"needs at least 2; a photo's split is a hash of its path (about 80% train, 10% val, 10% test), so add "
        f"photos: about {_ENOUGH_PHOTOS} or more give every split at least 2."
    )


def masks_check(
    *,
    root: str,
    source: Literal["celeba", "folder"] = "celeba",
    store: str | None = None,
    image_size: int | None = None,
) -> int:
    """Validate a mask store against its dataset; prints every problem and exits non-zero if any.

    Args:
        root: the dataset folder.
        source: dataset layout.
        store: mask store folder (default ``<root>/masks_store``).
        image_size: expected mask size; ``None`` requires each mask to match its protected image's size.
    """
    root_path = Path(root).expanduser()
    store_path = Path(store).expanduser() if store else root_path / "masks_store"
    image_root = root_path / "img_align_celeba" if source == "celeba" else root_path
    problems = check_store(store_path, image_root, image_size)
    for line in problems:
        print(line)
    print(f"{store_path}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def masks_generate(
    *,
    root: str,
    source: Literal["celeba", "folder"] = "celeba",
    store: str | None = None,
    generator: GeneratorName = "landmark",
    image_size: int = 256,
    workers: int = 1,
    shard: str = "0/1",
    seed: int = 0,
    identity_sample: int = 32,
    progress: bool = True,
    generator_options: dict[str, Any] | None = None,
) -> int:
    """Fill the mask store with generated masks x_m = MG(x_p, x_r); prints a JSON summary.

    Creates ``pairs.csv`` if absent (as ``ipmn masks pairs``), finds every face once, re-pairs a row whose
    replacement has no detectable face, makes and atomically writes each mask, and logs every row so a
    rerun does only what is left. Needs the ``faces`` extra (``pip install "ipmn-lightning[faces]"``).

    Args:
        root: the dataset folder (CelebA: the folder holding ``img_align_celeba/``).
        source: dataset layout.
        store: mask store folder (default ``<root>/masks_store``).
        generator: the mask generator (``landmark``: an offline CPU face swap on dlib landmarks; ``mosaic``:
            x_p with its face pixelated, You et al.'s privacy baseline, x_r ignored; ``diffface``: the DiffFace
            port, run as a Lightning predict, one shard per process; see README.md).
        image_size: side of the square masks in pixels (train with ``data.image_size`` <= this).
        workers: processes (1: this process).
        shard: ``K/N``: make only shard K of N (N processes or machines sharing the store fill it without
            overlap; rerun once without ``--shard`` after all finish, or let the last one finish it).
        seed: seed of the pairing and of re-pairing.
        identity_sample: new masks checked with dlib's recogniser for the summary's identity statistics.
        progress: show progress bars (rate and ETA) on stderr.
        generator_options: the generator's options, given as ``--generator.KEY VALUE``
            (``diffface``: ``--generator.checkpoint PATH`` and ``--generator.devices 2`` ...).

    Returns:
        0 when the run finished (rows that could not be masked are listed in the summary and, once the
        store is complete, dropped from ``pairs.csv``), 1 on an error.
    """
    try:
        require_faces_extra("ipmn masks generate")
        driver = generator_class(generator).driver
        if driver is not None:  # the generator fills a store its own way (DiffFace: a multi-GPU Lightning predict)
            return int(
                resolve_path(driver)(
                    root=root,
                    source=source,
                    store=store,
                    image_size=image_size,
                    seed=seed,
                    identity_sample=identity_sample,
                    progress=progress,
                    options=generator_options,
                    workers=workers,
                    shard=shard,
                )
            )
        summary = generate_masks(
            root,
            source=source,
            store=store,
            generator=generator,
            image_size=image_size,
            workers=workers,
            shard=shard,
            seed=seed,
            progress=progress,
            identity_sample=identity_sample,
        )
    except (FacesExtraMissingError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
