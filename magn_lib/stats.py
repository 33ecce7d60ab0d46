"""Statistics for the study: Table 1 tests, metrics with confidence intervals, DeLong, McNemar,
Cohen's kappa, calibration and decision curves.

Conventions (DESIGN.md): the positive class is multiple myeloma (label 1); a lesion is called MM
when its probability is ``>= threshold`` (0.5 by default); the unit of analysis is the lesion, but
every bootstrap resamples *patients* (all lesions of a drawn patient come along), because lesions
of one patient are not independent.

Choices the paper leaves open, stated once here and in each docstring:

- Table 1, continuous variables: the test is declared per variable before any data are seen
  (``TABLE1_TESTS``: Welch's t-test for age, Mann-Whitney U for tumour size, Mann-Whitney U for
  any variable not declared), never chosen by a normality or variance pre-test (a two-stage
  rule distorts the error rates). Categorical variables: Pearson chi-squared *without* continuity
  correction (also for 2x2 tables, since small tables go to Fisher anyway) unless an expected
  count is below 5, then Fisher's exact test (2x2: exact hypergeometric; larger tables:
  SciPy's Fisher-Freeman-Halton test by seeded Monte-Carlo, the only r x c method SciPy offers).
- Intervals, the AUC's included: percentile bootstrap over *patients* (a cluster bootstrap),
  stratified by the patient's class (``scipy.stats.bootstrap`` with one sample per class), so
  that every resample holds both classes and sensitivity/specificity are always defined. The
  lesion-level DeLong interval (DeLong et al. 1988, fast midrank algorithm of Sun & Xu 2014;
  Wald, clipped to [0, 1] as pROC does) is kept as a secondary column: it treats the lesions of
  one patient as independent and is too narrow when they are alike.
- Pooled out-of-fold AUC mixes fold models whose probabilities are not on one scale; it is
  reported after ranking within each fold (``rank_within_folds``), labelled so, beside the
  per-fold mean +/- SD that the paper reports.
- Fold SD: sample SD (ddof = 1) of the per-fold values, as "mean +/- SD" in the paper's Table 2.
- Many tests read together (readers against models, pairs of models): Holm's step-down
  correction (``statsmodels.stats.multitest.multipletests``) over the family.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from magn_lib.errors import InputError

__all__ = [
    "DEFAULT_GROUP_NAMES",
    "TABLE1_TESTS",
    "METRICS",
    "METRIC_LABELS",
    "OOF_COLUMNS",
    "KappaResult",
    "McNemarResult",
    "binary_metrics",
    "bootstrap_auc_difference",
    "bootstrap_metrics",
    "calibration_table",
    "check_oof",
    "cohen_kappa",
    "compare_models",
    "decision_curve",
    "delong_ci",
    "delong_matrix",
    "delong_test",
    "fold_metrics",
    "format_metrics",
    "mcnemar_test",
    "metrics_table",
    "model_name",
    "obuchowski_ci",
    "pairwise_delong",
    "rank_within_folds",
    "table1",
]

OOF_COLUMNS: tuple[str, ...] = (
    "method", "config", "fold", "lesion_id", "patient_id", "label", "probability",
)
# the one spelling of the metrics in every table, column and history of the project
METRICS: tuple[str, ...] = ("accuracy", "auc", "f1", "sensitivity", "specificity")
# how a reader-facing table labels them (the paper's abbreviations)
METRIC_LABELS: Mapping[str, str] = MappingProxyType({
    "accuracy": "ACC", "auc": "AUC", "f1": "F1", "sensitivity": "sensitivity",
    "specificity": "specificity",
})
_THRESHOLD_METRICS: tuple[str, ...] = ("accuracy", "f1", "sensitivity", "specificity")
DEFAULT_GROUP_NAMES: dict[int, str] = {1: "MM", 0: "Metastasis"}
# Table 1's test for each continuous variable, declared before the data are seen, with the reason
# shown in the table. Undeclared variables get Mann-Whitney U (no distributional assumption).
TABLE1_TESTS: Mapping[str, str] = MappingProxyType({
    "age": "welch",
    "tumour_size_cm": "mann-whitney",
})
_TABLE1_REASONS: Mapping[str, str] = MappingProxyType({
    "age": "age is roughly symmetric in adult cohorts; Welch needs no equal variances",
    "tumour_size_cm": "lesion sizes are positive and right-skewed",
})
_TABLE1_TEST_NAMES: Mapping[str, str] = MappingProxyType({
    "welch": "Welch t-test", "mann-whitney": "Mann-Whitney U",
})


# --------------------------------------------------------------------------------------------
# input checks


def _binary(y: Sequence[int] | np.ndarray, what: str = "y_true") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = sorted({str(v) for v in arr[~np.isin(arr, (0, 1))]})[:5]
        raise InputError(f"{what} must hold only 0 and 1 (1 = MM), found {', '.join(bad)}")
    return arr.astype(np.int64)


def _scores(s: Sequence[float] | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(s, dtype=np.float64)
    if arr.shape != (n,):
        raise InputError(f"{what} has shape {arr.shape}, expected ({n},) like y_true")
    if not np.isfinite(arr).all():
        raise InputError(f"{what} holds {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def check_oof(oof: pd.DataFrame, *, by: Sequence[str] = ("method", "config")) -> pd.DataFrame:
    """Validate an out-of-fold prediction table and return a typed copy.

    Args:
        oof: columns ``method, config, fold, lesion_id, patient_id, label, probability``
            (PREAMBLE / DESIGN.md); one row per lesion per (method, config).
        by: the columns that name one model.

    Returns:
        A copy with ``label`` int64, ``fold`` int64, ``probability`` float64 and ids as str.

    Raises:
        InputError: missing columns, labels other than 0/1, probabilities outside [0, 1] or
            non-finite, a lesion twice for one model, or a lesion with two labels.
    """
    missing = [c for c in (*OOF_COLUMNS, *by) if c not in oof.columns]
    if missing:
        raise InputError(
            f"prediction table lacks column(s) {', '.join(dict.fromkeys(missing))}",
            hint=f"expected {', '.join(OOF_COLUMNS)}",
        )
    out = oof.copy()
    errors: list[InputError] = []
    if not out["label"].isin((0, 1)).all():
        bad = out.loc[~out["label"].isin((0, 1)), "lesion_id"].astype(str).head(5).tolist()
        errors.append(InputError(f"label must be 0 or 1 (1 = MM); lesions {', '.join(bad)}"))
    prob = pd.to_numeric(out["probability"], errors="coerce")
    bad_prob = ~np.isfinite(prob) | (prob < 0) | (prob > 1)
    if bad_prob.any():
        bad = out.loc[bad_prob, "lesion_id"].astype(str).head(5).tolist()
        errors.append(
            InputError(f"probability must be a number in [0, 1]; lesions {', '.join(bad)}")
        )
    dup = out.duplicated([*by, "lesion_id"], keep=False)
    if dup.any():
        bad = out.loc[dup, "lesion_id"].astype(str).unique()[:5].tolist()
        errors.append(InputError(f"lesion listed twice for one model: {', '.join(bad)}"))
    n_labels = out.groupby("lesion_id")["label"].nunique()
    if (n_labels > 1).any():
        bad = n_labels.index[n_labels > 1].astype(str)[:5].tolist()
        errors.append(InputError(f"lesion has different labels in different rows: {bad}"))
    if errors:
        raise InputError.combine(errors)
    out["label"] = out["label"].astype(np.int64)
    out["fold"] = out["fold"].astype(np.int64)
    out["probability"] = prob.astype(np.float64)
    out["lesion_id"] = out["lesion_id"].astype(str)
    out["patient_id"] = out["patient_id"].astype(str)
    return out


def model_name(method: str, config: str) -> str:
    """The display name of one model, ``"method: config"`` (e.g. ``"magn: sagittal"``)."""
    return f"{method}: {config}"


def _groups(df: pd.DataFrame, by: Sequence[str]) -> Iterable[tuple[tuple, pd.DataFrame]]:
    for key, sub in df.groupby(list(by), sort=False):
        yield (key if isinstance(key, tuple) else (key,)), sub


# --------------------------------------------------------------------------------------------
# Table 1


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _fmt_p(p: float) -> str:
    from magn_lib.display import format_p

    return "n/a" if not np.isfinite(p) else format_p(p)


def table1(
    df: pd.DataFrame,
    *,
    group: str = "label",
    continuous: Sequence[str] = ("age", "tumour_size_cm"),
    categorical: Sequence[str] = ("sex", "site"),
    group_names: Mapping[object, str] | None = None,
    tests: Mapping[str, str] | None = None,
    percent: str = "column",
    decimals: int = 2,
    n_resamples: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """Baseline characteristics by class with the test chosen per row (the paper's Table 1).

    Test choice (stated in the ``rule`` column of every row), fixed before the data are seen:

    - continuous: the test declared for the variable in ``tests`` (default ``TABLE1_TESTS``;
      ``"welch"`` = Welch's t-test, ``scipy.stats.ttest_ind(equal_var=False)``;
      ``"mann-whitney"`` = ``scipy.stats.mannwhitneyu``, two-sided); a variable not declared
      gets Mann-Whitney U. No normality or variance pre-test decides: a test picked by testing
      the data first does not keep its nominal error rate. Summaries: mean +/- SD (ddof 1) for
      Welch, median [Q1, Q3] for Mann-Whitney.
    - categorical: expected counts of the levels x groups table under independence; if any is
      below 5, Fisher's exact test (2x2: ``scipy.stats.fisher_exact``, exact; larger tables:
      ``fisher_exact`` with a seeded ``MonteCarloMethod`` of ``n_resamples`` tables, SciPy's
      Fisher-Freeman-Halton), else Pearson's chi-squared without continuity correction
      (``scipy.stats.chi2_contingency(correction=False)``). Summaries: n (%), the percentage of
      the group (``percent="column"``) or of all patients (``percent="total"``, the paper's
      Table 1).

    Missing values are left out of that variable's summary and test; their count is in
    ``missing``.

    Args:
        df: one row per patient (or per lesion); must hold ``group`` and the listed columns.
        group: the column that splits the table, with exactly two values.
        continuous, categorical: variable columns.
        group_names: value -> column title; default ``{1: "MM", 0: "Metastasis"}`` when
            ``group == "label"``, else the values as strings, sorted.
        tests: continuous variable -> ``"welch"`` or ``"mann-whitney"``, merged over
            ``TABLE1_TESTS`` (a caller's declaration wins).
        percent: ``"column"`` or ``"total"``.
        decimals: decimals of the summaries.
        n_resamples, seed: Monte-Carlo Fisher test for tables larger than 2x2.

    Returns:
        DataFrame with columns ``variable, level, <group 1>, <group 2>, p_value, p_text, test,
        statistic, missing, rule``. The first row is ``n``; a categorical variable has a header
        row (level ``""``, holding the test) and one row per level.

    Raises:
        InputError: a missing column, a group column without exactly two values, a
            non-numeric continuous variable.
        ValueError: a declared test other than ``"welch"`` or ``"mann-whitney"``.
    """
    by_caller = dict(tests or {})
    declared = {**TABLE1_TESTS, **by_caller}
    for var, test in declared.items():
        if test not in _TABLE1_TEST_NAMES:
            raise ValueError(f"Table 1 test for {var!r} must be 'welch' or 'mann-whitney', "
                             f"not {test!r}")
    missing_cols = [c for c in (group, *continuous, *categorical) if c not in df.columns]
    if missing_cols:
        raise InputError(f"clinical table lacks column(s) {', '.join(missing_cols)}")
    if percent not in ("column", "total"):
        raise ValueError(f"percent must be 'column' or 'total', not {percent!r}")
    data = df[df[group].notna()]
    values = list(pd.unique(data[group]))
    if group_names is None:
        if group == "label":
            group_names = {v: DEFAULT_GROUP_NAMES.get(int(v), str(v)) for v in values}
            values = sorted(values, reverse=True)  # MM first, as in the paper
        else:
            values = sorted(values)
            group_names = {v: str(v) for v in values}
    else:
        values = [v for v in group_names if v in set(values)]
    if len(values) != 2:
        raise InputError(
            f"Table 1 compares two groups; column {group!r} has {len(values)} "
            f"({', '.join(map(str, values))})"
        )
    names = [group_names[v] for v in values]
    parts = [data[data[group] == v] for v in values]
    rows: list[dict] = []

    def row(variable: str, level: str, cells: Sequence[str], **kw: object) -> None:
        base = {"variable": variable, "level": level, **dict(zip(names, cells, strict=True))}
        base.update({"p_value": np.nan, "p_text": "", "test": "", "statistic": np.nan,
                     "missing": 0, "rule": ""})
        base.update(kw)
        rows.append(base)

    row("n", "", [str(len(p)) for p in parts])

    for var in continuous:
        num = [pd.to_numeric(p[var], errors="coerce") for p in parts]
        non_numeric = sum(int((n.isna() & p[var].notna()).sum()) for n, p in zip(num, parts,
                                                                                   strict=True))
        if non_numeric:
            raise InputError(f"column {var!r} holds {non_numeric} non-numeric values")
        n_missing = sum(int(n.isna().sum()) for n in num)
        xs = [n.dropna().to_numpy(np.float64) for n in num]
        rows.append(_continuous_row(var, names, xs, declared.get(var, "mann-whitney"),
                                    var in by_caller, decimals, n_missing))

    for var in categorical:
        rows.extend(_categorical_rows(var, names, parts, percent, decimals, n_resamples, seed))

    return pd.DataFrame(rows)


def _continuous_row(
    var: str, names: list[str], xs: list[np.ndarray], test: str, by_caller: bool,
    decimals: int, n_missing: int,
) -> dict:
    a, b = xs
    if min(a.size, b.size) < 2:
        cells = [f"n={x.size}" for x in xs]
        return {"variable": var, "level": "", **dict(zip(names, cells, strict=True)),
                "p_value": np.nan, "p_text": "n/a", "test": "not tested",
                "statistic": np.nan, "missing": n_missing,
                "rule": "fewer than 2 values in a group"}
    name = _TABLE1_TEST_NAMES[test]
    if by_caller:
        rule = f"declared in advance by the caller: {name}"
    elif var in TABLE1_TESTS:
        rule = f"declared in advance: {name} ({_TABLE1_REASONS[var]})"
    else:
        rule = f"not declared -> {name} (no distributional assumption)"
    if test == "welch":
        res = sps.ttest_ind(a, b, equal_var=False)
        cells = [f"{_fmt(x.mean(), decimals)} ± {_fmt(x.std(ddof=1), decimals)}" for x in xs]
    else:
        res = sps.mannwhitneyu(a, b, alternative="two-sided")
        cells = [
            f"{_fmt(np.median(x), decimals)} [{_fmt(np.percentile(x, 25), decimals)}, "
            f"{_fmt(np.percentile(x, 75), decimals)}]"
            for x in xs
        ]
    p = float(res.pvalue)
    return {"variable": var, "level": "", **dict(zip(names, cells, strict=True)),
            "p_value": p, "p_text": _fmt_p(p), "test": name,
            "statistic": float(res.statistic), "missing": n_missing, "rule": rule}


def _categorical_rows(
    var: str,
    names: list[str],
    parts: list[pd.DataFrame],
    percent: str,
    decimals: int,
    n_resamples: int,
    seed: int,
) -> list[dict]:
    cols = [p[var] for p in parts]
    n_missing = sum(int(c.isna().sum()) for c in cols)
    levels = pd.unique(pd.concat([c.dropna() for c in cols]))
    first = cols[0]
    if isinstance(first.dtype, pd.CategoricalDtype):
        levels = [lv for lv in first.cat.categories if lv in set(levels)]
    else:
        levels = sorted(levels, key=str)
    table = np.array([[int((c == lv).sum()) for c in cols] for lv in levels], dtype=np.int64)
    header = {"variable": var, "level": "", **dict.fromkeys(names, ""), "missing": n_missing,
              "statistic": np.nan}
    if len(levels) < 2:
        header.update(p_value=np.nan, p_text="n/a", test="not tested",
                      rule="only one level observed")
    else:
        expected = sps.contingency.expected_freq(table)
        min_exp = float(expected.min())
        if min_exp < 5:
            if table.shape == (2, 2):
                res = sps.fisher_exact(table)
                test = "Fisher exact test"
            else:
                method = sps.MonteCarloMethod(n_resamples=n_resamples,
                                              rng=np.random.default_rng(seed))
                res = sps.fisher_exact(table, method=method)
                test = f"Fisher exact test (Monte-Carlo, {n_resamples} tables)"
            p = float(res.pvalue)
            rule = f"smallest expected count {min_exp:.2f} < 5 -> {test}"
            stat = float(res.statistic)
        else:
            res = sps.chi2_contingency(table, correction=False)
            p, stat = float(res.pvalue), float(res.statistic)
            test = "Pearson chi-squared"
            rule = (f"smallest expected count {min_exp:.2f} >= 5 -> {test} "
                    f"(no continuity correction, dof {int(res.dof)})")
        header.update(p_value=p, p_text=_fmt_p(p), test=test, rule=rule, statistic=stat)
    rows = [header]
    col_totals = table.sum(axis=0)
    grand = table.sum()
    for lv, counts in zip(levels, table, strict=True):
        denom = col_totals if percent == "column" else np.full_like(col_totals, grand)
        cells = [
            f"{c} ({_fmt(100.0 * c / d, 1) if d else 'n/a'}%)"
            for c, d in zip(counts, denom, strict=True)
        ]
        rows.append({"variable": var, "level": str(lv), **dict(zip(names, cells, strict=True)),
                     "p_value": np.nan, "p_text": "", "test": "", "statistic": np.nan,
                     "missing": 0, "rule": ""})
    return rows


# --------------------------------------------------------------------------------------------
# DeLong


def _delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance for k score vectors on the same cases.

    Fast DeLong (Sun & Xu 2014, IEEE SPL 21:1389): with ``tz`` the midranks of a score vector
    over all cases and ``tx``/``ty`` the midranks within positives/negatives, the placement of
    positive i is ``(tz_i - tx_i) / n`` (the share of negatives it beats, ties counting half)
    and of negative j ``1 - (tz_j - ty_j) / m``; the AUC is the mean placement of the
    positives, and the covariance is ``S10 / m + S01 / n`` (DeLong et al. 1988, Biometrics
    44:837), S10/S01 the sample covariances (ddof 1) of the placements.

    Args:
        y: (N,) int 0/1, both classes with >= 2 cases each.
        scores: (k, N) float.

    Returns:
        auc: (k,) in [0, 1]; cov: (k, k).
    """
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = sps.rankdata(pos, axis=1)
    ty = sps.rankdata(neg, axis=1)
    tz = sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    auc = np.clip(v10.mean(axis=1), 0.0, 1.0)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return auc, s10 / m + s01 / n


def _delong_inputs(y_true: Sequence[int] | np.ndarray, *scores: Sequence[float]) -> tuple:
    y = _binary(y_true)
    arr = np.stack([_scores(s, y.size, f"score {i + 1}") for i, s in enumerate(scores)])
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos < 2 or n_neg < 2:
        raise InputError(
            f"DeLong needs at least 2 cases of each class; got {n_pos} MM and {n_neg} "
            "metastasis"
        )
    return y, arr


def delong_ci(
    y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
    """AUC with a DeLong confidence interval.

    The interval is the Wald interval ``auc +/- z * sqrt(var_DeLong)`` clipped to [0, 1] (the
    convention of pROC's ``ci.auc``), not a logit interval, which does not exist at AUC 0 or 1.
    At perfect separation (AUC 0 or 1) or with a constant score the DeLong variance is 0 and
    the interval has zero width: the method says nothing about uncertainty there.

    Args:
        y_true: (N,) 0/1 labels, 1 = MM (positive class).
        score: (N,) scores, higher = more MM-like.
        level: two-sided confidence level.

    Returns:
        ``(auc, low, high)``, floats in [0, 1].
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    y, arr = _delong_inputs(y_true, score)
    auc, cov = _delong_components(y, arr)
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    half = float(sps.norm.ppf(0.5 + level / 2.0)) * se
    a = float(auc[0])
    return a, max(0.0, a - half), min(1.0, a + half)


def delong_test(
    y_true: Sequence[int] | np.ndarray,
    score_a: Sequence[float] | np.ndarray,
    score_b: Sequence[float] | np.ndarray,
) -> tuple[float, float, float, float]:
    """DeLong's test for two correlated ROC curves on the same cases (two-sided).

    ``z = (auc_a - auc_b) / sqrt(var_a + var_b - 2 cov_ab)`` with the DeLong (co)variances
    (DeLong et al. 1988; fast midrank algorithm of Sun & Xu 2014). Identical AUCs give
    ``z = 0, p = 1``. When the variance of the difference is 0 but the AUCs differ (e.g. one
    score separates perfectly and the other is constant) the test is degenerate: it returns
    ``z = +/-inf, p = 0``.

    Args:
        y_true: (N,) 0/1 labels, 1 = MM.
        score_a, score_b: (N,) scores of two models on the same cases, in the same order.

    Returns:
        ``(auc_a, auc_b, z, p_value)``.
    """
    y, arr = _delong_inputs(y_true, score_a, score_b)
    auc, cov = _delong_components(y, arr)
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    # below this the variance of the difference is rounding noise, not signal
    if var <= 1e-15:
        z = 0.0 if abs(diff) <= 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    p = float(min(1.0, 2.0 * sps.norm.sf(abs(z))))
    return float(auc[0]), float(auc[1]), float(z), p


def obuchowski_ci(
    y_true: Sequence[int] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    patient_id: Sequence[str] | np.ndarray,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """AUC with Obuchowski's clustered-DeLong confidence interval (lesions clustered in patients).

    Obuchowski (1997, Biometrics 53:567), the nonparametric AUC variance for clustered data:
    with placements ``V10`` of every positive and ``V01`` of every negative lesion (as in
    DeLong), summed per patient (``V10_i``, ``V01_i``), ``m_i`` / ``n_i`` the patient's positive /
    negative lesions, ``M`` / ``N`` their totals and ``I_10`` / ``I_01`` / ``I`` the numbers of
    patients with positives / negatives / any::

        S10 = I_10 / ((I_10 - 1) M) * sum_i (V10_i - m_i AUC)^2
        S01 = I_01 / ((I_01 - 1) N) * sum_i (V01_i - n_i AUC)^2
        S11 = I / (I - 1) * sum_i (V10_i - m_i AUC)(V01_i - n_i AUC)
        var = S10 / M + S01 / N + 2 S11 / (M N)

    With one lesion per patient it is DeLong's variance exactly. Wald interval clipped to
    [0, 1], as ``delong_ci``.

    Args:
        y_true: (N,) 0/1 lesion labels, 1 = MM.
        score: (N,) scores, higher = more MM-like.
        patient_id: (N,) the patient of each lesion.
        level: two-sided confidence level.

    Returns:
        ``(auc, low, high)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    y, arr = _delong_inputs(y_true, score)
    pid = np.asarray(patient_id).astype(str)
    if pid.shape != y.shape:
        raise InputError(f"patient_id has shape {pid.shape}, expected {y.shape}")
    s = arr[0]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    big_m, big_n = pos.size, neg.size
    # the same midrank placements as _delong_components (ties count half)
    tz = sps.rankdata(s)
    v10 = (tz[pos] - sps.rankdata(s[pos])) / big_n
    v01 = 1.0 - (tz[neg] - sps.rankdata(s[neg])) / big_m
    auc = float(v10.mean())
    code, patients = pd.factorize(pid)
    n_pat = len(patients)
    v10_i = np.bincount(code[pos], weights=v10, minlength=n_pat)
    v01_i = np.bincount(code[neg], weights=v01, minlength=n_pat)
    m_i = np.bincount(code[pos], minlength=n_pat)
    n_i = np.bincount(code[neg], minlength=n_pat)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if min(i10, i01) < 2:
        raise InputError("Obuchowski's interval needs patients with lesions of each class: got "
                         f"{i10} patient(s) with MM and {i01} with metastasis")
    d10, d01 = v10_i - m_i * auc, v01_i - n_i * auc
    s10 = i10 / ((i10 - 1) * big_m) * float(np.sum(d10 ** 2))
    s01 = i01 / ((i01 - 1) * big_n) * float(np.sum(d01 ** 2))
    s11 = n_pat / (n_pat - 1) * float(np.sum(d10 * d01))
    var = s10 / big_m + s01 / big_n + 2.0 * s11 / (big_m * big_n)
    half = float(sps.norm.ppf(0.5 + level / 2.0)) * math.sqrt(max(var, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


# --------------------------------------------------------------------------------------------
# threshold metrics and the patient bootstrap


def binary_metrics(
    y_true: Sequence[int] | np.ndarray,
    probability: Sequence[float] | np.ndarray,
    *,
    threshold: float = 0.5,
) -> dict[str, float]:
    """ACC, AUC, F1, sensitivity and specificity with MM (label 1) as the positive class.

    A case is called MM when ``probability >= threshold``. F1 = 2TP / (2TP + FP + FN) (0 when
    there are no positives at all); a metric whose denominator is empty is NaN (e.g. AUC with
    one class only).

    Returns:
        dict with keys ``accuracy, auc, f1, sensitivity, specificity`` (floats).
    """
    y = _binary(y_true)
    p = _scores(probability, y.size, "probability")
    pred = p >= threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    tn = float(np.sum(~pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    out = _metrics_from_counts(tp, fp, tn, fn)
    out["auc"] = _auc(y, p)
    return {k: float(out[k]) for k in METRICS}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half); NaN with one class."""
    m = int(y.sum())
    n = int(y.size - m)
    if m == 0 or n == 0:
        return float("nan")
    ranks = sps.rankdata(p)
    return float(np.clip((ranks[y == 1].sum() - m * (m + 1) / 2.0) / (m * n), 0.0, 1.0))


def _metrics_from_counts(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        n = tp + fp + tn + fn
        f1_den = 2 * tp + fp + fn
        return {
            "accuracy": np.where(n > 0, (tp + tn) / np.where(n > 0, n, 1), np.nan),
            "sensitivity": np.where(tp + fn > 0, tp / np.where(tp + fn > 0, tp + fn, 1), np.nan),
            "specificity": np.where(tn + fp > 0, tn / np.where(tn + fp > 0, tn + fp, 1), np.nan),
            "f1": np.where(f1_den > 0, 2 * tp / np.where(f1_den > 0, f1_den, 1), 0.0),
        }


class _ClusterStatistic:
    """Metrics of a patient resample, vectorised over resamples.

    A resample is given as patient indices (one array per class stratum); each lesion gets
    the weight "how many times its patient was drawn", and every metric is the weighted
    version, which equals the metric on the data set with the drawn patients' lesions stacked
    (duplicates included). AUC uses the pair kernel K[i, j] = 1{s_i > s_j} + 0.5 1{s_i = s_j}
    over (positive, negative) lesion pairs: AUC = w_pos K w_neg / (sum w_pos * sum w_neg).
    """

    def __init__(self, y: np.ndarray, p: np.ndarray, patient_code: np.ndarray, n_patients: int,
                 threshold: float, with_auc: bool) -> None:
        self.code = patient_code
        self.n_patients = n_patients
        pred = p >= threshold
        self.masks = {
            "tp": (pred & (y == 1)).astype(np.float64),
            "fp": (pred & (y == 0)).astype(np.float64),
            "tn": (~pred & (y == 0)).astype(np.float64),
            "fn": (~pred & (y == 1)).astype(np.float64),
        }
        self.with_auc = with_auc
        if with_auc:
            self.pos = np.flatnonzero(y == 1)
            self.neg = np.flatnonzero(y == 0)
            sp, sn = p[self.pos][:, None], p[self.neg][None, :]
            self.kernel = (sp > sn) + 0.5 * (sp == sn)
        self.names = [*_THRESHOLD_METRICS, *(("auc",) if with_auc else ())]

    def weights(self, *samples: np.ndarray) -> np.ndarray:
        lead = np.broadcast_shapes(*(s.shape[:-1] for s in samples))
        idx = np.concatenate(
            [np.broadcast_to(s, (*lead, s.shape[-1])).astype(np.intp) for s in samples], axis=-1
        )
        flat_idx = idx.reshape(-1, idx.shape[-1])
        b = flat_idx.shape[0]
        offset = (np.arange(b)[:, None] * self.n_patients + flat_idx).ravel()
        counts = np.bincount(offset, minlength=b * self.n_patients).reshape(b, self.n_patients)
        return counts[:, self.code].astype(np.float64), lead

    def __call__(self, *samples: np.ndarray, axis: int = -1) -> np.ndarray:
        w, lead = self.weights(*samples)
        c = {k: w @ v for k, v in self.masks.items()}
        m = _metrics_from_counts(c["tp"], c["fp"], c["tn"], c["fn"])
        out = [m[k] for k in _THRESHOLD_METRICS]
        if self.with_auc:
            wp, wn = w[:, self.pos], w[:, self.neg]
            num = np.sum((wp @ self.kernel) * wn, axis=1)
            den = wp.sum(axis=1) * wn.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))
        return np.stack(out).reshape(len(out), *lead)


def _class_strata(y: np.ndarray, code: np.ndarray, n_patients: int) -> list[np.ndarray]:
    """Patient indices with any MM lesion and without: the bootstrap's strata (>= 2 each)."""
    patient_has_mm = np.zeros(n_patients, dtype=bool)
    np.logical_or.at(patient_has_mm, code, y == 1)
    strata = [np.flatnonzero(patient_has_mm), np.flatnonzero(~patient_has_mm)]
    strata = [s for s in strata if s.size]
    for s in strata:
        if s.size < 2:
            raise InputError(
                "the patient bootstrap needs at least 2 patients per class; got "
                f"{patient_has_mm.sum()} with MM and {(~patient_has_mm).sum()} without"
            )
    return strata


def bootstrap_metrics(
    y_true: Sequence[int] | np.ndarray,
    probability: Sequence[float] | np.ndarray,
    patient_id: Sequence[str] | np.ndarray,
    *,
    threshold: float = 0.5,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> pd.DataFrame:
    """Patient-level (cluster) bootstrap confidence intervals of ACC, F1, sens., spec. and AUC.

    ``scipy.stats.bootstrap`` draws patients with replacement, separately within the patients
    whose lesions include MM and those without (a stratified bootstrap, one sample per
    stratum), and each drawn patient brings all of its lesions. Percentile intervals by
    default (``method="BCa"`` is accepted; percentile is the safer choice for clusters).
    Seeded: the same inputs and seed give the same interval.

    Args:
        y_true: (N,) 0/1 lesion labels, 1 = MM.
        probability: (N,) MM probabilities; the call is ``probability >= threshold``.
        patient_id: (N,) the patient of each lesion.
        threshold, n_resamples, level, method, seed: as named.

    Returns:
        DataFrame with one row per metric (``accuracy, f1, sensitivity, specificity, auc``) and
        columns ``metric, estimate, ci_low, ci_high, n_lesions, n_patients, method``.
    """
    y = _binary(y_true)
    p = _scores(probability, y.size, "probability")
    pid = np.asarray(patient_id).astype(str)
    if pid.shape != y.shape:
        raise InputError(f"patient_id has shape {pid.shape}, expected {y.shape}")
    if method not in ("percentile", "BCa", "basic"):
        raise ValueError(f"method must be 'percentile', 'BCa' or 'basic', not {method!r}")
    code, patients = pd.factorize(pid)
    n_pat = len(patients)
    strata = _class_strata(y, code, n_pat)
    with_auc = 0 < y.sum() < y.size
    stat = _ClusterStatistic(y, p, code, n_pat, threshold, with_auc)
    point = binary_metrics(y, p, threshold=threshold)
    res = sps.bootstrap(
        tuple(strata), stat, n_resamples=n_resamples, vectorized=True, paired=False,
        confidence_level=level, method=method, rng=np.random.default_rng(seed), batch=500,
    )
    low = np.atleast_1d(res.confidence_interval.low)
    high = np.atleast_1d(res.confidence_interval.high)
    rows = []
    for i, name in enumerate(stat.names):
        rows.append({"metric": name, "estimate": point[name], "ci_low": float(low[i]),
                     "ci_high": float(high[i]), "n_lesions": int(y.size),
                     "n_patients": int(n_pat), "method": f"patient bootstrap ({method})"})
    if not with_auc:
        rows.append({"metric": "auc", "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                     "n_lesions": int(y.size), "n_patients": int(n_pat),
                     "method": "one class only"})
    return pd.DataFrame(rows)


class _PairedAUCStatistic:
    """AUC of two scores on the same patient resample and their difference, vectorised.

    The weights are those of ``_ClusterStatistic`` (how often each lesion's patient was drawn);
    each AUC is ``w_pos K w_neg / (sum w_pos * sum w_neg)`` with its own pair kernel.
    Returns (3, B): AUC a, AUC b, AUC a - AUC b.
    """

    def __init__(self, y: np.ndarray, a: np.ndarray, b: np.ndarray, patient_code: np.ndarray,
                 n_patients: int) -> None:
        self._weights = _ClusterStatistic(y, a, patient_code, n_patients, 0.5, False).weights
        self.pos = np.flatnonzero(y == 1)
        self.neg = np.flatnonzero(y == 0)
        self.kernels = []
        for s in (a, b):
            sp, sn = s[self.pos][:, None], s[self.neg][None, :]
            self.kernels.append((sp > sn) + 0.5 * (sp == sn))

    def __call__(self, *samples: np.ndarray, axis: int = -1) -> np.ndarray:
        w, lead = self._weights(*samples)
        wp, wn = w[:, self.pos], w[:, self.neg]
        den = wp.sum(axis=1) * wn.sum(axis=1)
        aucs = []
        for kernel in self.kernels:
            num = np.sum((wp @ kernel) * wn, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                aucs.append(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))
        out = np.stack([aucs[0], aucs[1], aucs[0] - aucs[1]])
        return out.reshape(3, *lead)


def bootstrap_auc_difference(
    y_true: Sequence[int] | np.ndarray,
    score_a: Sequence[float] | np.ndarray,
    score_b: Sequence[float] | np.ndarray,
    patient_id: Sequence[str] | np.ndarray,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Difference of two AUCs on the same lesions with a paired patient-bootstrap interval.

    Patients are drawn with replacement within their class (as in ``bootstrap_metrics``) and
    both scores are evaluated on the same resample, so the interval accounts for the pairing
    and for the clustering of lesions in patients (unlike the lesion-level DeLong test).
    Percentile interval, seeded.

    Args:
        y_true: (N,) 0/1 lesion labels, 1 = MM.
        score_a, score_b: (N,) scores of two methods on the same lesions, higher = more MM.
        patient_id: (N,) the patient of each lesion.

    Returns:
        dict with ``auc_a, auc_b, difference`` (a - b), ``ci_low, ci_high`` (of the
        difference), ``n_lesions, n_patients``.
    """
    y = _binary(y_true)
    a = _scores(score_a, y.size, "score_a")
    b = _scores(score_b, y.size, "score_b")
    pid = np.asarray(patient_id).astype(str)
    if pid.shape != y.shape:
        raise InputError(f"patient_id has shape {pid.shape}, expected {y.shape}")
    if not 0 < y.sum() < y.size:
        raise InputError("an AUC difference needs lesions of both classes")
    code, patients = pd.factorize(pid)
    strata = _class_strata(y, code, len(patients))
    stat = _PairedAUCStatistic(y, a, b, code, len(patients))
    res = sps.bootstrap(
        tuple(strata), stat, n_resamples=n_resamples, vectorized=True, paired=False,
        confidence_level=level, method="percentile", rng=np.random.default_rng(seed),
        batch=500,
    )
    auc_a, auc_b = _auc(y, a), _auc(y, b)
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": auc_a - auc_b,
            "ci_low": float(np.atleast_1d(res.confidence_interval.low)[2]),
            "ci_high": float(np.atleast_1d(res.confidence_interval.high)[2]),
            "n_lesions": int(y.size), "n_patients": int(len(patients))}


def fold_metrics(
    oof: pd.DataFrame, *, by: Sequence[str] = ("method", "config"), threshold: float = 0.5
) -> pd.DataFrame:
    """Metrics of every fold of every model.

    Returns:
        DataFrame with columns ``*by, fold, n_lesions, n_mm, accuracy, auc, f1, sensitivity,
        specificity`` (AUC NaN in a fold with one class).
    """
    data = check_oof(oof, by=by)
    rows = []
    for key, sub in _groups(data, by):
        for fold, part in sub.groupby("fold", sort=True):
            m = binary_metrics(part["label"], part["probability"], threshold=threshold)
            rows.append({**dict(zip(by, key, strict=True)), "fold": int(fold),
                         "n_lesions": len(part), "n_mm": int(part["label"].sum()), **m})
    return pd.DataFrame(rows)


def rank_within_folds(
    oof: pd.DataFrame, *, by: Sequence[str] = ("method", "config")
) -> pd.DataFrame:
    """Replace each probability by its percentile rank within its model's fold.

    Fold models are trained separately and their probabilities are not on one scale (one fold's
    model may give every lesion 0.05, the next 0.4), so pooling raw out-of-fold probabilities
    mixes calibrations into the AUC. Within a fold the rank keeps everything the fold's AUC
    uses; pooled ranks compare lesions of different folds by their standing in their own fold.
    The rank is ``(midrank - 0.5) / n_fold`` (ties share the mean rank), in (0, 1).

    Args:
        oof: out-of-fold predictions (``check_oof`` columns).
        by: the columns that name one model.

    Returns:
        A copy of the validated table with ``probability`` replaced by the within-fold rank.
    """
    data = check_oof(oof, by=by)
    groups = data.groupby([*by, "fold"], sort=False)["probability"]
    ranks = groups.rank(method="average")
    sizes = groups.transform("size")
    return data.assign(probability=((ranks - 0.5) / sizes).astype(np.float64))


def metrics_table(
    oof: pd.DataFrame,
    *,
    by: Sequence[str] = ("method", "config"),
    threshold: float = 0.5,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-model metrics: per-fold mean +/- SD (as the paper reports) and pooled with CIs.

    Pooled = all out-of-fold predictions of the model together. Every interval is a
    patient-level (cluster) bootstrap (``bootstrap_metrics``: patients resampled within their
    class, all lesions of a drawn patient together; percentile, seeded), the pooled AUC's
    included (``auc_low/high``). The lesion-level DeLong interval (``delong_ci``), which treats
    lesions of one patient as independent, is kept as a secondary column
    (``auc_delong_low/high``), and Obuchowski's clustered DeLong interval (``obuchowski_ci``) as
    an analytic cross-check of the bootstrap (``auc_obuchowski_low/high``). ``auc_ranked`` is
    the pooled AUC after ranking within each fold (``rank_within_folds``), with its own
    patient-bootstrap interval: it does not mix the fold models' calibrations. Fold statistics
    are NaN for a model with one fold only (the readers, ``fold = -1``); a fold where a metric
    is undefined (AUC in a fold with one class) is left out of that metric's mean and SD
    (``fold_metrics`` lists every fold).

    Returns:
        DataFrame, one row per model, columns ``*by, n_lesions, n_patients, n_mm, n_folds``,
        then for each metric M of ``accuracy, auc, f1, sensitivity, specificity``:
        ``M`` (pooled), ``M_low``, ``M_high``, ``M_fold_mean``, ``M_fold_sd``; then
        ``auc_ranked, auc_ranked_low, auc_ranked_high, auc_delong_low, auc_delong_high,
        auc_obuchowski_low, auc_obuchowski_high, brier, auc_ci_method, ci_method``.
    """
    from sklearn.metrics import brier_score_loss

    data = check_oof(oof, by=by)
    ranked = rank_within_folds(data, by=by)
    folds = fold_metrics(data, by=by, threshold=threshold)
    rows = []
    for (key, sub), (_, rsub) in zip(_groups(data, by), _groups(ranked, by), strict=True):
        y = sub["label"].to_numpy()
        p = sub["probability"].to_numpy()
        row: dict[str, object] = dict(zip(by, key, strict=True))
        row.update(n_lesions=len(sub), n_patients=int(sub["patient_id"].nunique()),
                   n_mm=int(y.sum()), n_folds=int(sub["fold"].nunique()))
        boot = bootstrap_metrics(y, p, sub["patient_id"], threshold=threshold,
                                 n_resamples=n_resamples, level=level, seed=seed)
        boot = boot.set_index("metric")
        sel = np.ones(len(folds), dtype=bool)
        for col, val in zip(by, key, strict=True):
            sel &= (folds[col] == val).to_numpy()
        fm = folds[sel]
        for metric in METRICS:
            row[metric] = float(boot.loc[metric, "estimate"])
            row[f"{metric}_low"] = float(boot.loc[metric, "ci_low"])
            row[f"{metric}_high"] = float(boot.loc[metric, "ci_high"])
            vals = fm[metric].to_numpy(np.float64)
            finite = vals[np.isfinite(vals)]
            many = row["n_folds"] > 1
            row[f"{metric}_fold_mean"] = float(finite.mean()) if many and finite.size else np.nan
            row[f"{metric}_fold_sd"] = (
                float(finite.std(ddof=1)) if many and finite.size > 1 else np.nan
            )
        rboot = bootstrap_metrics(y, rsub["probability"].to_numpy(), rsub["patient_id"],
                                  threshold=threshold, n_resamples=n_resamples, level=level,
                                  seed=seed).set_index("metric")
        row["auc_ranked"] = float(rboot.loc["auc", "estimate"])
        row["auc_ranked_low"] = float(rboot.loc["auc", "ci_low"])
        row["auc_ranked_high"] = float(rboot.loc["auc", "ci_high"])
        lo = hi = olo = ohi = float("nan")
        if 0 < y.sum() < y.size and min(y.sum(), y.size - y.sum()) >= 2:
            _, lo, hi = delong_ci(y, p, level)
            try:
                _, olo, ohi = obuchowski_ci(y, p, sub["patient_id"], level)
            except InputError:  # fewer than 2 patients of a class: no clustered variance
                pass
        row["auc_delong_low"], row["auc_delong_high"] = lo, hi
        row["auc_obuchowski_low"], row["auc_obuchowski_high"] = olo, ohi
        row["brier"] = float(brier_score_loss(y, p)) if len(y) else float("nan")
        method = (f"patient bootstrap (percentile, stratified by class, {n_resamples} "
                  f"resamples, seed {seed})")
        row["auc_ci_method"] = method
        row["ci_method"] = method
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# paired tests and agreement


class McNemarResult(NamedTuple):
    """McNemar's test on paired calls; ``a_only``/``b_only`` are the discordant counts."""

    a_only: int  # cases classifier A got right and B wrong
    b_only: int  # cases B got right and A wrong
    statistic: float
    p_value: float
    method: str


def mcnemar_test(
    y_true: Sequence[int] | np.ndarray,
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
    *,
    exact: bool | None = None,
) -> McNemarResult:
    """McNemar's test of equal accuracy of two sets of calls on the same cases.

    Uses ``statsmodels.stats.contingency_tables.mcnemar`` on the 2x2 table of correct/wrong.
    ``exact=None`` chooses the exact binomial test when the discordant pairs number fewer than
    25, else the chi-squared test with continuity correction.

    Args:
        y_true: (N,) 0/1 truth.
        pred_a, pred_b: (N,) 0/1 calls (1 = MM).

    Returns:
        McNemarResult(a_only, b_only, statistic, p_value, method).
    """
    from statsmodels.stats.contingency_tables import mcnemar

    y = _binary(y_true)
    a = _binary(pred_a, "pred_a")
    b = _binary(pred_b, "pred_b")
    if not (a.size == b.size == y.size):
        raise InputError(f"lengths differ: y_true {y.size}, pred_a {a.size}, pred_b {b.size}")
    ca, cb = a == y, b == y
    table = np.array([[np.sum(ca & cb), np.sum(ca & ~cb)], [np.sum(~ca & cb), np.sum(~ca & ~cb)]])
    n01, n10 = int(table[0, 1]), int(table[1, 0])
    use_exact = (n01 + n10 < 25) if exact is None else bool(exact)
    res = mcnemar(table, exact=use_exact, correction=True)
    method = "exact binomial" if use_exact else "chi-squared (continuity corrected)"
    return McNemarResult(n01, n10, float(res.statistic), float(min(1.0, res.pvalue)), method)


class KappaResult(NamedTuple):
    """Cohen's kappa with an asymptotic confidence interval."""

    kappa: float
    ci_low: float
    ci_high: float
    se: float
    agreement: float  # observed proportion of agreement
    n: int


def cohen_kappa(
    rater_a: Sequence[int] | np.ndarray,
    rater_b: Sequence[int] | np.ndarray,
    *,
    level: float = 0.95,
) -> KappaResult:
    """Cohen's kappa between two raters with an analytic confidence interval.

    Kappa and its large-sample standard error (Fleiss, Cohen & Everitt 1969) come from
    ``statsmodels.stats.inter_rater.cohens_kappa``; the interval is ``kappa +/- z * se``
    clipped to [-1, 1]. Kappa is NaN when it is undefined (both raters give one and the same
    category to every case).

    Args:
        rater_a, rater_b: (N,) category codes of the same cases.

    Returns:
        KappaResult(kappa, ci_low, ci_high, se, agreement, n).
    """
    from statsmodels.stats.inter_rater import cohens_kappa

    a = np.asarray(rater_a)
    b = np.asarray(rater_b)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"rater arrays differ in shape: {a.shape} vs {b.shape}")
    cats = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(cats, a), np.searchsorted(cats, b)
    table = np.zeros((cats.size, cats.size))
    np.add.at(table, (ia, ib), 1)
    n = int(a.size)
    agreement = float(np.trace(table) / n) if n else float("nan")
    expected = float((table.sum(0) * table.sum(1)).sum() / n**2) if n else 1.0
    if n == 0 or expected >= 1.0 - 1e-12:
        return KappaResult(float("nan"), float("nan"), float("nan"), float("nan"), agreement, n)
    res = cohens_kappa(table)
    kappa, se = float(res.kappa), float(res.std_kappa)
    half = float(sps.norm.ppf(0.5 + level / 2.0)) * se
    return KappaResult(kappa, max(-1.0, kappa - half), min(1.0, kappa + half), se, agreement, n)


# --------------------------------------------------------------------------------------------
# calibration, decision curves, pairwise comparisons


def calibration_table(
    oof: pd.DataFrame,
    *,
    by: Sequence[str] = ("method", "config"),
    n_bins: int = 5,
    strategy: str = "quantile",
) -> pd.DataFrame:
    """Reliability curve per model (``sklearn.calibration.calibration_curve``) and Brier score.

    Args:
        oof: out-of-fold predictions (pooled over folds).
        n_bins, strategy: as in ``calibration_curve`` ("uniform" or "quantile"); empty bins are
            left out, as sklearn does.

    Returns:
        DataFrame with columns ``*by, bin, mean_predicted, fraction_positive, n, brier`` — one
        row per non-empty bin; ``brier`` (``sklearn.metrics.brier_score_loss`` of the model) is
        repeated on each of its rows.
    """
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    data = check_oof(oof, by=by)
    rows = []
    for key, sub in _groups(data, by):
        y = sub["label"].to_numpy()
        p = sub["probability"].to_numpy()
        frac, mean_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
        # the same bin edges as sklearn, to report how many lesions each point rests on
        if strategy == "quantile":
            edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
        else:
            edges = np.linspace(0.0, 1.0, n_bins + 1)
        counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
        counts = counts[counts > 0]
        brier = float(brier_score_loss(y, p))
        for i, (mp, fp, c) in enumerate(zip(mean_pred, frac, counts, strict=True)):
            rows.append({**dict(zip(by, key, strict=True)), "bin": i, "mean_predicted": float(mp),
                         "fraction_positive": float(fp), "n": int(c), "brier": brier})
    return pd.DataFrame(rows)


def decision_curve(
    oof: pd.DataFrame,
    *,
    by: Sequence[str] = ("method", "config"),
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Net benefit of every model, "treat all" and "treat none" (``dcurves.dca``).

    The models are compared on the lesions they all have (the intersection); their number is
    in ``n``. Net benefit = TP/N - FP/N * t / (1 - t) at threshold probability t
    (Vickers & Elkin 2006).

    Args:
        oof: out-of-fold predictions.
        thresholds: threshold probabilities; default 0.01 ... 0.99 in steps of 0.01.

    Returns:
        DataFrame with columns ``model, threshold, net_benefit, net_intervention_avoided,
        tp_rate, fp_rate, n``; ``model`` is ``model_name(method, config)`` (for the default
        ``by``) or ``"all"`` / ``"none"``.
    """
    from dcurves import dca

    data = check_oof(oof, by=by)
    data = data.assign(_model=data[list(by)].astype(str).agg(": ".join, axis=1))
    wide = data.pivot(index="lesion_id", columns="_model", values="probability")
    labels = data.groupby("lesion_id")["label"].first()
    wide = wide[list(dict.fromkeys(data["_model"]))].dropna()
    if wide.empty:
        raise InputError("the models share no lesion; a decision curve needs common lesions")
    models = list(wide.columns)
    safe = {m: f"m{i}" for i, m in enumerate(models)}
    frame = wide.rename(columns=safe)
    frame["_outcome"] = labels.loc[wide.index].to_numpy()
    if thresholds is None:
        thresholds = np.round(np.arange(0.01, 1.0, 0.01), 2)
    thresholds = [float(t) for t in thresholds]
    res = dca(data=frame.reset_index(drop=True), outcome="_outcome",
              modelnames=list(safe.values()), thresholds=thresholds)
    back = {v: k for k, v in safe.items()}
    res = res.assign(model=res["model"].map(lambda m: back.get(m, m)))
    cols = ["model", "threshold", "net_benefit", "net_intervention_avoided", "tp_rate",
            "fp_rate", "n"]
    return res[cols].reset_index(drop=True)


def pairwise_delong(
    oof: pd.DataFrame,
    *,
    by: Sequence[str] = ("method", "config"),
    adjust: str | None = "holm",
) -> pd.DataFrame:
    """DeLong's test between every pair of models, on the lesions both have.

    With k models there are k(k-1)/2 tests; unadjusted p-values overstate the evidence when
    read together. ``p_adjusted`` applies Holm's step-down correction over all pairs
    (``statsmodels.stats.multitest.multipletests``), which controls the family-wise error rate;
    ``adjust=None`` leaves it equal to ``p_value``.

    Returns:
        DataFrame with columns ``model_a, model_b, n_lesions, auc_a, auc_b, z, p_value,
        p_adjusted``; model names as in ``model_name``.
    """
    from statsmodels.stats.multitest import multipletests

    data = check_oof(oof, by=by)
    data = data.assign(_model=data[list(by)].astype(str).agg(": ".join, axis=1))
    wide = data.pivot(index="lesion_id", columns="_model", values="probability")
    labels = data.groupby("lesion_id")["label"].first()
    models = list(dict.fromkeys(data["_model"]))
    rows = []
    for i, ma in enumerate(models):
        for mb in models[i + 1:]:
            pair = wide[[ma, mb]].dropna()
            y = labels.loc[pair.index].to_numpy()
            auc_a, auc_b, z, p = delong_test(y, pair[ma].to_numpy(), pair[mb].to_numpy())
            rows.append({"model_a": ma, "model_b": mb, "n_lesions": len(pair), "auc_a": auc_a,
                         "auc_b": auc_b, "z": z, "p_value": p})
    out = pd.DataFrame(rows, columns=["model_a", "model_b", "n_lesions", "auc_a", "auc_b", "z",
                                      "p_value"])
    if adjust and len(out):
        out["p_adjusted"] = multipletests(out["p_value"].to_numpy(), method=adjust)[1]
    else:
        out["p_adjusted"] = out["p_value"]
    return out


def compare_models(
    oof: pd.DataFrame,
    model_a: tuple[str, str],
    model_b: tuple[str, str],
    *,
    ranked: bool = True,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, object]:
    """Two models' pooled AUCs on the lesions both scored, and the patient-bootstrap interval
    of their difference (``bootstrap_auc_difference``), plus the lesion-level DeLong test.

    Args:
        oof: out-of-fold predictions holding both models.
        model_a, model_b: ``(method, config)``; the difference is ``a - b``.
        ranked: compare the within-fold ranks (``rank_within_folds``; the pooled AUC that does
            not mix fold models' calibrations) rather than the raw probabilities.
        n_resamples, level, seed: the patient bootstrap.

    Returns:
        dict with ``model_a, model_b`` (display names), ``ranked``, ``auc_a, auc_b,
        difference, ci_low, ci_high, n_lesions, n_patients`` and ``delong_p`` (lesion level,
        on the same scores).
    """
    data = check_oof(oof)
    if ranked:
        data = rank_within_folds(data)
    parts = []
    for method, config in (model_a, model_b):
        sub = data[(data["method"] == method) & (data["config"] == config)]
        if sub.empty:
            raise InputError(f"no predictions for model {model_name(method, config)}")
        parts.append(sub.set_index("lesion_id"))
    common = parts[0].index.intersection(parts[1].index)
    y = parts[0].loc[common, "label"].to_numpy()
    a = parts[0].loc[common, "probability"].to_numpy()
    b = parts[1].loc[common, "probability"].to_numpy()
    out: dict[str, object] = {"model_a": model_name(*model_a), "model_b": model_name(*model_b),
                              "ranked": ranked}
    out.update(bootstrap_auc_difference(y, a, b, parts[0].loc[common, "patient_id"],
                                        n_resamples=n_resamples, level=level, seed=seed))
    out["delong_p"] = delong_test(y, a, b)[3]
    return out


def delong_matrix(pairwise: pd.DataFrame, *, value: str = "p_adjusted") -> pd.DataFrame:
    """Square model x model matrix of one column of ``pairwise_delong`` (diagonal NaN)."""
    models = list(dict.fromkeys([*pairwise["model_a"], *pairwise["model_b"]]))
    mat = pd.DataFrame(np.nan, index=models, columns=models)
    for _, r in pairwise.iterrows():
        mat.loc[r["model_a"], r["model_b"]] = r[value]
        mat.loc[r["model_b"], r["model_a"]] = r[value]
    return mat


def format_metrics(table: pd.DataFrame, *, decimals: int = 2) -> pd.DataFrame:
    """A readable version of :func:`metrics_table`: one row per model, text cells.

    Columns: ``model``, ``lesions``, ``AUC folds (mean ± SD)`` (as the paper reports; first),
    ``AUC pooled, ranked within folds``, ``AUC pooled``, ``AUC pooled, lesion-level DeLong``,
    ``ACC``, ``F1``, ``sensitivity``, ``specificity`` (pooled at threshold 0.5). Every interval
    not labelled DeLong is the patient bootstrap. Intervals are written by
    :func:`magn_lib.display.format_interval`: ``0.83 (95 % CI 0.74–0.91)``.
    """
    from magn_lib.display import format_interval

    def ci(value: float, lo: float, hi: float) -> str:
        return format_interval(value, lo, hi, decimals=decimals)

    def folds(row: pd.Series) -> str:
        mean, sd = row["auc_fold_mean"], row["auc_fold_sd"]
        return f"{mean:.{decimals}f} ± {sd:.{decimals}f}" if np.isfinite(mean) else "–"

    auc = METRIC_LABELS["auc"]
    rows = list(table.iterrows())
    out = pd.DataFrame({
        "model": [model_name(m, c) for m, c in zip(table["method"], table["config"], strict=True)],
        "lesions": table["n_lesions"].astype(int),
        f"{auc} folds (mean ± SD)": [folds(r) for _, r in rows],
        f"{auc} pooled, ranked within folds": [
            ci(r["auc_ranked"], r["auc_ranked_low"], r["auc_ranked_high"]) for _, r in rows],
        f"{auc} pooled": [ci(r["auc"], r["auc_low"], r["auc_high"]) for _, r in rows],
        f"{auc} pooled, lesion-level DeLong": [
            ci(r["auc"], r["auc_delong_low"], r["auc_delong_high"]) for _, r in rows],
    })
    for m in _THRESHOLD_METRICS:
        out[METRIC_LABELS[m]] = [ci(r[m], r[f"{m}_low"], r[f"{m}_high"]) for _, r in rows]
    return out
