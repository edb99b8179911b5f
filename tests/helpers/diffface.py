"""Tiny DiffFace networks and settings shared by the wing's tests (random weights, CPU-sized)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ipmn_lightning.diffface.convert import save_diffface
from ipmn_lightning.diffface.unet import DiffFaceUNet

TINY = {
    "image_size": 16,
    "model_channels": 32,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (8,),
    "num_head_channels": 32,
}
FAST = {"timestep_respacing": 8, "skip_timesteps": 2, "masking_threshold": 3}


class TinyRecogniser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class TinyParser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(3, 19, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def tiny_net(id_dim: int = 8) -> DiffFaceUNet:
    torch.manual_seed(0)
    return DiffFaceUNet(**TINY, id_dim=id_dim).eval()


def tiny_batch(b: int = 2, s: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    protected = torch.rand(b, 3, s, s, generator=g)
    mask = torch.zeros(b, 1, s, s)
    mask[:, :, 4:12, 4:12] = 1.0
    mask[:, :, 4:12, 4] = 0.5  # a soft edge
    return protected, mask, torch.randn(b, 8, generator=g)


def dlib_checkpoint(tmp_path: Path) -> Path:
    # FakeEncoder embeddings are 3-d mean colours; the network is tagged as dlib-conditioned like DiffFaceModule's
    return save_diffface(tmp_path / "tiny.safetensors", tiny_net(id_dim=3), identity_encoder="dlib")
