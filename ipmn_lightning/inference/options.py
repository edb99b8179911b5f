"""Choices shared by the role commands, light enough for ``--help`` (no torch)."""

from __future__ import annotations

from typing import Literal

__all__ = ["ResizePolicy"]

#: What a role command does with an image not at the bundle's size: centre-crop to its largest square and
#: resize, squash the whole image to a square, or refuse it.
ResizePolicy = Literal["crop", "resize", "reject"]
