"""The trivial baseline: logistic regression on first-order lesion intensity statistics.

Beside every model stands the obvious one it must beat. Per lesion and view, the statistics of
the crop's intensities inside the lesion mask on the largest slice (the centre channel of the
crop, the pixels the network and the radiomics baseline see): mean, SD and percentiles. A
standardised L2 logistic regression on all of them, fitted inside the same patient-grouped folds
as MAGN and radiomics, gives out-of-fold predictions in the shared format
(``stats.check_oof``) with ``method = "first-order"``.

If this baseline reaches MAGN's AUC, the images' class difference is in two numbers per view,
and neither attention nor multiple views can show any value on that cohort.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from magn_lib.crops import CropCache
from magn_lib.errors import InputError

__all__ = [
    "BASELINE_CONFIG",
    "BASELINE_METHOD",
    "PERCENTILES",
    "cross_validate_features",
    "cross_validate_first_order",
    "first_order_features",
]

BASELINE_METHOD = "first-order"
BASELINE_CONFIG = "multi-view"
#: percentiles of the lesion's intensities used as features (besides mean and SD)
PERCENTILES: tuple[float, ...] = (10.0, 25.0, 50.0, 75.0, 90.0)

_FOLD_COLUMNS = ("lesion_id", "patient_id", "label", "fold")


def first_order_features(cache: CropCache, *, views: Sequence[str] | None = None,
                         percentiles: Sequence[float] = PERCENTILES) -> pd.DataFrame:
    """First-order statistics of each lesion's intensities inside its mask, per view.

    Args:
        cache: the run's crop cache (intensities already scaled to [0, 1] per crop).
        views: the views to use (default: all of the cache's).
        percentiles: in percent.

    Returns:
        DataFrame indexed by ``lesion_id``, columns ``<view>_mean``, ``<view>_sd`` and
        ``<view>_p<q>`` (``q`` as an integer where it is one), in crop intensity units; NaN in
        a view where the lesion has no crop or an empty mask.
    """
    views = tuple(cache.views if views is None else views)
    unknown = [v for v in views if v not in cache.views]
    if unknown:
        raise ValueError(f"views {unknown} are not in the crop cache ({cache.views})")
    names = [_percentile_name(q) for q in percentiles]
    columns: dict[str, np.ndarray] = {}
    for view in views:
        n = len(cache)
        values = np.full((n, 2 + len(percentiles)), np.nan)
        centre = cache.image[view][:, 1]  # the largest slice, [N, S, S]
        inside = cache.mask[view] > 0
        for i in range(n):
            if not cache.present[view][i] or not inside[i].any():
                continue
            pixels = centre[i][inside[i]].astype(np.float64)
            values[i, 0] = pixels.mean()
            values[i, 1] = pixels.std(ddof=1) if pixels.size > 1 else 0.0
            values[i, 2:] = np.percentile(pixels, percentiles)
        for j, stat in enumerate(["mean", "sd", *names]):
            columns[f"{view}_{stat}"] = values[:, j]
    return pd.DataFrame(columns, index=pd.Index(cache.lesion_id.astype(str), name="lesion_id"))


def _percentile_name(q: float) -> str:
    return f"p{int(q)}" if float(q).is_integer() else f"p{q:g}".replace(".", "_")


def cross_validate_features(features: pd.DataFrame, folds: pd.DataFrame, *, method: str,
                            config: str, seed: int = 0, C: float = 1.0) -> pd.DataFrame:
    """Out-of-fold predictions of a standardised logistic regression on ``features``.

    Per fold a fresh pipeline (median imputation, standardisation, L2 logistic regression with
    inverse regularisation ``C``) is fitted on the other folds' lesions only and scores the
    fold's lesions.

    Args:
        features: numeric table indexed by ``lesion_id`` (or with that column); every lesion of
            ``folds`` needs a row. Columns that are NaN throughout a training fold are dropped
            by the imputer for that fold.
        folds: the shared fold table (``lesion_id, patient_id, label, fold``).
        method, config: the ``method`` and ``config`` columns of the result.
        seed: the logistic regression's ``random_state``.

    Returns:
        The shared out-of-fold format: ``method, config, fold, lesion_id, patient_id, label,
        probability`` (of label 1, multiple myeloma), in the fold table's row order.

    Raises:
        InputError: the fold table lacks a column, or a lesion has no feature row.
    """
    missing = [c for c in _FOLD_COLUMNS if c not in folds.columns]
    if missing:
        raise InputError(f"fold table lacks column(s) {missing}")
    table = features.set_index("lesion_id") if "lesion_id" in features.columns else features
    table.index = table.index.astype(str)
    ids = folds["lesion_id"].astype(str).tolist()
    absent = [i for i in ids if i not in table.index]
    if absent:
        raise InputError(f"{method}: no feature row for {len(absent)} lesions of the fold table "
                         f"({', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''})")
    x = table.loc[ids].to_numpy(dtype=np.float64)
    y = folds["label"].to_numpy(dtype=int)
    fold_ids = folds["fold"].to_numpy()
    probability = np.full(len(ids), np.nan)
    for fold in sorted(np.unique(fold_ids)):
        train, test = fold_ids != fold, fold_ids == fold
        if len(np.unique(y[train])) < 2:
            probability[test] = y[train].mean()  # one class to learn from: its frequency
            continue
        model = make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
            LogisticRegression(C=C, max_iter=1000, random_state=seed),
        )
        model.fit(x[train], y[train])
        probability[test] = model.predict_proba(x[test])[:, 1]
    return pd.DataFrame({
        "method": method, "config": config, "fold": fold_ids.astype(int),
        "lesion_id": ids, "patient_id": folds["patient_id"].astype(str).to_numpy(),
        "label": y, "probability": probability,
    })


def cross_validate_first_order(cache: CropCache, folds: pd.DataFrame, *,
                               views: Sequence[str] | None = None, seed: int = 0
                               ) -> pd.DataFrame:
    """The trivial baseline's out-of-fold predictions (``method = "first-order"``, ``config =
    "multi-view"``): :func:`first_order_features` of every view in one logistic regression."""
    return cross_validate_features(first_order_features(cache, views=views), folds,
                                   method=BASELINE_METHOD, config=BASELINE_CONFIG, seed=seed)
