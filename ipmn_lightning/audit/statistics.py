"""The model-level statistic of ``ipmn audit``: is a suspect model's mean NC higher than independent models give?

``ipmn verify`` judges images; the audit judges a *model* from its answers to the owner's challenge. A model
stolen by imitation (paper §3.3.1) passes on part of the watermark, often too little for the per-image rule
(NC > 0.95) but consistently: issue 24 measured per-image NCs of 0.72-0.88 for stealers R never saw, against
about 0.63 for clean faces. Averaging ``n`` answers shrinks the noise by ``√n``.

The null hypothesis is *an independent model that does the same job but was never trained on this service's
outputs*, not "clean photos": a plain face-swap model's answers are not clean faces, and their small, consistent
NC shift turned Fisher's combination of per-image p-values into certainty (1.8e-14 for an innocent model in
issue 24). So the null is measured on null *models*: the owner trains ``K >= 2`` of them (``ipmn fit`` of phase
3a with ``--model.init_args.target=mask`` or ``plain_inn``), asks them the same challenge, and the audit models

* a null model's mean NC over ``n`` answers as ``T = μ_k + ε``, with ``μ_k ~ N(μ, τ²)`` across independent
  models and ``ε ~ N(0, σ²/n)`` within one;
* ``μ`` by the null models' mean of means; ``τ`` by the one-sided 99% upper confidence bound of their
  between-model standard deviation (``s·√((K − 1) / χ²_{0.01, K−1})``: two or three models cannot show how far
  apart independent models may be, and the bound says how far they might be), inflated by ``√(1 + 1/K)`` (a
  prediction for a new model, not the mean's error) and never below ``min_between_sd`` (:data:`MIN_BETWEEN_SD`);
* ``σ`` by the largest within-model standard deviation of the null models and the suspect.

The p-value is ``P(Z >= (T - μ) / √(τ² + σ²/n))`` for a standard normal ``Z``. It is an approximation that
rests on the null models being representative of innocent models; :func:`calibration` measures how often it
falls below ``α`` for null models it was not fitted on (leave one null model out, bootstrap the challenge).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MIN_BETWEEN_SD", "MIN_BETWEEN_SD_KEYED", "audit_statistic", "calibration", "null_summary", "summarise"]

#: The smallest between-model standard deviation of mean NCs the audit assumes (our default). Measured on the
#: demo (benchmarks/results/ip_audit_demo.md): four null models of four architectures, phase-1 R, 200 queries,
#: spread by 0.00026 NC, each with a per-image sd of at most 0.0016; 0.002 is eight times that spread. (The first
#: default, 0.01, came from issue 24's NCs of enhanced R and was 40 times the measured spread.)
MIN_BETWEEN_SD = 0.002
#: The same floor for the mean keyed score (:mod:`ipmn_lightning.audit.keyed`), a share of the watermark
#: residual. The four demo null models' mean keyed scores spread by 0.0067 (0.005-0.020), and their 99% bound
#: gives τ = 0.038; the floor (1.5 times that spread) only guards against null models that happen to agree.
MIN_BETWEEN_SD_KEYED = 0.01
#: The confidence of the upper bound on the between-model standard deviation.
BETWEEN_SD_CONFIDENCE = 0.99


def summarise(ncs: Sequence[float]) -> dict[str, float]:
    """``n``, ``mean`` and ``sd`` (sample standard deviation; 0 for one value) of a list of NCs."""
    values = [float(v) for v in ncs]
    if not values:
        raise ValueError("no NCs to summarise")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "mean": mean, "sd": sd}


def null_summary(models: Mapping[str, Sequence[float]], min_between_sd: float = MIN_BETWEEN_SD) -> dict[str, Any]:
    """The null of the audit from the NCs that ``K >= 2`` independent null models' answers give.

    Args:
        models: per null model, the NCs of its answers (to the same challenge as the suspect, or to the
            pipeline's validation queries when the bundle records them).
        min_between_sd: the floor of the between-model standard deviation ``τ``.

    Returns:
        ``models`` (name → ``n``, ``mean``, ``sd``), ``mean`` (μ), ``between_sd`` (τ: bounded, inflated and
        floored), ``between_sd_measured`` (the plain sample value), ``between_sd_upper`` (its 99% upper
        confidence bound), ``within_sd`` (largest σ), ``min_between_sd``.

    Raises:
        ValueError: fewer than two null models, or one without NCs.
    """
    if len(models) < 2:
        raise ValueError(f"the audit's null needs at least 2 independent null models, got {len(models)}")
    per_model = {name: summarise(values) for name, values in models.items()}
    means = [s["mean"] for s in per_model.values()]
    k = len(means)
    centre = sum(means) / k
    measured = math.sqrt(sum((m - centre) ** 2 for m in means) / (k - 1))
    upper = measured * math.sqrt((k - 1) / _chi2_quantile(1 - BETWEEN_SD_CONFIDENCE, k - 1))
    return {
        "models": per_model,
        "mean": centre,
        "between_sd_measured": measured,
        "between_sd_upper": upper,
        "between_sd": max(upper * math.sqrt(1 + 1 / k), min_between_sd),
        "within_sd": max(s["sd"] for s in per_model.values()),
        "min_between_sd": min_between_sd,
    }


def _chi2_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of χ² with ``df`` degrees of freedom (bisection on its CDF, ``gammainc``)."""
    import torch

    def cdf(x: float) -> float:
        return float(torch.special.gammainc(torch.tensor(df / 2, dtype=torch.float64),
                                            torch.tensor(x / 2, dtype=torch.float64)))  # fmt: skip

    low, high = 0.0, float(df) + 10.0 * math.sqrt(2.0 * df) + 10.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < probability else (low, mid)
    return (low + high) / 2


def _normal_sf(z: float) -> float:
    """``P(Z >= z)`` of a standard normal, accurate far into the tail (``erfc``)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def audit_statistic(ncs: Sequence[float], null: Mapping[str, Any], alpha: float = 1e-6) -> dict[str, Any]:
    """The audit's statistic, p-value, effect size and verdict for a suspect's NCs (module docstring).

    Args:
        ncs: the NCs of the suspect's ``n`` answers.
        null: :func:`null_summary` of the null models.
        alpha: the level at or below which the suspect is called a carrier of the watermark.

    Returns:
        ``statistic`` (mean NC), ``n``, ``null_mean``, ``standard_error``, ``z``, ``p_value``, ``effect_size``
        (``(T - μ) / σ``: how many per-image standard deviations the suspect sits above the null), ``alpha``
        and ``verdict`` (``watermarked`` or ``not shown``).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    suspect = summarise(ncs)
    n = suspect["n"]
    sigma = max(float(null["within_sd"]), suspect["sd"])
    error = math.sqrt(float(null["between_sd"]) ** 2 + sigma**2 / n)
    shift = suspect["mean"] - float(null["mean"])
    z = shift / error
    p_value = _normal_sf(z)
    return {
        "statistic": suspect["mean"],
        "statistic_name": "mean NC",
        "n": n,
        "suspect_sd": suspect["sd"],
        "null_mean": float(null["mean"]),
        "standard_error": error,
        "z": z,
        "p_value": p_value,
        "effect_size": shift / sigma if sigma > 0 else math.inf,
        "alpha": alpha,
        "verdict": "watermarked" if p_value <= alpha else "not shown",
    }


def calibration(
    null_models: Mapping[str, Sequence[float]],
    alphas: Sequence[float] = (0.05, 0.01, 0.001),
    resamples: int = 200,
    n: int | None = None,
    seed: int = 0,
    min_between_sd: float = MIN_BETWEEN_SD,
) -> dict[str, Any]:
    """How often the audit's p-value falls below ``α`` for null models it was not fitted on.

    Each null model in turn is the "suspect": the null is fitted on the other null models (so at least three
    are needed), and the held-out model's NCs are bootstrapped ``resamples`` times (``n`` draws with
    replacement; default: all of them). A valid test gives a share ≤ ``α``.

    Returns:
        ``alphas``, ``trials`` (held-out models × resamples), ``share_below`` (α → share of p < α),
        ``upper_95`` (α → one-sided 95% Clopper-Pearson upper bound of that share), ``per_model``
        (held-out model → its smallest p-value and its p-value on the unresampled NCs).
    """
    from ipmn_lightning.inference.statistics import clopper_pearson_upper

    if len(null_models) < 3:
        raise ValueError(f"calibration needs at least 3 null models (one held out, two fitted), got {len(null_models)}")
    rng = random.Random(seed)
    below = dict.fromkeys(alphas, 0)
    per_model: dict[str, dict[str, float]] = {}
    trials = 0
    for held_out, values in null_models.items():
        rest = {name: v for name, v in null_models.items() if name != held_out}
        null = null_summary(rest, min_between_sd)
        size = n or len(values)
        smallest = 1.0
        for _ in range(resamples):
            sample = [values[rng.randrange(len(values))] for _ in range(size)]
            p = audit_statistic(sample, null)["p_value"]
            smallest = min(smallest, p)
            trials += 1
            for alpha in alphas:
                below[alpha] += p < alpha
        per_model[held_out] = {"p_value": audit_statistic(list(values)[:size], null)["p_value"], "min_p": smallest}
    return {
        "alphas": list(alphas),
        "trials": trials,
        "share_below": {str(a): below[a] / trials for a in alphas},
        "upper_95": {str(a): clopper_pearson_upper(below[a], trials) for a in alphas},
        "per_model": per_model,
    }
