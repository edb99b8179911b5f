"""The ``IPMN`` inference facade: the three roles of paper §3.1 (Fig. 1) on tensors or PIL images.

- sender: :meth:`IPMN.protect` puts the watermarked mask on a protected face (H, then the INN's put-on);
- receiver: :meth:`IPMN.recover` takes the mask off (the INN's put-off with a Gaussian z);
- IP verifier: :meth:`IPMN.extract` and :meth:`IPMN.verify` run the owner's extractor R.

Every method takes a (3, H, W) or (B, 3, H, W) float tensor in [0, 1] (or a uint8 tensor in [0, 255], scaled
by 1/255; other integer tensors are refused), a PIL image, or a list of PIL images, and returns the same kind
(float tensors for tensor input). Inputs go through the library's one reader,
:mod:`ipmn_lightning.data.images`, as training reads photos: a PIL image is turned upright by its EXIF
orientation (:func:`~ipmn_lightning.data.images.fit_image`), a non-square image is centre-cropped to its
largest square, so a face keeps its proportions, and an image of another size than the bundle's is resized
(Lanczos for PIL images; bilinear with antialiasing for tensors, :func:`~ipmn_lightning.data.images.fit_batch`).
Outputs are always at the bundle's image size. Tensors come back on the device they came from.

Refused with a clear error (``ValueError``) before any network runs: an empty batch or list; a float tensor
holding NaN or infinity, or values outside [0, 1] by more than :data:`FLOAT_TOLERANCE` (a 0-255 float tensor
would otherwise be clamped to white: divide it by 255); an image too small or too elongated for the bundle
(:func:`~ipmn_lightning.data.images.size_problem`). An image smaller than the bundle's size is upscaled with a
``UserWarning``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ipmn_lightning.core.images import pil_to_tensor, tensor_to_pil
from ipmn_lightning.data.images import fit_batch, fit_image, size_problem
from ipmn_lightning.inference.bundle import RECEIVER_FORMAT, SERVICE_FORMAT, VERIFIER_FORMAT, Bundle, load_bundle
from ipmn_lightning.metrics.functional import normalized_correlation, quantize_8bit
from ipmn_lightning.phases import put_on_mask

__all__ = ["FLOAT_TOLERANCE", "IPMN", "Verification"]

ImageLike = Tensor | Image.Image | Sequence[Image.Image]

#: How far outside [0, 1] a float tensor may stray and still be clamped (rounding and resampling overshoot);
#: our default, 1% of the range: a 0-255 or [-1, 1] tensor is far outside it.
FLOAT_TOLERANCE = 0.01


@dataclass(frozen=True)
class Verification:
    """The verdict on one image.

    Attributes:
        nc: normalized correlation between R's output and the watermark.
        verified: ``nc > threshold``: the image carries the owner's watermark.
        threshold: the NC threshold of the verifier bundle.
    """

    nc: float
    verified: bool
    threshold: float


class IPMN:
    """A trained IPMN loaded from its bundles (see :mod:`ipmn_lightning.inference.bundle`).

    Build it with :meth:`load`. A facade without a service bundle can only extract and verify; one
    without a verifier bundle can only protect and recover; one with a receiver bundle in place of the service
    bundle (the INN only) can only recover.

    Args:
        service: the loaded service bundle or receiver bundle, or ``None``.
        verifier: the loaded verifier bundle, or ``None``.
        device: where the networks run (``cpu``, ``cuda``, ``cuda:1``, ...).
    """

    def __init__(
        self,
        service: Bundle | None = None,
        verifier: Bundle | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if service is None and verifier is None:
            raise ValueError("IPMN needs a service bundle, a verifier bundle or both")
        self.device = torch.device(device)
        self.embedder = self.inn = self.extractor = None
        self.watermark = self.verifier_watermark = None
        self.threshold: float | None = None
        self.receiver_only = service is not None and service.format == RECEIVER_FORMAT
        if service is not None:
            self.inn = service.network("inn").to(self.device)
        if service is not None and not self.receiver_only:
            self.embedder = service.network("embedder").to(self.device)
            self.watermark = service.watermark.to(self.device)
            # where the run's phase 2 put w: IPMN's mask, or a Table 5/7 variant (phases.put_on_mask)
            self.position = str(service.config.get("position", "mask"))
        if verifier is not None:
            self.extractor = verifier.network("extractor").to(self.device)
            self.verifier_watermark = verifier.watermark.to(self.device)
            self.threshold = float(verifier.config["threshold"])
        self.image_size = (service or verifier).image_size
        if service is not None and verifier is not None and verifier.image_size != self.image_size:
            raise ValueError(
                f"{verifier.path} is for {verifier.image_size}-px images but {service.path} for "
                f"{self.image_size} px; pass bundles from the same pipeline run"
            )

    @classmethod
    def load(
        cls,
        service_bundle: str | os.PathLike[str] | None = None,
        verifier_bundle: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        receiver_bundle: str | os.PathLike[str] | None = None,
    ) -> IPMN:
        """Load the bundles written by ``ipmn pipeline`` (``<output>/bundles/*.safetensors``).

        Args:
            service_bundle: ``service.safetensors`` (H, INN, w), for :meth:`protect` and :meth:`recover`; a
                receiver bundle is accepted here too.
            verifier_bundle: ``verifier.safetensors`` (R, w, threshold), for :meth:`extract`, :meth:`verify`.
            device: where the networks run.
            receiver_bundle: ``receiver.safetensors`` (the INN only), for :meth:`recover`; instead of
                ``service_bundle``.

        Raises:
            ipmn_lightning.inference.bundle.BundleError: a bundle is missing, corrupt, of the wrong kind or version.
        """
        if service_bundle is not None and receiver_bundle is not None:
            raise ValueError("IPMN.load: pass service_bundle or receiver_bundle, not both (the service bundle has all)")
        sender = service_bundle if service_bundle is not None else receiver_bundle
        service = load_bundle(sender, (SERVICE_FORMAT, RECEIVER_FORMAT)) if sender is not None else None
        verifier = load_bundle(verifier_bundle, VERIFIER_FORMAT) if verifier_bundle is not None else None
        return cls(service, verifier, device)

    # ------------------------------------------------------------ conversion
    def _to_batch(self, images: ImageLike, name: str) -> tuple[Tensor, str, torch.device | None]:
        """(B, 3, S, S) on ``self.device``, the input kind and the device to give results back on."""
        if isinstance(images, Tensor):
            kind = {3: "tensor3", 4: "tensor4"}.get(images.dim())
            if kind is None or images.shape[-3] != 3:
                raise ValueError(f"{name}: expected a (3, H, W) or (B, 3, H, W) tensor, got {tuple(images.shape)}")
            batch = images.unsqueeze(0) if kind == "tensor3" else images
            if batch.shape[0] == 0:
                raise ValueError(f"{name}: the batch is empty (shape {tuple(images.shape)}); pass at least one image")
            if batch.dtype == torch.uint8:  # 8-bit pixels (torchvision.io.decode_image, numpy arrays): 0-255
                batch = batch.to(self.device, torch.float32).div_(255.0)
            elif batch.is_floating_point():
                batch = batch.to(self.device, torch.float32)
                self._check_float_range(batch, name)
            else:
                raise TypeError(
                    f"{name}: expected a float tensor in [0, 1] or a uint8 tensor in [0, 255], got {batch.dtype}; "
                    "convert it first, e.g. x.float() / 65535 for 16-bit pixels"
                )
            self._check_size(batch.shape[-1], batch.shape[-2], name)
            return fit_batch(batch, self.image_size).clamp(0, 1), kind, images.device
        if isinstance(images, Image.Image):
            return self._pil_batch([images], name), "pil", None
        if isinstance(images, Sequence) and not isinstance(images, str) and len(images) == 0:
            raise ValueError(f"{name}: the list of images is empty; pass at least one image")
        if isinstance(images, Sequence) and all(isinstance(i, Image.Image) for i in images):
            return self._pil_batch(list(images), name), "list", None
        raise TypeError(f"{name}: expected a tensor, a PIL image or a non-empty list of PIL images")

    @staticmethod
    def _check_float_range(batch: Tensor, name: str) -> None:
        """Refuse non-finite values and values outside [0, 1] (beyond :data:`FLOAT_TOLERANCE`), before clamping."""
        if not bool(torch.isfinite(batch).all()):
            raise ValueError(f"{name}: the tensor holds NaN or infinite values; pass finite pixels in [0, 1]")
        low, high = float(batch.min()), float(batch.max())
        if low >= -FLOAT_TOLERANCE and high <= 1 + FLOAT_TOLERANCE:
            return
        if low >= -FLOAT_TOLERANCE and high <= 255 + FLOAT_TOLERANCE:
            hint = "it looks like 0-255 pixel values: divide by 255 (x / 255), or pass a uint8 tensor"
        elif low >= -1 - FLOAT_TOLERANCE and high <= 1 + FLOAT_TOLERANCE:
            hint = "it looks like [-1, 1] values: pass (x + 1) / 2"
        else:
            hint = "rescale it to [0, 1]"
        raise ValueError(
            f"{name}: a float tensor must hold values in [0, 1], this one spans {low:g} to {high:g}; {hint}"
        )

    def _check_size(self, width: int, height: int, name: str) -> None:
        """Refuse an image too small or too elongated for the bundle; warn when it is upscaled."""
        problem = size_problem(width, height, self.image_size)
        if problem is not None:
            raise ValueError(f"{name}: {problem}")
        if min(width, height) < self.image_size:
            warnings.warn(
                f"{name}: a {width}x{height} image is upscaled to the bundle's {self.image_size}x{self.image_size}",
                UserWarning,
                stacklevel=4,
            )

    def _pil_batch(self, images: list[Image.Image], name: str) -> Tensor:
        """(B, 3, S, S) float in [0, 1]: each image upright, centre-cropped and resized as files are read."""
        for image in images:
            self._check_size(*image.size, name)  # EXIF turns swap the sides, which changes neither test
        return torch.stack([pil_to_tensor(fit_image(i, self.image_size)) for i in images]).to(self.device)

    @staticmethod
    def _from_batch(batch: Tensor, kind: str, device: torch.device | None) -> Any:
        if kind in ("tensor3", "tensor4"):
            with torch.inference_mode(False):  # a normal tensor: callers may modify it in place
                return (batch if kind == "tensor4" else batch[0]).to(device).clone()
        images = [tensor_to_pil(image) for image in batch]
        return images[0] if kind == "pil" else images

    def _need(self, attribute: str, bundle: str) -> None:
        if getattr(self, attribute) is None:
            raise RuntimeError(f"this IPMN has no {bundle} bundle: pass {bundle}_bundle to IPMN.load")

    # ----------------------------------------------------------------- roles
    @torch.inference_mode()
    def protect(self, protected: ImageLike, mask: ImageLike) -> Any:
        """Sender: the watermarked masked face x_wmf = f(x_p, H(x_m, w)), 8-bit quantised (what is shared).

        Args:
            protected: the faces x_p to protect.
            mask: their masks x_m (face swaps of x_p), the same number of images.

        Returns:
            x_wmf, the same kind as ``protected``, in [0, 1] on the 8-bit grid.
        """
        if self.receiver_only:
            raise RuntimeError(
                "this IPMN was loaded from a receiver bundle (the INN only), which takes masks off but cannot put "
                "one on: protect needs H and the watermark w of the service bundle, which only the operator holds"
            )
        self._need("inn", "service")
        faces, kind, device = self._to_batch(protected, "protected")
        masks, _, _ = self._to_batch(mask, "mask")
        if masks.shape[0] != faces.shape[0]:
            raise ValueError(f"protect: {faces.shape[0]} protected images but {masks.shape[0]} masks")
        masked_face, _ = put_on_mask(self.inn, self.embedder, self.watermark, faces, masks, self.position)
        return self._from_batch(quantize_8bit(masked_face), kind, device)

    @torch.inference_mode()
    def recover(self, masked: ImageLike, seed: int | None = None) -> tuple[Any, Any]:
        """Receiver: (x'_p, x'_wm) = f^-1(x_wmf, z) with z ~ N(0, 1) standing in for the lost matrix.

        Args:
            masked: masked faces x_wmf as shared (8-bit).
            seed: seed of z, for reproducible outputs; ``None`` draws from the global generator.

        Returns:
            ``(recovered_face, recovered_mask)``, each the same kind as ``masked``, clamped to [0, 1].
        """
        self._need("inn", "service")
        batch, kind, device = self._to_batch(masked, "masked")
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        face, mask = self.inn.put_off(batch, generator=generator)
        return self._from_batch(face.clamp(0, 1), kind, device), self._from_batch(mask.clamp(0, 1), kind, device)

    @torch.inference_mode()
    def extract(self, image: ImageLike) -> Any:
        """IP verifier: R's output, the watermark w' (or the blank image from a clean input).

        Returns:
            w', the same kind as ``image``; tensors are clamped to [0, 1] only when converted to PIL.
        """
        self._need("extractor", "verifier")
        batch, kind, device = self._to_batch(image, "image")
        return self._from_batch(self.extractor(batch), kind, device)

    @torch.inference_mode()
    def verify(self, image: ImageLike) -> Verification | list[Verification]:
        """IP verifier: NC between R(image) and w, and the verdict ``NC > threshold`` (paper §4).

        Returns:
            One :class:`Verification` for a (3, H, W) tensor or a PIL image, a list for a batch or a list.
        """
        self._need("extractor", "verifier")
        batch, kind, _ = self._to_batch(image, "image")
        nc = normalized_correlation(self.extractor(batch), self.verifier_watermark).tolist()
        out = [Verification(float(v), bool(v > self.threshold), float(self.threshold)) for v in nc]
        return out[0] if kind in ("tensor3", "pil") else out
