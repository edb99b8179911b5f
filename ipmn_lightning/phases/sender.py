"""The sender's black box: putting the mask on (with the owner's watermark where phase 2 put it)."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

__all__ = ["WATERMARK_POSITIONS", "WatermarkPosition", "put_on_mask", "watermark_position"]

#: Where the owner's watermark goes (paper §4.2.2, Tables 5-6): into the mask before the INN (IPMN, ``mask``),
#: into the INN's output ``masked_face`` (the ablation), or nowhere (``none``: IMN, Table 7).
WatermarkPosition = Literal["mask", "masked_face", "none"]
WATERMARK_POSITIONS: tuple[str, ...] = ("mask", "masked_face", "none")


def put_on_mask(
    inn: nn.Module,
    embedder: nn.Module | None,
    watermark: Tensor,
    protected: Tensor,
    mask: Tensor,
    position: str = "mask",
) -> tuple[Tensor, Tensor]:
    """The sender's black box: the masked face x_wmf and the lost information M (eqs. 2 and 5).

    Args:
        inn: the putting-on/off network.
        embedder: H (unused when ``position`` is ``none``).
        watermark: w.
        protected: x_p, (B, 3, H, W) in [0, 1].
        mask: x_m, (B, 3, H, W) in [0, 1].
        position: ``mask``: f(x_p, H(x_m, w)) (IPMN); ``masked_face``: H(f(x_p, x_m), w) (Table 5's ablation);
            ``none``: f(x_p, x_m) (IMN).

    Returns:
        (x_wmf (B, 3, H, W), M (B, 12, H/2, W/2)).
    """
    if position == "none":
        return inn.put_on(protected, mask)
    if position == "masked_face":
        masked_face, lost = inn.put_on(protected, mask)
        return embedder(masked_face, watermark), lost
    return inn.put_on(protected, embedder(mask, watermark))


def watermark_position(hparams: dict[str, Any]) -> str:
    """The watermark position a phase-2 checkpoint was trained with (``mask`` for checkpoints before the option)."""
    return str(hparams.get("watermark_position", "mask"))
