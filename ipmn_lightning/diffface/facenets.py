"""DiffFace's guidance networks behind one interface: a frozen recogniser or face parser with its pre-processing.

Recogniser and parser plug into the sampler as callables on ``(B, 3, H, W)`` images in [0, 1].
:func:`load_identity_model` and :func:`load_face_parser` read them from local paths (nothing is downloaded), with
the pre-processing of DiffFace (github.com/hxngiee/DiffFace @ b7bef83): ArcFace at 112 px, unit-norm 512-d output;
BiSeNet at 512 px, ImageNet normalisation, 19 classes. They read plain state dicts in the reference layouts
(:mod:`ipmn_lightning.diffface.arcface`: InsightFace_Pytorch's IR-SE50 or DiffFace's ``Arcface.tar`` ResNet;
:mod:`ipmn_lightning.diffface.bisenet`: face-parsing.PyTorch's BiSeNet, DiffFace's ``FaceParser.pth``), read
``weights_only`` and strictly, or ``.pt2`` / TorchScript exports (:class:`TorchScriptModule`). DiffFace's own
``Arcface.tar`` pickles the whole model, which this library never unpickles: re-save its ``state_dict`` once where
you trust it (the error says how).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "PARSER_FACE_CLASSES",
    "FaceNetModule",
    "ImageFn",
    "TorchScriptModule",
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
