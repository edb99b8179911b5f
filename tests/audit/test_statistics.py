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


def test_between_model_spread_is_inflated_and_floored() -> None:
    close = null_summary({"a": [0.62, 0.63], "b": [0.625, 0.635]}, min_between_sd=0.01)
    assert close["between_sd"] == 0.01  # two models 0.005 apart prove no smaller spread than the floor
    apart = null_summary({"a": [0.60], "b": [0.70]}, min_between_sd=0.01)
    assert apart["between_sd_measured"] == pytest.approx(0.0707107, rel=1e-5)
    assert apart["between_sd"] == pytest.approx(0.0707107 * (1.5**0.5), rel=1e-5)


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
    nulls = {"plain_inn": _model(rng, 0.627), "mask": _model(rng, 0.629), "res9_mask": _model(rng, 0.624)}
    stolen = _model(rng, 0.72, sd=0.05)  # the weakest unseen stealer of issue 24
    result = audit_statistic(stolen, null_summary(nulls), alpha=1e-6)
    assert result["verdict"] == "watermarked" and result["p_value"] < 1e-6
    assert result["effect_size"] > 1.5 and result["n"] == 200


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
    """Without the floor, two identical null models and a third 0.01 above them: the table shows the failure."""
    rng = random.Random(3)
    nulls = {"a": _model(rng, 0.62), "b": _model(rng, 0.62), "c": _model(rng, 0.64)}
    table = calibration(nulls, resamples=20, min_between_sd=0.0)
    assert table["share_below"]["0.001"] > 0.001
