"""BiSeNet face parser (zllrunning/face-parsing.PyTorch layout, DiffFace's ``FaceParser.pth``), from a state dict.

The network DiffFace parses faces with (``models/parsing.py``, github.com/hxngiee/DiffFace @ b7bef83): a ResNet-18
context path with attention refinement at 1/16 and 1/32, the 1/8 ResNet features in place of a spatial path, a feature
fusion module and three 1x1 heads. The CelebAMask-HQ labels are 0 background, 1 skin, 2/3 brows, 4/5 eyes, 6 glasses,
7/8 ears, 9 earring, 10 nose, 11 mouth, 12/13 lips, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat. It was
trained on 512x512 faces normalised with ImageNet's mean and std (DiffFace applies a further ``(x - 0.5) / 0.5``
on top, its ``SpecificNorm``; see :class:`~ipmn_lightning.diffface.generator.FaceNetModule`).

Written from the architecture's structure so that the state dict carries exactly the reference key names
(``cp.resnet.*``, ``cp.arm16.*``, ``cp.arm32.*``, ``cp.conv_head16/32.*``, ``cp.conv_avg.*``, ``ffm.*``,
``conv_out.*``, ``conv_out16.*``, ``conv_out32.*``); :func:`load_bisenet` reads ``79999_iter.pth`` /
``FaceParser.pth`` weights-only and strictly. Nothing is downloaded (the reference fetches ImageNet ResNet-18
weights at construction; here they come with the file).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ipmn_lightning.diffface.face_weights import load_strict, read_state_dict

__all__ = ["BISENET_RESAVE_HINT", "BiSeNet", "load_bisenet"]

BISENET_RESAVE_HINT = (
    "torch.save(model.state_dict(), 'face_parser.pth') from the BiSeNet(n_classes=19) you loaded it into "
    "(zllrunning/face-parsing.PyTorch's 79999_iter.pth and DiffFace's FaceParser.pth already are state dicts)"
)


class _BasicBlock(nn.Module):
    def __init__(self, in_chan: int, out_chan: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chan, out_chan, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chan)
        self.conv2 = nn.Conv2d(out_chan, out_chan, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chan)
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_chan, out_chan, 1, stride, bias=False), nn.BatchNorm2d(out_chan))
            if in_chan != out_chan or stride != 1
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        res = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = self.downsample(x) if self.downsample is not None else x
        return F.relu(short + res)


def _stage(in_chan: int, out_chan: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_BasicBlock(in_chan, out_chan, stride), _BasicBlock(out_chan, out_chan, 1))


class _ResNet18(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        f8 = self.layer2(x)
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class _ConvBNReLU(nn.Module):
    def __init__(self, in_chan: int, out_chan: int, ks: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chan, out_chan, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chan)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class _Head(nn.Module):
    """``BiSeNetOutput``: 3x3 conv-BN-ReLU, then a 1x1 classifier."""

    def __init__(self, in_chan: int, mid_chan: int, n_classes: int) -> None:
        super().__init__()
        self.conv = _ConvBNReLU(in_chan, mid_chan)
        self.conv_out = nn.Conv2d(mid_chan, n_classes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.conv(x))


class _AttentionRefinement(nn.Module):
    def __init__(self, in_chan: int, out_chan: int) -> None:
        super().__init__()
        self.conv = _ConvBNReLU(in_chan, out_chan)
        self.conv_atten = nn.Conv2d(out_chan, out_chan, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_chan)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv(x)
        return feat * self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))).sigmoid()


class _ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = _ResNet18()
        self.arm16 = _AttentionRefinement(256, 128)
        self.arm32 = _AttentionRefinement(512, 128)
        self.conv_head32 = _ConvBNReLU(128, 128)
        self.conv_head16 = _ConvBNReLU(128, 128)
        self.conv_avg = _ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f8, f16, f32 = self.resnet(x)
        avg = self.conv_avg(f32.mean(dim=(2, 3), keepdim=True))  # global context, broadcast over 1/32
        up32 = self.conv_head32(F.interpolate(self.arm32(f32) + avg, size=f16.shape[-2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(f16) + up32, size=f8.shape[-2:], mode="nearest"))
        return f8, up16, up32


class _FeatureFusion(nn.Module):
    def __init__(self, in_chan: int, out_chan: int) -> None:
        super().__init__()
        self.convblk = _ConvBNReLU(in_chan, out_chan, ks=1, padding=0)
        self.conv1 = nn.Conv2d(out_chan, out_chan // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_chan // 4, out_chan, 1, bias=False)

    def forward(self, fsp: Tensor, fcp: Tensor) -> Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))).sigmoid()
        return feat * atten + feat


class BiSeNet(nn.Module):
    """BiSeNet(n_classes) in face-parsing.PyTorch's layout.

    Args:
        n_classes: parser classes (19 for CelebAMask-HQ).
        aux: return the two auxiliary heads' logits as well (training only in the reference).

    Forward: ``(B, 3, H, W)`` ImageNet-normalised (H, W multiples of 32; 512 for the published weights) ->
    ``(B, n_classes, H, W)`` logits (bilinear, ``align_corners=True`` as the reference), or the three heads' with
    ``aux``.
    """

    def __init__(self, n_classes: int = 19, aux: bool = False) -> None:
        super().__init__()
        self.cp = _ContextPath()
        self.ffm = _FeatureFusion(256, 256)
        self.conv_out = _Head(256, 256, n_classes)
        self.conv_out16 = _Head(128, 64, n_classes)
        self.conv_out32 = _Head(128, 64, n_classes)
        self.aux = aux

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Logits at the input's size (and the auxiliary heads' with ``aux``)."""
        size = x.shape[-2:]
        f8, cp8, cp16 = self.cp(x)
        out = F.interpolate(self.conv_out(self.ffm(f8, cp8)), size=size, mode="bilinear", align_corners=True)
        if not self.aux:
            return out
        out16 = F.interpolate(self.conv_out16(cp8), size=size, mode="bilinear", align_corners=True)
        out32 = F.interpolate(self.conv_out32(cp16), size=size, mode="bilinear", align_corners=True)
        return out, out16, out32


def load_bisenet(path: str | os.PathLike[str], argument: str = "face_parser", n_classes: int = 19) -> BiSeNet:
    """``BiSeNet(n_classes)`` with the weights of a plain state-dict file, read weights-only and strictly.

    Raises:
        FileNotFoundError: no such file.
        FaceWeightsError: a pickled model, or keys/shapes that are not this BiSeNet's (the message names
            ``argument`` and a few offending keys).
    """
    state = read_state_dict(path, argument, BISENET_RESAVE_HINT)
    net = BiSeNet(n_classes)
    load_strict(net, state, argument, os.fspath(path), f"BiSeNet(n_classes={n_classes}) (face-parsing.PyTorch)")
    return net
