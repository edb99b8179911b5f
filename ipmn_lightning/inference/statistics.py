"""How unlikely ``ipmn verify``'s NCs are for clean images: empirical p-values and Fisher's combination."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["empirical_p_values", "fisher_combined_p_value"]


def empirical_p_values(ncs: Sequence[float], reference: Sequence[float]) -> list[float]:
    """Per-image p-values of NCs against ``N`` clean-image NCs: ``(1 + #{ref >= nc}) / (N + 1)``.

    The p-value is the chance that a clean image gives an NC at least as high; it is never below
    ``1 / (N + 1)``, whatever the NC.
    """
    n = len(reference)
    return [(1 + sum(r >= nc for r in reference)) / (n + 1) for nc in ncs]


def fisher_combined_p_value(p_values: Sequence[float]) -> tuple[float, float]:
    """Fisher's combination of independent p-values: ``X = -2 Σ ln p ~ χ²(2n)``; returns ``(X, P(χ²(2n) >= X))``."""
    n = len(p_values)
    statistic = -2.0 * sum(math.log(p) for p in p_values)
    survival = torch.special.gammaincc(torch.tensor(float(n), dtype=torch.float64),
                                       torch.tensor(statistic / 2.0, dtype=torch.float64))  # fmt: skip
    return statistic, float(survival)
