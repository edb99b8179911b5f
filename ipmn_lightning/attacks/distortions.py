"""Image distortions an image meets between the owner's service and a verifier, and a random mix of them.

Beyond the paper: IPMN's extractor R (§3.3) is trained on clean images only, so a watermarked image that was
saved as JPEG, resized or blurred on its way no longer verifies. :class:`RandomDistortion` is the training
augmentation behind the ``robust_extraction`` option of phases 1 and 3b; the plain functions are also the
attacks used by the robustness benchmarks.

Every function takes and returns (B, 3, H, W) float images in [0, 1]. Where the real operation is not
differentiable (JPEG, 8-bit rounding) the gradient is passed straight through (the identity), which is what
a differentiable JPEG with straight-through rounding gives too, since its colour transform and DCT are
orthogonal linear maps that cancel in the backward pass.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from ipmn_lightning.metrics.functional import quantize_8bit

__all__ = [
    "DISTORTION_KINDS",
    "RandomDistortion",
    "gaussian_blur",
    "gaussian_noise",
    "jpeg",
    "quantize_8bit_ste",
    "resize_round_trip",
]

DISTORTION_KINDS = ("jpeg", "resize", "blur", "noise")


def _straight_through(images: Tensor, distorted: Tensor) -> Tensor:
    """``distorted`` in the forward pass, the identity's gradient in the backward pass."""
    return images + (distorted - images).detach()


def quantize_8bit_ste(images: Tensor) -> Tensor:
    """Clamp and round to 8 bits like a saved PNG; straight-through gradient."""
    return _straight_through(images, quantize_8bit(images.detach()))


@torch.no_grad()
def _jpeg_round_trip(images: Tensor, quality: int) -> Tensor:
    # Pillow's libjpeg with its defaults (4:2:0 chroma), as most software saves a JPEG.
    pixels = images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as reread:
            decoded.append(np.asarray(reread.convert("RGB")))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return out.to(device=images.device, dtype=images.dtype).div(255)


def jpeg(images: Tensor, quality: int) -> Tensor:
    """Encode and decode as a real baseline JPEG (libjpeg through Pillow); straight-through gradient.

    The codec runs on the host, so on a GPU each call copies the batch to the CPU and back (one sync). That
    is the price of the exact codec in the optional ``robust_extraction`` training; nothing else calls it in
    a training step.

    Args:
        images: (B, 3, H, W) in [0, 1].
        quality: JPEG quality, 1-100.

    Returns:
        (B, 3, H, W) in [0, 1], multiples of 1/255.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    return _straight_through(images, _jpeg_round_trip(images.detach(), int(quality)))


def resize_round_trip(images: Tensor, scale: float) -> Tensor:
    """Shrink by ``scale`` (antialiased bilinear) and enlarge back, as an image re-shared at a lower size.

    Args:
        images: (B, 3, H, W) in [0, 1].
        scale: the intermediate size as a fraction of H and W, in (0, 1].
    """
    size = images.shape[-2:]
    small = [max(1, round(s * scale)) for s in size]
    down = F.interpolate(images, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def gaussian_blur(images: Tensor, sigma: float, kernel_size: int = 7) -> Tensor:
    """Gaussian blur (Table 11 uses a 7x7 kernel).

    Args:
        images: (B, 3, H, W) in [0, 1].
        sigma: standard deviation in pixels.
        kernel_size: odd side of the kernel.
    """
    return TF.gaussian_blur(images, kernel_size=[kernel_size, kernel_size], sigma=[sigma, sigma])


def gaussian_noise(images: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Additive Gaussian noise on [0, 1] images, clamped.

    Args:
        images: (B, 3, H, W) in [0, 1].
        std: noise standard deviation on the [0, 1] scale (Table 11: 0.001).
        generator: random generator (default: torch's global one).
    """
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + std * noise).clamp(0, 1)


class RandomDistortion(nn.Module):
    """Each image gets one random distortion (or none), then the 8-bit rounding of a saved file.

    The kinds and their parameter ranges: JPEG at one of ``jpeg_qualities``; a resize round trip through
    ``resize_scale`` of the side; Gaussian blur with σ in ``blur_sigma`` (7x7); Gaussian noise with std in
    ``noise_std``. One parameter is drawn per kind per call and shared by that call's images of that kind.
    The choices and parameters come from Python's ``random`` and the noise from torch's generator, both
    seeded by ``seed_everything`` and saved by ``ExactResume``. Drawing the choices on the host means no
    tensor is read back, so a GPU step does not wait for them.

    Args:
        p_clean: probability that an image is only rounded to 8 bits.
        kinds: which distortions to draw from (subset of ``jpeg``, ``resize``, ``blur``, ``noise``).
        jpeg_qualities: the JPEG qualities drawn from.
        resize_scale: (low, high) of the resize fraction.
        blur_sigma: (low, high) of the blur σ in pixels.
        noise_std: (low, high) of the noise std on [0, 1].
    """

    def __init__(
        self,
        p_clean: float = 0.25,
        kinds: Sequence[str] = DISTORTION_KINDS,
        jpeg_qualities: Sequence[int] = (50, 65, 75, 90),
        resize_scale: tuple[float, float] = (0.5, 0.9),
        blur_sigma: tuple[float, float] = (0.3, 1.2),
        noise_std: tuple[float, float] = (0.0, 0.03),
    ) -> None:
        super().__init__()
        if not 0.0 <= p_clean <= 1.0:
            raise ValueError(f"p_clean must be in [0, 1], got {p_clean}")
        unknown = sorted(set(kinds) - set(DISTORTION_KINDS))
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {DISTORTION_KINDS}, got {list(kinds)}")
        if not jpeg_qualities or any(not 1 <= q <= 100 for q in jpeg_qualities):
            raise ValueError(f"jpeg_qualities must be in 1..100, got {list(jpeg_qualities)}")
        self.p_clean = p_clean
        self.kinds = tuple(kinds)
        self.jpeg_qualities = tuple(int(q) for q in jpeg_qualities)
        self.resize_scale, self.blur_sigma, self.noise_std = resize_scale, blur_sigma, noise_std

    @staticmethod
    def _uniform(bounds: tuple[float, float]) -> float:
        return random.uniform(*bounds)

    def _distort(self, kind: str, images: Tensor) -> Tensor:
        if kind == "jpeg":
            return jpeg(images, random.choice(self.jpeg_qualities))
        if kind == "resize":
            return resize_round_trip(images, self._uniform(self.resize_scale))
        if kind == "blur":
            return gaussian_blur(images, max(self._uniform(self.blur_sigma), 1e-3))
        return gaussian_noise(images, self._uniform(self.noise_std))

    def forward(self, images: Tensor) -> Tensor:
        """Distort a batch.

        Args:
            images: (B, 3, H, W) in [0, 1].

        Returns:
            (B, 3, H, W) in [0, 1], multiples of 1/255.
        """
        weights = [(1 - self.p_clean) / len(self.kinds)] * len(self.kinds) + [self.p_clean]
        choice = random.choices([*self.kinds, None], weights=weights, k=images.shape[0])
        out = images
        for kind in self.kinds:
            rows = [i for i, c in enumerate(choice) if c == kind]
            if rows:
                index = torch.tensor(rows, device=images.device)
                out = out.index_copy(0, index, self._distort(kind, images.index_select(0, index)))
        return quantize_8bit_ste(out)
