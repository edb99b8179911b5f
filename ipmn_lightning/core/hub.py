"""The torch hub cache: where pretrained weights are looked up (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch

if TYPE_CHECKING:  # torchvision is only needed by the caller that names the weights
    from torchvision.models import WeightsEnum

__all__ = ["hub_cache_file"]


def hub_cache_file(weights: WeightsEnum) -> Path:
    """Where torchvision caches a pretrained ``weights`` file (``<torch hub dir>/checkpoints/``); never downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
