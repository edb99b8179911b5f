"""``ipmn audit answer``: a model the owner holds answers a challenge, as a suspect service would.

The owner needs answers from models it trains itself: the *null models* of the audit (phase 3a with
``--model.init_args.target=mask`` or ``plain_inn``: independent models that never saw the watermark) and, to
check the audit, its own simulated thieves (phase 3a on the service's outputs). Each answer is
SM(x_p, x_r) for a challenge pair, rounded to 8 bits as a PNG (what a service returns), written to
``<out>/<id>.png``; the folder goes to ``ipmn audit run --responses`` or ``--null``. The checkpoint is read
with ``weights_only=True`` (no code runs); nothing is half-written.
"""

from __future__ import annotations

import json
from pathlib import Path

from ipmn_lightning.audit.challenge import AuditChallengeError, read_challenge
from ipmn_lightning.core.files import atomic_folder, atomic_write_text

__all__ = ["answer_challenge", "audit_answer"]


def answer_challenge(stealer_ckpt: str, challenge: str, out: str, batch_size: int = 32, device: str = "cpu") -> Path:
    """Write a phase-3a checkpoint's answers to every pair of ``challenge`` into the new folder ``out``.

    Raises:
        AuditChallengeError: a bad challenge, or ``out`` exists.
        CheckpointError: ``stealer_ckpt`` is missing or not a phase-3a checkpoint.
    """
    import torch

    from ipmn_lightning.core.images import tensor_to_pil
    from ipmn_lightning.data.images import load_image
    from ipmn_lightning.phases import load_stealer_network

    manifest = read_challenge(challenge)
    folder = Path(challenge).expanduser()
    target = Path(out).expanduser()
    if target.exists():
        raise AuditChallengeError(f"--out {target} exists; pass a new folder (answers are never mixed)")
    config, model = load_stealer_network(stealer_ckpt)
    size = int(manifest["image_size"])
    if int(config["image_size"]) != size:
        raise AuditChallengeError(
            f"--stealer_ckpt {stealer_ckpt} was trained at {config['image_size']} px, the challenge is {size} px; "
            "write a challenge at the model's size (--image_size)"
        )
    model.to(device)
    pairs = manifest["pairs"]
    with atomic_folder(target) as staging, torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            protected = torch.stack([load_image(folder / p["protected"]["file"], size) for p in chunk])
            replacement = torch.stack([load_image(folder / p["replacement"]["file"], size) for p in chunk])
            answers = model(protected.to(device), replacement.to(device)).clamp(0, 1).cpu()
            for pair, answer in zip(chunk, answers):
                tensor_to_pil(answer).save(staging / f"{pair['id']}.png")
        record = {"model": str(stealer_ckpt), "stealer": config["name"], "challenge": str(folder), "n": len(pairs)}
        atomic_write_text(staging / "responses.json", json.dumps(record, indent=2) + "\n")
    return target


def audit_answer(*, stealer_ckpt: str, challenge: str, out: str, batch_size: int = 32, device: str = "cpu") -> int:
    """Answer a challenge with a phase-3a model (a null model or a simulated thief); writes ``<out>/<id>.png``.

    Args:
        stealer_ckpt: the phase-3a checkpoint (``ipmn fit`` of ``configs/*/phase3_steal.yaml``).
        challenge: the folder written by ``ipmn audit challenge``.
        out: the folder for the answers; must not exist yet.
        batch_size: pairs per forward pass.
        device: ``cpu``, ``cuda``, ``cuda:1``, ...
    """
    from ipmn_lightning.inference.guards import run_guarded

    def run() -> int:
        target = answer_challenge(stealer_ckpt, challenge, out, batch_size, device)
        print(f"wrote the answers of {stealer_ckpt} to {target}")
        return 0

    return run_guarded(run)
