"""The privacy metric SR_P (paper §4.4.2, Table 11), its mirror the utility, and the Table 11 attacks.

SR_P is "the ratio of processed images that cannot be correctly recognized by the face recognition
system". The paper asks Baidu's cloud service; here any :class:`~ipmn_lightning.faces.analysis.IdentityEncoder`
decides (dlib's by default): a processed image (a mask x_m, a protected image x_wmf) is *recognised* when
a face is found in it and its distance to the protected face x_p is below the recogniser's threshold.
No face found counts as not recognised (the service could not identify anyone) and is counted apart, so
a generator that destroys faces does not pass unnoticed. The utility is the mirror for the receiver: the
share of recovered faces x'_p that *are* recognised as x_p.

The attacks of Table 11 (Gaussian noise σ 0.001 on [0, 1] images, Gaussian blur with a 7×7 kernel, JPEG
quality 30) are :func:`table11_attacks`, built on the plain functions of :mod:`ipmn_lightning.attacks.distortions`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

from ipmn_lightning.attacks.distortions import gaussian_blur, gaussian_noise, jpeg
from ipmn_lightning.faces.analysis import IdentityEncoder

__all__ = [
    "TABLE11_BLUR_KERNEL",
    "TABLE11_BLUR_SIGMA",
    "TABLE11_JPEG_QUALITY",
    "TABLE11_NOISE_STD",
    "IdentityMatchRate",
    "PrivacySuccessRate",
    "RecoveryUtility",
    "table11_attacks",
]

TABLE11_NOISE_STD = 0.001
"""Gaussian noise standard deviation on [0, 1] images (Table 11)."""
TABLE11_BLUR_KERNEL = 7
"""Gaussian blur kernel side (Table 11)."""
TABLE11_BLUR_SIGMA = 1.4
"""The paper gives only the kernel; 1.4 px is OpenCV's and torchvision's default sigma for a 7×7 kernel."""
TABLE11_JPEG_QUALITY = 30
"""JPEG quality (Table 11: 30%)."""


def table11_attacks(seed: int = 0) -> dict[str, Callable[[Tensor], Tensor]]:
    """The image attacks of Table 11, plus ``"none"``.

    Args:
        seed: seed of the noise (each call of the noise attack draws fresh noise from one generator).

    Returns:
        ``{name: attack}``, names ``none``, ``gaussian_noise``, ``gaussian_blur``, ``jpeg``; each attack maps
        ``(B, 3, H, W)`` float in [0, 1] to the same shape and range.
    """
    gen = torch.Generator().manual_seed(seed)
    return {
        "none": lambda x: x,
        "gaussian_noise": lambda x: gaussian_noise(x, TABLE11_NOISE_STD, generator=gen),
        "gaussian_blur": lambda x: gaussian_blur(x, TABLE11_BLUR_SIGMA, TABLE11_BLUR_KERNEL),
        "jpeg": lambda x: jpeg(x, TABLE11_JPEG_QUALITY),
    }


class IdentityMatchRate(Metric):
    """Counts how many images a recogniser identifies as their reference face.

    States (summed over batches and DDP ranks): ``total`` (images whose reference has a face),
    ``recognised`` (face found and distance below the threshold), ``no_face`` (no face found in the
    image; part of ``total``, never recognised) and ``reference_missing`` (no face in the reference:
    left out of ``total``, since nobody can say whose face it is).

    Args:
        encoder: the recogniser; None builds :class:`~ipmn_lightning.faces.analysis.DlibIdentityEncoder` at
            the first update (needs the ``faces`` extra).
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, encoder: IdentityEncoder | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        for name in ("total", "recognised", "no_face", "reference_missing"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _encoder(self) -> IdentityEncoder:
        if self.encoder is None:
            from ipmn_lightning.faces.analysis import DlibIdentityEncoder

            self.encoder = DlibIdentityEncoder()
        return self.encoder

    def update(self, images: Tensor, reference: Tensor | tuple[Tensor, Tensor]) -> None:
        """Add a batch.

        Args:
            images: the images to recognise ``(B, 3, H, W)`` float in [0, 1] (masks x_m or x_wmf for SR_P,
                recovered faces x'_p for the utility).
            reference: the protected faces x_p ``(B, 3, H', W')`` float in [0, 1], or their
                ``encoder.embed`` result ``(embeddings, found)`` when several metrics share one reference.
        """
        enc = self._encoder()
        emb, found = enc.embed(images)
        ref, ref_found = enc.embed(reference) if isinstance(reference, Tensor) else reference
        self.update_embeddings(emb, found, ref, ref_found)

    def update_embeddings(self, emb: Tensor, found: Tensor, ref: Tensor, ref_found: Tensor) -> None:
        """Add a batch of precomputed embeddings (to attack images without re-embedding the references).

        Args:
            emb: ``(B, D)`` embeddings of the images.
            found: ``(B,)`` bool, a face was found in each image.
            ref: ``(B, D)`` embeddings of the references x_p.
            ref_found: ``(B,)`` bool, a face was found in each reference.
        """
        enc = self._encoder()
        found, ref_found = found.bool().cpu(), ref_found.bool().cpu()
        same = enc.same_person(emb.cpu(), ref.cpu()) & found & ref_found
        self.total += int(ref_found.sum())
        self.recognised += int(same.sum())
        self.no_face += int((~found & ref_found).sum())
        self.reference_missing += int((~ref_found).sum())

    def compute(self) -> Tensor:
        """The share of images recognised as their reference (0 when there are none)."""
        return self.recognised.float() / self.total.clamp_min(1).float()

    def counts(self) -> dict[str, int]:
        """The raw counts (``total``, ``recognised``, ``no_face``, ``reference_missing``)."""
        return {k: int(getattr(self, k)) for k in ("total", "recognised", "no_face", "reference_missing")}


class PrivacySuccessRate(IdentityMatchRate):
    """SR_P (paper §4.4.2): the share of processed images NOT recognised as their protected face x_p.

    An image with no face found counts as not recognised (and in ``no_face``). Higher is better.

    Example:
        >>> srp = PrivacySuccessRate()  # doctest: +SKIP
        >>> srp.update(masks, protected)  # (B, 3, H, W) in [0, 1] each  # doctest: +SKIP
        >>> srp.compute(), srp.counts()  # doctest: +SKIP
    """

    higher_is_better = True

    def compute(self) -> Tensor:
        """SR_P in [0, 1]."""
        return 1.0 - super().compute() if int(self.total) else torch.tensor(0.0)


class RecoveryUtility(IdentityMatchRate):
    """The utility: the share of recovered faces x'_p that ARE recognised as x_p. Higher is better."""

    higher_is_better = True
