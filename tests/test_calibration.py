"""Platt scaling and the operating point, against independent references (scipy's optimiser,
brute force over thresholds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import expit, logit

from magn_lib.calibration import (
    NO_CALL,
    Calibration,
    choose_threshold,
    fit_calibration,
    fit_platt,
    platt_targets,
)
from magn_lib.errors import InputError
from magn_lib.stats import binary_metrics


def _oof(n: int = 120, *, seed: int = 0, shift: float = 1.5, folds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = rng.normal(shift * (2 * y - 1), 1.5)
    return pd.DataFrame({"lesion_id": [f"L{i}" for i in range(n)],
                         "patient_id": [f"P{i // 2}" for i in range(n)], "label": y,
                         "probability": expit(score), "fold": np.arange(n) // 2 % folds})


def test_platt_matches_a_direct_minimisation_of_the_soft_target_loss():
    oof = _oof()
    y, p = oof["label"].to_numpy(), oof["probability"].to_numpy()
    t, x = platt_targets(y), logit(p)

    def loss(ab):
        z = ab[0] * x + ab[1]
        return np.sum(np.logaddexp(0, z) - t * z)  # cross-entropy with soft targets

    reference = minimize(loss, [1.0, 0.0], method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(fit_platt(y, p), reference, rtol=1e-4, atol=1e-5)


def test_platt_is_finite_on_separable_scores_and_recovers_a_known_map():
    y = np.array([0] * 10 + [1] * 10)
    p = np.r_[np.linspace(0.01, 0.3, 10), np.linspace(0.7, 0.99, 10)]
    slope, intercept = fit_platt(y, p)
    assert np.isfinite([slope, intercept]).all() and slope > 0
    # scores drawn from a known Platt map: the fit finds it back
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 20000)
    labels = (rng.random(z.size) < expit(0.5 * z - 0.3)).astype(int)
    slope, intercept = fit_platt(labels, expit(z))
    assert slope == pytest.approx(0.5, abs=0.03) and intercept == pytest.approx(-0.3, abs=0.05)
    # scores ranking the classes the wrong way round are not inverted: no signal, prevalence
    slope, intercept = fit_platt(y, 1 - p)
    assert slope == 0 and expit(intercept) == pytest.approx(np.mean(platt_targets(y)))
    inverted = fit_calibration(pd.DataFrame({"label": y, "probability": 1 - p, "fold": 0,
                                             "patient_id": [f"P{i}" for i in range(y.size)]}),
                               n_resamples=50)
    assert inverted.no_signal and inverted.call(0.99) == NO_CALL
    with pytest.raises(InputError, match="2 lesions of each class"):
        fit_platt([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9])


def _brute_force_youden(y, s):
    best, best_j = None, -np.inf
    for t in np.sort(np.unique(s))[::-1]:
        m = binary_metrics(y, s, threshold=t)
        j = m["sensitivity"] + m["specificity"] - 1
        if j > best_j + 1e-12:
            best, best_j = t, j
    return best, best_j


def test_youden_threshold_against_brute_force_and_target_sensitivity():
    oof = _oof(seed=3)
    y, s = oof["label"].to_numpy(), oof["probability"].to_numpy()
    threshold = choose_threshold(y, s)
    lowest_called, j = _brute_force_youden(y, s)
    m = binary_metrics(y, s, threshold=threshold)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(j)
    below = s[s < lowest_called].max()
    assert threshold == pytest.approx((lowest_called + below) / 2)  # midway between scores
    for target in (0.5, 0.8, 0.95):
        t = choose_threshold(y, s, target_sensitivity=target)
        assert binary_metrics(y, s, threshold=t)["sensitivity"] >= target
        # the next higher score as threshold misses the target: t is the highest that reaches it
        higher = s[s >= t].min()
        assert binary_metrics(y, s, threshold=np.nextafter(higher, 2))["sensitivity"] < target


def test_fit_calibration_operating_point_and_cross_validated_rule():
    oof = _oof(n=150, seed=5)
    cal = fit_calibration(oof, n_resamples=300, seed=0)
    assert cal.rule == "youden" and cal.n_lesions == 150 and cal.n_patients == 75
    calibrated = cal.calibrate(oof["probability"])
    # monotone: the order of the lesions (and so the AUC) is unchanged
    assert binary_metrics(oof["label"], calibrated)["auc"] == pytest.approx(
        binary_metrics(oof["label"], oof["probability"])["auc"])
    apparent = binary_metrics(oof["label"], calibrated, threshold=cal.threshold)
    for metric in ("sensitivity", "specificity"):
        point = cal.operating_point["apparent"][metric]
        assert point["estimate"] == pytest.approx(apparent[metric])
        assert point["ci_low"] <= point["estimate"] <= point["ci_high"]
        crossed = cal.operating_point["cross_validated"][metric]
        assert 0 < crossed["ci_low"] <= crossed["estimate"] <= crossed["ci_high"] <= 1
    assert cal.brier_calibrated <= cal.brier_raw + 1e-9  # overconfident scores get milder
    target = fit_calibration(oof, target_sensitivity=0.9, n_resamples=200)
    assert target.rule == "target_sensitivity"
    assert target.operating_point["apparent"]["sensitivity"]["estimate"] >= 0.9
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert cal.ensemble([0.2, 0.9]) == pytest.approx(np.mean(cal.calibrate([0.2, 0.9])))
    assert cal.call(cal.threshold) == "multiple myeloma"
    assert cal.call(np.nextafter(cal.threshold, 0)) == "metastasis"


def test_fit_calibration_refuses_a_lesion_scored_twice():
    oof = _oof(n=20)
    with pytest.raises(InputError, match="more than once"):
        fit_calibration(pd.concat([oof, oof]))
    with pytest.raises(InputError, match="fold"):
        fit_calibration(oof.drop(columns="fold"))
