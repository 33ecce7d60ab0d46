"""The embedded phantom separates the classes only through lesion structure: label-independent
knobs and the null preset, first-order statistics matched by construction, and (slow) the
trivial baseline and every label-only check at chance on a rendered null cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency
from sklearn.metrics import roc_auc_score

from magn_lib.synthetic.anatomy import Spine, tissue
from magn_lib.synthetic.lesions import draw_distractors, draw_lesion
from magn_lib.synthetic.planning import LABEL_FREE, Knobs, label_free, parse_knobs, plan_cohort
from magn_lib.synthetic.render import _near, lesion_enhancement, lesion_occupancy


def _plan_table(n: int, seed: int, knobs: Knobs) -> pd.DataFrame:
    plans = plan_cohort(n, seed, knobs)
    df = pd.DataFrame([{k: v for k, v in p.items() if k != "seed_seq"} for p in plans])
    df["size_mean"] = [p["size_cm"][0] for p in plans]
    return df


def _auc(label: pd.Series, value: pd.Series) -> float:
    """Best-direction AUC of one variable (|AUC - 0.5| + 0.5)."""
    auc = roc_auc_score(label, value)
    return max(auc, 1 - auc)


def test_null_preset_and_separability_zero_make_everything_label_independent():
    knobs = parse_knobs({"preset": "null"})
    assert knobs.separability == 0 and knobs.label_independent == LABEL_FREE
    assert label_free(parse_knobs({"separability": 0.0})) == LABEL_FREE
    assert parse_knobs({"preset": "null", "separability": 0.5}).separability == 0.5
    assert label_free(parse_knobs({})) == ("size", "lesions", "site")
    assert label_free(parse_knobs({"class_counts": {1: (1, 1), 0: (1, 2)}})) == ("size", "site")
    with pytest.raises(ValueError, match="label_independent"):
        parse_knobs({"label_independent": ["height"]})
    with pytest.raises(ValueError, match="preset"):
        parse_knobs({"preset": "easy"})


def test_pooled_plan_variables_do_not_separate_the_classes():
    """2000 planned patients: with every variable label-independent, none separates the
    classes (AUC within 0.5 ± 0.05); drawn by class, age, size and lesion count do."""
    pooled = _plan_table(2000, 5, parse_knobs({"preset": "null"}))
    by_class = _plan_table(2000, 5, parse_knobs({"label_independent": ()}))
    pooled["male"] = pooled["sex"] == "M"
    by_class["male"] = by_class["sex"] == "M"
    for column in ("age", "size_mean", "n_lesions", "male"):
        assert _auc(pooled["label"], pooled[column]) < 0.55, column
    assert chi2_contingency(pd.crosstab(pooled["label"], pooled["site"])).pvalue > 0.01
    assert chi2_contingency(pd.crosstab(by_class["label"], by_class["site"])).pvalue < 0.01
    # the paper's differences are back when drawn by class (the test can fail)
    assert _auc(by_class["label"], by_class["n_lesions"]) > 0.6
    assert _auc(by_class["label"], by_class["size_mean"]) > 0.99  # two fixed class means
    counts = {lab: sub["n_lesions"].sum() for lab, sub in pooled.groupby("label")}
    assert sum(counts.values()) == sum(by_class["n_lesions"])  # the same lesion total


def _lesion_intensities(m: float, seed: int) -> tuple[np.ndarray, np.ndarray, object]:
    """Rendered intensities and normalised radii of one lesion's interior (dense grid)."""
    spine = Spine.draw("lumbar", np.random.default_rng(0))
    les = draw_lesion(spine, np.random.default_rng(seed), label=0, k=0, m=m, diameter_cm=2.2,
                      lesion_id="P1-L1", number=1)
    axes = [np.arange(c - r, c + r, 0.6) for c, r in zip(les.centre, les.radii, strict=True)]
    s, u, v = (a.ravel().astype(np.float32) for a in np.meshgrid(*axes, indexing="ij"))
    ana = tissue(spine, s, u, v, fat_residual=0.1)
    near = _near(les, s, u, v)
    occ, r_norm = lesion_occupancy(les, near, ana, spine)
    inten = lesion_enhancement(les, near, r_norm)
    inside = occ >= 0.5  # what the mask holds
    return inten[inside], r_norm[inside], les


def test_lesion_intensity_distribution_follows_label_free_parameters_not_structure():
    """Over a lesion's interior, mean and SD of the intensity are its label-independent
    enhancement and heterogeneity whatever its structure; the structure (rim with a dark
    core vs mottling) shows in where the bright parts are."""
    moments, rim_correlation = {}, {}
    for m in (-2.5, 2.5):
        rows, corr = [], []
        for seed in range(12):
            inten, r_norm, les = _lesion_intensities(m, seed)
            rows.append((inten.mean() / les.enhancement - 1,
                         inten.std() / (les.enhancement * les.heterogeneity) - 1))
            corr.append(np.corrcoef(inten, r_norm)[0, 1])
        moments[m] = np.array(rows)
        rim_correlation[m] = float(np.mean(corr))
    for m, rel in moments.items():
        # mean within 3 % of the enhancement, SD within 25 % of the drawn heterogeneity
        assert np.abs(rel[:, 0]).max() < 0.03, m
        assert np.abs(rel[:, 1].mean()) < 0.25, m
    # the class-mean difference of the relative SD error is small against its spread
    assert abs(moments[2.5][:, 1].mean() - moments[-2.5][:, 1].mean()) < 0.2
    # metastasis-like lesions are bright at the rim and dark inside; myeloma-like ones are not
    assert rim_correlation[2.5] > 0.5 > 0.2 > rim_correlation[-2.5]


def test_distractors_are_drawn_without_the_label_and_never_masked():
    spine = Spine.draw("thoracic", np.random.default_rng(3))
    counts = [len(draw_distractors(spine, np.random.default_rng(i), taken={0},
                                   separability=1.0, patient_id="P1")) for i in range(200)]
    assert 0.5 < np.mean(counts) < 1.6 and max(counts) <= 3
    drawn = [d for i in range(50) for d in draw_distractors(
        spine, np.random.default_rng(i), taken={0, 1}, separability=1.0, patient_id="P1")]
    assert all(d.number == 0 and d.k not in (0, 1) for d in drawn)
    imitated = {d.label for d in drawn}
    assert imitated == {-1, 0, 1}  # haemangioma-like, metastasis-like and myeloma-like foci


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_null_cohort_trivial_baseline_and_label_only_checks_at_chance(tmp_path):
    """Acceptance: on a rendered null-preset cohort (110 patients, ~140 lesions), the trivial
    baseline and every label-only check have a cross-validated AUC within 0.5 ± 0.1."""
    from magn_lib.baseline import cross_validate_first_order
    from magn_lib.confounds import CHECKS, auc_summary, confound_checks, confound_features
    from magn_lib.cv import make_folds
    from tests.helpers import build_crop_cache_of

    cache, lesions, patients = build_crop_cache_of(
        tmp_path, n_patients=110, seed=4242, crop_size=96, preset="null")
    folds = make_folds(cache.lesions(), n_splits=5, seed=4242)
    trivial = auc_summary(cross_validate_first_order(cache, folds, seed=0))
    checks = confound_checks(confound_features(cache, lesions=lesions, patients=patients), folds)
    assert list(checks["check"]) == list(CHECKS)
    results = {"first-order baseline": trivial["auc"], **dict(zip(checks["check"],
                                                                checks["auc"], strict=True))}
    off = {k: round(v, 3) for k, v in results.items() if not 0.4 <= v <= 0.6}
    assert not off, off
