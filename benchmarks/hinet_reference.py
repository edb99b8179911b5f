"""HiNet's formulation of the coupling network, as a speed and correctness reference (issue 7).

Written from the structure of HiNet (Jing et al. 2021; github.com/TomTomTommi/HiNet @ 5c2682a), not from
HiNet's code, and deliberately without any of the library's optimisations:

* Haar DWT by strided slicing (``x[:, :, 0::2, :] / 2`` ...) and ``torch.cat`` of the subbands; the IWT scatters the
  four pixel phases into a zero-filled tensor with strided assignments (HiNet's ``modules/Unet_common.py``);
* every dense block is five 3x3 convolutions on explicit ``torch.cat`` concatenations, one call per subnet (phi,
  rho, eta), ``nn.LeakyReLU(inplace=True)`` (slope 0.01), no residual (HiNet's ``rrdb_denselayer.py``);
* each invertible block takes and returns the 24-channel ``cat(host, hidden)`` tensor and splits it
  with ``narrow``, as HiNet's ``INV_block`` (``invblock.py``) does;
* float32, NCHW (contiguous) tensors, no fusion, no channels-last, no custom autograd.

:func:`from_invertible_mask_net` copies the weights of an
:class:`ipmn_lightning.nets.inn.InvertibleMaskNet` (``blocks.{i}.{phi,rho,eta}.conv{1..5}``) into
a :class:`HiNetReference` (``inv{i+1}.{f,r,y}.conv{1..5}``, HiNet's names), so the two can be run on
the same inputs and compared. :class:`HiNetReference` also exposes ``dwt``, ``iwt``,
``forward_wavelet`` and ``inverse_wavelet`` with the library's signatures, so it can stand in for
``InvertibleMaskModule.inn`` in the phase-2 training step.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "HiNetReference",
    "ReferenceDenseBlock",
    "ReferenceInvBlock",
    "copy_weights",
    "dwt_slicing",
    "from_invertible_mask_net",
    "iwt_scatter",
]

# our subnet name -> HiNet's attribute name in INV_block
SUBNET_NAMES = {"phi": "f", "rho": "r", "eta": "y"}


def dwt_slicing(x: torch.Tensor) -> torch.Tensor:
    """HiNet's ``dwt_init``: (B, C, H, W) -> (B, 4C, H/2, W/2) as ``cat(LL, HL, LH, HH)``."""
    x01 = x[:, :, 0::2, :] / 2
    x02 = x[:, :, 1::2, :] / 2
    x1 = x01[:, :, :, 0::2]  # even row, even column
    x2 = x02[:, :, :, 0::2]  # odd row, even column
    x3 = x01[:, :, :, 1::2]  # even row, odd column
    x4 = x02[:, :, :, 1::2]  # odd row, odd column
    ll = x1 + x2 + x3 + x4
    hl = -x1 - x2 + x3 + x4
    lh = -x1 + x2 - x3 + x4
    hh = x1 - x2 - x3 + x4
    return torch.cat((ll, hl, lh, hh), 1)


def iwt_scatter(y: torch.Tensor) -> torch.Tensor:
    """HiNet's ``iwt_init`` on y's device: (B, 4C, h, w) -> (B, C, 2h, 2w)."""
    b, c4, h, w = y.shape
    c = c4 // 4
    x1 = y[:, 0:c] / 2
    x2 = y[:, c : 2 * c] / 2
    x3 = y[:, 2 * c : 3 * c] / 2
    x4 = y[:, 3 * c : 4 * c] / 2
    out = torch.zeros(b, c, 2 * h, 2 * w, dtype=y.dtype, device=y.device)
    out[:, :, 0::2, 0::2] = x1 - x2 - x3 + x4
    out[:, :, 1::2, 0::2] = x1 - x2 + x3 - x4
    out[:, :, 0::2, 1::2] = x1 + x2 - x3 - x4
    out[:, :, 1::2, 1::2] = x1 + x2 + x3 + x4
    return out


class ReferenceDenseBlock(nn.Module):
    """HiNet's ``ResidualDenseBlock_out``: conv_k on ``cat(x, x_1, ..., x_{k-1})``, no residual."""

    def __init__(self, in_channels: int, out_channels: int, growth: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, growth, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(in_channels + growth, growth, 3, 1, 1, bias=True)
        self.conv3 = nn.Conv2d(in_channels + 2 * growth, growth, 3, 1, 1, bias=True)
        self.conv4 = nn.Conv2d(in_channels + 3 * growth, growth, 3, 1, 1, bias=True)
        self.conv5 = nn.Conv2d(in_channels + 4 * growth, out_channels, 3, 1, 1, bias=True)
        self.lrelu = nn.LeakyReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1))


class ReferenceInvBlock(nn.Module):
    """HiNet's ``INV_block`` on the 24-channel ``cat(host, hidden)`` tensor."""

    def __init__(self, channels: int = 12, clamp: float = 2.0, growth: int = 32) -> None:
        super().__init__()
        self.split_len = channels
        self.clamp = clamp
        self.r = ReferenceDenseBlock(channels, channels, growth)  # rho: log-scale of the hidden branch
        self.y = ReferenceDenseBlock(channels, channels, growth)  # eta: shift of the hidden branch
        self.f = ReferenceDenseBlock(channels, channels, growth)  # phi: additive update of the host

    def e(self, s: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.clamp * 2 * (torch.sigmoid(s) - 0.5))

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        n = self.split_len
        x1, x2 = x.narrow(1, 0, n), x.narrow(1, n, n)
        if not rev:
            t2 = self.f(x2)
            y1 = x1 + t2
            s1, t1 = self.r(y1), self.y(y1)
            y2 = self.e(s1) * x2 + t1
        else:
            s1, t1 = self.r(x1), self.y(x1)
            y2 = (x2 - t1) / self.e(s1)
            t2 = self.f(y2)
            y1 = x1 - t2
        return torch.cat((y1, y2), 1)


class HiNetReference(nn.Module):
    """HiNet's network of ``num_blocks`` invertible blocks (``inv1`` ... ``invK``), float32 NCHW.

    Args:
        num_blocks: number of invertible blocks K.
        clamp: scale clamp (2.0).
        growth: dense-block growth rate (32).
        in_channels: image channels (each branch has ``4 * in_channels`` wavelet channels).
    """

    def __init__(self, num_blocks: int = 16, clamp: float = 2.0, growth: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.wavelet_channels = 4 * in_channels
        for i in range(num_blocks):
            self.add_module(f"inv{i + 1}", ReferenceInvBlock(self.wavelet_channels, clamp, growth))

    def blocks(self) -> list[ReferenceInvBlock]:
        return [getattr(self, f"inv{i + 1}") for i in range(self.num_blocks)]

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        """Run ``inv1 .. invK`` (or ``invK .. inv1`` with ``rev``) on the (B, 24, h, w) tensor."""
        blocks = self.blocks()
        for block in reversed(blocks) if rev else blocks:
            x = block(x, rev=rev)
        return x

    # --- the library's interface, so this can replace InvertibleMaskModule.inn -------------------
    @staticmethod
    def dwt(x: torch.Tensor) -> torch.Tensor:
        return dwt_slicing(x)

    @staticmethod
    def iwt(y: torch.Tensor) -> torch.Tensor:
        return iwt_scatter(y)

    def forward_wavelet(self, host_w: torch.Tensor, hidden_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(torch.cat((host_w, hidden_w), 1))
        n = self.wavelet_channels
        return out.narrow(1, 0, n), out.narrow(1, n, n)

    def inverse_wavelet(self, host_w: torch.Tensor, hidden_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(torch.cat((host_w, hidden_w), 1), rev=True)
        n = self.wavelet_channels
        return out.narrow(1, 0, n), out.narrow(1, n, n)

    def put_on(self, protected: torch.Tensor, watermarked_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        host_w, lost = self.forward_wavelet(self.dwt(watermarked_mask), self.dwt(protected))
        return self.iwt(host_w), lost

    def put_off(self, masked_face: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask_w, face_w = self.inverse_wavelet(self.dwt(masked_face), z)
        return self.iwt(face_w), self.iwt(mask_w)


@torch.no_grad()
def copy_weights(reference: HiNetReference, inn: nn.Module) -> HiNetReference:
    """Copy an ``InvertibleMaskNet``'s weights into ``reference`` (same K, growth, channels).

    Args:
        reference: the destination network.
        inn: an ``InvertibleMaskNet`` (state_dict keys ``blocks.{i}.{phi,rho,eta}.conv{k}.{weight,bias}``).

    Returns:
        ``reference``, with ``inv{i+1}.{f,r,y}.conv{k}`` holding the copied tensors.

    Raises:
        ValueError: if the state dicts do not correspond one to one.
    """
    mapped = {}
    for key, value in inn.state_dict().items():
        parts = key.split(".")
        if len(parts) != 5 or parts[0] != "blocks" or parts[2] not in SUBNET_NAMES:
            raise ValueError(f"copy_weights: unexpected InvertibleMaskNet state_dict key {key!r}")
        _, index, subnet, conv, kind = parts
        mapped[f"inv{int(index) + 1}.{SUBNET_NAMES[subnet]}.{conv}.{kind}"] = value
    expected = set(reference.state_dict())
    if set(mapped) != expected:
        raise ValueError(
            f"copy_weights: the networks differ: missing {sorted(expected - set(mapped))[:5]}, "
            f"unexpected {sorted(set(mapped) - expected)[:5]}; build the reference with the same "
            "num_blocks, growth and in_channels"
        )
    reference.load_state_dict(mapped)
    return reference


def from_invertible_mask_net(inn: nn.Module) -> HiNetReference:
    """A :class:`HiNetReference` with the architecture and weights of ``inn`` (an ``InvertibleMaskNet``)."""
    reference = HiNetReference(inn.num_blocks, inn.clamp, inn.growth, inn.in_channels)
    param = next(inn.parameters())
    reference.to(device=param.device, dtype=param.dtype)
    return copy_weights(reference, inn)
