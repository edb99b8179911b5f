"""IPMN: invertible privacy-preserving mask network with intellectual-property protection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["IPMN", "__version__"]

if TYPE_CHECKING:
    from ipmn_lightning.inference.facade import IPMN


def __getattr__(name: str) -> Any:
    """Import the ``IPMN`` facade on first use, so ``import ipmn_lightning`` stays light."""
    if name == "IPMN":
        from ipmn_lightning.inference.facade import IPMN

        return IPMN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
