"""The pipeline's bundles: ``<output>/bundles/{service,receiver,verifier}.safetensors`` and R's reference NCs.

Three bundles, one per holder (least privilege, docs/security.md): ``service`` for the operator (H, the INN,
w), ``receiver`` for whoever takes masks off (the INN only), ``verifier`` for the owner (R, w, threshold,
clean-image reference and where it came from; with null models, the audit's null: ``audit_null``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule
from ipmn_lightning.inference.bundle import (
    BundleError,
    export_receiver_bundle,
    export_service_bundle,
    export_verifier_bundle,
    load_bundle,
)
from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.phases import PHASE1, PHASE2, PHASE3_ENHANCE, load_stealer_network

#: The data module's arguments that say which clean images the reference NCs came from.
_CALIBRATION_DATA = ("source", "root", "image_size", "seed", "test_fraction")

__all__ = ["audit_null_record", "bundle_fingerprints", "clean_nc_reference", "export_bundles", "relative_to"]


def relative_to(path: str | Path, root: Path) -> str:
    """``path`` relative to the output folder when inside it (the manifest survives moving the folder)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def clean_nc_reference(
    verifier: str | os.PathLike[str],
    data: dict[str, Any],
    service: str | os.PathLike[str] | None = None,
    limit: int = 1536,
) -> list[float]:
    """R's NCs on clean images of the test split, as 8-bit images: x_m, x_p and (with ``service``) x'_p.

    These are the images an owner must never confuse with watermarked ones; ``ipmn verify`` turns an
    observed NC into a p-value against them.

    Args:
        verifier: the verifier bundle (R, w).
        data: the data module's arguments (as recorded in the manifest).
        service: the service bundle, to add the recovered faces x'_p (z seeded per batch).
        limit: at most this many NCs.

    Returns:
        The NCs, in the test split's order (x_m, x_p, x'_p per batch).
    """
    model = IPMN.load(service_bundle=service, verifier_bundle=verifier)
    module = FaceSwapDataModule(**{**data, "num_workers": 0, "flip": False})
    module.setup("test")
    ncs: list[float] = []
    for index, batch in enumerate(module.test_dataloader()):
        sources = [batch["mask"], batch["protected"]]
        if model.inn is not None:
            sources.append(model.recover(model.protect(batch["protected"], batch["mask"]), seed=index)[0])
        for images in sources:
            ncs += [v.nc for v in model.verify(quantize_8bit(images))]
        if len(ncs) >= limit:
            break
    return ncs[:limit]


def audit_null_record(
    verifier: str | os.PathLike[str],
    data: dict[str, Any],
    service: str | os.PathLike[str] | None,
    nulls: dict[str, str],
    limit: int = 256,
) -> dict[str, Any]:
    """What ``ipmn audit`` needs of the null models (issue 24), for the verifier bundle's ``audit_null``.

    R's NCs on each null model's 8-bit answers SM(x_p, x_r) to the test split's queries, and on the genuine
    service's answers x_wmf to the same queries (the histogram's third population).

    Args:
        verifier: the verifier bundle (R, w).
        data: the data module's arguments.
        service: the service bundle (for the genuine answers), or ``None``.
        nulls: null model phase name -> its phase-3a checkpoint.
        limit: at most this many queries.
    """
    import torch

    model = IPMN.load(service_bundle=service, verifier_bundle=verifier)
    networks = {name: load_stealer_network(path, f"null model {name}")[1] for name, path in nulls.items()}
    module = FaceSwapDataModule(**{**data, "num_workers": 0, "flip": False})
    module.setup("test")
    ncs: dict[str, list[float]] = {name: [] for name in nulls}
    genuine: list[float] = []
    seen = 0
    with torch.inference_mode():
        for batch in module.test_dataloader():
            for name, network in networks.items():
                answers = quantize_8bit(network(batch["protected"], batch["replacement"]))
                ncs[name] += [v.nc for v in model.verify(answers)]
            if model.inn is not None:
                genuine += [v.nc for v in model.verify(model.protect(batch["protected"], batch["mask"]))]
            seen += batch["protected"].shape[0]
            if seen >= limit:
                break
    return {
        "source": f"{min(seen, limit)} queries (x_p, x_r) of the test split, 8-bit answers",
        "models": {name: values[:limit] for name, values in ncs.items()},
        "genuine": genuine[:limit],
    }


def bundle_fingerprints(bundles: dict[str, str], root: Path | None = None) -> dict[str, str]:
    """``{role: fingerprint}`` of the bundles ``{role: path}`` (paths relative to ``root`` when given)."""
    formats = {"service": "ipmn-service", "receiver": "ipmn-receiver", "verifier": "ipmn-verifier"}
    return {
        role: load_bundle(Path(root, path) if root is not None else path, formats[role]).fingerprint  # type: ignore[arg-type]
        for role, path in bundles.items()
    }


def export_bundles(
    out: Path, done: dict[str, list[str]], data: dict[str, Any] | None = None, nulls: dict[str, str] | None = None
) -> dict[str, str]:
    """Write ``<out>/bundles/``: ``service`` and ``receiver.safetensors`` (phase 2), ``verifier.safetensors`` (R).

    With ``data`` (the data module's arguments), the verifier bundle also carries ``clean_nc_reference``: R's NCs
    on the clean images of the test split (:func:`clean_nc_reference`), with its ``calibration`` record (the run,
    the number of clean images, their source), and with at least two ``nulls`` (null model phase name ->
    checkpoint) the audit's null (:func:`audit_null_record`). Prints each bundle's path and fingerprint.

    Returns:
        ``{role: path}``, paths relative to ``out`` when inside it.
    """
    bundles: dict[str, str] = {}
    try:
        if done[PHASE2]:
            service = export_service_bundle(done[PHASE2][-1], out / "bundles" / "service.safetensors")
            bundles["service"] = str(service)
            receiver = export_receiver_bundle(done[PHASE2][-1], out / "bundles" / "receiver.safetensors")
            bundles["receiver"] = str(receiver)
        extractor = (done[PHASE3_ENHANCE] or done[PHASE1] or [None])[-1]
        if extractor is not None:
            bundles["verifier"] = str(export_verifier_bundle(extractor, out / "bundles" / "verifier.safetensors"))
    except BundleError as err:  # a baseline run (HiDDeN): evaluated from its checkpoints, no bundles
        print(f"no bundles: {err}")
        return {}
    if extractor is not None and data:
        try:
            reference = clean_nc_reference(bundles["verifier"], data, bundles.get("service"))
        except (OSError, ValueError) as err:  # the data moved or changed: the bundle stays usable without it
            print(f"warning: verifier bundle without clean_nc_reference ({type(err).__name__}: {err})")
        else:
            calibration = {
                "run": str(out.resolve()),
                "clean_images": len(reference),
                "source": "x_m, x_p and x'_p (z seeded per batch) of the test split, as 8-bit images",
                "data": {k: str(v) for k, v in data.items() if k in _CALIBRATION_DATA},
                "service_bundle": relative_to(bundles["service"], out) if "service" in bundles else None,
            }
            null = None
            if nulls and len(nulls) >= 2:
                null = audit_null_record(bundles["verifier"], data, bundles.get("service"), nulls)
            export_verifier_bundle(
                extractor, bundles["verifier"], clean_nc_reference=reference, calibration=calibration, audit_null=null
            )
            print(f"verifier bundle: {len(reference)} clean-image reference NCs (for p-values in ipmn verify)")
            if null is not None:
                print(f"verifier bundle: the audit's null from {len(null['models'])} null models ({null['source']})")
    for role, path in bundles.items():
        print(f"{role} bundle: {path} (fingerprint {bundle_fingerprints({role: path})[role]})")
    return {role: relative_to(path, out) for role, path in bundles.items()}
