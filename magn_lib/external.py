"""External validation: a frozen model bundle scored on another site's cohort (``magn validate``).

The bundle (:mod:`magn_lib.bundle`) was trained at site A; the external manifest is site B.
Nothing is refitted on site B: its series go through the bundle's preprocessing
(:func:`magn_lib.predict.predict_manifest`: read, mask transfer, crops, input checks against
the training ranges), the fold-model ensemble gives MAGN's calibrated probability and call at
the bundle's operating point, and the frozen radiomics pipeline (fitted on all of site A at
export, :func:`magn_lib.bundle.load_radiomics`) scores pyradiomics features extracted from the
same crops with the bundle's own settings file. Readers' calls, when the manifest has reads,
are scored as in notebook 05 (:func:`magn_lib.readers.reader_predictions`). Site B's labels
are read only to *evaluate*: a test changes every label and finds every frozen prediction
bitwise unchanged.

What is measured, per method (:func:`external_metrics`):

- **discrimination**: AUC with the DeLong interval (lesion level; Obuchowski's clustered
  interval and the patient-bootstrap one beside it);
- **the operating point**: ACC, F1, sensitivity and specificity of the bundle's calls with
  patient-bootstrap intervals (:func:`magn_lib.stats.bootstrap_metrics`);
- **calibration** (:func:`calibration_summary`): calibration-in-the-large (the intercept of a
  logistic regression of the outcome with ``logit(p)`` as offset: 0 when the mean predicted
  probability matches the observed rate, negative when the probabilities are too high) and the
  calibration slope (of the outcome on ``logit(p)``: 1 ideal, below 1 predictions too extreme),
  by ``statsmodels`` GLMs with patient-clustered (sandwich) standard errors and Wald intervals;
  the reliability table and the decision curve (:func:`magn_lib.stats.calibration_table`,
  :func:`magn_lib.stats.decision_curve`, ``dcurves``);
- beside it, the **internal cross-validation estimate** the bundle carries (its out-of-fold
  predictions): per-fold mean ± SD and pooled AUC with intervals;
- the **input checks** that fired, counted by kind, and a **per-variable breakdown**
  (:func:`breakdown`: vendor, field strength, slice thickness of the sagittal series, from the
  DICOM headers) where the cohort has more than one level;
- optionally a **logistic recalibration** (:func:`recalibrate`) fitted on a stated,
  patient-grouped fraction of site B and evaluated only on the other patients.

Readers' scores are a 10-point ordinal scale, not probabilities: they get discrimination and
their calls' metrics, no calibration.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magn_lib.errors import InputError

__all__ = [
    "ACQUISITION_COLUMNS",
    "EXTERNAL_FORMAT",
    "PREDICTION_COLUMNS",
    "ExternalResult",
    "breakdown",
    "calibration_summary",
    "external_metrics",
    "internal_estimate",
    "load_external",
    "recalibrate",
    "validate_external",
]

EXTERNAL_FORMAT = "magn-external/1"
#: the lesion's acquisition (sagittal series, DICOM headers) in every prediction row
ACQUISITION_COLUMNS: tuple[str, ...] = ("vendor", "field_strength_t", "slice_thickness_mm")
PREDICTION_COLUMNS: tuple[str, ...] = (
    "lesion_id", "patient_id", "method", "label", "probability", "call", "threshold", "status",
    *ACQUISITION_COLUMNS, "n_input_warnings",
)
#: the methods whose ``probability`` is a calibrated probability (readers' is an ordinal score)
PROBABILISTIC = ("magn", "radiomics")
_CLIP = 1e-9
_LEVEL = 0.95
_CHECK_COLUMNS = ["lesion_id", "patient_id", "view", "parameter", "value", "training_range",
                  "message"]


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    return np.log(q) - np.log1p(-q)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _nan_interval(note: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"estimate": float("nan"), "ci_low": float("nan"),
                           "ci_high": float("nan")}
    if note:
        out["note"] = note
    return out


# ----------------------------------------------------------------------------------- metrics

def _glm_fit(y: np.ndarray, exog: np.ndarray, offset: np.ndarray | None,
             groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Binomial GLM coefficients and their Wald interval bounds (patient-clustered SEs when
    there are >= 2 patients), and the method's name."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

    model = sm.GLM(y, exog, family=sm.families.Binomial(), offset=offset)
    clustered = len(np.unique(groups)) >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        try:
            fit = (model.fit(cov_type="cluster", cov_kwds={"groups": groups}) if clustered
                   else model.fit())
        except (PerfectSeparationError, PerfectSeparationWarning):
            raise InputError("the outcome is perfectly separated by logit(p): the slope is "
                             "infinite") from None
    ci = np.asarray(fit.conf_int(alpha=1.0 - _LEVEL))
    method = ("binomial GLM (statsmodels), Wald interval with patient-clustered sandwich "
              "standard errors" if clustered else "binomial GLM (statsmodels), Wald interval")
    return np.asarray(fit.params), ci, method


def calibration_summary(y: Sequence[int] | np.ndarray, p: Sequence[float] | np.ndarray,
                        patients: Sequence[str] | np.ndarray) -> dict[str, Any]:
    """Calibration-in-the-large and calibration slope of probabilities ``p`` for outcomes ``y``.

    - calibration-in-the-large ``a``: ``logit P(y = 1) = a + logit(p)`` (``logit(p)`` as an
      offset): 0 when the mean probability matches the observed rate; ``a < 0``: the
      probabilities are too high (the log odds to add to every one of them).
    - calibration slope ``b``: ``logit P(y = 1) = c + b logit(p)``: 1 ideal; ``b < 1``: the
      predictions are too extreme (too sure), ``b > 1``: too modest.

    Both are binomial GLMs (statsmodels) with Wald 95 % intervals from patient-clustered
    (sandwich) standard errors, since lesions of one patient are not independent.
    Probabilities are clipped to ``[1e-9, 1 - 1e-9]`` before the logit.

    Args:
        y: (N,) 0/1 outcomes, 1 = multiple myeloma.
        p: (N,) predicted probabilities of multiple myeloma.
        patients: (N,) the patient of each lesion.

    Returns:
        ``{"calibration_in_the_large": {estimate, ci_low, ci_high}, "calibration_slope":
        {estimate, ci_low, ci_high}, "mean_predicted", "observed_rate", "difference"
        (mean predicted − observed, as a probability), "n_lesions", "n_patients", "method"}``;
        an estimate that cannot be made (one class, perfect separation) is NaN with a
        ``note``.
    """
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    groups = pd.factorize(np.asarray(patients).astype(str))[0]
    if y.shape != p.shape or y.ndim != 1 or groups.shape != y.shape:
        raise InputError(f"outcomes {y.shape}, probabilities {p.shape} and patients "
                         f"{groups.shape} must be 1-D and match")
    x = _logit(p)
    out: dict[str, Any] = {
        "n_lesions": int(y.size), "n_patients": int(len(set(groups.tolist()))),
        "mean_predicted": float(p.mean()) if y.size else float("nan"),
        "observed_rate": float(y.mean()) if y.size else float("nan"),
    }
    out["difference"] = out["mean_predicted"] - out["observed_rate"]
    method = "binomial GLM (statsmodels)"
    if y.size == 0 or y.min() == y.max():
        note = "one class only: calibration cannot be estimated"
        out["calibration_in_the_large"] = _nan_interval(note)
        out["calibration_slope"] = _nan_interval(note)
        out["method"] = method
        return out
    params, ci, method = _glm_fit(y, np.ones((y.size, 1)), x, groups)
    out["calibration_in_the_large"] = {"estimate": float(params[0]), "ci_low": float(ci[0, 0]),
                                       "ci_high": float(ci[0, 1])}
    if np.ptp(x) == 0:
        out["calibration_slope"] = _nan_interval("every probability is the same: no slope")
    else:
        try:
            params, ci, method = _glm_fit(y, np.column_stack([np.ones_like(x), x]), None,
                                          groups)
            out["calibration_slope"] = {"estimate": float(params[1]), "ci_low": float(ci[1, 0]),
                                        "ci_high": float(ci[1, 1])}
        except InputError as exc:
            out["calibration_slope"] = _nan_interval(exc.problem)
    out["method"] = method
    return out


def external_metrics(table: pd.DataFrame, threshold: float | None, *, n_resamples: int = 2000,
                     seed: int = 2022, probabilistic: bool = True) -> dict[str, Any]:
    """Discrimination, the operating point's metrics and calibration of one method.

    Args:
        table: one row per lesion with ``label`` (1 = MM), ``probability`` (MM probability or
            score, higher = more MM), ``patient_id``.
        threshold: the call is MM when ``probability >= threshold`` (the bundle's operating
            point); None = no calls (a model without signal): threshold metrics are NaN.
        n_resamples, seed: of the patient bootstrap.
        probabilistic: ``probability`` is a probability (calibration is measured); False for
            readers' ordinal scores.

    Returns:
        ``{"n_lesions", "n_patients", "n_mm", "n_mm_patients", "auc": {estimate, ci_low,
        ci_high (DeLong), "obuchowski": [low, high], "bootstrap": [low, high]},
        "accuracy" | "f1" | "sensitivity" | "specificity": {estimate, ci_low, ci_high},
        "brier", "calibration": calibration_summary(...) or None, "threshold",
        "ci_method", "notes"}``.
    """
    from magn_lib.stats import binary_metrics, bootstrap_metrics, delong_ci, obuchowski_ci

    y = table["label"].to_numpy(dtype=np.int64)
    p = table["probability"].to_numpy(dtype=np.float64)
    patients = table["patient_id"].astype(str).to_numpy()
    has_mm = pd.Series(y, index=patients).groupby(level=0).max()
    out: dict[str, Any] = {
        "n_lesions": int(y.size), "n_patients": int(has_mm.size), "n_mm": int(y.sum()),
        "n_mm_patients": int(has_mm.sum()), "threshold": threshold, "notes": [],
        "ci_method": f"AUC: DeLong (lesion level); operating point: patient bootstrap "
                     f"(percentile, stratified by class, {n_resamples} resamples, seed {seed})",
    }
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if min(n_pos, n_neg) >= 2:
        auc, low, high = delong_ci(y, p, _LEVEL)
        out["auc"] = {"estimate": auc, "ci_low": low, "ci_high": high}
        try:
            out["auc"]["obuchowski"] = list(obuchowski_ci(y, p, patients, _LEVEL)[1:])
        except InputError as exc:
            out["notes"].append(f"no clustered AUC interval: {exc.problem}")
    else:
        out["auc"] = _nan_interval(f"DeLong needs 2 lesions of each class; got {n_pos} MM "
                                   f"and {n_neg} metastasis")
    names = ("accuracy", "f1", "sensitivity", "specificity")
    if threshold is None:
        for name in names:
            out[name] = _nan_interval("no calls: the model had no signal out of fold")
    else:
        try:
            boot = bootstrap_metrics(y, p, patients, threshold=threshold,
                                     n_resamples=n_resamples, seed=seed).set_index("metric")
            for name in names:
                out[name] = {k: float(boot.loc[name, k])
                             for k in ("estimate", "ci_low", "ci_high")}
            if "auc" in boot.index and np.isfinite(boot.loc["auc", "ci_low"]):
                out["auc"]["bootstrap"] = [float(boot.loc["auc", "ci_low"]),
                                           float(boot.loc["auc", "ci_high"])]
        except InputError as exc:
            point = binary_metrics(y, p, threshold=threshold) if y.size else {}
            for name in names:
                out[name] = {"estimate": float(point.get(name, float("nan"))),
                             "ci_low": float("nan"), "ci_high": float("nan")}
            out["notes"].append(f"no bootstrap interval: {exc.problem}")
    out["brier"] = float(np.mean((p - y) ** 2)) if probabilistic and y.size else None
    out["calibration"] = calibration_summary(y, p, patients) if probabilistic else None
    return out


def internal_estimate(oof: pd.DataFrame, *, n_resamples: int = 2000, seed: int = 2022
                      ) -> dict[str, Any]:
    """The internal cross-validation estimate of a bundle's out-of-fold predictions
    (``lesion_id, patient_id, fold, label, probability``): per-fold mean ± SD of the AUC (as
    the paper reports it), the pooled AUC with its DeLong and patient-bootstrap intervals, and
    the pooled AUC after ranking within folds (:func:`magn_lib.stats.metrics_table`)."""
    from magn_lib.stats import metrics_table

    table = oof.assign(method="internal", config="oof")
    row = metrics_table(table, n_resamples=n_resamples, seed=seed).iloc[0]
    return {
        "n_lesions": int(row["n_lesions"]), "n_patients": int(row["n_patients"]),
        "n_mm": int(row["n_mm"]), "n_folds": int(row["n_folds"]),
        "auc_fold_mean": float(row["auc_fold_mean"]), "auc_fold_sd": float(row["auc_fold_sd"]),
        "auc_pooled": {"estimate": float(row["auc"]), "ci_low": float(row["auc_delong_low"]),
                       "ci_high": float(row["auc_delong_high"]),
                       "bootstrap": [float(row["auc_low"]), float(row["auc_high"])]},
        "auc_ranked_within_folds": {"estimate": float(row["auc_ranked"]),
                                    "ci_low": float(row["auc_ranked_low"]),
                                    "ci_high": float(row["auc_ranked_high"])},
        "what": "out-of-fold predictions of the training cohort (each lesion scored by the "
                "fold model that did not see it); pooled AUC mixes fold models' scales, the "
                "ranked one does not",
    }


def breakdown(predictions: pd.DataFrame, by: str) -> pd.DataFrame:
    """Metrics per level of one acquisition variable (``vendor``, ``field_strength_t``,
    ``slice_thickness_mm``), per method, on the lesions scored (``status == "ok"``).

    Returns:
        One row per (method, level): ``method, variable, level, n_lesions, n_patients, n_mm,
        auc, auc_ci_low, auc_ci_high`` (DeLong; NaN with fewer than 2 lesions of a class),
        ``accuracy, sensitivity, specificity`` (of the calls; NaN without calls),
        ``mean_probability, observed_rate``. Levels that are missing are ``"unknown"``.
    """
    from magn_lib.stats import binary_metrics, delong_ci

    if by not in predictions.columns:
        raise InputError(f"the predictions have no column {by!r}",
                         hint=f"one of {', '.join(ACQUISITION_COLUMNS)}")
    data = predictions[predictions["status"] == "ok"].copy()
    level = data[by]
    if by == "slice_thickness_mm":
        level = pd.to_numeric(level, errors="coerce").round(1)
    data["_level"] = level.astype(object).where(level.notna(), "unknown").astype(str)
    rows = []
    for (method, value), part in data.groupby(["method", "_level"], sort=True):
        y = part["label"].to_numpy(dtype=np.int64)
        p = part["probability"].to_numpy(dtype=np.float64)
        n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
        auc = low = high = float("nan")
        if min(n_pos, n_neg) >= 2:
            auc, low, high = delong_ci(y, p)
        calls = pd.to_numeric(part["call"], errors="coerce")
        if calls.notna().all() and len(calls):
            m = binary_metrics(y, calls.to_numpy(dtype=np.float64), threshold=0.5)
        else:
            m = dict.fromkeys(("accuracy", "sensitivity", "specificity"), float("nan"))
        rows.append({"method": method, "variable": by, "level": value, "n_lesions": int(y.size),
                     "n_patients": int(part["patient_id"].nunique()), "n_mm": n_pos,
                     "auc": auc, "auc_ci_low": low, "auc_ci_high": high,
                     "accuracy": m["accuracy"], "sensitivity": m["sensitivity"],
                     "specificity": m["specificity"],
                     "mean_probability": float(p.mean()), "observed_rate": float(y.mean())})
    columns = ["method", "variable", "level", "n_lesions", "n_patients", "n_mm", "auc",
               "auc_ci_low", "auc_ci_high", "accuracy", "sensitivity", "specificity",
               "mean_probability", "observed_rate"]
    return pd.DataFrame(rows, columns=columns)


def _split_patients(lesions: pd.DataFrame, fraction: float, seed: int
                    ) -> tuple[list[str], list[str]]:
    """Patients for fitting and for evaluation: ``fraction`` of the patients with an MM lesion
    and of those without, drawn with ``seed`` (at least one of each class on both sides)."""
    has_mm = lesions.groupby("patient_id")["label"].max()
    rng = np.random.default_rng(seed)
    fit: list[str] = []
    for label in (1, 0):
        group = sorted(has_mm.index[has_mm == label].astype(str))
        if len(group) < 2:
            which = "with" if label else "without"
            raise InputError(f"recalibration needs at least 2 patients {which} an MM lesion "
                             f"to split; the external cohort has {len(group)}")
        n_fit = min(max(int(round(fraction * len(group))), 1), len(group) - 1)
        fit += [group[i] for i in sorted(rng.permutation(len(group))[:n_fit])]
    evaluation = sorted(set(has_mm.index.astype(str)) - set(fit))
    return sorted(fit), evaluation


def recalibrate(predictions: pd.DataFrame, fraction: float, seed: int = 2022
                ) -> dict[str, Any]:
    """Logistic recalibration fitted on a patient-grouped ``fraction`` of the external cohort
    and evaluated only on the other patients' lesions.

    The split draws ``fraction`` of the patients with an MM lesion and of those without
    (``seed``); every lesion of a patient falls on one side. On the fitting side, the
    probabilities of each method are recalibrated by Platt scaling
    (:func:`magn_lib.calibration.fit_platt`: ``sigmoid(a + b logit(p))``, Platt's prior
    correction keeps the fit finite under separation); on the evaluation side, calibration,
    Brier score and the calls at the method's threshold are compared before and after. The
    AUC does not change (the map is monotone).

    Args:
        predictions: the ``predictions.csv`` table of :func:`validate_external`.
        fraction: of the patients used for fitting, in (0, 1).
        seed: of the split.

    Returns:
        ``{"fraction", "seed", "split", "fit_patients", "evaluation_patients", "methods":
        {method: {"slope", "intercept", "n_fit_lesions", "n_evaluation_lesions", "before",
        "after"}}}``; ``before``/``after`` hold ``calibration_summary`` plus ``brier`` and the
        call metrics at the threshold (``accuracy, sensitivity, specificity``).
    """
    from magn_lib.calibration import fit_platt
    from magn_lib.stats import binary_metrics

    if not 0 < float(fraction) < 1:
        raise InputError(f"the recalibration fraction must lie strictly between 0 and 1, got "
                         f"{fraction}")
    data = predictions[(predictions["status"] == "ok")
                       & predictions["method"].isin(PROBABILISTIC)].copy()
    data["patient_id"] = data["patient_id"].astype(str)
    if data.empty:
        raise InputError("no scored lesion of a probabilistic model to recalibrate")
    lesions = data.drop_duplicates("lesion_id")[["lesion_id", "patient_id", "label"]]
    fit_patients, evaluation = _split_patients(lesions, float(fraction), seed)
    assert not set(fit_patients) & set(evaluation)  # never the same lesions
    out: dict[str, Any] = {
        "fraction": float(fraction), "seed": int(seed),
        "split": "patients drawn within those with and without an MM lesion; every lesion of "
                 "a patient on one side; fitted on one side, evaluated only on the other",
        "fit_patients": fit_patients, "evaluation_patients": evaluation, "methods": {},
    }
    for method, part in data.groupby("method", sort=True):
        fit = part[part["patient_id"].isin(fit_patients)]
        held = part[part["patient_id"].isin(evaluation)]
        entry: dict[str, Any] = {"n_fit_lesions": int(len(fit)),
                                 "n_evaluation_lesions": int(len(held))}
        try:
            slope, intercept = fit_platt(fit["label"].to_numpy(), fit["probability"].to_numpy())
        except InputError as exc:
            entry["note"] = f"not fitted: {exc.problem}"
            out["methods"][method] = entry
            continue
        y = held["label"].to_numpy(dtype=np.int64)
        before = held["probability"].to_numpy(dtype=np.float64)
        after = _sigmoid(slope * _logit(before) + intercept)
        threshold = pd.to_numeric(held["threshold"], errors="coerce")
        cut = float(threshold.iloc[0]) if len(threshold) and threshold.notna().all() else None
        entry.update(slope=float(slope), intercept=float(intercept))
        for name, p in (("before", before), ("after", after)):
            summary = calibration_summary(y, p, held["patient_id"].to_numpy())
            summary["brier"] = float(np.mean((p - y) ** 2))
            if cut is not None:
                m = binary_metrics(y, p, threshold=cut)
                summary.update({k: m[k] for k in ("accuracy", "sensitivity", "specificity")})
            entry[name] = summary
        out["methods"][method] = entry
    return out


# --------------------------------------------------------------------------- the validation

@dataclass
class ExternalResult:
    """An external validation read back (:func:`load_external`).

    Attributes:
        predictions: ``predictions.csv`` (:data:`PREDICTION_COLUMNS`).
        metrics: ``metrics.json``.
        checks: ``input_checks.csv`` (one row per input check that fired).
        path: the validation's folder.
    """

    predictions: pd.DataFrame
    metrics: dict[str, Any]
    checks: pd.DataFrame
    path: Path
    extra: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)


def _read_table(path: Path) -> pd.DataFrame:
    # round_trip: the probabilities read back are the float64 values written (17 digits)
    return pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str, "method": str,
                                   "vendor": str, "level": str}, float_precision="round_trip")


def load_external(out: str | os.PathLike[str]) -> ExternalResult:
    """Read the folder written by :func:`validate_external`.

    ``extra`` holds the calibration curve, decision curve and breakdown tables by name.

    Raises:
        InputError: not a validation folder (no ``metrics.json``).
    """
    from magn_lib.layout import ExternalPaths

    paths = ExternalPaths(Path(out))
    if not paths.metrics.is_file():
        raise InputError("not an external validation folder (no metrics.json)", file=paths.root,
                         hint="give the --out folder of magn validate")
    metrics = json.loads(paths.metrics.read_text())
    extra = {name: _read_table(getattr(paths, name))
             for name in ("calibration_curve", "decision_curve", "breakdown")
             if getattr(paths, name).is_file()}
    return ExternalResult(predictions=_read_table(paths.predictions), metrics=metrics,
                          checks=_read_table(paths.input_checks), path=paths.root, extra=extra)


_CALLS = {"multiple myeloma": 1, "metastasis": 0}


def _magn_rows(bundle: Any, table: pd.DataFrame, cases: Path, lesions: pd.DataFrame
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from magn_lib.layout import PredictionPaths

    label = lesions.set_index("lesion_id")["label"]
    threshold = None if bundle.calibration.no_signal else float(bundle.calibration.threshold)
    rows, checks = [], []
    for row in table.itertuples():
        lesion_id, patient_id = str(row.lesion_id), str(row.patient_id)
        entry = {"lesion_id": lesion_id, "patient_id": patient_id, "method": "magn",
                 "label": int(label[lesion_id]), "probability": float("nan"), "call": pd.NA,
                 "threshold": threshold, "status": str(row.status), "n_input_warnings": 0}
        if row.status == "ok":
            result = json.loads(PredictionPaths(cases).prediction(lesion_id).read_text())
            entry["probability"] = float(result["probability_mm"])
            entry["call"] = _CALLS.get(result["call"], pd.NA)
            entry["n_input_warnings"] = len(result["input_checks"])
            matched = (result.get("in_sample") or {}).get("matched_by", [])
            entry["in_sample"] = ("image" if "identical sagittal image" in matched
                                  else "id" if matched else "")
            if entry["in_sample"] == "image":  # a training patient's very image: a leak
                checks.append({"lesion_id": lesion_id, "patient_id": patient_id,
                               "view": "sagittal", "parameter": "training_image",
                               "value": json.dumps(result["in_sample"]["patient_id"]),
                               "training_range": "",
                               "message": "the sagittal image is identical to training "
                                          f"patient {result['in_sample']['patient_id']}'s: "
                                          "this lesion is not external"})
            for check in result["input_checks"]:
                checks.append({"lesion_id": lesion_id, "patient_id": patient_id,
                               "view": check["view"], "parameter": check["parameter"],
                               "value": json.dumps(check["value"]),
                               "training_range": json.dumps(check["training_range"]),
                               "message": check["message"]})
        else:
            checks.append({"lesion_id": lesion_id, "patient_id": patient_id, "view": "",
                           "parameter": "unreadable", "value": "", "training_range": "",
                           "message": str(row.error)})
        rows.append(entry)
    return rows, checks


def _radiomics_rows(frozen: Any, prepared: Mapping[str, Any], magn: Sequence[dict[str, Any]],
                    crop_size: int, n_jobs: int) -> tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
    from magn_lib.crops import CropCache, LesionCrops
    from magn_lib.radiomics import extract_crop_features

    ok = [r for r in magn if r["status"] == "ok"]
    rows = [{**r, "method": "radiomics", "probability": float("nan"), "call": pd.NA,
             "threshold": (None if frozen.calibration.no_signal
                           else float(frozen.calibration.threshold))} for r in magn]
    if not ok:
        return rows, []
    cache = CropCache.from_lesions(
        [LesionCrops(lesion_id=r["lesion_id"], patient_id=r["patient_id"], label=0,
                     crops={v: prepared[r["lesion_id"]].crops[v] for v in frozen.views})
         for r in ok], views=frozen.views, crop_size=crop_size)
    features, refused = {}, []
    for view in frozen.views:
        features[view], failed = extract_crop_features(
            cache.image[view], cache.mask[view], cache.lesion_id, settings=frozen.settings,
            present=cache.present[view], spacing=cache.spacing[view], view=view,
            n_jobs=n_jobs, progress=False)
        refused.append(failed)
    raw = frozen.predict(features)
    calibrated = frozen.calibration.calibrate(raw.to_numpy())
    by_id = dict(zip(raw.index.astype(str), calibrated, strict=True))
    for row in rows:
        if row["lesion_id"] in by_id:
            p = float(by_id[row["lesion_id"]])
            row["probability"] = p
            call = frozen.calibration.call(p)
            row["call"] = _CALLS.get(call, pd.NA)
    patient_of = {r["lesion_id"]: r["patient_id"] for r in ok}
    checks = [{"lesion_id": str(f.lesion_id), "patient_id": patient_of.get(str(f.lesion_id), ""),
               "view": f.view, "parameter": "radiomics_refused", "value": "",
               "training_range": "",
               "message": f"{f.view}: pyradiomics refused the region ({f.reason}); the frozen "
                          "pipeline imputed the training medians"}
              for f in pd.concat(refused, ignore_index=True).itertuples()]
    return rows, checks


def _reader_rows(manifest: Any, magn: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    from magn_lib.readers import reader_predictions

    if manifest.readers is None or manifest.readers.empty:
        return []
    scores = reader_predictions(manifest.readers, manifest.lesions)
    calls = manifest.readers.set_index(["reader", "lesion_id"])["call"]
    base = {r["lesion_id"]: r for r in magn}
    rows = []
    for read in scores.itertuples():
        lesion = base.get(str(read.lesion_id), {})
        rows.append({"lesion_id": str(read.lesion_id), "patient_id": str(read.patient_id),
                     "method": str(read.config), "label": int(read.label),
                     "probability": float(read.probability),
                     "call": int(calls[(read.config, read.lesion_id)]), "threshold": 0.5,
                     "status": "ok", "n_input_warnings": lesion.get("n_input_warnings", 0),
                     **{c: lesion.get(c) for c in ACQUISITION_COLUMNS}})
    return rows


def _warning_counts(checks: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, Any]:
    magn = predictions[predictions["method"] == "magn"]
    lesion_checks = checks[checks["parameter"] != "unreadable"]
    by_kind = Counter(lesion_checks["parameter"])
    lesions_by_kind = lesion_checks.groupby("parameter")["lesion_id"].nunique()
    in_sample = magn["in_sample"] if "in_sample" in magn else pd.Series(dtype=str)
    return {
        "n_lesions": int(len(magn)),
        "n_unreadable": int((magn["status"] != "ok").sum()),
        # a lesion whose sagittal image is a training patient's is no external lesion; a study
        # id that equals a training patient's only is another site's numbering
        "n_training_image": int((in_sample == "image").sum()),
        "n_training_id_only": int((in_sample == "id").sum()),
        "n_lesions_with_a_warning": int(lesion_checks["lesion_id"].nunique()),
        "by_kind": {k: {"checks": int(v), "lesions": int(lesions_by_kind[k])}
                    for k, v in sorted(by_kind.items())},
        "by_view_and_kind": {f"{view} {kind}": int(n) for (view, kind), n in
                             lesion_checks.groupby(["view", "parameter"]).size().items()},
    }


def _as_oof(predictions: pd.DataFrame) -> pd.DataFrame:
    data = predictions[(predictions["status"] == "ok")
                       & predictions["method"].isin(PROBABILISTIC)]
    return data.assign(config=data["method"], fold=-1)[
        ["method", "config", "fold", "lesion_id", "patient_id", "label", "probability"]]


def _curves(predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    from magn_lib.stats import calibration_table, decision_curve

    oof = _as_oof(predictions)
    if oof.empty:
        return pd.DataFrame(), pd.DataFrame()
    n = oof["lesion_id"].nunique()
    calibration = calibration_table(oof, by=("method",), n_bins=min(10, max(2, n // 10)))
    curve = decision_curve(oof, by=("method",))
    return calibration, curve


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating | np.integer):
        return _finite(value.item())
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if value is pd.NA:
        return None
    return value


def validate_external(
    bundle: Any,
    manifest_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    n_resamples: int = 2000,
    seed: int = 2022,
    recalibration_fraction: float | None = None,
    progress: Callable[[str], None] | None = None,
    n_jobs: int = 1,
    overwrite: bool = False,
) -> Path:
    """Score an external cohort with a frozen bundle and measure how the models hold there.

    Args:
        bundle: a :class:`magn_lib.bundle.Bundle` or the path of a bundle folder.
        manifest_dir: the external cohort's ``data_manifest`` folder (its labels are used only
            to evaluate; nothing is fitted on them except the optional recalibration).
        out: the folder to write (:class:`magn_lib.layout.ExternalPaths`); written beside
            itself and renamed, so it is whole or absent.
        n_resamples, seed: of every patient bootstrap (and of the recalibration split).
        recalibration_fraction: with a number in (0, 1), :func:`recalibrate` on that fraction
            of the patients; None: no recalibration.
        progress: called with a short message at each step and for each lesion scored.
        n_jobs: workers of the radiomics feature extraction (-1 = one per core).
        overwrite: replace an existing ``out``.

    Returns:
        The folder written.

    Raises:
        InputError: a manifest that does not load, ``out`` existing without ``overwrite``, a
            bad recalibration fraction or one the cohort cannot be split for. A lesion that
            cannot be read is not an error: its rows have ``status = "error"`` and the reason is
            in ``input_checks.csv`` (parameter ``unreadable``).
    """
    from magn_lib.bundle import BUNDLE_FORMAT, Bundle, load_bundle, load_radiomics
    from magn_lib.files import default_dir_mode, write_csv, write_text
    from magn_lib.layout import ExternalPaths
    from magn_lib.manifest import load_manifest
    from magn_lib.predict import predict_manifest

    say = progress or (lambda message: None)
    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        raise InputError("the validation folder exists already", file=out,
                         hint="choose another --out or pass --overwrite")
    if recalibration_fraction is not None and not 0 < float(recalibration_fraction) < 1:
        raise InputError(f"the recalibration fraction must lie strictly between 0 and 1, got "
                         f"{recalibration_fraction}")
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    frozen = load_radiomics(bundle)
    manifest = load_manifest(manifest_dir, views=bundle.meta["preprocessing"]["views_read"])
    lesions = manifest.lesions.assign(lesion_id=manifest.lesions["lesion_id"].astype(str))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        paths = ExternalPaths(staging)
        prepared: dict[str, Any] = {}
        acquisition: dict[str, dict[str, Any]] = {}

        def keep(item: Any) -> None:
            lesion_id = item.case.lesion_id
            if frozen is not None:
                prepared[lesion_id] = item
            sagittal = item.acquisition.get("sagittal", {})
            acquisition[lesion_id] = {c: sagittal.get(c) for c in ACQUISITION_COLUMNS}

        say(f"scoring {len(lesions)} lesions with the frozen MAGN ensemble")
        done = Counter()

        def scored(lesion_id: str) -> None:
            done["n"] += 1
            say(f"lesion {lesion_id} scored ({done['n']} of {len(lesions)})")

        table = predict_manifest(bundle, manifest_dir, paths.cases_dir, report=False,
                                 on_prepared=keep, on_lesion=scored)
        magn, checks = _magn_rows(bundle, table, paths.cases_dir, lesions)
        for row in magn:
            row.update(acquisition.get(row["lesion_id"], dict.fromkeys(ACQUISITION_COLUMNS)))
        rows = list(magn)
        if frozen is not None:
            say("scoring the same crops with the frozen radiomics pipeline")
            radiomics_rows, refused = _radiomics_rows(frozen, prepared, magn, bundle.crop_size,
                                                      n_jobs)
            rows += radiomics_rows
            checks += refused
        rows += _reader_rows(manifest, magn)
        predictions = pd.DataFrame(rows)
        checks_table = pd.DataFrame(checks, columns=_CHECK_COLUMNS)
        warning_counts = _warning_counts(checks_table, predictions)
        predictions = predictions[list(PREDICTION_COLUMNS)]

        say("measuring discrimination and calibration")
        methods: dict[str, Any] = {}
        for method, part in predictions.groupby("method", sort=False):
            scored = part[part["status"] == "ok"]
            threshold = scored["threshold"].dropna()
            entry = external_metrics(
                scored, float(threshold.iloc[0]) if len(threshold) else None,
                n_resamples=n_resamples, seed=seed,
                probabilistic=method in PROBABILISTIC)
            entry["n_unscored"] = int((part["status"] != "ok").sum())
            methods[str(method)] = entry
        internal = {"magn": internal_estimate(bundle.oof, n_resamples=n_resamples, seed=seed)}
        if frozen is not None:
            internal["radiomics"] = internal_estimate(frozen.oof, n_resamples=n_resamples,
                                                      seed=seed)
        recalibration: dict[str, Any] = {"requested": False}
        if recalibration_fraction is not None:
            say(f"recalibrating on {recalibration_fraction:g} of the patients")
            recalibration = {"requested": True,
                             **recalibrate(predictions, recalibration_fraction, seed)}
        calibration_curve, decision = _curves(predictions)
        parts = [breakdown(predictions, c) for c in ACQUISITION_COLUMNS
                 if predictions.loc[predictions["status"] == "ok", c].nunique() > 1]
        by_variable = (pd.concat(parts, ignore_index=True) if parts
                       else breakdown(predictions.iloc[:0], "vendor"))
        radiomics_meta = bundle.radiomics_meta
        metrics = {
            "format": EXTERNAL_FORMAT,
            "bundle": {"config": bundle.config.name, "format": bundle.meta.get("format",
                                                                               BUNDLE_FORMAT),
                       "magn_version": bundle.meta.get("magn_version"),
                       "threshold": float(bundle.calibration.threshold),
                       "rule": bundle.calibration.rule,
                       "simulated_training_cohort": bool(
                           bundle.meta.get("run", {}).get("embedded_cohort"))},
            "radiomics": ({"included": True, "config": radiomics_meta.get("config")}
                          if frozen is not None else
                          {"included": False, "reason": radiomics_meta.get("reason")}),
            "cohort": {"n_lesions": int(len(lesions)),
                       "n_patients": int(lesions["patient_id"].nunique()),
                       "n_mm": int(lesions["label"].sum()),
                       # the hospitals: manifest column "centre" (its "site" column is the
                       # vertebral site, not the hospital)
                       "sites": sorted(manifest.patients["centre"].dropna().astype(str)
                                         .unique()) if "centre" in manifest.patients else [],
                       "readers": sorted(manifest.readers["reader"].unique())
                       if manifest.readers is not None and len(manifest.readers) else []},
            "methods": methods,
            "internal": internal,
            "warnings": warning_counts,
            "recalibration": recalibration,
            "breakdown_variables": sorted(set(by_variable["variable"])),
            "n_resamples": int(n_resamples), "seed": int(seed),
        }
        write_text(paths.predictions, predictions.to_csv(index=False, float_format="%.17g"))
        write_csv(checks_table, paths.input_checks)
        write_csv(calibration_curve, paths.calibration_curve)
        write_csv(decision, paths.decision_curve)
        write_csv(by_variable, paths.breakdown)
        write_text(paths.metrics, json.dumps(_finite(metrics), indent=2, allow_nan=False))
        staging.chmod(default_dir_mode())
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"written to {out}")
    return out
