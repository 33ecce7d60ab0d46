"""Calibration and operating point of an exported model, fitted on out-of-fold predictions only.

Every lesion of a study is scored once by the fold model that did not see it (the out-of-fold,
OOF, predictions of :func:`magn_lib.cv.run_grid`). Those scores, and only those, are used here:
a lesion's own (in-sample) fold models would make the model look surer than it is.

**Calibration: Platt scaling** (Platt 1999): ``p_cal = sigmoid(slope · logit(p) + intercept)``.
Two parameters are all ~300 lesions (the paper's 269) can support; isotonic regression fits a
free step function with as many steps as the data allow, overfits a sample this small (its
steps follow single lesions) and ties the scores of whole groups of lesions. Platt's targets
``(N₊ + 1) / (N₊ + 2)`` for MM and ``1 / (N₋ + 2)`` for metastasis (his prior correction)
keep the fit finite when the OOF scores separate the classes perfectly, where a plain logistic
fit would diverge. The fit is scikit-learn's unpenalised ``LogisticRegression`` on
``logit(p)``, each lesion entered twice with the soft target as sample weights (exactly the
cross-entropy with soft targets). Platt scaling is monotone (slope > 0 unless the model is
worse than chance), so it changes what a probability *says*, not the order of the lesions.

**The ensemble.** A new lesion is scored by every fold model; each fold model's probability is
calibrated with the map fitted on OOF scores (one fold model per lesion, the same kind of score)
and the calibrated probabilities are averaged (:meth:`Calibration.ensemble`).

**Operating point** (the call "multiple myeloma" when ``p_cal >= threshold``), by a stated rule
on the calibrated OOF scores: ``"youden"`` (maximum of sensitivity + specificity − 1) or, with
``target_sensitivity``, the highest threshold whose OOF sensitivity reaches the target. The
threshold lies midway between the two OOF scores it separates.

**Its sensitivity and specificity** are given twice, with patient-bootstrap 95 % intervals
(:func:`magn_lib.stats.bootstrap_metrics`: patients resampled within class, a patient's lesions
together):

- *apparent*: the rule's calls on the same OOF scores it was chosen on (optimistic: the
  threshold was picked to do well on exactly these lesions);
- *cross-validated*: for each fold, calibration and threshold are fitted on the OOF scores of
  the other folds and applied to this fold's lesions; the calls of all folds together estimate
  how the *rule* does on lesions it was not fitted on. This is the number to quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve

from magn_lib.errors import InputError
from magn_lib.stats import binary_metrics, bootstrap_metrics

__all__ = [
    "CLIP",
    "NO_CALL",
    "Calibration",
    "choose_threshold",
    "fit_calibration",
    "fit_platt",
    "platt_targets",
]

# probabilities are clipped into [CLIP, 1 - CLIP] before the logit: a float32 sigmoid saturates
# at exactly 0 or 1 beyond |logit| ~ 17 (whose logit would be infinite)
CLIP = 1e-9
RULES = ("youden", "target_sensitivity")
NO_CALL = "no call (no signal out of fold)"


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1.0 - CLIP)
    return np.log(q) - np.log1p(-q)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def platt_targets(y: np.ndarray) -> np.ndarray:
    """Platt's prior-corrected soft targets: ``(N₊+1)/(N₊+2)`` for label 1, ``1/(N₋+2)`` for 0."""
    y = np.asarray(y, dtype=int)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    return np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def fit_platt(y_true: Sequence[int] | np.ndarray,
              probability: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(slope, intercept)`` of Platt scaling on the logit of ``probability`` (see module doc).

    A negative slope (worse than chance out of fold) is replaced by slope 0 and the intercept
    of the prior-corrected prevalence: the scores are not inverted.

    Raises:
        InputError: fewer than 2 lesions of either class (nothing to calibrate against).
    """
    y = np.asarray(y_true, dtype=int)
    x = _logit(np.asarray(probability, dtype=np.float64))
    if y.shape != x.shape or y.ndim != 1:
        raise InputError(f"labels {y.shape} and probabilities {x.shape} must be 1-D and match")
    if min(int(y.sum()), int(y.size - y.sum())) < 2:
        raise InputError("calibration needs at least 2 lesions of each class among the "
                         f"out-of-fold predictions; got {int(y.sum())} MM of {y.size}")
    t = platt_targets(y)
    features = np.concatenate([x, x])[:, None]
    labels = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    weights = np.concatenate([t, 1.0 - t])
    fit = LogisticRegression(C=np.inf, solver="lbfgs", tol=1e-10, max_iter=10_000)
    fit.fit(features, labels, sample_weight=weights)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if slope < 0:
        # out of fold the model ranks the classes the wrong way round: inverting it would be
        # fitting the cohort, so its scores are taken to carry no information (slope 0) and
        # every lesion gets the (prior-corrected) prevalence; Calibration.no_signal says so
        prevalence = float(np.mean(t))
        slope, intercept = 0.0, float(np.log(prevalence) - np.log1p(-prevalence))
    return slope, intercept


def choose_threshold(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray,
                     *, target_sensitivity: float | None = None) -> float:
    """The operating point on ``score`` (call MM when ``score >= threshold``).

    Youden's J (``target_sensitivity=None``): the threshold maximising sensitivity +
    specificity − 1, the highest one among ties. Otherwise the highest threshold whose
    sensitivity is at least ``target_sensitivity``. The threshold returned lies midway between
    the lowest score called MM and the next lower score, so the calls on ``score`` are those of
    the rule and a new score near the boundary is not decided by float rounding.
    """
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(score, dtype=np.float64)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    # thresholds[0] is +inf (nothing called MM); the others are the distinct scores, descending
    if target_sensitivity is None:
        best = int(np.argmax(tpr - fpr))  # first maximum = highest threshold among ties
    else:
        reaching = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
        best = int(reaching[0])
    best = max(best, 1)
    below = thresholds[best + 1] if best + 1 < len(thresholds) else thresholds[best] - 1e-6
    return float(0.5 * (thresholds[best] + max(below, 0.0)))


@dataclass(frozen=True)
class Calibration:
    """Platt scaling and operating point of an exported model (see the module doc).

    Attributes:
        slope, intercept: ``p_cal = sigmoid(slope · logit(p) + intercept)``.
        threshold: call MM when the calibrated ensemble probability is ``>= threshold``.
        rule: ``"youden"`` or ``"target_sensitivity"``; ``target_sensitivity`` its target.
        n_lesions, n_patients, n_mm: the OOF predictions it was fitted on.
        operating_point: ``{"apparent" | "cross_validated": {metric: {"estimate", "ci_low",
            "ci_high"}}}`` for sensitivity and specificity (95 % patient bootstrap).
        brier_raw, brier_calibrated: Brier score of the OOF predictions before / after (the
            "after" is in-sample for the two Platt parameters).
        notes: why an estimate or interval is undefined (``{"cross_validated": reason}``),
            e.g. a fold whose complement holds fewer than 2 lesions of a class.
    """

    slope: float
    intercept: float
    threshold: float
    rule: str
    target_sensitivity: float | None
    n_lesions: int
    n_patients: int
    n_mm: int
    operating_point: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    brier_raw: float = float("nan")
    brier_calibrated: float = float("nan")
    notes: dict[str, str] = field(default_factory=dict)
    method: str = "platt"

    @property
    def no_signal(self) -> bool:
        """The out-of-fold scores did not rank MM above metastasis (slope 0): every lesion
        gets the same calibrated probability, the training prevalence."""
        return self.slope <= 0

    def calibrate(self, probability: Sequence[float] | np.ndarray | float) -> np.ndarray:
        """Calibrated probabilities of one fold model's raw ``probability`` (same shape)."""
        return _sigmoid(self.slope * _logit(np.asarray(probability)) + self.intercept)

    def ensemble(self, fold_probabilities: Sequence[float] | np.ndarray) -> float:
        """The calibrated ensemble probability: the mean of the calibrated fold probabilities."""
        return float(np.mean(self.calibrate(np.asarray(fold_probabilities, dtype=np.float64))))

    def call(self, calibrated: float) -> str:
        """``"multiple myeloma"`` at or above the threshold, else ``"metastasis"``; no call
        (:data:`NO_CALL`) from a model without signal out of fold (:attr:`no_signal`)."""
        if self.no_signal:
            return NO_CALL
        return "multiple myeloma" if calibrated >= self.threshold else "metastasis"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibration:
        return cls(**values)


def _interval(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    rows = table.set_index("metric")
    return {m: {k: float(rows.loc[m, k]) for k in ("estimate", "ci_low", "ci_high")}
            for m in ("sensitivity", "specificity")}


def _undefined() -> dict[str, dict[str, float]]:
    return {m: {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
            for m in ("sensitivity", "specificity")}


def _fit_rule(y: np.ndarray, p: np.ndarray, target_sensitivity: float | None
              ) -> tuple[float, float, float]:
    slope, intercept = fit_platt(y, p)
    calibrated = _sigmoid(slope * _logit(p) + intercept)
    return slope, intercept, choose_threshold(y, calibrated,
                                              target_sensitivity=target_sensitivity)


def fit_calibration(
    oof: pd.DataFrame,
    *,
    target_sensitivity: float | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Calibration:
    """Fit Platt scaling and the operating point on one configuration's OOF predictions.

    Args:
        oof: one row per lesion with ``label`` (1 = MM), ``probability`` (its held-out fold
            model's), ``patient_id`` and ``fold`` (the out-of-fold predictions of
            :func:`magn_lib.cv.run_grid` for one configuration).
        target_sensitivity: ``None`` for Youden's J, else the sensitivity the threshold must
            reach on the OOF predictions.
        n_resamples, seed: of the patient bootstrap.

    Returns:
        A :class:`Calibration`.

    Raises:
        InputError: missing columns, a lesion scored twice, or too few lesions of a class
            (overall or outside some fold).
    """
    missing = [c for c in ("label", "probability", "patient_id", "fold") if c not in oof]
    if missing:
        raise InputError(f"out-of-fold predictions lack column(s) {missing}")
    if "lesion_id" in oof and oof["lesion_id"].duplicated().any():
        raise InputError("out-of-fold predictions hold a lesion more than once: give one "
                         "configuration's predictions")
    y = oof["label"].to_numpy(dtype=int)
    p = oof["probability"].to_numpy(dtype=np.float64)
    patients = oof["patient_id"].astype(str).to_numpy()
    folds = oof["fold"].to_numpy(dtype=int)
    slope, intercept, threshold = _fit_rule(y, p, target_sensitivity)
    calibrated = _sigmoid(slope * _logit(p) + intercept)

    # the rule refitted without each fold, applied to that fold's lesions; too few lesions of
    # a class outside some fold (a tiny cohort) leaves the cross-validated estimate undefined
    calls = np.zeros(len(y), dtype=np.float64)
    notes = {}
    try:
        for fold in np.unique(folds):
            held = folds == fold
            s, b, t = _fit_rule(y[~held], p[~held], target_sensitivity)
            calls[held] = (_sigmoid(s * _logit(p[held]) + b) >= t).astype(float)
    except InputError as exc:
        notes["cross_validated"] = f"not estimable without fold {fold}: {exc.problem}"
    operating_point = {}
    for kind, score, cut in (("apparent", calibrated, threshold),
                             ("cross_validated", calls, 0.5)):
        if kind in notes:
            operating_point[kind] = _undefined()
            continue
        try:
            operating_point[kind] = _interval(bootstrap_metrics(
                y, score, patients, threshold=cut, n_resamples=n_resamples, seed=seed))
        except InputError as exc:  # fewer than 2 patients of a class: no interval
            point = binary_metrics(y, score, threshold=cut)
            operating_point[kind] = {m: {"estimate": point[m], "ci_low": float("nan"),
                                         "ci_high": float("nan")}
                                     for m in ("sensitivity", "specificity")}
            notes[kind] = f"no interval: {exc.problem}"
    return Calibration(
        slope=slope, intercept=intercept, threshold=threshold,
        rule="youden" if target_sensitivity is None else "target_sensitivity",
        target_sensitivity=target_sensitivity,
        n_lesions=int(len(y)), n_patients=int(len(set(patients))), n_mm=int(y.sum()),
        operating_point=operating_point,
        notes=notes,
        brier_raw=float(np.mean((p - y) ** 2)),
        brier_calibrated=float(np.mean((calibrated - y) ** 2)),
    )
