"""External validation (``magn validate``): a bundle trained on one simulated cohort scored on
another, nothing refitted; the metrics against independent references on tiny inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.special import expit, logit

from magn_lib import cli
from magn_lib.bundle import export_bundle, load_bundle, load_radiomics
from magn_lib.errors import InputError
from magn_lib.external import (
    PREDICTION_COLUMNS,
    breakdown,
    calibration_summary,
    external_metrics,
    load_external,
    recalibrate,
    validate_external,
)
from magn_lib.layout import BundlePaths, ExternalPaths
from magn_lib.stats import binary_metrics, delong_ci
from tests.helpers import make_trained_run

FROZEN = ("magn", "radiomics")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny trained run with its radiomics baseline, exported, and an external simulated
    cohort of another seed (with simulated readers' calls)."""
    from magn_lib.synthetic import make_cohort

    root = tmp_path_factory.mktemp("external")
    run = make_trained_run(root / "study", crop_size=48, class_counts={1: (3, 3), 0: (3, 3)},
                           shared_backbone=True, radiomics=True)
    bundle = export_bundle(run.report, root / "model.magn")
    external = make_cohort(root / "site_b", n_patients=6, seed=99, n_jobs=1, progress=False)
    out = validate_external(bundle, external, root / "validation", n_resamples=100, seed=3)
    return SimpleNamespace(root=root, run=run, bundle=bundle, external=Path(external), out=out)


def _bundle_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_no_external_label_reaches_a_frozen_prediction(site, tmp_path):
    """Every external label changed: every frozen prediction and call is bitwise the same,
    the bundle's files too; only the evaluation sees the new labels."""
    before_bundle = _bundle_bytes(site.bundle)
    flipped = tmp_path / "manifest"
    shutil.copytree(site.external, flipped)
    lesions = pd.read_csv(flipped / "lesions.csv", dtype=str)
    lesions["label"] = (1 - lesions["label"].astype(int)).astype(str)
    lesions.to_csv(flipped / "lesions.csv", index=False)
    patients = pd.read_csv(flipped / "patients.csv", dtype=str)
    patients.assign(centre="B").to_csv(flipped / "patients.csv", index=False)  # the hospital
    out = validate_external(site.bundle, flipped, tmp_path / "validation", n_resamples=100,
                            seed=3)
    first = load_external(site.out)
    second = load_external(out)
    assert set(first.predictions["method"]) >= set(FROZEN)
    for method in FROZEN:
        a = first.predictions[first.predictions["method"] == method].set_index("lesion_id")
        b = second.predictions[second.predictions["method"] == method].set_index("lesion_id")
        b = b.loc[a.index]
        assert (a["status"] == "ok").all()
        assert np.array_equal(a["probability"].to_numpy().view(np.int64),
                              b["probability"].to_numpy().view(np.int64)), method
        assert a["call"].tolist() == b["call"].tolist()
        assert (a["label"] == 1 - b["label"]).all()  # the labels did change
    # the written text itself, probability by probability
    text = {p: pd.read_csv(ExternalPaths(p).predictions, dtype=str) for p in (site.out, out)}
    rows = [t[t["method"].isin(FROZEN)].sort_values(["method", "lesion_id"])
            for t in text.values()]
    assert rows[0]["probability"].tolist() == rows[1]["probability"].tolist()
    assert _bundle_bytes(site.bundle) == before_bundle
    # and the evaluation read them: the AUC turned round
    auc = [r.metrics["methods"]["magn"]["auc"]["estimate"] for r in (first, second)]
    assert auc[0] == pytest.approx(1 - auc[1])
    # the generated cohort names its site ("A"); the edited copy says "B"
    assert (first.metrics["cohort"]["sites"], second.metrics["cohort"]["sites"]) == (["A"], ["B"])


def test_outputs_metrics_and_the_internal_estimate(site):
    result = load_external(site.out)
    table = result.predictions
    assert list(table.columns) == list(PREDICTION_COLUMNS)
    lesions = pd.read_csv(site.external / "lesions.csv", dtype={"lesion_id": str})
    magn = table[table["method"] == "magn"].set_index("lesion_id")
    assert sorted(magn.index) == sorted(lesions["lesion_id"])
    assert magn["vendor"].notna().all() and magn["field_strength_t"].notna().all()
    # MAGN's row is what magn predict gives the lesion (the frozen ensemble, calibrated)
    case = json.loads(ExternalPaths(site.out).case(magn.index[0]).read_text())
    assert magn["probability"].iloc[0] == case["probability_mm"]
    bundle = load_bundle(site.bundle)
    assert (magn["threshold"] == bundle.calibration.threshold).all()
    assert ((magn["probability"] >= bundle.calibration.threshold).astype(int)
            == magn["call"]).all()
    readers = sorted(set(table["method"]) - set(FROZEN))
    assert readers == result.metrics["cohort"]["readers"] and readers  # simulated reads
    m = result.metrics["methods"]["magn"]
    y, p = magn["label"].to_numpy(), magn["probability"].to_numpy()
    assert m["auc"]["estimate"] == pytest.approx(delong_ci(y, p)[0])
    assert m["sensitivity"]["estimate"] == pytest.approx(
        binary_metrics(y, p, threshold=bundle.calibration.threshold)["sensitivity"])
    assert m["calibration"]["calibration_slope"]["estimate"] is not None
    assert result.metrics["methods"][readers[0]]["calibration"] is None  # scores, not p
    internal = result.metrics["internal"]["magn"]
    oof_auc = binary_metrics(bundle.oof["label"], bundle.oof["probability"])["auc"]
    assert internal["auc_pooled"]["estimate"] == pytest.approx(oof_auc)
    assert internal["n_lesions"] == len(bundle.oof)
    assert "radiomics" in result.metrics["internal"]
    # every input check that fired is counted, by kind
    counted = sum(v["checks"] for v in result.metrics["warnings"]["by_kind"].values())
    assert counted == len(result.checks)
    assert result.metrics["warnings"]["n_training_image"] == 0
    assert magn["n_input_warnings"].sum() == (~result.checks["parameter"].isin(
        ["radiomics_refused", "training_image"])).sum()
    curves = result.extra
    assert set(curves["decision_curve"]["model"]) >= {"magn", "radiomics", "all", "none"}
    assert set(curves["calibration_curve"]["method"]) == {"magn", "radiomics"}
    assert set(curves["breakdown"]["variable"]) == set(result.metrics["breakdown_variables"])


def test_radiomics_pipeline_is_frozen_in_the_bundle(site):
    bundle = load_bundle(site.bundle)
    frozen = load_radiomics(bundle)
    assert frozen is not None and frozen.config == "multi-view"
    meta = bundle.radiomics_meta
    assert meta["n_lesions"] == len(bundle.oof)  # refitted on every training lesion
    assert len(meta["selected_features"]) == site.run.profile.radiomics_keep
    settings = Path(site.run.profile.radiomics_settings)
    from magn_lib.config import resolve_path

    assert frozen.settings.read_text() == resolve_path(settings).read_text()
    assert "radiomics" in (site.bundle / "model_card.md").read_text().lower()


def test_a_bundle_without_radiomics_still_validates(site, tmp_path):
    """An older bundle (no radiomics entry, no radiomics files) loads and validates; the
    radiomics are reported as not in the bundle. Given the training cohort itself as the
    "external" one, every lesion is flagged as a training patient's image."""
    from magn_lib.bundle import _write_checksums

    old = tmp_path / "old.magn"
    shutil.copytree(site.bundle, old)
    shutil.rmtree(BundlePaths(old).radiomics_dir)
    meta = json.loads(BundlePaths(old).meta.read_text())
    del meta["radiomics"]
    BundlePaths(old).meta.write_text(json.dumps(meta))
    _write_checksums(old)
    bundle = load_bundle(old)
    assert load_radiomics(bundle) is None
    assert "not in this bundle" in bundle.radiomics_meta["reason"]
    code = cli.main(["validate", "--model", str(old), "--manifest", str(site.run.manifest),
                     "--out", str(tmp_path / "v"), "--n-resamples", "50", "--quiet",
                     "--jobs", "1"])
    assert code == cli.EXIT_OK
    result = load_external(tmp_path / "v")
    assert "radiomics" not in set(result.predictions["method"])
    n_lesions = result.metrics["cohort"]["n_lesions"]
    assert result.metrics["warnings"]["n_training_image"] == n_lesions
    assert result.metrics["warnings"]["by_kind"]["training_image"]["lesions"] == n_lesions
    assert result.metrics["radiomics"] == {"included": False,
                                           "reason": bundle.radiomics_meta["reason"]}


def test_cli_errors_follow_the_exit_codes(site, tmp_path, capsys):
    args = ["validate", "--model", str(site.bundle), "--manifest", str(site.external),
            "--quiet", "--jobs", "1", "--n-resamples", "50"]
    # an existing folder is not replaced without --overwrite
    assert cli.main([*args, "--out", str(site.out)]) == cli.EXIT_INPUT
    assert "exists already" in capsys.readouterr().err
    # a manifest that does not load: input error, nothing written
    bad = tmp_path / "bad"
    shutil.copytree(site.external, bad)
    (bad / "lesions.csv").write_text("lesion_id,patient_id\nX,P999\n")
    assert cli.main([*args[:4], str(bad), *args[5:], "--out", str(tmp_path / "o")]) == 3
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.glob(".o.*"))  # no staging folder left behind
    # a fraction outside (0, 1)
    assert cli.main([*args, "--out", str(tmp_path / "o"),
                     "--recalibration-fraction", "1.5"]) == cli.EXIT_INPUT
    assert "strictly between 0 and 1" in capsys.readouterr().err


# ------------------------------------------------------------------------ the metrics alone

def _simulated(n_patients: int, seed: int, shift: float = 0.0, slope: float = 1.0):
    """Outcomes drawn from known probabilities: ``y ~ Bernoulli(expit((logit(p) - shift) /
    slope))``, so ``p`` is calibrated when shift 0 and slope 1; one or two lesions each."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"P{i:03d}" for i in range(n_patients)],
                         rng.integers(1, 3, n_patients))
    p = expit(rng.normal(0, 1.5, patients.size))
    y = rng.binomial(1, expit((logit(p) - shift) / slope))
    return y, p, patients


def test_calibration_summary_against_independent_fits():
    from sklearn.linear_model import LogisticRegression

    y, p, patients = _simulated(120, seed=1)
    summary = calibration_summary(y, p, patients)
    x = logit(p)
    # calibration-in-the-large: the root of the offset model's score equation
    citl = brentq(lambda a: np.sum(y - expit(a + x)), -10, 10)
    assert summary["calibration_in_the_large"]["estimate"] == pytest.approx(citl, abs=1e-6)
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x[:, None], y)
    assert summary["calibration_slope"]["estimate"] == pytest.approx(fit.coef_[0, 0], abs=1e-4)
    # calibrated by construction: the intervals hold 0 and 1
    c, s = summary["calibration_in_the_large"], summary["calibration_slope"]
    assert c["ci_low"] < 0 < c["ci_high"] and s["ci_low"] < 1 < s["ci_high"]
    assert "clustered" in summary["method"]


def test_calibration_summary_says_too_high_and_too_extreme():
    y, p, patients = _simulated(300, seed=2, shift=1.5)  # outcomes rarer than p says
    high = calibration_summary(y, p, patients)
    assert high["calibration_in_the_large"]["ci_high"] < 0 and high["difference"] > 0
    y, p, patients = _simulated(300, seed=3, slope=2.0)  # p more extreme than the truth
    assert calibration_summary(y, p, patients)["calibration_slope"]["ci_high"] < 1
    one = calibration_summary(np.zeros(4, int), np.full(4, 0.3), list("abcd"))
    assert np.isnan(one["calibration_slope"]["estimate"]) and "one class" in \
        one["calibration_slope"]["note"]


def test_external_metrics_and_no_calls():
    y, p, patients = _simulated(40, seed=4)
    table = pd.DataFrame({"label": y, "probability": p, "patient_id": patients})
    m = external_metrics(table, 0.4, n_resamples=200, seed=1)
    assert m["auc"]["estimate"] == pytest.approx(delong_ci(y, p)[0])
    point = binary_metrics(y, p, threshold=0.4)
    for name in ("accuracy", "f1", "sensitivity", "specificity"):
        assert m[name]["estimate"] == pytest.approx(point[name])
        assert m[name]["ci_low"] <= m[name]["estimate"] <= m[name]["ci_high"]
    assert m["n_patients"] == len(set(patients)) and m["n_mm"] == y.sum()
    none = external_metrics(table, None, n_resamples=50, seed=1)
    assert np.isnan(none["sensitivity"]["estimate"]) and "no calls" in \
        none["sensitivity"]["note"]


def _predictions(y, p, patients, threshold=0.5):
    rows = []
    for method, prob in (("magn", p), ("radiomics", np.clip(p * 0.8 + 0.1, 0, 1))):
        rows.append(pd.DataFrame({
            "lesion_id": [f"L{i}" for i in range(len(y))], "patient_id": patients,
            "method": method, "label": y, "probability": prob,
            "call": (prob >= threshold).astype(int), "threshold": threshold, "status": "ok",
            "vendor": np.where(np.arange(len(y)) % 2, "GE", "Siemens"),
            "field_strength_t": 1.5, "slice_thickness_mm": 4.0, "n_input_warnings": 0}))
    return pd.concat(rows, ignore_index=True)


def test_recalibration_is_fitted_and_evaluated_on_different_patients():
    y, p, patients = _simulated(200, seed=5, shift=1.5)  # too high: recalibration must help
    table = _predictions(y, p, patients)
    result = recalibrate(table, 0.5, seed=7)
    fit, held = set(result["fit_patients"]), set(result["evaluation_patients"])
    assert not fit & held and fit | held == set(patients)
    assert len(fit) == pytest.approx(len(set(patients)) / 2, abs=2)
    magn = result["methods"]["magn"]
    before = magn["before"]["calibration_in_the_large"]["estimate"]
    after = magn["after"]["calibration_in_the_large"]["estimate"]
    assert before < -0.8 and abs(after) < abs(before) / 2
    assert magn["n_evaluation_lesions"] == np.isin(patients, list(held)).sum()
    # the evaluation lesions do not reach the fit (the split itself depends only on which
    # patients have an MM lesion): their probabilities changed, the same map
    changed = table.copy()
    on_held = changed["patient_id"].isin(held)
    changed.loc[on_held, "probability"] = 1 - changed.loc[on_held, "probability"]
    again = recalibrate(changed, 0.5, seed=7)
    assert again["fit_patients"] == result["fit_patients"]
    again = again["methods"]["magn"]
    assert (again["slope"], again["intercept"]) == (magn["slope"], magn["intercept"])
    assert again["before"] != magn["before"]
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        recalibrate(table, 1.0)


def test_breakdown_by_an_acquisition_variable():
    y, p, patients = _simulated(60, seed=6)
    table = _predictions(y, p, patients)
    table.loc[table.index[:3], "status"] = "error"
    out = breakdown(table, "vendor")
    assert set(out["level"]) == {"GE", "Siemens"} and set(out["method"]) == set(FROZEN)
    ok = table[table["status"] == "ok"]
    assert out["n_lesions"].sum() == len(ok)
    row = out[(out["method"] == "magn") & (out["level"] == "GE")].iloc[0]
    part = ok[(ok["method"] == "magn") & (ok["vendor"] == "GE")]
    assert row["auc"] == pytest.approx(binary_metrics(part["label"], part["probability"])["auc"])
    with pytest.raises(InputError, match="no column"):
        breakdown(table, "scanner_colour")


def test_an_unreadable_lesion_is_reported_and_the_others_scored(site, tmp_path, capsys):
    broken = tmp_path / "manifest"
    shutil.copytree(site.external, broken)
    series = pd.read_csv(broken / "series.csv", dtype=str)
    lesions = pd.read_csv(broken / "lesions.csv", dtype=str)
    patient = lesions["patient_id"].iloc[0]
    folder = broken / series[(series["patient_id"] == patient)
                             & (series["view"] == "axial")]["folder"].iloc[0]
    for path in sorted(folder.iterdir())[2:5:2]:  # two slices missing
        path.unlink()
    out = tmp_path / "v"
    code = cli.main(["validate", "--model", str(site.bundle), "--manifest", str(broken),
                     "--out", str(out), "--n-resamples", "50", "--quiet", "--jobs", "1"])
    assert code == cli.EXIT_INPUT
    assert "missing slice" in capsys.readouterr().err
    result = load_external(out)
    bad = set(lesions.loc[lesions["patient_id"] == patient, "lesion_id"])
    table = result.predictions
    frozen = table[table["method"].isin(FROZEN)]
    assert (frozen.loc[frozen["lesion_id"].isin(bad), "status"] == "error").all()
    assert frozen.loc[frozen["lesion_id"].isin(bad), "probability"].isna().all()
    assert (frozen.loc[~frozen["lesion_id"].isin(bad), "status"] == "ok").all()
    assert result.metrics["warnings"]["n_unreadable"] == len(bad)
    magn = result.metrics["methods"]["magn"]
    assert magn["n_lesions"] == len(lesions) - len(bad) and magn["n_unscored"] == len(bad)
    assert set(result.checks.loc[result.checks["parameter"] == "unreadable",
                                 "lesion_id"]) == bad
