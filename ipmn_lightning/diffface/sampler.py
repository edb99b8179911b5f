"""DiffFace's guided, mask-blended DDPM sampler on our diffusers port.

Sampling follows ``edit_image_by_prompt`` of DiffFace (github.com/hxngiee/DiffFace @ b7bef83), with x_p
(``protected``) as the target whose scene is kept and x_r (``replacement``) as the identity source:

1. Noise x_p to step ``T - skip - 1`` of the respaced schedule (100 steps, skip 25: 75 denoising steps).
2. At each step, predict mean and learned variance, and move the mean by ``variance * grad``, where grad is
   minus the gradient of the facial-guidance loss on ``x_in = pred_x0 * f + x_t * (1 - f)`` (f = sqrt(1 - ab_t))
   with respect to x_t (backpropagated through the UNet):

   * identity: ``6000 * (1 - cos(E(aug(x_in * mask)), E(x_r)))`` for a differentiable recogniser E
     (ArcFace in DiffFace), averaged over random affine augmentations;
   * parsing: ``200 * L1(P(x_in), P(x_p))`` on the face classes of a face parser P (BiSeNet in DiffFace);
   * background: ``50 * MSE(x_in, x_p)``.

   Gaze guidance (DiffFace's optional third term) is not implemented.
3. Blend with the soft face mask: ``x = x * m_t + q(x_p, t-1) * (1 - m_t)``, where ``m_t`` ramps from 0 to the
   mask over the first ``steps - masking_threshold`` steps; finally ``x_m = x_p (1 - mask) + x * mask``, so every
   pixel where the mask is 0 is x_p's, bit for bit.

The recogniser and parser are :mod:`ipmn_lightning.diffface.facenets` callables. **Without a differentiable
recogniser** the sampler still swaps the face: the UNet is conditioned on x_r's identity embedding (which is all
our own DiffFaceModule, conditioned on dlib's non-differentiable embedding, can use), but nothing pulls the result
towards x_r's identity during sampling, so identity transfer is weaker than DiffFace's (the paper's ablation without
ID guidance) and relies on how well the model learnt its conditioning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from ipmn_lightning.diffface.facenets import PARSER_FACE_CLASSES, ImageFn
from ipmn_lightning.diffface.unet import DiffFaceUNet, GaussianDiffusion, identity_or_zeros

__all__ = ["DiffFaceSampler"]


def _random_affine(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` random affine views of each image (rotation ±15°, scale 0.9-1.1, shift ±5 %): ``(n*B, C, H, W)``."""
    b = x.shape[0]
    u = torch.rand(n * b, 4, generator=generator).to(x.device)
    ang = (u[:, 0] * 2 - 1) * math.radians(15)
    scale = 0.9 + 0.2 * u[:, 1]
    tx, ty = (u[:, 2] * 2 - 1) * 0.1, (u[:, 3] * 2 - 1) * 0.1
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.dtype)
    xs = x.repeat(n, 1, 1, 1)
    grid = F.affine_grid(theta, list(xs.shape), align_corners=False)
    return F.grid_sample(xs, grid, padding_mode="border", align_corners=False)


class DiffFaceSampler:
    """DiffFace's guided, mask-blended DDPM sampler (see the module docstring).

    Args:
        net: the identity-conditioned UNet.
        timestep_respacing: steps of the respaced schedule (DiffFace: 100).
        skip_timesteps: steps skipped at the noisy end (DiffFace: 25; x_p noised to step
            ``timestep_respacing - skip_timesteps - 1``).
        masking_threshold: the soft mask reaches the full mask this many steps before the end (DiffFace: 30).
        diffusion_steps: steps of the training schedule (1000).
        identity_weight: weight of the identity guidance (needs ``identity_model``).
        parsing_weight: weight of the parsing guidance (needs ``face_parser``).
        background_weight: weight of the background guidance.
        identity_model: differentiable recogniser on [0, 1] images -> ``(B, D)``; None: no identity guidance.
        face_parser: parser on [0, 1] images -> ``(B, 19, H, W)`` logits; None: no parsing guidance.
        parser_classes: parser classes of the face.
        augmentations: random affine views averaged in the identity loss (DiffFace: 8).
    """

    def __init__(
        self,
        net: DiffFaceUNet,
        timestep_respacing: int = 100,
        skip_timesteps: int = 25,
        masking_threshold: int = 30,
        diffusion_steps: int = 1000,
        identity_weight: float = 6000.0,
        parsing_weight: float = 200.0,
        background_weight: float = 50.0,
        identity_model: ImageFn | None = None,
        face_parser: ImageFn | None = None,
        parser_classes: Sequence[int] = PARSER_FACE_CLASSES,
        augmentations: int = 8,
    ) -> None:
        if not 0 <= skip_timesteps < timestep_respacing:
            raise ValueError(
                f"skip_timesteps must be in [0, timestep_respacing={timestep_respacing}), got {skip_timesteps}"
            )
        self.net = net
        self.diffusion = GaussianDiffusion.linear(diffusion_steps, timestep_respacing)
        self.skip_timesteps = skip_timesteps
        self.masking_threshold = masking_threshold
        self.identity_weight = identity_weight if identity_model is not None else 0.0
        self.parsing_weight = parsing_weight if face_parser is not None else 0.0
        self.background_weight = background_weight
        self.identity_model = identity_model
        self.face_parser = face_parser
        self.parser_classes = list(parser_classes)
        self.augmentations = augmentations

    @property
    def guided(self) -> bool:
        """Whether any guidance term is on (each step then backpropagates through the UNet)."""
        return (self.identity_weight + self.parsing_weight + self.background_weight) > 0

    def _guidance_loss(
        self, x_in: Tensor, targ01: Tensor, mask: Tensor, id_target: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        x01 = (x_in + 1) / 2
        loss = x_in.new_zeros(())
        if self.identity_weight and id_target is not None and self.identity_model is not None:
            views = _random_affine(x01 * mask, self.augmentations, generator)
            emb = F.normalize(self.identity_model(views), dim=1)
            tgt = F.normalize(id_target, dim=1).repeat(self.augmentations, 1)
            loss = loss + self.identity_weight * (1 - (emb * tgt).sum(1)).mean()
        if self.parsing_weight and self.face_parser is not None:
            seg = self.face_parser(x01).softmax(1)[:, self.parser_classes]
            with torch.no_grad():
                ref = self.face_parser(targ01).softmax(1)[:, self.parser_classes]
            loss = loss + self.parsing_weight * (seg - ref).abs().mean()
        if self.background_weight:
            loss = loss + self.background_weight * F.mse_loss(x_in, targ01 * 2 - 1)
        return loss

    def sample(
        self,
        protected: Tensor,
        mask: Tensor,
        identity: Tensor,
        replacement: Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Swap the faces of a batch at the network's resolution.

        Args:
            protected: x_p ``(B, 3, S, S)`` float in [0, 1] (S: the network's ``image_size``).
            mask: ``(B, 1, S, S)`` float in [0, 1]: where the face may change (0: x_p is kept exactly).
            identity: ``(B, id_dim)`` the conditioning embedding of x_r (NaN or zero rows: unconditional).
            replacement: x_r ``(B, 3, H, W)`` in [0, 1] for the identity guidance (its ``identity_model``
                embedding is the target); None disables that term.
            generator: CPU random generator; the same seed gives the same result.
            progress: called with the number of steps done after each step.

        Returns:
            x_m ``(B, 3, S, S)`` float in [0, 1], equal to ``protected`` wherever ``mask == 0``.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        if self.guided and torch.is_inference_mode_enabled():
            raise RuntimeError(
                "DiffFaceSampler: the guidance backpropagates through the UNet, which torch.inference_mode forbids; "
                "call it under torch.no_grad() (Lightning: Trainer(inference_mode=False))"
            )
        device = next(self.net.parameters()).device
        dtype = next(self.net.parameters()).dtype
        protected = protected.to(device, torch.float32)
        mask = mask.to(device, torch.float32)
        b = protected.shape[0]
        cond = identity_or_zeros(identity, b, self.net.config["id_dim"], device).to(dtype)
        id_target = None
        if self.identity_weight and replacement is not None and self.identity_model is not None:
            with torch.no_grad():
                id_target = self.identity_model(replacement.to(device, torch.float32)).float()
        diff = self.diffusion
        targ = protected * 2 - 1
        start = diff.num_timesteps - self.skip_timesteps - 1
        steps = start + 1

        def randn() -> Tensor:
            return torch.randn(protected.shape, generator=generator).to(device)

        x = diff.q_sample(targ, torch.full((b,), start, dtype=torch.long, device=device), randn()).float()
        for i in range(start, -1, -1):
            t = torch.full((b,), i, dtype=torch.long, device=device)
            model_t = diff.model_timesteps(t).float()
            if self.guided:
                with torch.enable_grad():
                    x_req = x.detach().requires_grad_(True)
                    out = diff.p_mean_variance(self.net(x_req.to(dtype), model_t, cond).float(), x_req, t)
                    fac = diff.sqrt_one_minus_alphas_cumprod[i].item()
                    x_in = out["pred_xstart"] * fac + x_req * (1 - fac)
                    loss = self._guidance_loss(x_in, protected, mask, id_target, generator)
                    grad = -torch.autograd.grad(loss, x_req)[0]
                mean = out["mean"].detach() + out["variance"].detach() * grad
                log_var = out["log_variance"].detach()
            else:
                with torch.no_grad():
                    out = diff.p_mean_variance(self.net(x.to(dtype), model_t, cond).float(), x, t)
                mean, log_var = out["mean"], out["log_variance"]
            noise = randn()
            sample = mean + (torch.exp(0.5 * log_var) * noise if i > 0 else 0.0)
            ramp = min(1.0, (steps - (i + 1)) / max(1, steps - self.masking_threshold))
            soft = mask * ramp
            if i > 0:
                background = diff.q_sample(targ, torch.full((b,), i - 1, dtype=torch.long, device=device), randn())
            else:
                background = targ
            x = (sample * soft + background * (1 - soft)).detach()
            if progress is not None:
                progress(start - i + 1)
        result = ((x + 1) / 2).clamp(0, 1)
        return protected * (1 - mask) + result * mask
