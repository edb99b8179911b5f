"""Frozen VGG16 feature extractor for the perceptual loss of H.

As in Deep Model Watermarking ("DMW"; github.com/ZJZAC/Deep-Model-Watermarking @ 129120d: ``vgg.py``, the loss on
``relu2_2`` in ``main.py``); the paper names no layer, so DMW's is our default.

Weights are never downloaded: they come from a local file or from torch's hub cache, which
torchvision fills when it downloads ``VGG16_Weights`` once on a machine with internet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchvision.models import VGG16_Weights

from ipmn_lightning.core.hub import hub_cache_file

VGGLayer = Literal["relu1_2", "relu2_2", "relu3_3", "relu4_3"]

# Number of torchvision ``vgg16().features`` modules up to and including each ReLU (DMW slices).
LAYER_END: dict[str, int] = {"relu1_2": 4, "relu2_2": 9, "relu3_3": 16, "relu4_3": 23}
# VGG16 configuration "D"; "M" is a 2x2 max-pool. Only the first 23 modules are ever needed.
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)


def _vgg16_features(end: int) -> nn.Sequential:
    """The first ``end`` modules of torchvision's ``vgg16().features``, with the same indices."""
    layers: list[nn.Module] = []
    prev = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            conv = nn.Conv2d(prev, int(v), 3, padding=1)
            # torchvision's VGG init, so random features behave like an untrained torchvision model
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            prev = int(v)
    return nn.Sequential(*layers[:end])


def resolve_vgg_weights(weights: str | os.PathLike[str] | None) -> Path | None:
    """Turn the ``vgg_weights`` argument into a local file (or ``None`` for random weights).

    Raises:
        FileNotFoundError: an enum name whose file is not in the hub cache.
        ValueError: neither an existing file nor a ``VGG16_Weights`` name.
    """
    if weights is None:
        return None
    if os.path.isfile(weights):
        return Path(weights)
    name = str(weights)
    if name in VGG16_Weights.__members__:
        path = hub_cache_file(VGG16_Weights[name])
        if not path.is_file():
            raise FileNotFoundError(
                f"vgg_weights={name!r}: the weights file is not in the torch hub cache at {path}, and "
                "ipmn-lightning never downloads. Fix: on a machine with internet run "
                f"`python -c \"import torchvision; torchvision.models.vgg16(weights='{name}')\"` and copy "
                f"{path.name} to {path.parent} (or set TORCH_HOME), or pass vgg_weights=<local .pth file>, "
                "or vgg_weights=null for random weights"
            )
        return path
    raise ValueError(
        f"vgg_weights={name!r} is neither an existing file nor a torchvision VGG16_Weights name "
        f"({', '.join(VGG16_Weights.__members__)}); pass a local .pth path, a weights name, or null"
    )


def _features_state_dict(raw: object, end: int, path: Path) -> dict[str, torch.Tensor]:
    """Keep the ``features`` entries below ``end`` of a full or already-sliced vgg16 state dict."""
    if not isinstance(raw, dict):
        raise ValueError(f"vgg_weights file {path} does not hold a state dict (got {type(raw).__name__})")
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        key = str(key).removeprefix("features.")
        index = key.split(".", 1)[0]
        if index.isdigit() and int(index) < end:
            out[key] = value
    return out


class VGGFeatures(nn.Module):
    """Frozen VGG16 ``features`` up to ``layer`` (DMW's perceptual loss uses relu2_2).

    Inputs are used as they come, in [0, 1], without ImageNet normalisation, as in DMW. The
    parameters never require gradients and the module stays in eval mode even when a parent calls
    ``.train()``; gradients still flow to the input.

    Args:
        weights: ``None`` for random weights (tests); a path to a ``torch.save``d torchvision vgg16
            state dict (full ``features.N.*`` keys or sliced ``N.*`` keys); or a ``VGG16_Weights``
            member name (``"IMAGENET1K_V1"``, ``"IMAGENET1K_FEATURES"``, ``"DEFAULT"``) read from the
            torch hub cache. Nothing is ever downloaded.
        layer: last ReLU kept.

    Raises:
        FileNotFoundError: a weights name whose file is not in the hub cache.
        ValueError: an unknown ``weights`` value or ``layer``, or a file that is not a vgg16 state dict.
    """

    def __init__(self, weights: str | None = "IMAGENET1K_V1", layer: VGGLayer = "relu2_2") -> None:
        super().__init__()
        if layer not in LAYER_END:
            raise ValueError(f"layer={layer!r} is not one of {tuple(LAYER_END)}")
        self.layer = layer
        end = LAYER_END[layer]
        self.features = _vgg16_features(end)
        path = resolve_vgg_weights(weights)
        if path is not None:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            state = _features_state_dict(raw, end, path)
            try:
                self.features.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise ValueError(f"vgg_weights file {path} is not a torchvision vgg16 state dict: {err}") from err
        self.features.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> VGGFeatures:
        """Ignore ``mode``: the extractor is always in eval mode."""
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Features of ``image: (B, 3, H, W) float in [0, 1]`` -> (B, C, H / s, W / s)."""
        return self.features(image)
