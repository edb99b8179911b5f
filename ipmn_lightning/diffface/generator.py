"""DiffFace face swapping on our diffusers port: the guided sampler and the ``diffface`` mask generator.

Sampling follows DiffFace's ``edit_image_by_prompt`` (methods §4.2), with x_p (``protected``) as the target
whose scene is kept and x_r (``replacement``) as the identity source:

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

Recogniser and parser plug in as callables on ``(B, 3, H, W)`` images in [0, 1]. :func:`load_identity_model`
and :func:`load_face_parser` read them from local paths (nothing is downloaded), with DiffFace's pre-processing
(ArcFace at 112 px, unit-norm 512-d output; BiSeNet at 512 px, ImageNet normalisation, 19 classes): plain state
dicts in the reference layouts (:mod:`ipmn_lightning.diffface.arcface`: InsightFace_Pytorch's IR-SE50 or DiffFace's
``Arcface.tar`` ResNet; :mod:`ipmn_lightning.diffface.bisenet`: face-parsing.PyTorch's BiSeNet, DiffFace's
``FaceParser.pth``), read ``weights_only`` and strictly, or ``.pt2`` / TorchScript exports
(:class:`TorchScriptModule`). DiffFace's own ``Arcface.tar`` pickles the whole model, which this library never
unpickles: re-save its ``state_dict`` once where you trust it (the error says how).

**Without a differentiable recogniser** the sampler still swaps the face: the UNet is conditioned on x_r's
identity embedding (which is all our own DiffFaceModule, conditioned on dlib's non-differentiable embedding, can
use), but nothing pulls the result towards x_r's identity during sampling, so identity transfer is weaker than
DiffFace's (the paper's ablation without ID guidance) and relies on how well the model learnt its conditioning.
Without a parser, the face mask is the landmark hull.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ipmn_lightning.diffface.unet import DiffFaceUNet, GaussianDiffusion, identity_or_zeros
from ipmn_lightning.faces.generators import MaskGenerator, MaskOutcome, face_region

__all__ = [
    "PARSER_FACE_CLASSES",
    "DiffFaceMaskGenerator",
    "DiffFaceSampler",
    "FaceNetModule",
    "TorchScriptModule",
    "generate_masks_lightning",
    "landmark_face_mask",
    "load_face_parser",
    "load_identity_model",
]

#: BiSeNet / CelebAMask-HQ classes DiffFace guides and masks: skin, brows, eyes, nose, mouth, lips.
PARSER_FACE_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5, 10, 11, 12, 13)

ImageFn = Callable[[Tensor], Tensor]


#: ImageNet's per-channel mean and std (DiffFace normalises ArcFace's and BiSeNet's inputs with them).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Input normalisations by name: ``imagenet``; ``half`` (mean 0.5, std 0.5: InsightFace_Pytorch's ArcFace);
#: ``diffface`` (DiffFace's parser input: ImageNet's, then its ``SpecificNorm`` ``(x - 0.5) / 0.5`` on top).
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "diffface": (
        tuple(m + 0.5 * s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)),
        tuple(0.5 * s for s in IMAGENET_STD),
    ),
}
#: Suffixes read as plain state dicts (ArcFace / BiSeNet in DiffFace's layouts) unless the file is TorchScript.
STATE_DICT_SUFFIXES = (".pth", ".pt", ".tar")


class FaceNetModule(nn.Module):
    """A frozen recogniser or face parser with its pre-processing, on ``(B, 3, H, W)`` images in [0, 1].

    Args:
        net: the network (frozen here, but differentiable with respect to its input).
        input_size: side the network expects (ArcFace 112, BiSeNet 512); inputs are resized bilinearly.
        mean: per-channel mean of its input normalisation.
        std: per-channel std.
        output_size: resize a dense output (parser logits) back to the input's size.
        normalize_output: L2-normalise a ``(B, D)`` output (recognisers: unit-norm embeddings).
    """

    def __init__(
        self,
        net: nn.Module,
        input_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        output_size: bool = False,
        normalize_output: bool = False,
    ) -> None:
        super().__init__()
        try:
            net.eval()
        except (NotImplementedError, RuntimeError):  # torch.export modules fix their mode at export
            pass
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.output_size = output_size
        self.normalize_output = normalize_output
        self.training = False

    def train(self, mode: bool = True) -> FaceNetModule:
        """Stays in eval mode (a pretrained network's BatchNorm statistics and dropout stay fixed)."""
        self.training = False
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Run on ``(B, 3, H, W)`` images in [0, 1] (differentiably)."""
        x = F.interpolate(images, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        out = self.net((x - self.mean) / self.std)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if self.output_size and out.dim() == 4:
            out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if self.normalize_output and out.dim() == 2:
            out = F.normalize(out, dim=1)
        return out


def _load_exported(file: Path) -> nn.Module:
    if file.suffix == ".pt2":  # torch.export.save (TorchScript's successor)
        return torch.export.load(os.fspath(file)).module()
    return torch.jit.load(os.fspath(file), map_location="cpu").eval()


class TorchScriptModule(FaceNetModule):
    """A TorchScript / ``torch.export`` recogniser or face parser from a local file, with its pre-processing.

    Args:
        path: a ``.pt2`` (``torch.export.save``, exported with a dynamic batch dimension) or TorchScript
            (``torch.jit.save``) file; never downloaded.
        input_size: side the network expects (ArcFace 112, BiSeNet 512).
        mean: per-channel mean of its input normalisation (ImageNet's by default, as DiffFace).
        std: per-channel std.
        output_size: resize a dense output (parser logits) back to the input's size.
        normalize_output: L2-normalise a ``(B, D)`` output.

    Raises:
        FileNotFoundError: naming the path and the argument that takes it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        input_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        output_size: bool = False,
        normalize_output: bool = False,
    ) -> None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: no TorchScript file (identity_model / face_parser take a local torch.jit.save export)"
            )
        super().__init__(_load_exported(file), input_size, mean, std, output_size, normalize_output)


def _face_net_file(path: str | os.PathLike[str], argument: str) -> tuple[Path, str]:
    """The file and how to read it: ``"exported"`` (.pt2 / TorchScript) or ``"state_dict"``."""
    from ipmn_lightning.diffface.face_weights import FaceWeightsError, is_torchscript_file

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{argument}: no file at {file}")
    if file.suffix == ".pt2" or is_torchscript_file(file):
        return file, "exported"
    if file.suffix.lower() in STATE_DICT_SUFFIXES:
        return file, "state_dict"
    raise FaceWeightsError(
        f"{argument}: {file}: expected a state dict (.pth, .pt, .tar), a torch.export .pt2 or a TorchScript file"
    )


def load_identity_model(
    path: str | os.PathLike[str], normalization: str = "auto", argument: str = "--generator.identity_model"
) -> FaceNetModule:
    """The ArcFace recogniser of a local file: 112 px in, ``(B, 512)`` unit-norm embeddings out.

    Args:
        path: a plain state dict (``.pth``/``.pt``/``.tar``) of InsightFace_Pytorch's IR-SE50
            (``model_ir_se50.pth``) or of DiffFace's ``Arcface.tar`` ResNet (re-saved as a state dict), read
            weights-only and strictly (:func:`~ipmn_lightning.diffface.arcface.load_arcface`); or a ``.pt2`` /
            TorchScript export.
        normalization: ``"auto"`` (a state dict: its layout's, 0.5/0.5 for InsightFace_Pytorch, ImageNet's for
            DiffFace's; an export: ImageNet's, as DiffFace feeds its ArcFace), ``"imagenet"`` or ``"half"``.
        argument: the option that took ``path`` (named in errors).

    Raises:
        FileNotFoundError: no such file.
        ~ipmn_lightning.diffface.face_weights.FaceWeightsError: a pickled model or a state dict of another network.
    """
    file, kind = _face_net_file(path, argument)
    if normalization != "auto" and normalization not in ("imagenet", "half"):
        raise ValueError(f"{argument} normalization must be auto, imagenet or half, got {normalization!r}")
    if kind == "exported":
        mean, std = NORMALIZATIONS["imagenet" if normalization == "auto" else normalization]
        return TorchScriptModule(file, 112, mean, std, normalize_output=True)
    from ipmn_lightning.diffface.arcface import ARCFACE_NORMALIZATION, load_arcface

    net, layout = load_arcface(file, argument)
    mean, std = ARCFACE_NORMALIZATION[layout] if normalization == "auto" else NORMALIZATIONS[normalization]
    return FaceNetModule(net, 112, mean, std, normalize_output=True)


def load_face_parser(
    path: str | os.PathLike[str], normalization: str = "imagenet", argument: str = "--generator.face_parser"
) -> FaceNetModule:
    """The BiSeNet face parser of a local file: 512 px in, ``(B, 19, H, W)`` logits at the input's size out.

    Args:
        path: a plain state dict (``.pth``/``.pt``/``.tar``) of face-parsing.PyTorch's ``BiSeNet(n_classes=19)``
            (``79999_iter.pth``, DiffFace's ``FaceParser.pth``), read weights-only and strictly; or a ``.pt2`` /
            TorchScript export.
        normalization: ``"imagenet"`` (what the weights were trained with) or ``"diffface"`` (DiffFace's
            ImageNet normalisation followed by its ``SpecificNorm``, to reproduce its masks exactly).
        argument: the option that took ``path`` (named in errors).

    Raises:
        FileNotFoundError: no such file.
        ~ipmn_lightning.diffface.face_weights.FaceWeightsError: a pickled model or a state dict of another network.
    """
    file, kind = _face_net_file(path, argument)
    if normalization not in ("imagenet", "diffface"):
        raise ValueError(f"{argument} normalization must be imagenet or diffface, got {normalization!r}")
    mean, std = NORMALIZATIONS[normalization]
    if kind == "exported":
        return TorchScriptModule(file, 512, mean, std, output_size=True)
    from ipmn_lightning.diffface.bisenet import load_bisenet

    return FaceNetModule(load_bisenet(file, argument), 512, mean, std, output_size=True)


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


def landmark_face_mask(landmarks: np.ndarray, height: int, width: int, feather: float = 0.03) -> Tensor:
    """A soft face mask from 68 landmarks: the hull grown by 4 % of the face width, feathered inwards.

    Args:
        landmarks: ``(68, 2)`` pixel coordinates.
        height: image height.
        width: image width.
        feather: blur sigma as a fraction of the face width (0: a hard mask).

    Returns:
        ``(1, H, W)`` float in [0, 1]; exactly 0 outside the grown hull.
    """
    region = torch.from_numpy(face_region([landmarks], height, width, dilate=0.04)).float()[None, None]
    if feather > 0:
        sigma = max(0.5, feather * float(np.ptp(np.asarray(landmarks)[:, 0])))
        k = int(2 * math.ceil(3 * sigma) + 1)
        xs = torch.arange(k, dtype=torch.float32) - k // 2
        g = torch.exp(-(xs**2) / (2 * sigma**2))
        g = g / g.sum()
        soft = F.conv2d(F.pad(region, (k // 2,) * 4, mode="replicate"), g.view(1, 1, 1, k))
        soft = F.conv2d(soft, g.view(1, 1, k, 1))
        region = soft * region  # feathered inside, zero outside
    return region[0]


class DiffFaceMaskGenerator(MaskGenerator):
    """The ``diffface`` mask generator: our DiffFace port behind :class:`MaskGenerator`.

    Pairs are swapped one at a time at the network's resolution; x_p is resized to it, the result resized
    back and blended into x_p with the full-resolution face mask, so pixels outside the mask stay exactly x_p's
    at any mask size. The face mask is the landmark hull of x_p (dlib) or, with ``face_parser``, the parser's
    face classes (DiffFace's choice).

    Args:
        checkpoint: our ``.safetensors`` (``ipmn masks convert-diffface``), a DiffFaceModule ``.ckpt`` (its EMA
            weights) or DiffFace's ``Model.pt``.
        identity_model: ArcFace (112 px) for the identity guidance and, for DiffFace's checkpoint, the
            conditioning: a plain state dict (``.pth``/``.pt``/``.tar``: InsightFace_Pytorch's IR-SE50
            ``model_ir_se50.pth``, or DiffFace's ``Arcface.tar`` re-saved as a state dict), or a ``.pt2`` /
            TorchScript export (see :func:`load_identity_model`); None: conditioning only (see the module docstring).
        face_parser: BiSeNet (512 px, 19 classes) for the parsing guidance and the mask: a state dict
            (face-parsing.PyTorch's ``79999_iter.pth``, DiffFace's ``FaceParser.pth``) or an export
            (see :func:`load_face_parser`).
        timestep_respacing: respaced steps.
        skip_timesteps: skipped noisy steps.
        masking_threshold: see :class:`DiffFaceSampler`.
        identity_weight: identity guidance weight.
        parsing_weight: parsing guidance weight.
        background_weight: background guidance weight.
        seed: base seed; each pair's noise is seeded from it and x_p's pixels, so reruns and shards agree.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        feather: landmark-mask feathering (fraction of the face width).
        identity_normalization: ArcFace's input normalisation (``auto``: by the weights' layout; ``imagenet``;
            ``half``: mean and std 0.5).
        parser_normalization: BiSeNet's (``imagenet``, what it was trained with; ``diffface``: DiffFace's
            ImageNet normalisation plus its extra ``(x - 0.5) / 0.5``).
    """

    name = "diffface"

    def __init__(
        self,
        checkpoint: str,
        identity_model: str | None = None,
        face_parser: str | None = None,
        timestep_respacing: int = 100,
        skip_timesteps: int = 25,
        masking_threshold: int = 30,
        identity_weight: float = 6000.0,
        parsing_weight: float = 200.0,
        background_weight: float = 50.0,
        seed: int = 404,
        device: str = "auto",
        feather: float = 0.03,
        identity_normalization: str = "auto",
        parser_normalization: str = "imagenet",
    ) -> None:
        self.checkpoint = checkpoint
        self.identity_model_path = identity_model
        self.face_parser_path = face_parser
        if identity_normalization not in ("auto", "imagenet", "half"):
            raise ValueError(
                f"--generator.identity_normalization must be auto, imagenet or half, got {identity_normalization!r}"
            )
        if parser_normalization not in ("imagenet", "diffface"):
            raise ValueError(
                f"--generator.parser_normalization must be imagenet or diffface, got {parser_normalization!r}"
            )
        for flag, file in (("identity_model", identity_model), ("face_parser", face_parser)):
            if file and not Path(file).expanduser().is_file():
                raise FileNotFoundError(f"--generator.{flag}: no file at {Path(file).expanduser()}")
        self.identity_normalization = identity_normalization
        self.parser_normalization = parser_normalization
        self.sampler_kwargs: dict[str, Any] = {
            "timestep_respacing": timestep_respacing,
            "skip_timesteps": skip_timesteps,
            "masking_threshold": masking_threshold,
            "identity_weight": identity_weight,
            "parsing_weight": parsing_weight,
            "background_weight": background_weight,
        }
        self.seed = seed
        self.device = device
        self.feather = feather
        self._state: dict[str, Any] = {}
        self._analyzer: Any = None
        self._encoder: Any = None
        from ipmn_lightning.diffface.convert import check_diffface_file

        check_diffface_file(checkpoint)  # fail now, naming the argument, rather than in a worker

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_state={}, _analyzer=None, _encoder=None)  # rebuilt in the worker
        return state

    def to(self, device: str | torch.device) -> DiffFaceMaskGenerator:
        """Use ``device`` from now on (Lightning predict passes each rank's device)."""
        self.device = str(device)
        self._state.clear()
        return self

    def _resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _setup(self) -> dict[str, Any]:
        if self._state:
            return self._state
        from ipmn_lightning.diffface.convert import load_diffface

        device = self._resolve_device()
        net, encoder = load_diffface(self.checkpoint)
        net.to(device).requires_grad_(False)
        identity = parser = None
        if self.identity_model_path:
            identity = load_identity_model(self.identity_model_path, self.identity_normalization).to(device)
        if self.face_parser_path:
            parser = load_face_parser(self.face_parser_path, self.parser_normalization).to(device)
        if encoder == "arcface" and identity is None:
            raise ValueError(
                f"{self.checkpoint} is conditioned on ArcFace embeddings: pass --generator.identity_model "
                "with ArcFace's weights (model_ir_se50.pth, or DiffFace's Arcface.tar re-saved as a state dict)"
            )
        sampler = DiffFaceSampler(net, identity_model=identity, face_parser=parser, **self.sampler_kwargs)
        self._state = {"net": net, "encoder": encoder, "identity": identity, "parser": parser, "sampler": sampler}
        return self._state

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """x_p's landmarks for the face mask (dlib; see :meth:`MaskGenerator.landmarks`)."""
        if self._analyzer is None:
            from ipmn_lightning.faces.analysis import DlibFaceAnalyzer

            self._analyzer = DlibFaceAnalyzer()
        return self._analyzer.landmarks(image)

    def _conditioning(self, replacement: Tensor) -> Tensor:
        st = self._state
        if st["encoder"] == "dlib":
            if self._encoder is None:
                from ipmn_lightning.faces.analysis import DlibIdentityEncoder

                self._encoder = DlibIdentityEncoder()
            emb, _ = self._encoder.embed(replacement)
            return emb
        with torch.no_grad():
            return st["identity"](replacement.to(next(st["net"].parameters()).device)).float().cpu()

    def _pair_seed(self, protected: Tensor) -> int:
        digest = hashlib.sha256(protected.detach().cpu().numpy().tobytes()).digest()
        return (self.seed * 1_000_003 + int.from_bytes(digest[:6], "big")) % 2**63

    def generate(
        self,
        protected: Tensor,
        replacement: Tensor,
        protected_landmarks: Sequence[np.ndarray | None] | None = None,
        replacement_landmarks: Sequence[np.ndarray | None] | None = None,
    ) -> list[MaskOutcome]:
        """See :meth:`MaskGenerator.generate`; x_r needs a face for the identity embedding."""
        st = self._setup()
        size = st["net"].config["image_size"]
        outcomes: list[MaskOutcome] = []
        for i in range(protected.shape[0]):
            p, r = protected[i : i + 1].float(), replacement[i : i + 1].float()
            h, w = p.shape[-2:]
            if st["parser"] is not None:
                with torch.no_grad():
                    labels = st["parser"](p.to(next(st["net"].parameters()).device)).argmax(1, keepdim=True).cpu()
                mask = torch.isin(labels, torch.tensor(PARSER_FACE_CLASSES)).float()
                if not mask.any():
                    outcomes.append(MaskOutcome(None, "no face found in the protected image", False, None))
                    continue
            else:
                from ipmn_lightning.faces.analysis import to_uint8_array

                lp = protected_landmarks[i] if protected_landmarks is not None else self.landmarks(to_uint8_array(p[0]))
                if lp is None:
                    outcomes.append(MaskOutcome(None, "no face found in the protected image", False, None))
                    continue
                mask = landmark_face_mask(np.asarray(lp, np.float64), h, w, self.feather)[None]
            cond = self._conditioning(r)
            if not torch.isfinite(cond).all():
                outcomes.append(MaskOutcome(None, "no face found in the replacement image", True, False))
                continue
            small_p = F.interpolate(p, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            small_m = F.interpolate(mask, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            gen = torch.Generator().manual_seed(self._pair_seed(p))
            out = st["sampler"].sample(small_p.clamp(0, 1), small_m.clamp(0, 1), cond, replacement=r, generator=gen)
            up = F.interpolate(out.cpu(), size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
            x_m = p * (1 - mask) + up * mask  # exactly x_p where the full-resolution mask is 0
            outcomes.append(MaskOutcome(x_m[0], None, True, True))
        return outcomes


# ------------------------------------------------------------------------------- Lightning predict


def generate_masks_lightning(
    root: str | os.PathLike[str],
    generator: MaskGenerator,
    source: str = "folder",
    store: str | os.PathLike[str] | None = None,
    image_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    identity_sample: int = 32,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
) -> dict[str, Any]:
    """Fill a mask store as a Lightning predict: one shard of the rows per process (DDP-ready).

    Every rank runs :func:`~ipmn_lightning.workflows.masks.generate_masks` on shard ``rank/world_size`` with the
    generator on its own device, so it writes its own masks atomically and logs its rows to its own
    ``.generate/rows-K-of-N.jsonl``; a rerun (any number of ranks) skips the rows already logged ``ok``. After
    a barrier, rank 0 folds every shard's log into ``pairs.csv`` (re-pairings, dropped rows).

    Args:
        root: the dataset folder.
        generator: the mask generator (moved to each rank's device when it has ``to``).
        source: ``"celeba"`` or ``"folder"``.
        store: the store folder (default ``<root>/masks_store``).
        image_size: mask side.
        seed: pairing seed.
        progress: progress bars.
        identity_sample: see ``generate_masks``.
        accelerator: Lightning accelerator (``"gpu"`` for GPUs).
        devices: processes per node (GPUs).
        num_nodes: nodes (start them as in docs/scaling.md).
        strategy: Lightning strategy (``"ddp"`` for several devices).

    Returns:
        This rank's summary (its shard's rows); on rank 0 also ``"store_rows_done"`` (the rows of every shard
        with a mask, after the fold) and ``"world_size"``.
    """
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from ipmn_lightning.workflows.masks import generate_masks

    kwargs: dict[str, Any] = {
        "source": source,
        "store": store,
        "image_size": image_size,
        "seed": seed,
        "progress": progress,
        "identity_sample": identity_sample,
    }

    class _Shards(torch.utils.data.Dataset):
        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> int:
            return i

    class _Runner(pl.LightningModule):
        def predict_step(self, batch: Tensor, batch_idx: int) -> dict[str, Any]:
            world, rank = self.trainer.world_size, self.trainer.global_rank
            if hasattr(generator, "to"):
                generator.to(self.device)
            return generate_masks(root, generator=generator, workers=1, shard=(rank, world), **kwargs)

    trainer = pl.Trainer(
        inference_mode=False,  # the guidance backpropagates through the UNet: no inference tensors
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    results = trainer.predict(_Runner(), DataLoader(_Shards(trainer.world_size), batch_size=1)) or []
    trainer.strategy.barrier()
    summary = next((r for r in results if isinstance(r, dict)), {})
    if not trainer.is_global_zero:
        return summary
    # every shard is logged now: fold the logs into pairs.csv (re-pairings, dropped rows) without redoing any row
    from ipmn_lightning.data.mask_store import read_pairs
    from ipmn_lightning.workflows.masks import STATE_DIR, _finalize_pairs, _read_logs

    store_path = Path(store).expanduser() if store else Path(root).expanduser() / "masks_store"
    logged = _read_logs(store_path / STATE_DIR)
    updated = _finalize_pairs(store_path, read_pairs(store_path), logged, image_size)
    summary["pairs_csv_updated"] = bool(summary.get("pairs_csv_updated")) or updated
    summary["store_rows_done"] = sum(r.status == "ok" for r in logged.values())
    summary["world_size"] = trainer.world_size
    return summary


def tool_options(options: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``--generator.*`` options into the generator's and the Lightning trainer's."""
    opts = dict(options or {})
    trainer = {k: opts.pop(k) for k in ("accelerator", "devices", "num_nodes", "strategy") if k in opts}
    return opts, trainer
