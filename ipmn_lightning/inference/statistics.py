"""What ``ipmn verify`` may say about a set of images: per-image p-values, near-duplicates, a count and its tail.

The set-level statement is a count, not a combination of p-values. Fisher's method (``-2 Σ ln p ~ χ²(2n)``)
assumes independent p-values that are uniform under the null, i.e. clean images drawn like the reference;
it called 100 clean real photos (0/100 verified) "watermarked" with p 1e-25 because their NCs sat slightly above
a reference of synthetic faces, 100 JPEG copies of one photo 1e-131 and the top 100 of 1,000 clean photos
1e-41. So the statement here:

1. collapses near-duplicates (the same image up to re-encoding or resizing: 16 x 16 thumbnails within a small
   RMS difference) into one *distinct image*, whose verdict is its median NC against the threshold;
2. counts the distinct images that pass the per-image threshold: an image that does not pass adds nothing;
3. bounds the per-image false-positive rate by the one-sided 95% Clopper-Pearson upper bound of the share of
   reference NCs above the threshold (a small reference gives a weak bound: 0 of 20 gives 0.139);
4. states the exact binomial tail ``P(Bin(n, p_upper) >= k)`` of ``k`` verified among ``n`` distinct images,
   and calls the set watermarked only when it is at most ``alpha``.

It still assumes that the distinct images were not chosen by their verdicts and that the reference's
false-positive rate holds in the images' domain; docs/security.md says what that means in practice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "binomial_tail",
    "clopper_pearson_upper",
    "empirical_p_values",
    "fisher_combined_p_value",
    "near_duplicate_groups",
    "set_statement",
    "thumbnail",
]

#: Largest RMS difference (pixel values in [0, 1]) between the 16 x 16 thumbnails of two copies of one image:
#: our default, measured on synthetic faces: a JPEG round trip at quality 30 moves a thumbnail by at most 0.05
#: (32 px) / 0.021 (64 px), halving and restoring the size by 0.046 / 0.016, while two different faces are at
#: least 0.12 / 0.095 apart. Different photos closer than this (burst shots) count once: the claim gets weaker,
#: never stronger.
NEAR_DUPLICATE_RMS = 0.06
#: The level below which the count's binomial tail calls a set watermarked (our default).
SET_ALPHA = 1e-3


def empirical_p_values(ncs: Sequence[float], reference: Sequence[float]) -> list[float]:
    """Per-image p-values of NCs against ``N`` clean-image NCs: ``(1 + #{ref >= nc}) / (N + 1)``.

    The p-value is the chance that a clean image gives an NC at least as high; it is never below
    ``1 / (N + 1)``, whatever the NC.
    """
    n = len(reference)
    return [(1 + sum(r >= nc for r in reference)) / (n + 1) for nc in ncs]


def fisher_combined_p_value(p_values: Sequence[float]) -> tuple[float, float]:
    """Fisher's combination of independent p-values: ``X = -2 Σ ln p ~ χ²(2n)``; returns ``(X, P(χ²(2n) >= X))``.

    Not used by ``ipmn verify`` (module docstring): it holds only for independent images drawn like the
    reference, which copies, selected subsets and other domains are not.
    """
    n = len(p_values)
    statistic = -2.0 * sum(math.log(p) for p in p_values)
    survival = torch.special.gammaincc(torch.tensor(float(n), dtype=torch.float64),
                                       torch.tensor(statistic / 2.0, dtype=torch.float64))  # fmt: skip
    return statistic, float(survival)


def _log_binomial_pmf(i: int, n: int, p: float) -> float:
    if p <= 0:
        return 0.0 if i == 0 else -math.inf
    if p >= 1:
        return 0.0 if i == n else -math.inf
    log_choose = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
    return log_choose + i * math.log(p) + (n - i) * math.log1p(-p)


def binomial_tail(k: int, n: int, p: float) -> float:
    """Exact ``P(X >= k)`` for ``X ~ Bin(n, p)``; 1 for ``k <= 0``, 0 for ``k > n``."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    terms = [_log_binomial_pmf(i, n, p) for i in range(k, n + 1)]
    top = max(terms)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a binomial proportion: the ``p`` with ``P(X <= successes) = 1 - c``.

    With 0 successes it is ``1 - (1 - c)^(1/trials)`` (0.139 for 20 trials, 0.0030 for 1,000).
    """
    if trials <= 0:
        return 1.0
    if successes >= trials:
        return 1.0
    target = 1.0 - confidence
    low, high = successes / trials, 1.0
    for _ in range(200):  # bisection: P(X <= successes) falls as p grows
        mid = (low + high) / 2
        if 1.0 - binomial_tail(successes + 1, trials, mid) > target:
            low = mid
        else:
            high = mid
    return high


def thumbnail(image: Tensor) -> Tensor:
    """The 16 x 16 RGB thumbnail (antialiased) that near-duplicates are compared by.

    Args:
        image: (3, H, W) float in [0, 1].

    Returns:
        (768,) float64 in [0, 1].
    """
    small = torch.nn.functional.interpolate(image.double()[None], size=(16, 16), mode="bilinear", antialias=True)
    return small.flatten()


def near_duplicate_groups(thumbnails: Tensor, max_rms: float = NEAR_DUPLICATE_RMS) -> list[int]:
    """Group id per image: thumbnails within ``max_rms`` (RMS difference) of each other, transitively, share one.

    Args:
        thumbnails: (N, 768) from :func:`thumbnail`.
        max_rms: largest RMS difference of two copies of one image.
    """
    n = int(thumbnails.shape[0])
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n > 1:
        rms = torch.cdist(thumbnails, thumbnails) / math.sqrt(thumbnails.shape[1])
        for i, j in (rms <= max_rms).nonzero().tolist():
            if i > j:
                parent[root(i)] = root(j)
    ids: dict[int, int] = {}
    return [ids.setdefault(root(i), len(ids)) for i in range(n)]


def set_statement(
    ncs: Sequence[float],
    groups: Sequence[int],
    threshold: float,
    reference: Sequence[float] | None,
    alpha: float = SET_ALPHA,
) -> dict[str, Any]:
    """The set-level statement of ``ipmn verify`` (module docstring).

    Args:
        ncs: each image's NC.
        groups: each image's near-duplicate group (:func:`near_duplicate_groups`).
        threshold: the per-image threshold (an image verifies when NC > threshold).
        reference: NCs of clean images for the per-image false-positive rate; ``None``: no rate, no tail.
        alpha: the tail at or below which the set is called watermarked.

    Returns:
        ``images``, ``distinct_images``, ``verified_distinct``; with a reference also ``reference_size``,
        ``reference_false_positives``, ``false_positive_rate`` (measured), ``false_positive_rate_upper``
        (95% Clopper-Pearson), ``binomial_tail``, ``alpha`` and ``watermarked`` (bool); ``statement``: one
        sentence that says what the numbers support.
    """
    members: dict[int, list[float]] = {}
    for nc, group in zip(ncs, groups):
        members.setdefault(group, []).append(nc)
    # a group's NC is its median: one lucky copy among many re-encodings does not make the image verify
    verified = sum(float(torch.tensor(v).median()) > threshold for v in members.values())
    distinct = len(members)
    result: dict[str, Any] = {"images": len(ncs), "distinct_images": distinct, "verified_distinct": int(verified)}
    if not reference:
        result["watermarked"] = None
        result["statement"] = (
            f"{verified} of {distinct} distinct image(s) verified; no set-level claim without a reference of "
            "clean-image NCs (the per-image false-positive rate is unknown)"
        )
        return result
    false_positives = sum(r > threshold for r in reference)
    upper = clopper_pearson_upper(false_positives, len(reference))
    tail = binomial_tail(int(verified), distinct, upper)
    watermarked = bool(verified > 0 and tail <= alpha)
    result.update(
        reference_size=len(reference),
        reference_false_positives=int(false_positives),
        false_positive_rate=false_positives / len(reference),
        false_positive_rate_upper=upper,
        binomial_tail=tail,
        alpha=alpha,
        watermarked=watermarked,
    )
    verdict = "the set carries the watermark" if watermarked else "no set-level claim of a watermark"
    result["statement"] = (
        f"{verified} of {distinct} distinct image(s) verified; a clean image verifies with probability at most "
        f"{upper:.3g} (95% upper bound, {false_positives} of {len(reference)} reference NCs above {threshold}); "
        f"P(>= {verified} of {distinct} clean images verify) <= {tail:.3g}: {verdict} (alpha {alpha:g})"
    )
    return result
