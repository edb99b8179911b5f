"""The keyed score of ``ipmn audit``: how much of the owner's watermark residual a suspect's answer reproduces.

R reads a stolen model's answers through a network trained to output w for a strong mark and a blank for none,
so a weak copy of the mark (an imitation that learnt a few percent of it) comes out as an almost blank image:
at demo scale the CNet thief's mean NC sat 0.0008 above the null models' (benchmarks/results/ip_audit_demo.md).
The owner, however, knows exactly which pattern each answer should carry: for challenge pair ``i`` the service
would have answered with x_wm,i = H(x_m,i, w), i.e. the face swap x_m,i plus the watermark residual
``r_i = x_wm,i − x_m,i`` (paper eq. 2). A model that imitates the service reproduces some fraction ``β`` of
``r_i`` on top of x_m,i; an independent model has no reason to. The keyed score of an answer ``y_i`` is the
least-squares estimate of that fraction on the high-pass detail, where the mark lives and the imitation error
of the face itself is small::

    s_i = <HP(y_i − x_m,i), HP(r_i)> / <HP(r_i), HP(r_i)>,   HP(x) = x − G_σ * x

so the genuine service scores about 1 and an independent model about 0 (its error is not aligned with a
pattern keyed by w it never saw). This is the correlation ("matched filter") detector of additive spread-spectrum
watermarking (Cox et al., "Secure spread spectrum watermarking for multimedia", IEEE TIP 1997), with the
content-adaptive pattern H made for each query as the key. Whatever an innocent model's errors share with
``r_i`` (both may follow the edges of x_m) is measured, as for the NC, on null models:
:mod:`ipmn_lightning.audit.statistics` takes these scores unchanged.

The reference (x_m,i and r_i for every pair) is made by the owner with the service bundle (H and w) and kept
private: it is the watermark itself, and anyone holding it could paste it onto images (docs/security.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_SIGMA", "high_pass", "keyed_scores"]

#: The standard deviation (pixels) of the Gaussian whose blur the high-pass removes; at 64 px a face's shading
#: and the imitation's blur sit below it, the watermark's dotted pattern (a few pixels across) above (our default).
DEFAULT_SIGMA = 1.0


def _gaussian_kernel(sigma: float, channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()


def high_pass(images: Tensor, sigma: float = DEFAULT_SIGMA) -> Tensor:
    """``x − G_σ * x`` per channel (reflect padding, so borders add no edge).

    Args:
        images: (B, C, H, W), any range.
        sigma: the Gaussian's standard deviation in pixels, > 0.

    Returns:
        (B, C, H, W), zero mean per smooth region.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    kernel = _gaussian_kernel(sigma, images.shape[1], images.dtype, images.device)
    pad = kernel.shape[-1] // 2
    if min(images.shape[-2:]) <= pad:
        raise ValueError(f"images of {tuple(images.shape[-2:])} px are too small for a high-pass of sigma {sigma}")
    blurred = F.conv2d(F.pad(images, (pad, pad, pad, pad), mode="reflect"), kernel, groups=images.shape[1])
    return images - blurred


def keyed_scores(answers: Tensor, masks: Tensor, residuals: Tensor, sigma: float = DEFAULT_SIGMA) -> Tensor:
    """Per answer, the share of the watermark residual it reproduces (module docstring).

    Args:
        answers: the suspect's answers y_i, (N, 3, H, W) in [0, 1].
        masks: the face swaps x_m,i of the same pairs, (N, 3, H, W) in [0, 1].
        residuals: r_i = H(x_m,i, w) − x_m,i, (N, 3, H, W), about ±0.1.
        sigma: the high-pass's Gaussian standard deviation (pixels).

    Returns:
        (N,) float64 scores: about 1 for the genuine service, about 0 for a model that never saw w.

    Raises:
        ValueError: shapes differ, or a residual has no high-pass energy (a reference made without the mark).
    """
    if not answers.shape == masks.shape == residuals.shape or answers.dim() != 4:
        raise ValueError(
            f"answers, masks and residuals must be (N, C, H, W) of one shape, got {tuple(answers.shape)}, "
            f"{tuple(masks.shape)} and {tuple(residuals.shape)}"
        )
    key = high_pass(residuals.double(), sigma).flatten(1)
    energy = (key * key).sum(1)
    if bool((energy <= 1e-12).any()):
        raise ValueError("a reference residual has no high-pass detail: it was not made with the watermark")
    detail = high_pass((answers.double() - masks.double()), sigma).flatten(1)
    return (detail * key).sum(1) / energy
