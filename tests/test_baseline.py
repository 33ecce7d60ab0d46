"""Tests of magn_lib.baseline (trivial first-order baseline) and magn_lib.confounds (label-only
checks), on tiny hand-made crop caches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from magn_lib.baseline import (
    BASELINE_METHOD,
    cross_validate_features,
    cross_validate_first_order,
    first_order_features,
)
from magn_lib.confounds import CHECKS, auc_summary, confound_checks, confound_features
from magn_lib.crops import CropCache
from magn_lib.cv import make_folds
from magn_lib.errors import InputError
from magn_lib.stats import check_oof

VIEWS = ("sagittal", "axial")


def tiny_cache(n_patients: int = 20, *, size: int = 24, seed: int = 0,
               lesion_level=None) -> CropCache:
    """A cache of 1-2 lesions per patient: a bright square lesion on a noisy background whose
    level is ``lesion_level(label, rng)`` (default: independent of the label)."""
    rng = np.random.default_rng(seed)
    ids, patients, labels = [], [], []
    for p in range(n_patients):
        for j in range(1 + p % 2):
            ids.append(f"P{p:02d}-L{j + 1}")
            patients.append(f"P{p:02d}")
            labels.append(p % 2 if p < n_patients - 1 else 1 - p % 2)
    n = len(ids)
    image, mask, present = {}, {}, {}
    for view in VIEWS:
        img = rng.normal(0.3, 0.05, (n, 3, size, size)).astype(np.float32)
        m = np.zeros((n, size, size), np.uint8)
        for i in range(n):
            half = int(rng.integers(2, 5))
            c = size // 2
            m[i, c - half:c + half, c - half:c + half] = 1
            level = lesion_level(labels[i], rng) if lesion_level else rng.uniform(0.6, 0.9)
            img[i][:, m[i] > 0] = level + rng.normal(0, 0.05, (3, int(m[i].sum())))
        image[view], mask[view], present[view] = img, m, np.ones(n, bool)
    present["axial"][0] = False
    image["axial"][0], mask["axial"][0] = 0, 0
    return CropCache(
        views=VIEWS, lesion_id=np.array(ids), patient_id=np.array(patients),
        label=np.array(labels, np.int8), image=image, mask=mask, present=present,
        slice_index={v: np.zeros(n, np.int32) for v in VIEWS},
        centre_voxel={v: np.zeros((n, 3), np.int32) for v in VIEWS},
        clipped={v: np.zeros(n, bool) for v in VIEWS},
        mask_truncated={v: np.zeros(n, bool) for v in VIEWS},
        spacing={v: np.full((n, 2), 0.5, np.float32) for v in VIEWS},
        provenance={"crop_size": size},
    )


def folds_of(cache: CropCache, n_folds: int = 4) -> pd.DataFrame:
    return make_folds(cache.lesions(), n_splits=n_folds, seed=0)


def test_first_order_features_match_masked_pixels():
    cache = tiny_cache()
    table = first_order_features(cache)
    assert list(table.columns[:7]) == ["sagittal_mean", "sagittal_sd", "sagittal_p10",
                                       "sagittal_p25", "sagittal_p50", "sagittal_p75",
                                       "sagittal_p90"]
    i = 3
    centre, inside = cache.image["sagittal"][i, 1], cache.mask["sagittal"][i]
    assert table["sagittal_mean"].iloc[i] == pytest.approx(
        ndimage.mean(centre, labels=inside, index=1), rel=1e-6)
    pixels = pd.Series(centre[inside > 0].astype(np.float64))
    assert table["sagittal_sd"].iloc[i] == pytest.approx(pixels.std(), rel=1e-9)
    assert table["sagittal_p75"].iloc[i] == pytest.approx(pixels.quantile(0.75), rel=1e-9)
    # a lesion without a crop in a view has no statistics there
    assert table.loc[cache.lesion_id[0], ["axial_mean", "axial_p90"]].isna().all()
    assert table.loc[cache.lesion_id[0], "sagittal_mean"] == pytest.approx(
        table["sagittal_mean"].iloc[0])


def test_cross_validation_matches_sklearn_reference_and_never_sees_test_labels():
    cache = tiny_cache(seed=1)
    folds = folds_of(cache)
    features = first_order_features(cache)
    oof = cross_validate_features(features, folds, method="m", config="c", seed=0)
    check_oof(oof)
    assert list(oof["lesion_id"]) == list(folds["lesion_id"])
    reference = cross_val_predict(
        make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                      StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)),
        features.loc[folds["lesion_id"]].to_numpy(), folds["label"].to_numpy(),
        cv=PredefinedSplit(folds["fold"].to_numpy()), method="predict_proba")[:, 1]
    assert np.allclose(oof["probability"], reference)
    # flipping the labels of fold 0 changes nothing predicted for fold 0
    flipped = folds.copy()
    test = flipped["fold"] == 0
    flipped.loc[test, "label"] = 1 - flipped.loc[test, "label"]
    again = cross_validate_features(features, flipped, method="m", config="c")
    assert np.allclose(again.loc[test.to_numpy(), "probability"],
                       oof.loc[test.to_numpy(), "probability"])


def test_first_order_baseline_finds_an_intensity_difference_and_not_an_absent_one():
    bright = tiny_cache(n_patients=40, seed=2,
                        lesion_level=lambda label, rng: 0.55 + 0.3 * label + rng.normal(0, 0.05))
    oof = cross_validate_first_order(bright, folds_of(bright), seed=0)
    assert set(oof["method"]) == {BASELINE_METHOD}
    assert roc_auc_score(oof["label"], oof["probability"]) > 0.95
    same = tiny_cache(n_patients=40, seed=3)
    oof = cross_validate_first_order(same, folds_of(same), seed=0)
    assert 0.25 < roc_auc_score(oof["label"], oof["probability"]) < 0.75


def test_missing_feature_row_is_named():
    cache = tiny_cache()
    features = first_order_features(cache).iloc[1:]
    with pytest.raises(InputError, match="no feature row for 1 lesions"):
        cross_validate_features(features, folds_of(cache), method="m", config="c")


def test_confound_features_from_tables_and_crops():
    cache = tiny_cache()
    lesions = cache.lesions().assign(size_cm=np.arange(len(cache)) / 10, vertebra="T7")
    patients = pd.DataFrame({"patient_id": sorted(set(cache.patient_id))})
    patients = patients.assign(age=np.arange(len(patients)) + 40.0,
                               sex=["M", "F"] * (len(patients) // 2), site="lumbar")
    table = confound_features(cache, lesions=lesions, patients=patients)
    assert tuple(table) == CHECKS
    ids = cache.lesion_id
    assert table["lesion size"]["size_cm"].tolist() == pytest.approx(lesions["size_cm"].tolist())
    assert table["lesions per patient"].loc[ids[0], "lesions_per_patient"] == 1  # P00: 1 lesion
    assert table["lesions per patient"].loc[ids[1], "lesions_per_patient"] == 2  # P01: 2
    assert table["vertebral site"].loc[ids[0], "site_lumbar"] == 1
    assert table["age"].loc[ids[1], "age"] == 41
    assert table["sex"].loc[ids[1], "male"] == 0  # P01 is F
    i = 5
    centre, inside = cache.image["axial"][i, 1], cache.mask["axial"][i] > 0
    assert table["whole-crop mean"].iloc[i]["axial_crop_mean"] == pytest.approx(centre.mean())
    # the ring: pixels farther than 6 px from the mask (chessboard-free Euclidean distance)
    rows, cols = np.nonzero(inside)
    yy, xx = np.mgrid[: centre.shape[0], : centre.shape[1]]
    far = np.min((yy[..., None] - rows) ** 2 + (xx[..., None] - cols) ** 2, axis=-1) > 36
    assert table["background ring"].iloc[i]["axial_ring_mean"] == pytest.approx(
        centre[far].mean())
    assert np.isnan(table["background ring"].iloc[0]["axial_ring_mean"])  # no axial crop


def test_confound_features_without_tables_fall_back_to_the_mask_area():
    cache = tiny_cache()
    table = confound_features(cache)
    assert set(table) == {"lesion size", "lesions per patient", "whole-crop mean",
                          "background ring"}
    area = table["lesion size"]["sagittal_mask_area_mm2"]
    assert area.iloc[2] == cache.mask["sagittal"][2].sum() * 0.25


def test_confound_checks_find_a_label_encoded_variable_only():
    cache = tiny_cache(n_patients=40, seed=4)
    folds = folds_of(cache)
    rng = np.random.default_rng(0)
    leaked = pd.DataFrame({"x": folds["label"].to_numpy() + rng.normal(0, 0.1, len(folds))},
                          index=folds["lesion_id"])
    noise = pd.DataFrame({"x": rng.normal(size=len(folds))}, index=folds["lesion_id"])
    out = confound_checks({"leaked": leaked, "noise": noise}, folds)
    by = out.set_index("check")
    assert by.loc["leaked", "auc"] > 0.95 and by.loc["leaked", "auc_fold_mean"] > 0.95
    assert 0.25 < by.loc["noise", "auc"] < 0.75
    assert list(out.columns) == ["check", "features", "n_lesions", "auc_fold_mean",
                                 "auc_fold_sd", "auc"]


def test_auc_summary_skips_one_class_folds():
    oof = pd.DataFrame({"fold": [0, 0, 0, 1, 1], "label": [0, 1, 1, 1, 1],
                        "probability": [0.1, 0.9, 0.8, 0.2, 0.3]})
    out = auc_summary(oof)
    assert out["auc_fold_mean"] == 1.0 and np.isnan(out["auc_fold_sd"])
    assert out["auc"] == pytest.approx(roc_auc_score(oof["label"], oof["probability"]))


def test_first_order_baseline_follows_site_folds():
    cache = tiny_cache(seed=2)
    lesions = cache.lesions()
    lesions["centre"] = np.where(lesions["patient_id"] < "P10", "A", "B")
    folds = make_folds(lesions, scheme="leave-one-site-out")
    oof = cross_validate_first_order(cache, folds, seed=0)
    check_oof(oof)
    assert (oof["fold"].to_numpy() == folds["fold"].to_numpy()).all()
    # site A's lesions are scored by a model fitted on site B only: relabelling site A
    # changes nothing predicted for it
    relabelled = folds.assign(label=np.where(folds["centre"] == "A", 1 - folds["label"],
                                             folds["label"]))
    again = cross_validate_first_order(cache, relabelled, seed=0)
    site_a = (folds["centre"] == "A").to_numpy()
    assert np.allclose(again.loc[site_a, "probability"], oof.loc[site_a, "probability"])
