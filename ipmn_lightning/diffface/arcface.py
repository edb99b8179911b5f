"""ArcFace IR-SE recognisers in the two checkpoint layouts DiffFace users hold, loaded from plain state dicts.

* :class:`IRSEBackbone`: InsightFace_Pytorch's ``Backbone(50, 0.6, "ir_se")`` (``model_ir_se50.pth``, also the
  identity loss of pSp/e4e and many face-swap repositories). Keys ``input_layer.*``, ``body.N.*``,
  ``output_layer.*``; input normalised with mean 0.5, std 0.5; its forward L2-normalises.
* :class:`IRSEResNet`: the foamliu/InsightFace-v2 ``ResNet(IRBlock, ...)`` that DiffFace's ``Arcface.tar`` pickles
  (``torch.load(...)["model"].module``, github.com/hxngiee/DiffFace @ b7bef83; SimSwap ships the same file). Keys
  ``conv1``, ``bn1``, ``prelu``, ``layer1..4.N.*``, ``bn2``, ``fc``, ``bn3``; DiffFace feeds it ImageNet-normalised
  images and L2-normalises its output. The depth is read from the file (foamliu's ``resnet50`` is ``[3, 4, 6, 3]``).

Both take 112x112 crops and give 512-d embeddings. The modules are written from the architectures' structure so
that their state dicts carry exactly the reference key names; :func:`load_arcface` picks the layout from the
keys and loads strictly (:mod:`ipmn_lightning.diffface.face_weights`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from ipmn_lightning.diffface.face_weights import FaceWeightsError, load_strict, read_state_dict

__all__ = [
    "ARCFACE_NORMALIZATION",
    "ARCFACE_RESAVE_HINT",
    "IRSEBackbone",
    "IRSEResNet",
    "arcface_layout",
    "load_arcface",
]

#: (mean, std) each layout was trained with: InsightFace_Pytorch 0.5/0.5; DiffFace ImageNet's.
ARCFACE_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "insightface": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "diffface": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

ARCFACE_RESAVE_HINT = (
    "for DiffFace's Arcface.tar: python -c \"import torch; m = torch.load('Arcface.tar', weights_only=False)"
    "['model']; torch.save(getattr(m, 'module', m).state_dict(), 'arcface_state_dict.pth')\" "
    "(run it inside DiffFace's checkout, whose models/models.py the pickle needs)"
)


# ----------------------------------------------------------------------- InsightFace_Pytorch layout


class _SEConv(nn.Module):
    """Squeeze-excitation with 1x1 convolutions (keys ``fc1``, ``fc2``, no biases)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        w = F.adaptive_avg_pool2d(x, 1)
        return x * self.fc2(F.relu(self.fc1(w))).sigmoid()


class _BottleneckIR(nn.Module):
    """Pre-activation IR unit: BN, 3x3 conv, PReLU, strided 3x3 conv, BN (, SE) plus a shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)  # subsampling only, no weights
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            layers.append(_SEConv(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


#: units per stage of the IR(-SE) backbones.
IRSE_UNITS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}


class IRSEBackbone(nn.Module):
    """InsightFace_Pytorch's ``Backbone(num_layers, drop_ratio, mode)`` (ArcFace IR-SE50 by default).

    Args:
        num_layers: 50, 100 or 152.
        drop_ratio: dropout before the embedding layer (inactive in eval).
        mode: ``"ir_se"`` (with squeeze-excitation) or ``"ir"``.

    Forward: ``(B, 3, 112, 112)`` normalised with mean 0.5, std 0.5 -> ``(B, 512)`` L2-normalised.
    """

    def __init__(self, num_layers: int = 50, drop_ratio: float = 0.6, mode: str = "ir_se") -> None:
        super().__init__()
        if num_layers not in IRSE_UNITS or mode not in ("ir", "ir_se"):
            raise ValueError(f"num_layers must be one of {sorted(IRSE_UNITS)} and mode 'ir' or 'ir_se'")
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.output_layer = nn.Sequential(  # registered before the body, as the reference (same key order)
            nn.BatchNorm2d(512), nn.Dropout(drop_ratio), nn.Flatten(), nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512)
        )
        units: list[nn.Module] = []
        in_ch = 64
        for depth, n in zip((64, 128, 256, 512), IRSE_UNITS[num_layers]):
            for i in range(n):
                units.append(_BottleneckIR(in_ch, depth, 2 if i == 0 else 1, se=mode == "ir_se"))
                in_ch = depth
        self.body = nn.Sequential(*units)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 512)`` unit-norm embeddings of 112x112 crops."""
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


# ------------------------------------------------------------------------ DiffFace (InsightFace-v2) layout


class _SELinear(nn.Module):
    """Squeeze-excitation with linear layers and a PReLU (keys ``fc.0``, ``fc.1``, ``fc.2``)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.PReLU(),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class _IRBlock(nn.Module):
    """BN, 3x3 conv, BN, PReLU, strided 3x3 conv, BN (, SE), plus the (downsampled) input, then the same PReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool, use_se: bool) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, inplanes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            if downsample
            else None
        )
        self.se = _SELinear(planes) if use_se else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        residual = self.downsample(x) if self.downsample is not None else x
        return self.prelu(out + residual)


class IRSEResNet(nn.Module):
    """The IR-SE ResNet of DiffFace's ``Arcface.tar`` (foamliu/InsightFace-v2 ``ResNet(IRBlock, layers)``).

    Args:
        layers: blocks per stage (foamliu's ``resnet50``: 3, 4, 6, 3).
        use_se: squeeze-excitation in every block.

    Forward: ``(B, 3, 112, 112)`` ImageNet-normalised -> ``(B, 512)`` (not normalised; DiffFace normalises).
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), use_se: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, bias=False)  # no padding: 112 -> 110
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        inplanes = 64
        for index, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 2)), start=1):
            blocks = []
            for i in range(n):
                first = i == 0
                down = first and (stride != 1 or inplanes != planes)
                blocks.append(_IRBlock(inplanes, planes, stride if first else 1, down, use_se))
                inplanes = planes
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
        self.bn2 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.bn3 = nn.BatchNorm1d(512)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 512)`` embeddings (not normalised) of 112x112 crops."""
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x)).flatten(1)
        return self.bn3(self.fc(x))


# ------------------------------------------------------------------------------------------- loading


def arcface_layout(state: Mapping[str, Tensor]) -> str:
    """``"insightface"`` (InsightFace_Pytorch) or ``"diffface"`` (foamliu/DiffFace) from a state dict's keys."""
    if any(k.startswith("input_layer.") for k in state):
        return "insightface"
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        return "diffface"
    raise FaceWeightsError(
        "an ArcFace state dict has input_layer.*/body.*/output_layer.* keys (InsightFace_Pytorch Backbone) or "
        f"conv1/layer1-4/fc/bn3 keys (DiffFace's Arcface.tar ResNet); this one starts with {sorted(state)[:3]}"
    )


def _units(state: Mapping[str, Tensor], pattern: str) -> list[int]:
    found: dict[int, set[int]] = {}
    for k in state:
        m = re.match(pattern, k)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return [max(found.get(i, {-1})) + 1 for i in range(1, 5)]


def load_arcface(path: str | os.PathLike[str], argument: str = "identity_model") -> tuple[nn.Module, str]:
    """Build the ArcFace network a plain state-dict file was saved from and load it strictly, weights-only.

    Args:
        path: ``model_ir_se50.pth`` (InsightFace_Pytorch, IR-SE 50/100/152 or IR) or a re-saved state dict of
            DiffFace's ``Arcface.tar`` model.
        argument: the option that took the path (named in errors).

    Returns:
        The network in eval mode and its layout (``"insightface"`` or ``"diffface"``; see
        :data:`ARCFACE_NORMALIZATION`).

    Raises:
        FileNotFoundError: no such file.
        FaceWeightsError: a pickled model (with the re-save command), or keys/shapes of neither layout.
    """
    state = read_state_dict(path, argument, ARCFACE_RESAVE_HINT)
    try:
        layout = arcface_layout(state)
    except FaceWeightsError as err:
        raise FaceWeightsError(f"{argument}: {path}: {err}") from None
    if layout == "insightface":
        n_units = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))), default=-1)
        num_layers = next((n for n, u in IRSE_UNITS.items() if sum(u) == n_units), 50)
        mode = "ir_se" if any(".res_layer.5.fc1." in k for k in state) else "ir"
        net: nn.Module = IRSEBackbone(num_layers, 0.6, mode)
        name = f"InsightFace_Pytorch Backbone({num_layers}, 0.6, {mode!r})"
    else:
        layers = _units(state, r"layer(\d)\.(\d+)\.")
        if min(layers) < 1:
            raise FaceWeightsError(f"{argument}: {path}: no blocks in some of layer1-4 (counted {layers})")
        use_se = any(".se.fc." in k for k in state)
        net = IRSEResNet(layers, use_se)
        name = f"DiffFace Arcface ResNet(IRBlock, {layers}, use_se={use_se})"
    return load_strict(net, state, argument, os.fspath(path), name), layout
