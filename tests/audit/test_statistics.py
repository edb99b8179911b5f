"""The audit's model-level statistic: a null of independent models, and a p-value that holds for them."""

from __future__ import annotations

import random

import pytest

from ipmn_lightning.audit.statistics import audit_statistic, calibration, null_summary, summarise
from ipmn_lightning.inference.statistics import empirical_p_values, fisher_combined_p_value


def _model(rng: random.Random, mean: float, n: int = 200, sd: float = 0.03) -> list[float]:
    return [rng.gauss(mean, sd) for _ in range(n)]


def test_summarise_and_null_need_two_models() -> None:
    assert summarise([0.5, 0.7]) == pytest.approx({"n": 2, "mean": 0.6, "sd": 0.1414213}, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        null_summary({"only": [0.6, 0.61]})
    with pytest.raises(ValueError, match="no NCs"):
        summarise([])


def test_between_model_spread_is_bounded_inflated_and_floored() -> None:
    same = null_summary({"a": [0.62, 0.63], "b": [0.62, 0.63], "c": [0.63, 0.62]}, min_between_sd=0.002)
    assert same["between_sd_measured"] == 0 and same["between_sd"] == 0.002  # no spread seen: the floor
    apart = null_summary({"a": [0.60], "b": [0.70]}, min_between_sd=0.002)
    assert apart["between_sd_measured"] == pytest.approx(0.0707107, rel=1e-5)
    # two models: the 99% upper bound of a standard deviation is s * sqrt(1 / chi2_0.01(1)) = 79.8 s
    assert apart["between_sd_upper"] == pytest.approx(0.0707107 * 79.79, rel=1e-3)
    assert apart["between_sd"] == pytest.approx(apart["between_sd_upper"] * (1.5**0.5), rel=1e-6)


def test_a_face_swap_model_that_fisher_accuses_is_not_accused() -> None:
    """Issue 24's innocent model: a small, consistent NC shift over clean faces, no watermark.

    Per-image p-values against clean faces combined by Fisher call it certain; the audit, whose null is a set
    of independent models, does not.
    """
    rng = random.Random(0)
    clean = _model(rng, 0.620, n=1000)
    nulls = {"plain_inn": _model(rng, 0.627), "mask": _model(rng, 0.629)}
    innocent = _model(rng, 0.633)  # another independent model, a little above the two null models
    fisher = fisher_combined_p_value(empirical_p_values(innocent, clean))[1]
    assert fisher < 1e-6
    result = audit_statistic(innocent, null_summary(nulls), alpha=1e-6)
    assert result["p_value"] > 0.01 and result["verdict"] == "not shown"


def test_a_stolen_model_is_shown_from_200_answers() -> None:
    rng = random.Random(1)
    # as measured on the demo: null models within 0.0005 of each other, per-image sd 0.0015
    nulls = {name: _model(rng, mean, sd=0.0015) for name, mean in (("a", 0.6207), ("b", 0.6208), ("c", 0.6203))}
    stolen = _model(rng, 0.645, sd=0.02)  # the demo's res16 thief
    result = audit_statistic(stolen, null_summary(nulls), alpha=1e-6)
    assert result["verdict"] == "watermarked" and result["p_value"] < 1e-6
    assert result["effect_size"] > 1 and result["n"] == 200


def test_calibration_holds_on_null_models_it_was_not_fitted_on() -> None:
    rng = random.Random(2)
    # independent models differ a little in their mean NC (sd 0.004): never accused at these levels
    nulls = {f"null{k}": _model(rng, rng.gauss(0.628, 0.004)) for k in range(4)}
    table = calibration(nulls, resamples=50)
    assert table["trials"] == 200
    for alpha in ("0.05", "0.01", "0.001"):
        assert table["share_below"][alpha] <= float(alpha)
    with pytest.raises(ValueError, match="at least 3"):
        calibration(dict(list(nulls.items())[:2]))


def test_calibration_reports_a_null_it_cannot_hold() -> None:
    """Without the floor, five identical null models and a sixth 0.02 above them: the table shows the failure."""
    nulls = {f"same{k}": [0.62] * 50 for k in range(5)} | {"off": [0.64] * 50}
    table = calibration(nulls, resamples=10, min_between_sd=0.0)
    assert table["share_below"]["0.001"] >= 1 / 6
    assert calibration(nulls, resamples=10)["share_below"]["0.001"] >= 1 / 6  # 0.002 is no cure for 0.02
