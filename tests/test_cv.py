"""Patient-grouped folds, metrics and the resumable configuration × fold grid."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from magn_lib import stats
from magn_lib.config import load_profile
from magn_lib.cv import (
    CONFIGS,
    PREDICTION_COLUMNS,
    binary_metrics,
    config_by_name,
    ensure_folds,
    folds_scheme,
    load_fold_model,
    load_folds,
    make_folds,
    patient_centres,
    pooled_metrics,
    run_grid,
    save_folds,
    scheme_text,
)
from magn_lib.errors import ConfigError, InputError
from magn_lib.settings import GridSettings
from magn_lib.train import predict


def _lesions(n_patients=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(p % 3 == 0)  # a third of the patients have MM
        for k in range(int(rng.integers(1, 4))):
            rows.append({"lesion_id": f"P{p:03d}-L{k + 1}", "patient_id": f"P{p:03d}",
                         "label": label, "age": 60})
    return pd.DataFrame(rows)


def test_folds_group_patients_and_stratify():
    lesions = _lesions()
    before = lesions.copy()
    folds = make_folds(lesions, n_splits=5, seed=3)
    pd.testing.assert_frame_equal(lesions, before)  # input untouched
    assert list(folds.columns) == ["lesion_id", "patient_id", "label", "fold"]
    assert folds["lesion_id"].tolist() == lesions["lesion_id"].tolist()
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    # no patient in the training and the test part of any fold
    for k in range(5):
        test = set(folds.loc[folds["fold"] == k, "patient_id"])
        train = set(folds.loc[folds["fold"] != k, "patient_id"])
        assert not test & train
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    overall = folds["label"].mean()
    for _, g in folds.groupby("fold"):
        assert g["label"].nunique() == 2
        assert abs(g["label"].mean() - overall) < 0.2
    pd.testing.assert_frame_equal(folds, make_folds(lesions, n_splits=5, seed=3))
    assert not make_folds(lesions, n_splits=5, seed=4)["fold"].equals(folds["fold"])


def test_fold_errors():
    lesions = _lesions(n_patients=12)  # 4 MM patients
    with pytest.raises(InputError, match="4 patient.*fewer than the 5 folds"):
        make_folds(lesions, n_splits=5)
    with pytest.raises(InputError, match="lacks column"):
        make_folds(lesions.drop(columns="patient_id"))
    bad = lesions.copy()
    bad.loc[0, "label"] = 2
    with pytest.raises(InputError, match="not 0 or 1"):
        make_folds(bad, n_splits=2)
    dup = pd.concat([lesions, lesions.iloc[:1]])
    with pytest.raises(InputError, match="more than once"):
        make_folds(dup, n_splits=2)


def test_save_load_and_ensure_folds(tmp_path):
    lesions = _lesions()
    folds = make_folds(lesions, n_splits=5, seed=0)
    path = save_folds(folds, tmp_path / "folds.csv")
    pd.testing.assert_frame_equal(load_folds(path), folds)
    # written once, reused with the same seed and scheme; another seed makes (and saves) the
    # folds of that seed (tests/test_resume_faults.py holds the rest of that rule)
    again = ensure_folds(lesions, path, n_splits=5, seed=0)
    pd.testing.assert_frame_equal(again, folds)
    reseeded = ensure_folds(lesions, path, n_splits=5, seed=99)
    pd.testing.assert_frame_equal(reseeded, make_folds(lesions, n_splits=5, seed=99))
    # a changed cohort gets new folds
    fewer = lesions[lesions["patient_id"] != "P000"]
    new = ensure_folds(fewer, path, n_splits=5, seed=0)
    assert set(new["lesion_id"]) == set(fewer["lesion_id"])
    pd.testing.assert_frame_equal(load_folds(path), new)
    with pytest.raises(InputError, match="does not exist"):
        load_folds(tmp_path / "nope.csv")


def _two_sites(n_patients=30, seed=0):
    """Lesions of patients of two centres: A (first two thirds) and B."""
    lesions = _lesions(n_patients, seed)
    number = lesions["patient_id"].str[1:].astype(int)
    lesions["centre"] = np.where(number < 2 * n_patients // 3, "A", "B")
    return lesions


def test_leave_one_site_out_folds_are_the_sites():
    lesions = _two_sites()
    before = lesions.copy()
    folds = make_folds(lesions, n_splits=5, seed=3, scheme="leave-one-site-out")
    pd.testing.assert_frame_equal(lesions, before)  # input untouched
    assert list(folds.columns) == ["lesion_id", "patient_id", "label", "fold", "centre"]
    assert folds["lesion_id"].tolist() == lesions["lesion_id"].tolist()
    # n_folds = number of sites, fold k = k-th site in sorted order, whatever n_splits and seed
    assert (folds["fold"] == lesions["centre"].map({"A": 0, "B": 1})).all()
    assert (folds["centre"] == lesions["centre"]).all()
    pd.testing.assert_frame_equal(
        folds, make_folds(lesions, n_splits=2, seed=0, scheme="leave-one-site-out"))
    # centres may come from a patients table instead of the lesions
    patients = lesions.drop_duplicates("patient_id")[["patient_id", "centre"]]
    given = make_folds(lesions.drop(columns="centre"), scheme="leave-one-site-out",
                       centres=patient_centres(patients))
    pd.testing.assert_frame_equal(given, folds)
    # no patient in the training and the test part of a fold
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    # three sites, three folds
    three = lesions.assign(centre=np.where(lesions["patient_id"] < "P010", "C", lesions["centre"]))
    assert make_folds(three, scheme="leave-one-site-out")["fold"].nunique() == 3


def test_leave_one_site_out_errors_name_the_manifest():
    lesions = _two_sites()
    with pytest.raises(ConfigError, match=r"^cv_scheme: 'by-site' is not one of"):
        make_folds(lesions, scheme="by-site")
    with pytest.raises(InputError, match="patients.csv has no centre column") as err:
        make_folds(lesions.drop(columns="centre"), scheme="leave-one-site-out")
    assert "patient-kfold" in err.value.hint
    with pytest.raises(InputError, match="one only \\('A'\\)"):
        make_folds(lesions.assign(centre="A"), scheme="leave-one-site-out")
    blank = lesions.copy()
    blank.loc[blank["patient_id"] == "P004", "centre"] = ""
    with pytest.raises(InputError, match=r"1 patient\(s\) without a centre.*P004"):
        make_folds(blank, scheme="leave-one-site-out", source="manifest my_sites")
    with pytest.raises(InputError, match="manifest my_sites"):
        make_folds(blank, scheme="leave-one-site-out", source="manifest my_sites")
    assert patient_centres(pd.DataFrame({"patient_id": ["P1"]})) is None
    assert folds_scheme(make_folds(lesions, scheme="leave-one-site-out")) == "leave-one-site-out"
    assert folds_scheme(make_folds(lesions, n_splits=2)) == "patient-kfold"
    assert scheme_text("patient-kfold", 5) == "5-fold cross-validation"
    assert "one fold per site" in scheme_text("leave-one-site-out", 5)


def test_ensure_folds_follows_the_scheme(tmp_path):
    lesions = _two_sites()
    path = tmp_path / "folds.csv"
    sites = ensure_folds(lesions, path, n_splits=5, seed=0, scheme="leave-one-site-out")
    pd.testing.assert_frame_equal(load_folds(path), sites)
    assert ensure_folds(lesions, path, scheme="leave-one-site-out").equals(sites)
    # another scheme replaces the saved folds (and drops the centre column)
    kfold = ensure_folds(lesions, path, n_splits=5, seed=0)
    pd.testing.assert_frame_equal(kfold, make_folds(lesions, n_splits=5, seed=0))
    pd.testing.assert_frame_equal(load_folds(path), kfold)
    again = ensure_folds(lesions, path, n_splits=5, seed=0, scheme="leave-one-site-out")
    pd.testing.assert_frame_equal(again, sites)


def test_configs():
    assert [c.name for c in CONFIGS] == [
        "sagittal", "sagittal+attention", "axial", "axial+attention",
        "coronal", "coronal+attention", "multi-view", "multi-view+attention"]
    assert config_by_name("coronal").views == ("coronal",)
    assert config_by_name("multi-view+attention").views == ("sagittal", "coronal", "axial")
    assert config_by_name("multi-view+attention").attention
    with pytest.raises(ConfigError, match="not one of"):
        config_by_name("multiview")


def test_binary_metrics_hand_case():
    m = binary_metrics([1, 1, 0, 0, 0], [0.9, 0.4, 0.6, 0.1, 0.2])
    # calls 1,0,1,0,0: TP 1, FN 1, FP 1, TN 2; AUC: 5 of 6 MM-metastasis pairs ordered right
    assert m == pytest.approx({"n": 5, "n_mm": 2, "accuracy": 0.6, "auc": 5 / 6, "f1": 0.5,
                               "sensitivity": 0.5, "specificity": 2 / 3})
    assert np.isnan(binary_metrics([0, 0], [0.1, 0.7])["auc"])


def test_run_grid_outputs_and_resume(tmp_path, toy_crops):
    lesions = _lesions(n_patients=9, seed=1)
    folds = make_folds(lesions, n_splits=2, seed=0)
    cohort = toy_crops(lesions, size=32)
    calls = []

    def factory(lesion_ids, *, train):
        calls.append((len(lesion_ids), train))
        return cohort.subset(lesion_ids)

    settings = GridSettings.from_profile(load_profile("smoke", epochs=1, batch_size=8,
                                                      device="cpu"))
    network = settings.network
    configs = ["axial", "multi-view+attention"]
    preds, metrics, curves = run_grid(factory, folds, configs, settings, tmp_path / "cv",
                                      progress=False)
    assert list(preds.columns) == list(PREDICTION_COLUMNS)
    assert (preds["method"] == "magn").all()
    for config in configs:
        p = preds[preds["config"] == config].merge(folds, on="lesion_id", suffixes=("", "_f"))
        assert sorted(p["lesion_id"]) == sorted(lesions["lesion_id"])  # each lesion once
        assert (p["fold"] == p["fold_f"]).all() and (p["label"] == p["label_f"]).all()
        assert (p["patient_id"] == p["patient_id_f"]).all()
    assert preds["probability"].between(0, 1).all()
    assert len(metrics) == 4 and set(metrics["config"]) == set(configs)
    for col in (*stats.METRICS, "weights_used"):
        assert col in metrics.columns
    assert (metrics["weights_used"] == "he_uniform").all()
    assert {"config", "fold", "epoch", "train_loss", "val_auc"} <= set(curves.columns)
    assert len(calls) == 8
    pooled = pooled_metrics(preds)
    assert pooled["n"].tolist() == [len(lesions)] * 2

    # the saved model of a kept configuration reproduces its out-of-fold predictions
    model = load_fold_model(tmp_path / "cv", "multi-view+attention", 1, network)
    test_ids = folds.loc[folds["fold"] == 1, "lesion_id"].tolist()
    again = predict(model, factory(test_ids, train=False))
    saved = preds[(preds["config"] == "multi-view+attention") & (preds["fold"] == 1)]
    np.testing.assert_allclose(again["probability"], saved["probability"], rtol=1e-5)
    with pytest.raises(InputError, match="no saved model"):
        load_fold_model(tmp_path / "cv", "axial", 0, network)

    # finished folds are skipped, also where the work runs changed; changed settings retrain
    calls.clear()
    elsewhere = replace(settings, train=replace(settings.train, num_workers=1))
    preds2, metrics2, _ = run_grid(factory, folds, configs, elsewhere, tmp_path / "cv",
                                   progress=False)
    assert calls == []
    pd.testing.assert_frame_equal(preds2, preds)
    # the attention weight is not one of the unguided configuration's settings
    run_grid(factory, folds, ["axial"],
             replace(settings, train=replace(settings.train, attention_weight=0.25)),
             tmp_path / "cv", progress=False)
    assert calls == []
    run_grid(factory, folds, ["axial"],
             replace(settings, train=replace(settings.train, learning_rate=1e-4)),
             tmp_path / "cv", progress=False)
    assert len(calls) == 4

    # Fig. 5 material: each lesion explained by the model of the fold that held it out
    from magn_lib.explain import held_out_maps
    from magn_lib.plots import plot_learning_curves

    maps = held_out_maps(tmp_path / "cv", folds, factory, network, test_ids[:2],
                         models={"with guidance": "multi-view+attention"})
    assert [m["lesion_id"] for m in maps] == test_ids[:2] and {m["fold"] for m in maps} == {1}
    for item in maps:
        heat = item["cams"]["with guidance"]
        assert set(heat) == set(item["images"]) == set(item["masks"])
        assert all(heat[v].shape == item["masks"][v].shape for v in heat)
        assert 0 <= item["probability"]["with guidance"] <= 1
    assert len(plot_learning_curves(curves).axes) == 2


def test_run_grid_follows_site_folds(tmp_path, toy_crops):
    lesions = _two_sites(n_patients=9, seed=1)
    folds = make_folds(lesions, scheme="leave-one-site-out")
    cohort = toy_crops(lesions.drop(columns="centre"), size=32)
    seen = []

    def factory(lesion_ids, *, train):
        seen.append((train, set(lesions.set_index("lesion_id").loc[lesion_ids, "centre"])))
        return cohort.subset(lesion_ids)

    settings = GridSettings.from_profile(load_profile("smoke", epochs=1, batch_size=8,
                                                      device="cpu"))
    preds = run_grid(factory, folds, ["axial"], settings, tmp_path / "cv", progress=False
                     ).predictions
    # fold k trains on the other site only and tests its own site
    assert seen == [(True, {"B"}), (False, {"A"}), (True, {"A"}), (False, {"B"})]
    merged = preds.merge(folds, on="lesion_id", suffixes=("", "_site"))
    assert len(merged) == len(lesions) and (merged["fold"] == merged["fold_site"]).all()


def test_initialisation_warnings():
    from magn_lib.cv import initialisation_warnings

    metrics = pd.DataFrame({
        "weights_requested": ["imagenet", "imagenet", None],
        "weights_used": ["he_uniform", "he_uniform", "he_uniform"],
        "init_message": ["download failed: no network", None, None],
    })
    (message,) = initialisation_warnings(metrics)
    assert "'imagenet' were requested but 'he_uniform' was used in 2 of 3" in message
    assert "no network" in message
    same = metrics.assign(weights_requested="he_uniform")
    assert initialisation_warnings(same) == []


def test_configs_for_the_available_views():
    from magn_lib.cv import configs_for

    assert [c.name for c in configs_for(("sagittal", "coronal", "axial"))] == [
        c.name for c in CONFIGS]
    assert [c.name for c in configs_for(["sagittal", "axial"])] == [
        "sagittal", "sagittal+attention", "axial", "axial+attention"]
