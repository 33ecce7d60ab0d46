"""Tests of magn_lib.radiomics: extraction against pyradiomics' own baseline, batch extraction,
in-fold selection and the absence of leakage from test folds."""

from __future__ import annotations

import ast
import csv
import functools
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from radiomics import featureextractor
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import PredefinedSplit, StratifiedGroupKFold, cross_val_predict
from sklearn.utils.estimator_checks import check_estimator

from magn_lib import radiomics as rad
from magn_lib.config import VIEWS, project_root
from magn_lib.errors import ConfigError, InputError

SETTINGS = project_root() / "configs" / "radiomics.yaml"


# --------------------------------------------------------------------------- reference data


def _reference_dir() -> Path:
    env = os.environ.get("MAGN_REFERENCE_DATA")
    root = Path(env) if env else Path(project_root()).parent / "shared" / "reference-data"
    return root / "pyradiomics-baseline"


BASELINE_CASES = ("brain1", "brain2", "breast1")  # the cases whose images are shipped
# One representative set runs in `make test`; the other texture classes are marked slow.
FAST_CLASSES = ("firstorder", "glcm", "shape", "shape2D")


@functools.cache
def _baseline(cls: str) -> dict[str, dict[str, str]]:
    """{column: {row name: value}} of baseline/baseline_<cls>.csv."""
    with open(_reference_dir() / "baseline" / f"baseline_{cls}.csv", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    return {col: {row[0]: row[i] for row in rows[1:]} for i, col in enumerate(header) if i}


def _baseline_params() -> list:
    folder = _reference_dir() / "baseline"
    if not folder.is_dir():
        reason = f"pyradiomics baseline not found at {folder} (set MAGN_REFERENCE_DATA)"
        return [pytest.param("none", "none", marks=pytest.mark.skip(reason=reason))]
    params = []
    for path in sorted(folder.glob("baseline_*.csv")):
        cls = path.stem.removeprefix("baseline_")
        for column in _baseline(cls):
            if column.split("_")[0] in BASELINE_CASES:
                marks = () if cls in FAST_CLASSES else (pytest.mark.slow,)
                params.append(pytest.param(cls, column, marks=marks, id=f"{cls}-{column}"))
    return params


@pytest.mark.parametrize(("cls", "column"), _baseline_params())
def test_reproduces_pyradiomics_baseline(cls: str, column: str) -> None:
    """Every baseline feature of the maintainers' regression cases within rtol 1e-3, with the
    settings and image types recorded in the baseline's own diagnostics rows."""
    table = _baseline(cls)[column]
    settings = ast.literal_eval(table["diagnostics_Configuration_Settings"])
    image_types = ast.literal_eval(table["diagnostics_Configuration_EnabledImageTypes"])
    params = {"imageType": image_types, "featureClass": {cls: None}, "setting": settings}
    case = column.split("_")[0]
    folder = _reference_dir()
    mask = sitk.ReadImage(str(folder / f"{case}_label.nrrd"))
    if cls == "shape2D":
        # The shape2D baseline was made from the mask's largest slice alone (its diagnostics:
        # original mask size (x, y, 1), voxel count = the largest slice's), placed back on the
        # image grid by `correctMask`, as its settings record.
        label = settings.get("label", 1)
        area = (sitk.GetArrayFromImage(mask) == label).sum(axis=(1, 2))
        k = int(np.argmax(area))
        mask = mask[:, :, k : k + 1]
    got = rad.extract_features(str(folder / f"{case}_image.nrrd"), mask, settings=params)
    expected = {k: v for k, v in table.items() if not k.startswith("diagnostics_") and v != ""}
    assert expected, f"no baseline values in column {column}"
    assert set(expected) <= set(got), sorted(set(expected) - set(got))
    off = {
        name: (got[name], float(value))
        for name, value in expected.items()
        if not math.isclose(got[name], float(value), rel_tol=1e-3, abs_tol=1e-12)
    }
    assert not off, off


# --------------------------------------------------------------------------- synthetic crops


def _crops(n: int = 6, size: int = 32, seed: int = 1234):
    """n three-channel crops [n, 3, S, S] in [0, 1], channels differing, with ellipse masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    images = np.empty((n, 3, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        a, b = rng.uniform(size / 8, size / 3, 2)
        theta = rng.uniform(0, np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        masks[i] = (u / a) ** 2 + (v / b) ** 2 <= 1
        images[i] = np.clip(rng.normal(0.4, 0.1, (3, size, size)) + 0.3 * masks[i], 0, 1)
    ids = [f"P{i:03d}-L1" for i in range(n)]
    return images, masks, ids


def test_project_settings_feature_count() -> None:
    names = rad.feature_names(SETTINGS)
    # 9 shape2D + (original + 4 in-plane wavelets) x (18 + 23 + 16 + 16 + 14 + 5)
    assert len(names) == 9 + 5 * 92 == 469
    assert len(set(names)) == len(names)
    assert "original_shape2D_PixelSurface" in names
    assert {n.split("_")[0] for n in names} == {
        "original", "wavelet-LL", "wavelet-LH", "wavelet-HL", "wavelet-HH"
    }
    assert not any(n.endswith("glcm_SumAverage") for n in names)


def test_extract_features_matches_pyradiomics_directly(tmp_path: Path) -> None:
    images, masks, _ = _crops(1)
    image = sitk.GetImageFromArray(images[0, 1][None])
    mask = sitk.GetImageFromArray(masks[0][None])
    expected = featureextractor.RadiomicsFeatureExtractor(str(SETTINGS)).execute(image, mask)
    expected = {k: float(v) for k, v in expected.items() if not k.startswith("diagnostics_")}
    got = rad.extract_features(image, mask, settings=SETTINGS)
    assert list(got) == list(expected)  # pyradiomics' names and order
    assert got == expected
    assert all(isinstance(v, float) for v in got.values())
    # file paths give the same values
    sitk.WriteImage(image, str(tmp_path / "image.nrrd"))
    sitk.WriteImage(mask, str(tmp_path / "mask.nrrd"))
    from_files = rad.extract_features(
        tmp_path / "image.nrrd", str(tmp_path / "mask.nrrd"), settings=str(SETTINGS)
    )
    assert from_files == got
    with_diag = rad.extract_features(image, mask, settings=SETTINGS, include_diagnostics=True)
    diagnostics = [k for k in with_diag if k.startswith("diagnostics_")]
    assert "diagnostics_Versions_PyRadiomics" in diagnostics
    assert {k: v for k, v in with_diag.items() if k not in diagnostics} == got


def test_extract_features_refusals_and_bad_input(tmp_path: Path) -> None:
    images, masks, _ = _crops(1)
    image = sitk.GetImageFromArray(images[0, 1][None])
    empty = sitk.GetImageFromArray(np.zeros_like(masks[0])[None])
    with pytest.raises(rad.RegionRefused, match="No labels found"):
        rad.extract_features(image, empty, settings=SETTINGS)
    single = np.zeros_like(masks[0])
    single[5, 5] = 1
    with pytest.raises(InputError, match="single voxel"):
        rad.extract_features(image, sitk.GetImageFromArray(single[None]), settings=SETTINGS)
    with pytest.raises(InputError, match="mask file does not exist"):
        rad.extract_features(image, tmp_path / "missing.nrrd", settings=SETTINGS)


def test_load_settings_forms_and_errors(tmp_path: Path) -> None:
    from_file = rad.load_settings(SETTINGS)
    assert from_file["setting"]["force2D"] is True and "Wavelet" in from_file["imageType"]
    assert rad.load_settings(from_file) == from_file
    assert rad.load_settings({"binWidth": 25}) == {"setting": {"binWidth": 25}}
    with pytest.raises(ConfigError, match="rejected"):
        rad.load_settings({"setting": {"binWidht": 25}})
    with pytest.raises(ConfigError, match="mixed"):
        rad.load_settings({"setting": {}, "binWidth": 25})
    with pytest.raises(ConfigError, match="does not exist"):
        rad.load_settings(tmp_path / "nope.yaml")
    three_d = rad.settings_3d(SETTINGS)
    assert three_d["setting"]["force2D"] is False
    assert "shape" in three_d["featureClass"] and "shape2D" not in three_d["featureClass"]
    assert from_file == rad.load_settings(SETTINGS)  # not modified


def test_extract_crop_features_middle_channel_failures_and_parallel() -> None:
    images, masks, ids = _crops(6)
    masks[2] = 0  # empty mask
    masks[3] = 0
    masks[3, 4, 4] = 1  # a single pixel
    present = np.array([True, True, True, True, False, True])
    images_before, masks_before = images.copy(), masks.copy()
    features, failures = rad.extract_crop_features(
        images, masks, ids, settings=SETTINGS, present=present, view="axial", n_jobs=1,
        progress=False,
    )
    np.testing.assert_array_equal(images, images_before)
    np.testing.assert_array_equal(masks, masks_before)
    assert list(features.index) == ids and features.index.name == "lesion_id"
    assert features.shape == (6, 469) and (features.dtypes == np.float64).all()
    assert set(failures["lesion_id"]) == {ids[2], ids[3], ids[4]}
    assert (failures["view"] == "axial").all()
    reasons = dict(zip(failures["lesion_id"], failures["reason"], strict=True))
    assert "No labels found" in reasons[ids[2]]
    assert "single voxel" in reasons[ids[3]]
    assert "not present" in reasons[ids[4]]
    assert features.loc[[ids[2], ids[3], ids[4]]].isna().all().all()
    # the values are those of the crop's middle channel (the largest-mask slice)
    for i in (0, 5):
        middle = rad.extract_features(
            sitk.GetImageFromArray(images[i, 1][None]), sitk.GetImageFromArray(masks[i][None]),
            settings=SETTINGS,
        )
        np.testing.assert_array_equal(features.loc[ids[i]].to_numpy(), list(middle.values()))
    first = rad.extract_features(
        sitk.GetImageFromArray(images[0, 0][None]), sitk.GetImageFromArray(masks[0][None]),
        settings=SETTINGS,
    )
    assert features.loc[ids[0], "original_firstorder_Mean"] != first["original_firstorder_Mean"]
    # two workers give exactly the same table
    parallel, parallel_failures = rad.extract_crop_features(
        images, masks, ids, settings=SETTINGS, present=present, view="axial", n_jobs=2,
        progress=False,
    )
    pd.testing.assert_frame_equal(parallel, features)
    pd.testing.assert_frame_equal(parallel_failures, failures)


def test_extract_crop_features_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, masks, ids = _crops(3)
    kwargs = dict(settings=SETTINGS, view="sagittal", n_jobs=1, progress=False, cache_dir=tmp_path)
    features, failures = rad.extract_crop_features(images, masks, ids, **kwargs)
    assert len(list(tmp_path.glob("*.pkl"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no partial file

    def fail(*args, **kwargs):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(rad, "_run_tasks", fail)
    cached, cached_failures = rad.extract_crop_features(images, masks, ids, **kwargs)
    pd.testing.assert_frame_equal(cached, features)
    pd.testing.assert_frame_equal(cached_failures, failures)
    monkeypatch.undo()
    # other settings or other pixels: a new entry
    other = rad.load_settings(SETTINGS)
    other["setting"]["binWidth"] = 10
    rad.extract_crop_features(images, masks, ids, **{**kwargs, "settings": other})
    changed = images.copy()
    changed[0, 1, 0, 0] = 0.5
    rad.extract_crop_features(changed, masks, ids, **kwargs)
    assert len(list(tmp_path.glob("*.pkl"))) == 3


def test_extract_crop_features_rejects_bad_input() -> None:
    images, masks, ids = _crops(2)
    bad = masks.copy()
    bad[1, 0, 0] = 2
    with pytest.raises(InputError, match=r"lesion P001-L1 \(axial\): mask holds values"):
        rad.extract_crop_features(images, bad, ids, settings=SETTINGS, view="axial", n_jobs=1)
    nan = images.copy()
    nan[0, 1, 3, 3] = np.nan
    with pytest.raises(InputError, match="lesion P000-L1: crop holds NaN"):
        rad.extract_crop_features(nan, masks, ids, settings=SETTINGS, n_jobs=1)
    with pytest.raises(InputError, match="duplicate lesion ids"):
        rad.extract_crop_features(images, masks, [ids[0]] * 2, settings=SETTINGS, n_jobs=1)
    with pytest.raises(InputError, match="same grid"):
        rad.extract_crop_features(images, masks[:, :-1], ids, settings=SETTINGS, n_jobs=1)


def test_extract_volume_features_3d(tmp_path: Path) -> None:
    rng = np.random.default_rng(1234)
    zz, yy, xx = np.mgrid[:12, :24, :24]
    sphere = ((zz - 6) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 <= 25).astype(np.uint8)
    # a smooth blob keeps the grey-level count (and pyradiomics' run time) small
    blob = 40 * np.exp(-((3.0 * (zz - 6)) ** 2 + (0.8 * (yy - 12)) ** 2 + (0.8 * (xx - 12)) ** 2)
                       / (2 * 6.0**2))
    images, masks = [], []
    for i, mask in enumerate([sphere, np.zeros_like(sphere)]):
        image = sitk.GetImageFromArray(100 + blob + rng.normal(0, 1, sphere.shape))
        image.SetSpacing((0.8, 0.8, 3.0))
        label = sitk.GetImageFromArray(mask)
        label.CopyInformation(image)
        images.append(tmp_path / f"image{i}.nii.gz")
        masks.append(tmp_path / f"mask{i}.nii.gz")
        sitk.WriteImage(image, str(images[-1]))
        sitk.WriteImage(label, str(masks[-1]))
    features, failures = rad.extract_volume_features(
        images, masks, ["P001-L1", "P002-L1"], settings=SETTINGS, n_jobs=1, progress=False
    )
    # 14 shape + (original + 8 wavelets) x 92
    assert features.shape == (2, 14 + 9 * 92)
    assert "original_shape_VoxelVolume" in features and "wavelet-HHH_glcm_Contrast" in features
    volume = features.loc["P001-L1", "original_shape_VoxelVolume"]
    assert volume == pytest.approx(sphere.sum() * 0.8 * 0.8 * 3.0)
    assert list(failures["lesion_id"]) == ["P002-L1"]
    assert features.loc["P002-L1"].isna().all()
    with pytest.raises(InputError, match="lesion P001-L1: image file does not exist"):
        rad.extract_volume_features(
            [tmp_path / "x.nii.gz"], [masks[0]], ["P001-L1"], settings=SETTINGS, n_jobs=1
        )


# --------------------------------------------------------------------------- model


def _fold_table(n: int, seed: int, *, n_splits: int = 5) -> pd.DataFrame:
    """Lesions of n // 2 patients (two lesions each for some), stratified-grouped folds."""
    rng = np.random.default_rng(seed)
    patients = [f"P{i:03d}" for i in rng.integers(0, int(n * 0.8), n)]
    label_of = {p: int(rng.random() < 0.35) for p in sorted(set(patients))}
    lesions = pd.DataFrame({
        "lesion_id": [f"{p}-L{i}" for i, p in enumerate(patients)],
        "patient_id": patients,
        "label": [label_of[p] for p in patients],
    })
    lesions["fold"] = -1
    splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(lesions, lesions["label"], lesions["patient_id"])):
        lesions.loc[test, "fold"] = k
    return lesions


def _feature_tables(folds: pd.DataFrame, n_features: int, seed: int, *, signal: float = 0.0,
                    views=VIEWS) -> dict[str, pd.DataFrame]:
    """Noise features per view (with an all-NaN, a constant and scattered NaN columns);
    ``signal`` SD of planted class difference in sagittal f0-f2."""
    rng = np.random.default_rng(seed)
    y = folds["label"].to_numpy()
    tables = {}
    for view in views:
        X = rng.normal(size=(len(folds), n_features))
        if view == "sagittal":
            X[:, :3] += signal * y[:, None]
        X[:, -1] = np.nan
        X[:, -2] = 7.0
        X[rng.random(X.shape) < 0.02] = np.nan
        index = pd.Index(folds["lesion_id"], name="lesion_id")
        tables[view] = pd.DataFrame(X, index=index, columns=[f"f{j}" for j in range(n_features)])
    return tables


def _pooled_auc(oof: pd.DataFrame) -> dict[str, float]:
    return {c: roc_auc_score(g["label"], g["probability"]) for c, g in oof.groupby("config")}


def test_selector_ranks_by_random_forest_importance() -> None:
    rng = np.random.default_rng(1234)
    X = pd.DataFrame(rng.normal(size=(120, 40)), columns=[f"c{j}" for j in range(40)])
    y = (X["c3"] + 0.5 * X["c7"] + rng.normal(scale=0.5, size=120) > 0).astype(int)
    selector = rad.RandomForestSelector(10, 4, n_estimators=50, rerank=False, random_state=3)
    selector.fit(X, y)
    reference = RandomForestClassifier(n_estimators=50, random_state=3).fit(X.to_numpy(), y)
    order = np.argsort(-reference.feature_importances_, kind="stable")
    assert list(selector.ranking_) == list(order[:10])
    assert selector.selected_features_ == [f"c{j}" for j in order[:4]]
    assert selector.selected_features_[:2] == ["c3", "c7"]
    assert selector.get_support().sum() == 4
    assert set(selector.get_feature_names_out()) == set(selector.selected_features_)
    np.testing.assert_array_equal(selector.transform(X), X.to_numpy()[:, selector.get_support()])
    reranked = rad.RandomForestSelector(10, 4, n_estimators=50, random_state=3).fit(X, y)
    assert set(reranked.ranking_) == set(selector.ranking_)  # re-ranks the same 10


def test_selector_follows_scikit_learn_conventions() -> None:
    check_estimator(rad.RandomForestSelector(3, 2, n_estimators=10, random_state=0))


def test_pipeline_cleans_and_imputes_from_training_rows_only() -> None:
    folds = _fold_table(80, seed=5)
    X = _feature_tables(folds, 20, seed=5, views=("axial",))["axial"]
    X.iloc[0, 0] = np.inf
    train = folds["fold"].to_numpy() != 0
    pipe = rad.make_radiomics_pipeline(top_k=6, keep=3, n_estimators=20, seed=0)
    X_before = X.copy()
    pipe.fit(X[train], folds.loc[train, "label"])
    pd.testing.assert_frame_equal(X, X_before)
    kept = list(pipe["constant"].get_feature_names_out())
    assert "f19" not in kept and "f18" not in kept and len(kept) == 18  # all-NaN, constant gone
    medians = X[train].replace(np.inf, np.nan).median()
    np.testing.assert_allclose(pipe["impute"].statistics_[:18], medians.iloc[:18])
    assert len(pipe["select"].selected_features_) == 3
    assert set(pipe["select"].selected_features_) <= set(kept)
    probability = pipe.predict_proba(X[~train])[:, 1]
    assert probability.shape == ((~train).sum(),)
    assert np.all((probability >= 0) & (probability <= 1))
    with pytest.raises(ConfigError, match="classifier"):
        rad.make_radiomics_pipeline(classifier="svm")


@pytest.fixture(scope="module")
def signal_cohort():
    """200 lesions, 3 views x 120 features; 3 sagittal features carry a 1.5 SD class shift."""
    folds = _fold_table(200, seed=11)
    return folds, _feature_tables(folds, 120, seed=11, signal=1.5)


def test_permuted_labels_give_chance_auc_and_leaky_selection_would_not() -> None:
    """400 lesions (140 MM), 3 views x 100 features, 3 of them informative; labels permuted.

    Pooled AUC under the null has SD ~0.03 here, so +-0.1 is ~3 SD; the seeds are fixed
    (data 12, permutation 7; the pairs 11-13 x 7-8 all pass with in-fold AUC in 0.42-0.58
    and a leaky multi-view AUC in 0.61-0.74).
    """
    folds = _fold_table(400, seed=12)
    tables = _feature_tables(folds, 100, seed=12, signal=1.5)
    permuted = folds.copy()
    permuted["label"] = np.random.default_rng(7).permutation(folds["label"].to_numpy())
    oof, _ = rad.cross_validate_radiomics(
        tables, permuted, top_k=30, keep=15, seed=0, n_estimators=100
    )
    auc = _pooled_auc(oof)
    assert set(auc) == {*VIEWS, "multi-view"}
    for config, value in auc.items():
        assert abs(value - 0.5) <= 0.1, (config, value)
    # The test has teeth: selecting on all lesions before the folds (the leak the pipeline
    # structure prevents) pushes the same permuted-label AUC out of 0.5 +- 0.1.
    X = rad.combine_views(tables)
    X = X.loc[:, X.notna().any() & (X.nunique() > 1)]
    X = X.fillna(X.median())
    y = permuted["label"].to_numpy()
    leaky = rad.RandomForestSelector(30, 15, n_estimators=100, random_state=0).fit(X, y)
    p = cross_val_predict(
        GradientBoostingClassifier(random_state=0), X[leaky.selected_features_], y,
        cv=PredefinedSplit(permuted["fold"]), method="predict_proba",
    )[:, 1]
    assert roc_auc_score(y, p) > 0.6


def test_planted_signal_is_selected_and_predicts(signal_cohort) -> None:
    folds, tables = signal_cohort
    oof, selected = rad.cross_validate_radiomics(
        tables, folds, top_k=30, keep=15, seed=0, n_estimators=100, classifier="random_forest"
    )
    auc = _pooled_auc(oof)
    assert auc["sagittal"] > 0.85 and auc["multi-view"] > 0.85, auc
    assert auc["axial"] < 0.65 and auc["coronal"] < 0.65, auc
    kept = selected[selected["kept"]]
    for config, planted in (("sagittal", "f"), ("multi-view", "sagittal_f")):
        for fold, group in kept[kept["config"] == config].groupby("fold"):
            assert {f"{planted}{j}" for j in range(3)} <= set(group["feature"]), (config, fold)
    top = rad.most_selected_features(selected, config="sagittal", kept_only=True)
    assert set(top["feature"][:3]) == {"f0", "f1", "f2"}
    assert (top["n_folds"][:3] == 5).all() and (top["fraction"][:3] == 1.0).all()
    assert list(top.columns) == ["config", "feature", "n_folds", "fraction", "mean_rank"]
    # the shared out-of-fold format: every lesion once per configuration
    assert list(oof.columns) == [
        "method", "config", "fold", "lesion_id", "patient_id", "label", "probability"
    ]
    assert (oof["method"] == "radiomics").all()
    for _, group in oof.groupby("config"):
        assert sorted(group["lesion_id"]) == sorted(folds["lesion_id"])
        merged = group.merge(folds, on="lesion_id", suffixes=("", "_folds"))
        assert (merged["fold"] == merged["fold_folds"]).all()
        assert (merged["label"] == merged["label_folds"]).all()
    assert (selected.groupby(["config", "fold"])["rank"].max() == 30).all()
    assert (selected.groupby(["config", "fold"])["kept"].sum() == 15).all()


def test_test_fold_labels_and_values_reach_nothing_fitted_for_it() -> None:
    folds = _fold_table(100, seed=3)
    tables = _feature_tables(folds, 40, seed=3, signal=1.0, views=("sagittal", "axial"))
    kwargs = dict(top_k=10, keep=5, seed=0, n_estimators=30)
    oof, selected = rad.cross_validate_radiomics(tables, folds, **kwargs)
    fold = 2
    in_fold = folds["fold"].to_numpy() == fold
    shuffled = folds.copy()
    labels = shuffled.loc[in_fold, "label"].to_numpy()
    shuffled.loc[in_fold, "label"] = 1 - labels  # every test label changed
    oof_s, selected_s = rad.cross_validate_radiomics(tables, shuffled, **kwargs)
    perturbed = {v: t.copy() for v, t in tables.items()}
    for table in perturbed.values():  # test-fold feature values changed too
        table.loc[in_fold.tolist()] = table.loc[in_fold.tolist()] * 3.0 + 1.0
    _, selected_p = rad.cross_validate_radiomics(perturbed, folds, **kwargs)

    def rows(table: pd.DataFrame, k: int) -> pd.DataFrame:
        return table[table["fold"] == k].reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(selected_s, fold), rows(selected, fold))
    pd.testing.assert_frame_equal(rows(selected_p, fold), rows(selected, fold))
    same = rows(oof_s, fold)
    original = rows(oof, fold)
    np.testing.assert_array_equal(same["probability"], original["probability"])
    assert (same["label"] != original["label"]).all()
    # the other folds' models did see the changed labels: the comparison is not vacuous
    other = (oof_s["fold"] != fold) & (oof_s["config"] == "sagittal")
    assert not np.array_equal(oof_s.loc[other, "probability"], oof.loc[other, "probability"])


def test_cross_validate_rejects_bad_tables() -> None:
    folds = _fold_table(40, seed=1, n_splits=3)
    tables = _feature_tables(folds, 10, seed=1, views=("axial",))
    with pytest.raises(InputError, match="axial radiomics table has no row for 1 lesions"):
        rad.cross_validate_radiomics({"axial": tables["axial"].iloc[1:]}, folds)
    with pytest.raises(InputError, match="unknown views"):
        rad.cross_validate_radiomics({"oblique": tables["axial"]}, folds)
    with pytest.raises(InputError, match="lacks columns"):
        rad.cross_validate_radiomics(tables, folds.drop(columns="fold"))
