"""The mask generator interface: x_m = MG(x_p, x_r) on a batch, one :class:`MaskOutcome` per pair.

Roles follow DiffFace (github.com/hxngiee/DiffFace @ b7bef83): the replacement face x_r gives the identity, the
protected face x_p everything else (scene, pose, expression, hair, background). A generator works on a batch, so a
GPU backend (the DiffFace port) implements the same :class:`MaskGenerator` interface and runs in Lightning's
predict loop; ``ipmn masks generate`` only needs :meth:`MaskGenerator.generate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["MaskGenerator", "MaskOutcome"]


@dataclass
class MaskOutcome:
    """One pair's result.

    Attributes:
        mask: x_m ``(3, H, W)`` float in [0, 1], or None when it failed.
        reason: why it failed (``"no face found in the protected image"``, ...), None on success.
        protected_found: a face was found in x_p (None if not looked at).
        replacement_found: a face was found in x_r (None if not looked at).
    """

    mask: Tensor | None
    reason: str | None = None
    protected_found: bool | None = None
    replacement_found: bool | None = None


class MaskGenerator(ABC):
    """x_m = MG(x_p, x_r): x_p's scene with x_r's identity."""

    #: The ``--generator`` name.
    name: str = ""
    #: ``"module:function"`` of the command that fills a store with this generator when it needs a driver of
    #: its own (DiffFace: a multi-GPU Lightning predict); None: ``ipmn masks generate`` runs it in process with
    #: ``generate_masks``. A path, not the function, so this layer never imports the wing that drives it; the
    #: function takes ``root, source, store, image_size, seed, identity_sample, progress, options, workers, shard``
    #: (``options``: the ``--generator.KEY`` flags) and returns the exit code.
    driver: ClassVar[str | None] = None

    @abstractmethod
    def generate(
        self,
        protected: Tensor,
        replacement: Tensor,
        protected_landmarks: Sequence[np.ndarray | None] | None = None,
        replacement_landmarks: Sequence[np.ndarray | None] | None = None,
    ) -> list[MaskOutcome]:
        """Make the masks of a batch of pairs.

        Args:
            protected: x_p ``(B, 3, H, W)`` float in [0, 1].
            replacement: x_r ``(B, 3, H', W')`` float in [0, 1].
            protected_landmarks: precomputed ``(68, 2)`` landmarks of each x_p (None entries: no face),
                for generators that use them; others ignore them.
            replacement_landmarks: the same for x_r.

        Returns:
            One outcome per pair; a failed pair never falls back to a copy of x_p.
        """

    def __call__(self, protected: Tensor, replacement: Tensor) -> Tensor:
        """x_m for a batch, raising if any pair fails.

        Args:
            protected: x_p ``(B, 3, H, W)`` float in [0, 1].
            replacement: x_r ``(B, 3, H', W')`` float in [0, 1].

        Returns:
            x_m ``(B, 3, H, W)`` float in [0, 1].

        Raises:
            ValueError: a pair failed (e.g. no face found), naming its index and the reason.
        """
        outcomes = self.generate(protected, replacement)
        bad = [f"pair {i}: {o.reason}" for i, o in enumerate(outcomes) if o.mask is None]
        if bad:
            raise ValueError(f"{type(self).__name__} failed on {len(bad)} pair(s): {'; '.join(bad)}")
        return torch.stack([o.mask for o in outcomes])  # type: ignore[misc]

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks this generator would use for an ``(H, W, 3)`` uint8 image (None: no face).

        ``ipmn masks generate`` calls it once per image to re-pair faces that are not found; a
        generator that needs no landmarks returns an empty array for every image.
        """
        return np.zeros((0, 2))
