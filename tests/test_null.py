"""Tests of magn_lib.null: permutations between patients, folds re-made on permuted labels,
and the pass rule (which must fail a leak and a dead model, and pass a correct null)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magn_lib.baseline import cross_validate_features
from magn_lib.null import null_rule, permutation_null, permutation_seeds, permute_between_patients


def lesions_table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(p < n_patients * 0.4)
        for j in range(int(rng.integers(1, 4))):
            rows.append({"lesion_id": f"P{p:03d}-L{j}", "patient_id": f"P{p:03d}",
                         "label": label})
    return pd.DataFrame(rows)


def test_permutation_keeps_patients_whole_and_class_counts_of_patients():
    lesions = lesions_table()
    permuted = permute_between_patients(lesions, seed=3)
    assert list(permuted["lesion_id"]) == list(lesions["lesion_id"])
    assert permuted.groupby("patient_id")["label"].nunique().max() == 1
    per_patient = permuted.groupby("patient_id")["label"].first()
    assert per_patient.sum() == lesions.groupby("patient_id")["label"].first().sum()
    assert (per_patient != lesions.groupby("patient_id")["label"].first()).any()
    assert permute_between_patients(lesions, seed=3).equals(permuted)  # deterministic
    bad = lesions.copy()
    bad.loc[bad["lesion_id"] == "P000-L0", "label"] = 0
    bad = pd.concat([bad, bad.iloc[:1].assign(lesion_id="P000-Lx", label=1)])
    with pytest.raises(ValueError, match="both labels"):
        permute_between_patients(bad, seed=0)


def test_permutation_seeds_skip_the_profiles_seeds():
    assert permutation_seeds(3, exclude=(90002, None)) == [90001, 90003, 90004]
    assert len(set(permutation_seeds(20, exclude=(2022, 11)))) == 20


def test_rule_passes_a_null_and_fails_a_leak_a_straggler_and_a_dead_model():
    rng = np.random.default_rng(0)
    correct = 0.5 + rng.normal(0, 0.08, 10)
    assert null_rule(0.9, correct).passed
    leak = correct + 0.2  # a leak worth +0.2 AUC: every permutation still under 0.8
    verdict = null_rule(0.95, np.clip(leak, 0, 0.79))
    assert not verdict.passed and not verdict.centred and verdict.bounded
    straggler = np.r_[correct[:-1], 0.15]
    assert not null_rule(0.9, straggler).bounded
    assert not null_rule(0.55, correct).beaten  # true labels do not beat the permutations
    # the band: max(0.05, 2.6 SD / sqrt R)
    wide = np.array([0.3, 0.7, 0.35, 0.65])
    assert null_rule(0.9, wide).band == pytest.approx(2.6 * wide.std(ddof=1) / 2)
    assert null_rule(0.9, [0.5, 0.5001]).band == 0.05
    with pytest.raises(ValueError):
        null_rule(0.9, [0.5])


def test_permutation_null_remakes_folds_and_evaluates_every_run():
    lesions = lesions_table(80, seed=1)
    rng = np.random.default_rng(1)
    signal = pd.DataFrame({"x": lesions["label"].to_numpy() + rng.normal(0, 0.5, len(lesions))},
                          index=lesions["lesion_id"])
    seen = []

    def evaluate(folds: pd.DataFrame, name: str) -> pd.DataFrame:
        seen.append((name, folds))
        return cross_validate_features(signal, folds, method="m", config="c")

    seeds = permutation_seeds(6, exclude=(2022,))
    table = permutation_null(evaluate, lesions, seeds, n_folds=5, fold_seed=7)
    assert list(table["run"]) == ["true"] + [f"permutation-{s}" for s in seeds]
    # the folds are stratified on the labels trained on: each run's folds differ
    true_folds, first = seen[0][1], seen[1][1]
    assert not np.array_equal(true_folds["label"], first["label"])
    for _, folds in seen:
        counts = folds.groupby("fold")["label"].sum()
        assert counts.max() - counts.min() <= 6  # stratified on these labels
    assert table.loc[0, "auc_fold_mean"] > 0.8
    verdict = null_rule(table.loc[0, "auc_fold_mean"], table.loc[1:, "auc_fold_mean"])
    assert verdict.beaten and verdict.bounded


@pytest.mark.slow
def test_bench_null_on_the_smoke_grid_runs_true_and_permuted_labels(tmp_path):
    """The benchmark's own code on the smoke profile, two permutations: every run scored, the
    permutations' folds re-made (slow: three cross-validated trainings)."""
    from benchmarks.bench_null import null_table

    table, _ = null_table("smoke", 2, tmp_path)
    assert list(table["run"])[0] == "true" and len(table) == 3
    assert table["n_lesions"].nunique() == 1
    assert table["auc"].between(0, 1).all()
