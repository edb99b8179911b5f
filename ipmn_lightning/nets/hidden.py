"""HiDDeN's encoder, decoder and discriminator (Zhu et al., ECCV 2018), the baseline of IPMN §4.3.2 (Tables 8-9).

Architecture as in HiDDeN's PyTorch port (github.com/ando-khachatryan/HiDDeN @ 556f76d; no code taken from it):
every block is a 3x3 convolution (stride 1, padding 1), batch norm and ReLU; the networks are fully convolutional,
so they run at any image size.

The networks take and return images in [0, 1] like IPMN's H and R, so that they drop into phase 2, 3a and the
evaluation unchanged; inside they work on [-1, 1] images as HiDDeN does (its ``Normalize(0.5, 0.5)``).
Messages are L values in {-1, +1} (HiDDeN's {0, 1} bits mapped by ``2b - 1``), and the decoder regresses them
without an output activation (HiDDeN's MSE on the message).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConvBNReLU", "HiddenDecoder", "HiddenDiscriminator", "HiddenEncoder", "random_messages"]


class ConvBNReLU(nn.Sequential):
    """Conv3x3 (stride 1, padding 1) → BatchNorm → ReLU, HiDDeN's one building block.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def _stack(in_channels: int, channels: int, blocks: int) -> nn.Sequential:
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    return nn.Sequential(
        ConvBNReLU(in_channels, channels), *(ConvBNReLU(channels, channels) for _ in range(blocks - 1))
    )


def random_messages(batch: int, length: int, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Uniformly random messages of ±1 values (HiDDeN draws its bits per sample and step).

    Args:
        batch: number of messages B.
        length: message length L.
        generator: optional torch generator (``None``: the global one).
        device: device of the result.

    Returns:
        (B, L) float tensor of -1 and +1.
    """
    bits = torch.randint(0, 2, (batch, length), generator=generator, device=device)
    return bits.float().mul(2).sub(1)


class HiddenEncoder(nn.Module):
    """HiDDeN's encoder, used as IPMN's watermark embedder H: x_wm = E(x_m, message).

    ``blocks`` ConvBNReLU(``channels``) on the image; the message is repeated over every pixel and concatenated
    with the features and the image; one more ConvBNReLU and a 1x1 convolution give the 3-channel encoded
    image directly (not a residual). HiDDeN has no output activation; here the output is mapped back from
    [-1, 1] to [0, 1] and clamped, so that x_wm is an image like IPMN's H gives.

    Args:
        image_size: side of the square images it is trained on (recorded for the phase registry; the network
            itself takes any size).
        message_length: L, the number of message values.
        channels: width of every block (64 in HiDDeN).
        blocks: ConvBNReLU blocks on the image before the message is joined (4 in HiDDeN).
    """

    def __init__(self, image_size: int = 256, message_length: int = 30, channels: int = 64, blocks: int = 4) -> None:
        super().__init__()
        self.image_size = image_size
        self.message_length = message_length
        self.features = _stack(3, channels, blocks)
        self.join = ConvBNReLU(channels + 3 + message_length, channels)
        self.out = nn.Conv2d(channels, 3, 1)

    def forward(self, mask: Tensor, watermark: Tensor) -> Tensor:
        """Embed a message in the image.

        Args:
            mask: (B, 3, H, W) cover image x_m in [0, 1].
            watermark: the ±1 message, (L,) (the same for every image) or (B, L).

        Returns:
            (B, 3, H, W) encoded image x_wm in [0, 1].
        """
        batch, _, height, width = mask.shape
        if watermark.shape[-1] != self.message_length or watermark.dim() not in (1, 2):
            raise ValueError(f"expected a message of shape (L,) or (B, L) with L={self.message_length}, "
                             f"got {tuple(watermark.shape)}")  # fmt: skip
        message = watermark.to(mask.dtype).expand(batch, -1)
        image = mask * 2 - 1
        spread = message[:, :, None, None].expand(-1, -1, height, width)
        joined = torch.cat([spread, self.features(image), image], dim=1)
        encoded = self.out(self.join(joined))
        return ((encoded + 1) / 2).clamp(0, 1)


class HiddenDecoder(nn.Module):
    """HiDDeN's decoder, used as IPMN's extractor R: the message read from an image.

    ``blocks`` ConvBNReLU(``channels``) (the first from RGB), a ConvBNReLU to L channels, global average
    pooling and a linear layer L → L, without an output activation.

    Args:
        message_length: L.
        channels: width of the blocks (64 in HiDDeN).
        blocks: ConvBNReLU blocks of width ``channels`` (7 in HiDDeN).
    """

    def __init__(self, message_length: int = 30, channels: int = 64, blocks: int = 7) -> None:
        super().__init__()
        self.message_length = message_length
        self.features = nn.Sequential(_stack(3, channels, blocks), ConvBNReLU(channels, message_length))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(message_length, message_length)

    def forward(self, image: Tensor) -> Tensor:
        """Decode the message.

        Args:
            image: (B, 3, H, W) in [0, 1] (x_wm, or any image: x_m, x_wmf, x_sm).

        Returns:
            (B, L) decoded values, unbounded, trained towards the ±1 message (sign = the bit).
        """
        return self.linear(self.pool(self.features(image * 2 - 1)).flatten(1))


class HiddenDiscriminator(nn.Module):
    """HiDDeN's discriminator: cover or encoded image?

    Args:
        channels: width of the blocks (64 in HiDDeN).
        blocks: ConvBNReLU blocks (3 in HiDDeN).
    """

    def __init__(self, channels: int = 64, blocks: int = 3) -> None:
        super().__init__()
        self.features = _stack(3, channels, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, 1)

    def forward(self, image: Tensor) -> Tensor:
        """Score images.

        Args:
            image: (B, 3, H, W) in [0, 1].

        Returns:
            (B,) logits, positive for "cover" (unwatermarked).
        """
        return self.linear(self.pool(self.features(image * 2 - 1)).flatten(1)).squeeze(1)
