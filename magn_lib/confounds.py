"""Label-only confound checks: how well does something that is not the lesion's appearance
predict the class?

Each check is a small feature table (lesion size, lesions per patient, vertebral site, age,
sex, the whole crop's mean intensity, the background ring outside the mask) given to the same
cross-validated logistic regression as the trivial baseline (:mod:`magn_lib.baseline`), on the
study's folds. On a cohort whose images should carry the class only in the lesion's structure
(the embedded phantom's ``null`` preset, or any honest study design), each AUC should sit near
0.5; a high one names a shortcut a network can take instead of the lesion.

On a real cohort, size, site, age and sex may differ between the classes for clinical reasons
(the paper's Table 1); the checks then say how much of a model's AUC those alone would give.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from magn_lib.baseline import cross_validate_features
from magn_lib.crops import CropCache

__all__ = ["CHECKS", "RING_PX", "auc_summary", "confound_checks", "confound_features"]

#: the checks in the order they are reported
CHECKS: tuple[str, ...] = (
    "lesion size", "lesions per patient", "vertebral site", "age", "sex", "whole-crop mean",
    "background ring",
)
#: the background ring: crop pixels farther than this many pixels outside the lesion mask
RING_PX = 6.0

_SITES = ("cervical", "thoracic", "lumbar", "sacrococcygeal")
_SITE_OF_REGION = {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacrococcygeal"}


def confound_features(cache: CropCache, *, lesions: pd.DataFrame | None = None,
                      patients: pd.DataFrame | None = None, ring_px: float = RING_PX
                      ) -> dict[str, pd.DataFrame]:
    """The feature table of every check that the inputs allow.

    Args:
        cache: the run's crop cache (lesion ids, patients, crops and masks).
        lesions: the manifest's (or ingest's) lesion table; its ``size_cm`` gives the lesion
            size (else the sagittal mask area in mm² of the crop's largest slice) and its
            ``vertebra`` the site when ``patients`` has none.
        patients: the patient table; ``age``, ``sex`` (M/F) and ``site``.
        ring_px: the background ring starts this many pixels outside the mask.

    Returns:
        ``{check: table}`` in :data:`CHECKS` order, each indexed by ``lesion_id`` with numeric
        columns (NaN where unknown). A check whose inputs are absent is left out.
    """
    index = pd.Index(cache.lesion_id.astype(str), name="lesion_id")
    patient_of = pd.Series(cache.patient_id.astype(str), index=index)
    out: dict[str, pd.DataFrame] = {}
    lesion_rows = None
    if lesions is not None:
        lesion_rows = lesions.assign(lesion_id=lesions["lesion_id"].astype(str)
                                     ).set_index("lesion_id").reindex(index)
    patient_rows = None
    if patients is not None:
        patient_rows = patients.assign(patient_id=patients["patient_id"].astype(str)
                                       ).set_index("patient_id").reindex(patient_of.to_numpy())
        patient_rows.index = index

    # lesion size: the annotated size, else the mask area on the largest sagittal slice
    if (lesion_rows is not None and "size_cm" in lesion_rows
            and pd.to_numeric(lesion_rows["size_cm"], errors="coerce").notna().any()):
        out["lesion size"] = pd.DataFrame(
            {"size_cm": pd.to_numeric(lesion_rows["size_cm"], errors="coerce")}, index=index)
    else:
        view = "sagittal" if "sagittal" in cache.views else cache.views[0]
        area = (cache.mask[view].reshape(len(cache), -1).sum(axis=1)
                * cache.spacing[view].prod(axis=1))
        out["lesion size"] = pd.DataFrame(
            {f"{view}_mask_area_mm2": np.where(cache.present[view], area, np.nan)}, index=index)
    out["lesions per patient"] = pd.DataFrame(
        {"lesions_per_patient": patient_of.map(patient_of.value_counts()).astype(float)},
        index=index)
    site = None
    if patient_rows is not None and "site" in patient_rows:
        site = patient_rows["site"]
    elif lesion_rows is not None and "vertebra" in lesion_rows:
        site = lesion_rows["vertebra"].astype(str).str[:1].map(_SITE_OF_REGION)
    if site is not None and site.notna().any():
        out["vertebral site"] = pd.DataFrame(
            {f"site_{s}": (site == s).astype(float) for s in _SITES}, index=index)
    if patient_rows is not None and "age" in patient_rows:
        out["age"] = pd.DataFrame(
            {"age": pd.to_numeric(patient_rows["age"], errors="coerce")}, index=index)
    if patient_rows is not None and "sex" in patient_rows:
        sex = patient_rows["sex"].astype(str).str.upper()
        out["sex"] = pd.DataFrame({"male": np.where(sex.isin(["M", "F"]), sex == "M", np.nan)},
                                  index=index)
    crop_mean, ring = {}, {}
    for view in cache.views:
        centre = cache.image[view][:, 1].astype(np.float64)
        present = cache.present[view]
        crop_mean[f"{view}_crop_mean"] = np.where(present, centre.mean(axis=(1, 2)), np.nan)
        ring_mean = np.full(len(cache), np.nan)
        ring_sd = np.full(len(cache), np.nan)
        for i in np.flatnonzero(present):
            outside = ndimage.distance_transform_edt(cache.mask[view][i] == 0) > ring_px
            if outside.any():
                ring_mean[i] = centre[i][outside].mean()
                ring_sd[i] = centre[i][outside].std()
        ring[f"{view}_ring_mean"], ring[f"{view}_ring_sd"] = ring_mean, ring_sd
    out["whole-crop mean"] = pd.DataFrame(crop_mean, index=index)
    out["background ring"] = pd.DataFrame(ring, index=index)
    return {name: out[name] for name in CHECKS if name in out}


def confound_checks(features: Mapping[str, pd.DataFrame], folds: pd.DataFrame, *,
                    seed: int = 0) -> pd.DataFrame:
    """Cross-validated AUC of each check on the shared folds.

    Args:
        features: ``{check: table}`` (:func:`confound_features`).
        folds: the shared fold table.
        seed: the logistic regressions' ``random_state``.

    Returns:
        One row per check: ``check, features`` (column names, comma-separated), ``n_lesions,
        auc_fold_mean, auc_fold_sd`` (over folds with both classes) and ``auc`` (pooled
        out-of-fold).
    """
    rows = []
    for name, table in features.items():
        oof = cross_validate_features(table, folds, method="confound", config=name, seed=seed)
        rows.append({"check": name, "features": ", ".join(map(str, table.columns)),
                     "n_lesions": len(oof), **auc_summary(oof)})
    return pd.DataFrame(rows, columns=["check", "features", "n_lesions", "auc_fold_mean",
                                       "auc_fold_sd", "auc"])


def auc_summary(oof: pd.DataFrame) -> dict[str, float]:
    """Per-fold mean and SD of the AUC (folds with both classes) and the pooled AUC of one
    model's out-of-fold predictions (columns ``fold, label, probability``)."""
    per_fold = [roc_auc_score(part["label"], part["probability"])
                for _, part in oof.groupby("fold") if part["label"].nunique() == 2]
    pooled = (roc_auc_score(oof["label"], oof["probability"]) if oof["label"].nunique() == 2
              else np.nan)
    return {"auc_fold_mean": float(np.mean(per_fold)) if per_fold else np.nan,
            "auc_fold_sd": float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else np.nan,
            "auc": float(pooled)}

