"""``ipmn audit reference``: the owner's private key for the keyed audit score of a challenge.

For every pair of a challenge it makes the face swap x_m (the challenge's ``mask/`` for synthetic faces; for
photos, the landmark swap at 128 px brought to the challenge's size, as the faces pipeline makes its masks)
and the watermark residual ``r = H(x_m, w) − x_m`` with the service bundle, and writes both to one safetensors
file (float16 tensors ``mask`` and ``residual``, ``(N, 3, S, S)``; the pair ids, the challenge's hash and the
service bundle's fingerprint in its metadata). ``ipmn audit run --reference`` scores answers with it
(:mod:`ipmn_lightning.audit.keyed`). Pairs whose photo has no face found get no reference and are left out
of the keyed score (the file says how many).

Keep the file private: the residuals are the watermark pattern itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ipmn_lightning.audit.challenge import AuditChallengeError, challenge_sha256, read_challenge
from ipmn_lightning.core.files import atomic_path

__all__ = ["REFERENCE_FORMAT", "audit_reference", "challenge_masks", "read_reference", "write_reference"]

REFERENCE_FORMAT = "ipmn-audit-reference/1"
#: The size at which photo masks are made (the faces pipeline's landmark swaps), then resized.
PHOTO_MASK_SIZE = 128


def challenge_masks(challenge: str | Path, manifest: dict[str, Any], size: int) -> dict[str, Any]:
    """Pair id → its face swap x_m, (3, size, size) in [0, 1], or ``None`` when no face was found."""
    import torch.nn.functional as F

    from ipmn_lightning.data.images import load_image

    folder = Path(challenge).expanduser()
    pairs = manifest["pairs"]
    if all("mask" in pair for pair in pairs):
        return {p["id"]: load_image(folder / p["mask"]["file"], size) for p in pairs}
    from ipmn_lightning.faces.generators import make_mask_generator

    generator = make_mask_generator("landmark")
    masks: dict[str, Any] = {}
    for pair in pairs:
        large = [load_image(folder / pair[k]["file"], PHOTO_MASK_SIZE)[None] for k in ("protected", "replacement")]
        outcome = generator.generate(*large)[0]
        if outcome.mask is None:
            masks[pair["id"]] = None
            continue
        small = F.interpolate(outcome.mask[None], size=(size, size), mode="bilinear", antialias=True)[0]
        masks[pair["id"]] = small.clamp(0, 1)
    return masks


def write_reference(bundle: str, challenge: str, out: str, batch_size: int = 64, device: str = "cpu") -> Path:
    """Write the reference of ``challenge`` made with the service bundle ``bundle`` to the new file ``out``.

    Raises:
        AuditChallengeError: a bad challenge, ``out`` exists, or no pair has a face.
        BundleError: ``bundle`` is not a service bundle (a receiver bundle holds no H and no w).
    """
    import torch
    from safetensors.torch import save_file

    from ipmn_lightning.inference.bundle import SERVICE_FORMAT, load_bundle

    target = Path(out).expanduser()
    if target.exists():
        raise AuditChallengeError(f"--out {target} exists; pass a new file (a reference is never overwritten)")
    manifest = read_challenge(challenge)
    size = int(manifest["image_size"])
    service = load_bundle(bundle, SERVICE_FORMAT)
    if service.image_size != size:
        raise AuditChallengeError(
            f"--bundle {bundle} is for {service.image_size}-px images, the challenge is {size} px; write a "
            "challenge at the bundle's size (--image_size)"
        )
    embedder = service.network("embedder").to(device)
    watermark = service.watermark.to(device)
    made = challenge_masks(challenge, manifest, size)
    ids = [pair_id for pair_id, mask in made.items() if mask is not None]
    if not ids:
        raise AuditChallengeError(f"--challenge {challenge}: no pair has a face to make a mask from")
    masks = torch.stack([made[i] for i in ids])
    residuals = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            chunk = masks[start : start + batch_size].to(device)
            residuals.append((embedder(chunk, watermark) - chunk).cpu())
    metadata = {
        "format": REFERENCE_FORMAT,
        "ids": json.dumps(ids),
        "skipped": json.dumps(sorted(i for i, m in made.items() if m is None)),
        "challenge_sha256": challenge_sha256(challenge),
        "service_fingerprint": str(service.fingerprint),
        "image_size": str(size),
    }
    tensors = {"mask": masks.half().contiguous(), "residual": torch.cat(residuals).half().contiguous()}
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def read_reference(path: str | Path, challenge: str | None = None) -> dict[str, Any]:
    """The reference written by :func:`write_reference`: ``ids``, ``mask`` and ``residual`` (float32), metadata.

    With ``challenge``, the reference must have been made for exactly that challenge (its hash).

    Raises:
        AuditChallengeError: missing, not a reference, or made for another challenge.
    """
    from safetensors import SafetensorError, safe_open

    file = Path(path).expanduser()
    if not file.is_file():
        raise AuditChallengeError(f"--reference {file} does not exist; write it with `ipmn audit reference`")
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != REFERENCE_FORMAT:
                raise AuditChallengeError(f"--reference {file} is not an audit reference ({REFERENCE_FORMAT})")
            mask, residual = handle.get_tensor("mask").float(), handle.get_tensor("residual").float()
    except (SafetensorError, OSError, KeyError) as err:
        raise AuditChallengeError(f"--reference {file} cannot be read ({err}); write it again") from err
    if challenge is not None:
        if metadata.get("challenge_sha256") != challenge_sha256(challenge):
            raise AuditChallengeError(
                f"--reference {file} was made for another challenge than --challenge {challenge}; write the "
                "reference of this challenge with `ipmn audit reference`"
            )
    ids = json.loads(metadata["ids"])
    if mask.shape != residual.shape or mask.shape[0] != len(ids):
        raise AuditChallengeError(f"--reference {file} is inconsistent ({len(ids)} ids, {tuple(mask.shape)}); "
                                  "write it again")  # fmt: skip
    return {"ids": ids, "mask": mask, "residual": residual, "metadata": metadata}


def audit_reference(*, bundle: str, challenge: str, out: str, batch_size: int = 64, device: str = "cpu") -> int:
    """Owner: write the private reference of a challenge for the keyed audit score (``audit run --reference``).

    Args:
        bundle: the service bundle (``service.safetensors``: H and w).
        challenge: the folder written by ``ipmn audit challenge``.
        out: the reference file to write (``.safetensors``); must not exist yet.
        batch_size: masks per forward pass of H.
        device: ``cpu``, ``cuda``, ...
    """
    from ipmn_lightning.inference.guards import run_guarded

    def run() -> int:
        target = write_reference(bundle, challenge, out, batch_size, device)
        print(f"wrote the keyed reference of {challenge} to {target} (keep it private: it is the watermark pattern)")
        return 0

    return run_guarded(run)
