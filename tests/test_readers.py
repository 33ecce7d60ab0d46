"""Tests of magn_lib.readers: the ordinal mapping, reader metrics against scikit-learn, kappa,
and the reader-vs-model comparisons against the stats functions on aligned arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from magn_lib import readers, stats
from magn_lib.errors import InputError


def make_study(n_patients: int = 36, seed: int = 1234) -> tuple[pd.DataFrame, ...]:
    """Lesions (truth), two readers' reads (ACC about 0.65 and 0.7) and one model's OOF."""
    rng = np.random.default_rng(seed)
    lesions = []
    for i in range(n_patients):
        label = int(i % 3 == 0)
        for j in range(int(rng.integers(1, 3))):
            lesions.append({"lesion_id": f"P{i:03d}-L{j + 1}", "patient_id": f"P{i:03d}",
                            "label": label})
    lesions = pd.DataFrame(lesions)
    reads = []
    for reader, acc in (("reader1", 0.65), ("reader2", 0.72)):
        for r in lesions.itertuples():
            right = rng.random() < acc
            call = r.label if right else 1 - r.label
            conf = int(rng.integers(3, 6) if right else rng.integers(1, 4))
            reads.append({"lesion_id": r.lesion_id, "patient_id": r.patient_id,
                          "reader": reader, "call": call, "confidence": conf})
    reads = pd.DataFrame(reads)
    z = rng.normal(size=len(lesions)) + 2.0 * (2 * lesions["label"].to_numpy() - 1)
    oof = lesions.assign(method="magn", config="multi-view+attention",
                         fold=np.arange(len(lesions)) % 5, probability=1 / (1 + np.exp(-z)))
    return lesions, reads, oof


def test_ordinal_score_mapping():
    calls = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    conf = np.array([5, 4, 3, 2, 1, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(readers.ordinal_score(calls, conf), np.arange(1, 11))
    with pytest.raises(InputError, match="confidence"):
        readers.ordinal_score([1], [6])
    with pytest.raises(InputError, match="call"):
        readers.ordinal_score([2], [3])


def test_reader_predictions_threshold_gives_back_the_calls():
    lesions, reads, _ = make_study()
    pred = readers.reader_predictions(reads, lesions)
    assert list(pred.columns) == list(stats.OOF_COLUMNS)
    assert (pred.method == "reader").all() and (pred.fold == -1).all()
    np.testing.assert_array_equal((pred.probability >= 0.5).astype(int), reads.call)
    score = readers.ordinal_score(reads.call, reads.confidence)
    r1 = (reads.reader == "reader1").to_numpy()
    assert skm.roc_auc_score(pred.label[r1], pred.probability[r1]) == pytest.approx(
        skm.roc_auc_score(pred.label[r1], score[r1]))
    calls = readers.reader_predictions(reads, lesions, score="call")
    np.testing.assert_array_equal(calls.probability, reads.call)
    stats.check_oof(pred)  # valid shared format


def test_reader_metrics_match_sklearn():
    lesions, reads, _ = make_study()
    rm = readers.reader_metrics(reads, lesions, n_resamples=300)
    assert list(rm.reader) == ["reader1", "reader2"]
    truth = lesions.set_index("lesion_id").label
    for row in rm.itertuples():
        sub = reads[reads.reader == row.reader]
        y = truth.loc[sub.lesion_id].to_numpy()
        assert row.accuracy == pytest.approx(skm.accuracy_score(y, sub.call))
        assert row.f1 == pytest.approx(skm.f1_score(y, sub.call))
        sens = skm.recall_score(y, sub.call)
        spec = skm.recall_score(y, sub.call, pos_label=0)
        assert (row.sensitivity, row.specificity) == pytest.approx((sens, spec))
        assert row.auc_call == pytest.approx((sens + spec) / 2)
        score = readers.ordinal_score(sub.call, sub.confidence)
        assert row.auc_ordinal == pytest.approx(skm.roc_auc_score(y, score))
        assert row.auc_ordinal_low <= row.auc_ordinal <= row.auc_ordinal_high
        # the AUC intervals resample patients, like every other interval
        boot = stats.bootstrap_metrics(y, (score - 1) / 9, sub.patient_id, n_resamples=300)
        assert (row.auc_ordinal_low, row.auc_ordinal_high) == pytest.approx(
            tuple(boot.set_index("metric").loc["auc", ["ci_low", "ci_high"]]))
        assert row.accuracy_low <= row.accuracy <= row.accuracy_high
        assert row.n_patients == sub.patient_id.nunique()


def test_reader_agreement_kappa():
    lesions, reads, _ = make_study()
    ag = readers.reader_agreement(reads)
    assert len(ag) == 1
    row = ag.iloc[0]
    wide = reads.pivot(index="lesion_id", columns="reader", values="call")
    assert row.kappa == pytest.approx(skm.cohen_kappa_score(wide.reader1, wide.reader2))
    assert row.kappa_low < row.kappa < row.kappa_high
    assert row.n_lesions == len(lesions)
    sw = reads.assign(s=readers.ordinal_score(reads.call, reads.confidence)).pivot(
        index="lesion_id", columns="reader", values="s")
    assert row.kappa_ordinal == pytest.approx(
        skm.cohen_kappa_score(sw.reader1, sw.reader2, weights="quadratic"))


def test_readers_vs_models_equals_stats_on_aligned_lesions():
    lesions, reads, oof = make_study()
    # the reader skipped two lesions: the comparison uses the lesions both scored
    skipped = set(lesions.lesion_id.iloc[:2])
    reads = reads[~((reads.reader == "reader1") & reads.lesion_id.isin(skipped))]
    cmp = readers.readers_vs_models(reads, lesions, oof)
    assert len(cmp) == 2
    row = cmp[cmp.reader == "reader1"].iloc[0]
    assert row.n_lesions == len(lesions) - 2
    sub = reads[reads.reader == "reader1"].set_index("lesion_id")
    model = oof.set_index("lesion_id").loc[sub.index]
    y = model.label.to_numpy()
    score = readers.ordinal_score(sub.call, sub.confidence).astype(float)
    ref = stats.delong_test(y, score, model.probability.to_numpy())
    assert (row.auc_reader, row.auc_model, row.delong_z, row.delong_p) == pytest.approx(ref)
    mcall = (model.probability >= 0.5).astype(int).to_numpy()
    reader_ok = sub.call.to_numpy() == y
    model_ok = mcall == y
    assert row.reader_only_correct == np.sum(reader_ok & ~model_ok)
    assert row.model_only_correct == np.sum(~reader_ok & model_ok)
    mc = stats.mcnemar_test(y, sub.call.to_numpy(), mcall)
    assert row.mcnemar_p == pytest.approx(mc.p_value)
    assert row.accuracy_reader == pytest.approx(reader_ok.mean())
    assert row.accuracy_model == pytest.approx(model_ok.mean())
    # the AUC difference resamples patients (paired), model minus reader
    diff = stats.bootstrap_auc_difference(y, model.probability.to_numpy(), score,
                                          sub.patient_id.to_numpy(), n_resamples=2000, seed=0)
    assert (row.auc_difference, row.auc_difference_low, row.auc_difference_high) == (
        pytest.approx((diff["difference"], diff["ci_low"], diff["ci_high"])))
    assert row.auc_difference == pytest.approx(row.auc_model - row.auc_reader)


def test_readers_vs_models_holm_over_every_delong_and_mcnemar_test():
    from statsmodels.stats.multitest import multipletests

    lesions, reads, oof = make_study()
    second = oof.assign(method="radiomics", config="multi-view",
                        probability=oof.probability.to_numpy()[::-1])
    cmp = readers.readers_vs_models(reads, lesions, pd.concat([oof, second]), n_resamples=200)
    assert len(cmp) == 4  # 2 readers x 2 models: a family of 8 tests
    family = np.r_[cmp.delong_p, cmp.mcnemar_p]
    holm = multipletests(family, method="holm")[1]
    np.testing.assert_allclose(np.r_[cmp.delong_p_holm, cmp.mcnemar_p_holm], holm)
    assert (cmp.delong_p_holm >= cmp.delong_p).all() and (cmp.mcnemar_p_holm >= cmp.mcnemar_p).all()
    # Holm by hand on the smallest p-value: times the family size
    assert np.min(holm) == pytest.approx(min(1.0, 8 * np.min(family)))


def test_bad_reads_are_reported_together():
    lesions, reads, _ = make_study(n_patients=6)
    bad = reads.copy()
    bad.loc[0, "confidence"] = 7
    bad.loc[1, "lesion_id"] = "P999-L1"
    bad.loc[2, "patient_id"] = "P777"
    with pytest.raises(InputError) as err:
        readers.reader_predictions(bad, lesions)
    msg = str(err.value)
    assert "3 problems" in msg and "confidence 7" in msg and "P999-L1" in msg
    assert "belongs to patient" in msg
    dup = pd.concat([reads, reads.iloc[:1]])
    with pytest.raises(InputError, match="more than once"):
        readers.reader_metrics(dup, lesions)
    with pytest.raises(InputError, match="lacks column"):
        readers.reader_predictions(reads.drop(columns="confidence"), lesions)


def test_reader_scores_has_both_versions():
    from magn_lib.readers import reader_scores

    lesions = pd.DataFrame({"lesion_id": ["L1", "L2", "L3"], "patient_id": ["P1", "P2", "P3"],
                            "label": [1, 0, 1]})
    reads = pd.DataFrame({"lesion_id": ["L1", "L2", "L3"], "patient_id": ["P1", "P2", "P3"],
                          "reader": "r1", "call": [1, 0, 0],
                          "confidence": [5, 2, 3]})
    table = reader_scores(reads, lesions)
    assert set(table["config"]) == {"r1", "r1 (confidence)"}
    assert table[table["config"] == "r1"]["probability"].tolist() == [1.0, 0.0, 0.0]
    ordinal = table[table["config"] == "r1 (confidence)"]["probability"].to_numpy()
    assert ordinal[0] == 1.0 and 0 < ordinal[2] < 0.5


def test_format_reader_metrics():
    from magn_lib.readers import format_reader_metrics

    table = pd.DataFrame([{
        "reader": "r1", "n_lesions": 40, "n_patients": 30,
        **{f"{m}{suffix}": v for m in ("accuracy", "f1", "sensitivity", "specificity",
                                         "auc_call", "auc_ordinal")
           for suffix, v in (("", 0.7), ("_low", 0.6), ("_high", 0.8))},
    }])
    text = format_reader_metrics(table)
    assert text.loc[0, "ACC"] == "0.70 (95 % CI 0.60–0.80)" and text.loc[0, "lesions"] == 40
    assert list(text.columns) == ["reader", "lesions", "ACC", "F1", "sensitivity",
                                  "specificity", "AUC (call)", "AUC (call + confidence)"]


def test_reader_label_says_simulated_for_simulated_readers():
    assert readers.reader_label("reader2", simulated=True) == "Simulated reader 2"
    assert readers.reader_label("reader2", simulated=False) == "Radiologist 2"
    assert readers.reader_label("Dr X", simulated=False) == "Dr X"
    assert readers.reader_label("Dr X", simulated=True) == "Simulated reader Dr X"


def test_format_readers_vs_models_shows_holm_and_the_patient_interval():
    lesions, reads, oof = make_study()
    cmp = readers.readers_vs_models(reads, lesions, oof, n_resamples=200)
    text = readers.format_readers_vs_models(cmp, simulated=True)
    assert list(text["reader"]) == ["Simulated reader 1", "Simulated reader 2"]
    row, src = text.iloc[0], cmp.iloc[0]
    interval = "AUC difference, model − reader (patient bootstrap)"
    assert row[interval] == (f"{src.auc_difference:+.2f} (95 % CI {src.auc_difference_low:+.2f} "
                             f"to {src.auc_difference_high:+.2f})")
    p = src.mcnemar_p_holm
    assert row["McNemar p (Holm)"] == ("< 0.001" if p < 0.001 else f"{p:.3f}")
    assert not any("_" in c for c in text.columns)
    per_reader = readers.reader_metrics(reads, lesions, n_resamples=100)
    shown = readers.format_reader_metrics(per_reader, simulated=True)
    assert list(shown["reader"]) == ["Simulated reader 1", "Simulated reader 2"]
