"""Reading a face network's weights from a user's plain state-dict file: weights-only, strict, clear errors.

Used by :mod:`ipmn_lightning.diffface.arcface` and :mod:`ipmn_lightning.diffface.bisenet`. Files are read with
``torch.load(path, map_location="cpu", weights_only=True)``: no code in them runs. A file that pickles a whole
model (DiffFace's ``Arcface.tar`` holds ``{"model": DataParallel(ResNet)}``) cannot be read that way; the error
says how to re-save its ``state_dict`` once, where the file is trusted.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ipmn_lightning.core.errors import IPMNError

__all__ = ["FaceWeightsError", "is_torchscript_file", "load_strict", "read_state_dict"]

#: Keys under which training scripts nest a state dict.
_WRAPPERS = ("state_dict", "model", "net", "params")


class FaceWeightsError(IPMNError):
    """A face network's weights file is missing, not a plain state dict, or of another architecture."""


def is_torchscript_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a zip with ``code/`` and ``constants.pkl``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def read_state_dict(path: str | os.PathLike[str], argument: str, resave_hint: str) -> dict[str, Tensor]:
    """A plain state dict from ``path``, read weights-only, with ``module.`` prefixes dropped.

    Args:
        path: the ``.pth`` / ``.pt`` / ``.tar`` file.
        argument: the option that took the path (named in every error).
        resave_hint: how to turn a pickled model into a state-dict file (for the error).

    Raises:
        FileNotFoundError: no such file.
        FaceWeightsError: the file is a pickled model (not loadable weights-only) or holds no state dict.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{argument}: no file at {file}")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FaceWeightsError(
            f"{argument}: {file} cannot be read weights-only ({type(err).__name__}: it pickles a whole model or "
            "other objects, not a plain state dict). This library never unpickles code; re-save its state_dict "
            f"once, where you trust the file: {resave_hint}"
        ) from None
    if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        for key in _WRAPPERS:
            if _is_tensor_dict(obj.get(key)):
                obj = obj[key]
                break
    if not _is_tensor_dict(obj):
        raise FaceWeightsError(
            f"{argument}: {file} holds a {type(obj).__name__} that is not a state dict of tensors; {resave_hint}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}  # type: ignore[union-attr]


def load_strict(net: nn.Module, state: Mapping[str, Tensor], argument: str, source: str, layout: str) -> nn.Module:
    """Load ``state`` into ``net`` strictly (an old file without BatchNorm's ``num_batches_tracked`` is fine).

    Raises:
        FaceWeightsError: keys or shapes that do not match, naming ``argument``, the file, the expected layout
            and a few of the offending keys.
    """
    expected = net.state_dict()
    want = {k for k in expected if not k.endswith("num_batches_tracked")}
    have = {k for k in state if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(want - have), sorted(have - want)
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(want & have)
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:2]}")
        raise FaceWeightsError(f"{argument}: {source} is not a {layout} state dict: " + "; ".join(parts))
    full = dict(state)
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in full:
            full[k] = v
    net.load_state_dict(full, strict=True)
    return net.eval()
