"""DiffFace's identity-conditioned ADM UNet on ``diffusers.UNet2DModel``, and the Gaussian diffusion it runs in.

DiffFace (github.com/hxngiee/DiffFace @ b7bef83) is guided-diffusion's ADM UNet (scale-shift norm, resblock up/down,
attention at 32/16/8 px, learned variance: 6 output channels) whose time embedding gets the face-recognition embedding
of the identity source added to it through a two-layer MLP. :class:`DiffFaceUNet` builds the same network from
``diffusers`` blocks (our port to diffusers' ``UNet2DModel``): ``class_embed_type="identity"`` makes the UNet add
``class_labels`` to its time embedding, and :attr:`DiffFaceUNet.id_mlp` computes those labels from the embedding.

:class:`GaussianDiffusion` is the DDPM arithmetic of guided-diffusion (linear betas, learned-range variance,
respacing, the hybrid loss): training (:class:`~ipmn_lightning.diffface.module.DiffFaceModule`) and the guided
sampler (:mod:`ipmn_lightning.diffface.generator`) both use it, so they cannot disagree.

``diffusers`` is imported only when a network is built (the ``diffface`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "DIFFFACE_CONFIG",
    "DIFFUSERS_HINT",
    "DiffFaceUNet",
    "GaussianDiffusion",
    "space_timesteps",
]

DIFFUSERS_HINT = 'pip install "ipmn-lightning[diffface]"'

#: DiffFace's published network (``image_editor.py`` + ``script_util.py`` for 256 px;
#: github.com/hxngiee/DiffFace @ b7bef83).
DIFFFACE_CONFIG: dict[str, Any] = {
    "image_size": 256,
    "in_channels": 3,
    "model_channels": 256,
    "channel_mult": (1, 1, 2, 2, 4, 4),
    "num_res_blocks": 2,
    "attention_resolutions": (32, 16, 8),
    "num_head_channels": 64,
    "id_dim": 512,
    "learn_sigma": True,
    "dropout": 0.0,
    "norm_num_groups": 32,
}


def _import_unet2d() -> Any:
    try:
        from diffusers import UNet2DModel
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"the DiffFace network needs diffusers; install it with `{DIFFUSERS_HINT}`") from err
    return UNet2DModel


class DiffFaceUNet(nn.Module):
    """DiffFace's ADM UNet as a ``diffusers.UNet2DModel`` plus the identity MLP.

    ``emb = time_embedding(t) + id_mlp(identity)``, exactly DiffFace's ``time_embed(t) + id_embed(src_id)``.

    Args:
        image_size: side of the square input.
        in_channels: image channels.
        model_channels: width of the first level (ADM ``num_channels``; DiffFace: 256).
        channel_mult: width multiplier of each level; one level per entry, each but the last halves the size.
        num_res_blocks: residual blocks per level (the decoder has one more).
        attention_resolutions: feature-map sides (px, at ``image_size``) with self-attention after every
            residual block, as ADM's ``attention_resolutions``; the middle block always has attention.
        num_head_channels: channels per attention head.
        id_dim: size of the identity embedding (ArcFace: 512; dlib: 128).
        learn_sigma: predict the variance interpolation too (6 output channels for RGB).
        dropout: dropout inside the residual blocks (training only).
        norm_num_groups: GroupNorm groups (ADM: 32); every level's width must be divisible by it.

    Raises:
        ValueError: a size or width that the network cannot have, naming the argument.
    """

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        model_channels: int = 256,
        channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        num_head_channels: int = 64,
        id_dim: int = 512,
        learn_sigma: bool = True,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        levels = len(channel_mult)
        if image_size % (2 ** (levels - 1)):
            raise ValueError(
                f"image_size={image_size} must be divisible by 2**(len(channel_mult)-1)={2 ** (levels - 1)}; "
                "change image_size or channel_mult"
            )
        widths = [model_channels * m for m in channel_mult]
        for w in widths:
            if w % norm_num_groups or w % num_head_channels:
                raise ValueError(
                    f"every level width (model_channels*channel_mult = {widths}) must be divisible by "
                    f"norm_num_groups={norm_num_groups} and num_head_channels={num_head_channels}"
                )
        self.config: dict[str, Any] = {
            "image_size": image_size,
            "in_channels": in_channels,
            "model_channels": model_channels,
            "channel_mult": tuple(int(m) for m in channel_mult),
            "num_res_blocks": num_res_blocks,
            "attention_resolutions": tuple(int(r) for r in attention_resolutions),
            "num_head_channels": num_head_channels,
            "id_dim": id_dim,
            "learn_sigma": learn_sigma,
            "dropout": dropout,
            "norm_num_groups": norm_num_groups,
        }
        self.attention_levels = attention_levels(image_size, len(channel_mult), attention_resolutions)
        down = tuple("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in self.attention_levels)
        up = tuple("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(self.attention_levels))
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        time_dim = 4 * model_channels
        self.unet = _import_unet2d()(
            sample_size=image_size,
            in_channels=in_channels,
            out_channels=self.out_channels,
            layers_per_block=num_res_blocks,
            block_out_channels=tuple(widths),
            down_block_types=down,
            up_block_types=up,
            downsample_type="resnet",  # ADM resblock_updown: avg-pool inside a ResBlock
            upsample_type="resnet",  # nearest-neighbour inside a ResBlock
            resnet_time_scale_shift="scale_shift",  # ADM use_scale_shift_norm: h*(1+s)+b
            attention_head_dim=num_head_channels,
            attn_norm_num_groups=norm_num_groups,  # else the middle attention has no GroupNorm (ADM's has)
            norm_num_groups=norm_num_groups,
            norm_eps=1e-5,
            flip_sin_to_cos=True,  # [cos, sin] as ADM's timestep_embedding
            freq_shift=0,
            class_embed_type="identity",
            dropout=dropout,
        )
        self.id_mlp = nn.Sequential(nn.Linear(id_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

    def forward(self, x: Tensor, timesteps: Tensor, identity: Tensor) -> Tensor:
        """Predict the noise (and the variance interpolation).

        Args:
            x: noisy images ``(B, C, S, S)`` in the diffusion's space (x_0 in [-1, 1]).
            timesteps: ``(B,)`` timesteps of the 1000-step schedule (float or long; respaced samplers pass the
                original step numbers).
            identity: ``(B, id_dim)`` identity embeddings (L2-normalised; zeros: no identity).

        Returns:
            ``(B, C, S, S)`` eps, or ``(B, 2C, S, S)`` [eps, v] when ``learn_sigma``.
        """
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(x.shape[0])
        labels = self.id_mlp(identity.to(x.dtype))
        return self.unet(x, timesteps, class_labels=labels).sample


def attention_levels(image_size: int, levels: int, attention_resolutions: Sequence[int]) -> tuple[bool, ...]:
    """Which encoder levels have attention: level ``i`` works at ``image_size / 2**i`` px."""
    sides = {int(r) for r in attention_resolutions}
    return tuple((image_size // 2**i) in sides for i in range(levels))


# ------------------------------------------------------------------------------------------- diffusion


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """guided-diffusion's ``space_timesteps(T, str(count))`` for one section: evenly spaced, both ends kept.

    Args:
        num_timesteps: steps of the original schedule (1000).
        count: steps to keep (DiffFace: 100).

    Returns:
        ``count`` sorted original step numbers, ``round(i * (T - 1) / (count - 1))`` (0 and T-1 included).

    Raises:
        ValueError: ``count`` outside ``[1, num_timesteps]``.
    """
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"timestep_respacing must be in [1, {num_timesteps}], got {count}")
    if count == 1:
        return [num_timesteps - 1]
    stride = (num_timesteps - 1) / (count - 1)
    steps, cur = [], 0.0
    for _ in range(count):
        steps.append(round(cur))
        cur += stride
    return sorted(set(steps))


def _extract(values: Tensor, t: Tensor, ndim: int) -> Tensor:
    return values.to(t.device)[t].float().view(-1, *([1] * (ndim - 1)))


def _normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Log-likelihood of 8-bit data x in [-1, 1] under a Gaussian discretised into 256 bins (ADM)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


class GaussianDiffusion:
    """guided-diffusion's DDPM with learned-range variance (eps prediction), optionally respaced.

    The tensors are float64 on the CPU and looked up per step (cheap); the model is called with the original
    step numbers (:attr:`timestep_map`), as guided-diffusion's respaced ``_WrappedModel`` does
    (``rescale_timesteps`` with 1000 steps is the identity).

    Args:
        betas: ``(T,)`` noise schedule.
        timestep_map: original step number of each step (None: ``0..T-1``).
    """

    def __init__(self, betas: Tensor, timestep_map: Sequence[int] | None = None) -> None:
        self.betas = betas.double()
        self.num_timesteps = len(betas)
        self.timestep_map = torch.tensor(
            list(timestep_map) if timestep_map is not None else list(range(self.num_timesteps))
        )
        alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1).sqrt()
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the first posterior variance is 0: clip the log to the second, as guided-diffusion does
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = self.betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)

    @classmethod
    def linear(cls, num_timesteps: int = 1000, respacing: int | None = None) -> GaussianDiffusion:
        """ADM's linear schedule (betas 1e-4..0.02 scaled to ``1000 / num_timesteps``), optionally respaced.

        Args:
            num_timesteps: steps of the training schedule.
            respacing: keep only this many evenly spaced steps (:func:`space_timesteps`); None keeps all.
        """
        scale = 1000 / num_timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
        base = cls(betas)
        if respacing is None or respacing == num_timesteps:
            return base
        return base.respaced(space_timesteps(num_timesteps, respacing))

    def respaced(self, use_timesteps: Sequence[int]) -> GaussianDiffusion:
        """The schedule restricted to ``use_timesteps`` (guided-diffusion's ``SpacedDiffusion``)."""
        keep = sorted(int(t) for t in use_timesteps)
        betas, last = [], 1.0
        for i, ac in enumerate(self.alphas_cumprod.tolist()):
            if i in keep:
                betas.append(1.0 - ac / last)
                last = ac
        return GaussianDiffusion(torch.tensor(betas, dtype=torch.float64), [int(self.timestep_map[i]) for i in keep])

    # -------------------------------------------------------------------------------------------- q
    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0): ``sqrt(ab_t) x_0 + sqrt(1 - ab_t) noise``; ``t`` are (respaced) step indices."""
        n = x_start.dim()
        return _extract(self.sqrt_alphas_cumprod, t, n) * x_start + _extract(
            self.sqrt_one_minus_alphas_cumprod, t, n
        ) * noise.to(x_start.dtype)

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        n = x_t.dim()
        mean = _extract(self.posterior_mean_coef1, t, n) * x_start + _extract(self.posterior_mean_coef2, t, n) * x_t
        return mean, _extract(self.posterior_log_variance_clipped, t, n).expand_as(x_t)

    # -------------------------------------------------------------------------------------------- p
    def p_mean_variance(self, model_output: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = True) -> dict:
        """p(x_{t-1} | x_t) from the network output (learned range when it has 2C channels, else fixed small).

        Args:
            model_output: ``(B, 2C, H, W)`` [eps, v] or ``(B, C, H, W)`` eps.
            x_t: ``(B, C, H, W)``.
            t: ``(B,)`` long step indices of this (possibly respaced) schedule.
            clip_denoised: clamp the predicted x_0 to [-1, 1].

        Returns:
            ``mean``, ``variance``, ``log_variance``, ``pred_xstart``, ``eps`` tensors shaped like ``x_t``.
        """
        n, c = x_t.dim(), x_t.shape[1]
        if model_output.shape[1] == 2 * c:
            eps, v = model_output.split(c, dim=1)
            min_log = _extract(self.posterior_log_variance_clipped, t, n)
            max_log = _extract(torch.log(self.betas), t, n)
            frac = (v + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
        else:
            eps = model_output
            log_variance = _extract(self.posterior_log_variance_clipped, t, n).expand_as(x_t)
        pred_xstart = (
            _extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t
            - _extract(self.sqrt_recipm1_alphas_cumprod, t, n) * eps
        )
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _ = self.q_posterior(pred_xstart, x_t, t)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    def model_timesteps(self, t: Tensor) -> Tensor:
        """The original step numbers to feed the network for (respaced) indices ``t``."""
        return self.timestep_map.to(t.device)[t]

    # ------------------------------------------------------------------------------------------ loss
    def training_losses(self, model_output: Tensor, x_start: Tensor, x_t: Tensor, t: Tensor, noise: Tensor) -> dict:
        """ADM's hybrid loss (``L_simple + L_vlb``); the vlb term trains only the variance (mean detached).

        Args:
            model_output: ``(B, 2C, H, W)`` [eps, v] (or ``(B, C, H, W)`` eps: ``vb`` is then zero).
            x_start: x_0 ``(B, C, H, W)`` in [-1, 1].
            x_t: ``(B, C, H, W)`` noised with ``noise`` at ``t``.
            t: ``(B,)`` long step indices.
            noise: the noise used.

        Returns:
            ``mse`` ``(B,)`` (mean over pixels of the eps error) and ``vb`` ``(B,)`` in bits per dimension,
            scaled by ``num_timesteps / 1000`` as guided-diffusion does for the hybrid loss.
        """
        c = x_start.shape[1]
        eps = model_output[:, :c]
        mse = (eps - noise).pow(2).mean(dim=(1, 2, 3))
        if model_output.shape[1] != 2 * c:
            return {"mse": mse, "vb": torch.zeros_like(mse)}
        frozen = torch.cat([eps.detach(), model_output[:, c:]], dim=1)
        out = self.p_mean_variance(frozen, x_t, t, clip_denoised=False)
        true_mean, true_log_var = self.q_posterior(x_start, x_t, t)
        kl = _normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"]).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -_discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = nll.mean(dim=(1, 2, 3)) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl) * (self.num_timesteps / 1000.0)
        return {"mse": mse, "vb": vb}


def identity_or_zeros(identity: Tensor | None, batch: int, dim: int, device: torch.device) -> Tensor:
    """``identity`` L2-normalised with NaN rows (no face found) set to zeros; zeros when None."""
    if identity is None:
        return torch.zeros(batch, dim, device=device)
    identity = identity.to(device, torch.float32)
    bad = ~torch.isfinite(identity).all(dim=1, keepdim=True)
    return F.normalize(torch.where(bad, torch.zeros_like(identity), identity), dim=1)
