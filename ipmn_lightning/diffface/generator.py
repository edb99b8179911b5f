"""The ``diffface`` mask generator: our DiffFace port behind :class:`~ipmn_lightning.faces.generators.MaskGenerator`.

Each pair is swapped by :class:`~ipmn_lightning.diffface.sampler.DiffFaceSampler` at the network's resolution and
blended into x_p with the full-resolution face mask: the landmark hull of x_p (:func:`landmark_face_mask`) or,
with a face parser, the parser's face classes (DiffFace's choice). ``ipmn masks generate --generator diffface``
drives it through :func:`~ipmn_lightning.diffface.commands.diffface_generate`, a multi-GPU Lightning predict
(:mod:`ipmn_lightning.diffface.predict`), which the class names as its :attr:`DiffFaceMaskGenerator.driver`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ipmn_lightning.diffface.facenets import PARSER_FACE_CLASSES, load_face_parser, load_identity_model
from ipmn_lightning.diffface.sampler import DiffFaceSampler
from ipmn_lightning.faces.generators import MaskGenerator, MaskOutcome, face_region

__all__ = ["DiffFaceMaskGenerator", "landmark_face_mask"]


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
            TorchScript export (see :func:`~ipmn_lightning.diffface.facenets.load_identity_model`); None:
            conditioning only (see :mod:`~ipmn_lightning.diffface.sampler`).
        face_parser: BiSeNet (512 px, 19 classes) for the parsing guidance and the mask: a state dict
            (face-parsing.PyTorch's ``79999_iter.pth``, DiffFace's ``FaceParser.pth``) or an export
            (see :func:`~ipmn_lightning.diffface.facenets.load_face_parser`).
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
    #: Not an in-process run of ``generate_masks``: one process per device, each holding the UNet and
    #: backpropagating through it for the guidance (a Lightning predict).
    driver = "ipmn_lightning.diffface.commands:diffface_generate"

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
