"""``ipmn audit challenge``: the owner's fresh query set for auditing a suspect model.

A challenge is ``n`` query pairs (x_p, x_r) of faces the owner never trained on, written as a folder::

    CHALLENGE/
      protected/0000.png ...     x_p: what a suspect service is sent (``ipmn audit query`` posts these)
      replacement/0000.png ...   x_r: the second input of a stealing model SM(x_p, x_r) (paper eq. 9)
      mask/0000.png ...          x_m, the true face swap (synthetic source only): the genuine service's input
      challenge.json             source, root, seed, size, and per pair the files, their SHA-256 and origin

Sources: ``folder`` (any folder of face photos, read recursively, each real file once; each photo is used at
most once, so x_p is never its own x_r), ``celeba`` (the official *test* partition of CelebA, which the
shipped configs never train on) and ``synthetic`` (the built-in faces from a seed stream the shipped configs
never draw: ``seed`` is added to :data:`SYNTHETIC_SEED_OFFSET`). Which photos a folder holds is the owner's
responsibility: the challenge must not share faces with the training data, and ``challenge.json`` records the
root so that a reader can check. Nothing is half-written: the folder is built hidden and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any, Literal

from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.core.files import atomic_folder, atomic_write_text

__all__ = ["SYNTHETIC_SEED_OFFSET", "AuditChallengeError", "audit_challenge", "challenge_sha256", "read_challenge"]

#: Added to ``--seed`` for the synthetic source: the shipped configs seed their faces with 0, so challenge
#: faces come from streams that no training run of ours draws.
SYNTHETIC_SEED_OFFSET = 1_000_003
CHALLENGE_FILE = "challenge.json"
CHALLENGE_FORMAT = "ipmn-audit-challenge/1"


class AuditChallengeError(IPMNError):
    """The challenge cannot be built or read; nothing was written."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def challenge_sha256(challenge: str | Path) -> str:
    """The SHA-256 of a challenge's ``challenge.json``: what identifies the challenge (its files are hashed in it)."""
    return _sha256(Path(challenge).expanduser() / CHALLENGE_FILE)


def _folder_sources(root: Path, n: int, seed: int, source: str) -> list[tuple[str, str]]:
    """``n`` (protected, replacement) file pairs, relative to ``root``, each photo used at most once."""
    from ipmn_lightning.data.celeba import IMAGE_DIR, read_celeba_splits
    from ipmn_lightning.data.folder import list_images

    if source == "celeba":
        names = [f"{IMAGE_DIR}/{name}" for name in read_celeba_splits(root)["test"]]
    else:
        names = list_images(root)
    if len(names) < 2 * n:
        raise AuditChallengeError(
            f"--root {root} holds {len(names)} usable face image(s) ({source}); a challenge of --n {n} pairs needs "
            f"{2 * n} (each photo once); pass a larger folder or a smaller --n"
        )
    order = list(names)
    random.Random(seed).shuffle(order)
    return list(zip(order[:n], order[n : 2 * n]))


def audit_challenge(
    *,
    out: str,
    source: Literal["folder", "celeba", "synthetic"] = "folder",
    root: str | None = None,
    n: int = 200,
    image_size: int = 64,
    seed: int = 0,
) -> int:
    """Write the owner's challenge: ``n`` fresh query pairs (x_p, x_r) and ``challenge.json``.

    Args:
        out: the challenge folder to create; must not exist yet.
        source: ``folder`` (face photos under ``--root``), ``celeba`` (CelebA's test partition under ``--root``)
            or ``synthetic`` (the built-in faces, from streams no shipped config trains on).
        root: the folder of faces the owner never trained on (``folder``, ``celeba``).
        n: number of query pairs (issue 24: at most 200 should be enough for an audit).
        image_size: side of the square query images in pixels (the service's size: the bundle's image_size).
        seed: which photos are drawn and paired (folder, celeba) or which faces are drawn (synthetic).
    """
    try:
        return _audit_challenge(out, source, root, n, image_size, seed)
    except AuditChallengeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _audit_challenge(out: str, source: str, root: str | None, n: int, image_size: int, seed: int) -> int:
    from ipmn_lightning.core.images import tensor_to_pil
    from ipmn_lightning.data.images import ImageReadError, read_image

    if n < 1:
        raise AuditChallengeError(f"--n must be at least 1, got {n}")
    if image_size < 8:
        raise AuditChallengeError(f"--image_size must be at least 8, got {image_size}")
    target = Path(out).expanduser()
    if target.exists():
        raise AuditChallengeError(f"--out {target} exists; pass a new folder (a challenge is never overwritten)")
    base = None
    if source in ("folder", "celeba"):
        if root is None:
            raise AuditChallengeError(f"--source {source} needs --root, the folder of faces you never trained on")
        base = Path(root).expanduser()
        if not base.is_dir():
            raise AuditChallengeError(f"--root {base} is not a folder; pass the folder of face images")
    elif source != "synthetic":
        raise AuditChallengeError(f"--source must be folder, celeba or synthetic, got {source!r}")
    with atomic_folder(target) as staging:
        folders = ("protected", "replacement") + (("mask",) if source == "synthetic" else ())
        for name in folders:
            (staging / name).mkdir()
        pairs: list[dict[str, Any]] = []
        if base is None:
            from ipmn_lightning.data.synthetic import SyntheticFaceSwapDataset

            dataset = SyntheticFaceSwapDataset(n, image_size, seed=SYNTHETIC_SEED_OFFSET + seed, split="test")
            for index in range(n):
                sample = dataset[index]
                record: dict[str, Any] = {"id": f"{index:04d}", "origin": {"synthetic_index": index}}
                for name in folders:
                    file = staging / name / f"{index:04d}.png"
                    tensor_to_pil(sample[name]).save(file)
                    record[name] = {"file": f"{name}/{file.name}", "sha256": _sha256(file)}
                pairs.append(record)
        else:
            from ipmn_lightning.data.images import DatasetLayoutError

            try:
                chosen = _folder_sources(base, n, seed, source)
            except DatasetLayoutError as err:
                raise AuditChallengeError(f"--root {base}: {err}") from err
            for index, (protected, replacement) in enumerate(chosen):
                record = {"id": f"{index:04d}", "origin": {"protected": protected, "replacement": replacement}}
                for name, rel in (("protected", protected), ("replacement", replacement)):
                    try:
                        picture = read_image(base / rel, image_size)
                    except ImageReadError as err:
                        raise AuditChallengeError(f"{err}; remove the file from --root or fix it") from err
                    file = staging / name / f"{index:04d}.png"
                    picture.save(file)
                    record[name] = {"file": f"{name}/{file.name}", "sha256": _sha256(file)}
                pairs.append(record)
        manifest = {
            "format": CHALLENGE_FORMAT,
            "source": source,
            "root": None if base is None else str(base.resolve()),
            "seed": seed,
            "n": n,
            "image_size": image_size,
            "pairs": pairs,
        }
        atomic_write_text(staging / CHALLENGE_FILE, json.dumps(manifest, indent=2) + "\n")
    print(f"wrote a challenge of {n} pair(s) ({source}, {image_size} px) to {target}")
    return 0


def read_challenge(path: str | Path, check_hashes: bool = True) -> dict[str, Any]:
    """The manifest of a challenge folder, its files checked against their recorded SHA-256.

    Raises:
        AuditChallengeError: no ``challenge.json``, another format, or a file missing or changed.
    """
    folder = Path(path).expanduser()
    file = folder / CHALLENGE_FILE
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise AuditChallengeError(
            f"--challenge {folder}: no readable {CHALLENGE_FILE} ({type(err).__name__}); pass a folder written by "
            "`ipmn audit challenge`"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != CHALLENGE_FORMAT:
        raise AuditChallengeError(f"--challenge {file} is not an {CHALLENGE_FORMAT} manifest")
    if check_hashes:
        for pair in manifest["pairs"]:
            for name in ("protected", "replacement", "mask"):
                if name in pair:
                    image = folder / pair[name]["file"]
                    if not image.is_file() or _sha256(image) != pair[name]["sha256"]:
                        raise AuditChallengeError(
                            f"--challenge {folder}: {pair[name]['file']} is missing or changed since the challenge "
                            "was written; write a new challenge"
                        )
    return manifest
