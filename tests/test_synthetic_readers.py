"""Tests for magn_lib.synthetic.readers: the simulated readers follow their documented
parameters and never look at the realised cohort's labels to hit a number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from magn_lib.synthetic.paper import PAPER_CLASS_COUNTS, READERS
from magn_lib.synthetic.readers import (
    CONFIDENCE_CUTS,
    READER_MODELS,
    ReaderModel,
    operating_point,
    simulate_readers,
)


def _lesions(n_patients: int, seed: int, mm_share: float = 0.3) -> pd.DataFrame:
    """Patients with 1-3 lesions of one class each."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(rng.random() < mm_share)
        for k in range(int(rng.integers(1, 4))):
            rows.append({"lesion_id": f"P{p}-L{k}", "patient_id": f"P{p}", "label": label})
    return pd.DataFrame(rows)


def test_operating_point_solves_accuracy_and_auc_like_a_linear_solver():
    n_mm = PAPER_CLASS_COUNTS[1][1]
    prevalence = n_mm / (n_mm + PAPER_CLASS_COUNTS[0][1])
    for reader, (accuracy, auc, _) in READERS.items():
        se, sp = operating_point(accuracy, auc, prevalence)
        # independent reference: the 2x2 linear system solved numerically
        ref = np.linalg.solve([[prevalence, 1 - prevalence], [0.5, 0.5]], [accuracy, auc])
        assert (se, sp) == pytest.approx(tuple(ref), abs=1e-12)
        assert READER_MODELS[reader].sensitivity == pytest.approx(se)
        assert READER_MODELS[reader].specificity == pytest.approx(sp)
    assert READER_MODELS["reader1"].sensitivity == pytest.approx(0.6098, abs=1e-4)
    assert READER_MODELS["reader2"].specificity == pytest.approx(0.6650, abs=1e-4)
    with pytest.raises(ValueError, match="prevalence 0.5"):
        operating_point(0.7, 0.7, 0.5)
    with pytest.raises(ValueError, match="outside"):
        operating_point(0.99, 0.55, 0.3)


def test_latent_model_gives_the_documented_sensitivity_and_specificity():
    lesions = _lesions(12000, seed=1)
    reads = simulate_readers(lesions, np.random.default_rng(2)).merge(
        lesions[["lesion_id", "label"]])
    for reader, model in READER_MODELS.items():
        r = reads[reads["reader"] == reader]
        mm, met = r[r["label"] == 1], r[r["label"] == 0]
        # 4 binomial SEs (the clustering inflates the SE a little; the cohort is large)
        for observed, expected, n in ((mm["call"].mean(), model.sensitivity, len(mm)),
                                      ((1 - met["call"]).mean(), model.specificity, len(met))):
            assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
        # the latent threshold and separation reproduce the operating point exactly
        assert sps.norm.cdf(model.threshold) == pytest.approx(model.specificity)
        assert sps.norm.sf(model.threshold - model.separation) == pytest.approx(
            model.sensitivity)


def test_a_reads_depends_on_its_own_lesions_label_only():
    """The old simulation chose each threshold on the whole cohort's labels: flipping one
    lesion's label moved other lesions' calls. Here the other reads stay exactly the same."""
    lesions = _lesions(60, seed=3)
    before = simulate_readers(lesions, np.random.default_rng(4))
    flipped = lesions.copy()
    flipped.loc[0, "label"] = 1 - flipped.loc[0, "label"]
    after = simulate_readers(flipped, np.random.default_rng(4))
    others = before["lesion_id"] != lesions.loc[0, "lesion_id"]
    pd.testing.assert_frame_equal(before[others], after[others])


def test_realised_accuracy_varies_between_cohorts_like_sampling_noise():
    model = READER_MODELS["reader2"]
    accuracies = []
    for seed in range(40):
        lesions = _lesions(60, seed=seed)
        reads = simulate_readers(lesions, np.random.default_rng(100 + seed),
                                 models={"reader2": model}).merge(lesions)
        accuracies.append(float((reads["call"] == reads["label"]).mean()))
    expected = 0.3 * model.sensitivity + 0.7 * model.specificity
    assert abs(np.mean(accuracies) - expected) < 0.03
    # not pinned to a target: cohorts of ~120 lesions spread by a few points
    assert np.std(accuracies) > 0.02


def test_confidence_follows_the_fixed_cut_points_and_shared_errors_correlate():
    lesions = _lesions(4000, seed=5)
    reads = simulate_readers(lesions, np.random.default_rng(6))
    assert set(reads["confidence"]) == {1, 2, 3, 4, 5} and set(reads["call"]) == {0, 1}
    assert list(reads.columns) == ["lesion_id", "patient_id", "reader", "call", "confidence"]
    # the share of unsure calls (|z - t| < first cut) is bounded by the density at t
    r1 = reads[reads["reader"] == "reader1"]
    assert 0.05 < (r1["confidence"] == 1).mean() < 2 * CONFIDENCE_CUTS[0] * sps.norm.pdf(0) + 0.05
    wide = reads.pivot(index="lesion_id", columns="reader", values="call").join(
        lesions.set_index("lesion_id")["label"])
    wrong = wide[["reader1", "reader2"]].ne(wide["label"], axis=0)
    assert wrong.corr().iloc[0, 1] > 0.05  # the common error term: hard lesions for both
    independent = {k: ReaderModel(m.sensitivity, m.specificity, shared=0.0)
                   for k, m in READER_MODELS.items()}
    reads0 = simulate_readers(lesions, np.random.default_rng(6), models=independent)
    wide0 = reads0.pivot(index="lesion_id", columns="reader", values="call").join(
        lesions.set_index("lesion_id")["label"])
    wrong0 = wide0[["reader1", "reader2"]].ne(wide0["label"], axis=0)
    assert abs(wrong0.corr().iloc[0, 1]) < 0.05


def test_reader_model_rejects_bad_parameters():
    with pytest.raises(ValueError, match="sensitivity"):
        ReaderModel(sensitivity=1.0, specificity=0.5)
    with pytest.raises(ValueError, match="shared"):
        ReaderModel(sensitivity=0.6, specificity=0.6, shared=1.0)
