"""Radiologist reads turned into scores, metrics and comparisons with the models.

A reads table has one row per lesion per reader: ``lesion_id, patient_id, reader, call,
confidence`` with ``call`` 1 = multiple myeloma (MM), 0 = lung-cancer metastasis, and
``confidence`` 1-5 in that call (5 = certain). Truth comes from a lesions table
(``lesion_id, patient_id, label``; an out-of-fold prediction table serves too).

The ordinal score (``ordinal_score``) puts call and confidence on one 10-point MM scale::

    call = 0 (metastasis), confidence 5 4 3 2 1  ->  score 1 2 3 4 5
    call = 1 (MM),         confidence 1 2 3 4 5  ->  score 6 7 8 9 10

i.e. ``score = 5 + confidence`` for an MM call and ``6 - confidence`` for a metastasis call:
certain metastasis lowest, certain MM highest, the two unsure calls meet in the middle. As a
"probability" in the shared prediction-table format it is ``(score - 1) / 9``, so every MM call
is >= 5/9 and every metastasis call <= 4/9: thresholding at 0.5 gives back the reader's call,
and the AUC of that column is the AUC of the ordinal score (ranks are unchanged).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from magn_lib import stats
from magn_lib.display import format_interval, format_p
from magn_lib.errors import InputError

__all__ = [
    "READ_COLUMNS",
    "format_reader_metrics",
    "format_readers_vs_models",
    "ordinal_score",
    "reader_agreement",
    "reader_label",
    "reader_metrics",
    "reader_predictions",
    "reader_scores",
    "readers_vs_models",
]

READ_COLUMNS: tuple[str, ...] = ("lesion_id", "patient_id", "reader", "call", "confidence")


def ordinal_score(
    call: Sequence[int] | np.ndarray, confidence: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Call + 1-5 confidence -> 10-point MM score (1 = certain metastasis, 10 = certain MM).

    Args:
        call: (N,) 0/1, 1 = MM.
        confidence: (N,) integers 1-5.

    Returns:
        (N,) int64 in 1..10 (mapping in the module docstring).
    """
    c = np.asarray(call)
    k = np.asarray(confidence)
    if c.shape != k.shape:
        raise InputError(f"call and confidence differ in shape: {c.shape} vs {k.shape}")
    if not np.isin(c, (0, 1)).all():
        raise InputError("call must be 0 (metastasis) or 1 (MM)")
    if not np.isin(k, (1, 2, 3, 4, 5)).all():
        raise InputError("confidence must be an integer from 1 to 5")
    c = c.astype(np.int64)
    k = k.astype(np.int64)
    return np.where(c == 1, 5 + k, 6 - k).astype(np.int64)


def reader_label(name: str, *, simulated: bool) -> str:
    """How a page names a reader: ``"reader2"`` -> ``"Simulated reader 2"`` for the embedded
    cohort's simulated readers, ``"Radiologist 2"`` for a cohort's real reads (names that do
    not end in a number are kept, with "Simulated reader" before them when simulated)."""
    name = str(name)
    stem = name.removeprefix("reader").strip(" _-")
    if simulated:
        return f"Simulated reader {stem}" if stem.isdigit() else f"Simulated reader {name}"
    return f"Radiologist {stem}" if stem.isdigit() and stem != name else name


def _check_reads(reads: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Validated reads joined to the truth: adds ``label`` and ``score`` (ordinal 1-10)."""
    missing = [c for c in READ_COLUMNS if c not in reads.columns]
    if missing:
        raise InputError(f"reads table lacks column(s) {', '.join(missing)}",
                         hint=f"expected {', '.join(READ_COLUMNS)}")
    missing = [c for c in ("lesion_id", "label") if c not in lesions.columns]
    if missing:
        raise InputError(f"lesions table lacks column(s) {', '.join(missing)}")
    r = reads.copy()
    r["lesion_id"] = r["lesion_id"].astype(str)
    r["patient_id"] = r["patient_id"].astype(str)
    r["reader"] = r["reader"].astype(str)
    errors: list[InputError] = []
    bad_call = ~r["call"].isin((0, 1))
    for _, row in r[bad_call].head(5).iterrows():
        errors.append(InputError(f"reader {row['reader']}, lesion {row['lesion_id']}: call "
                                 f"{row['call']!r} is not 0 or 1", patient=row["patient_id"]))
    bad_conf = ~r["confidence"].isin((1, 2, 3, 4, 5))
    for _, row in r[bad_conf].head(5).iterrows():
        errors.append(InputError(f"reader {row['reader']}, lesion {row['lesion_id']}: confidence "
                                 f"{row['confidence']!r} is not 1-5", patient=row["patient_id"]))
    dup = r.duplicated(["reader", "lesion_id"], keep=False)
    for (reader, lesion), _ in r[dup].groupby(["reader", "lesion_id"]):
        errors.append(InputError(f"reader {reader} read lesion {lesion} more than once"))
    truth = lesions.drop_duplicates("lesion_id").copy()
    truth["lesion_id"] = truth["lesion_id"].astype(str)
    truth = truth.set_index("lesion_id")
    unknown = ~r["lesion_id"].isin(truth.index)
    for _, row in r[unknown].head(5).iterrows():
        errors.append(InputError(f"lesion {row['lesion_id']} read by {row['reader']} is not in "
                                 "the lesions table", patient=row["patient_id"]))
    if "patient_id" in truth.columns:
        known = r[~unknown]
        true_pid = truth.loc[known["lesion_id"], "patient_id"].astype(str).to_numpy()
        wrong = known["patient_id"].to_numpy() != true_pid
        for (_, row), pid in zip(known[wrong].head(5).iterrows(), true_pid[wrong][:5],
                                 strict=False):
            errors.append(InputError(f"lesion {row['lesion_id']} belongs to patient {pid}, not "
                                     f"{row['patient_id']}", patient=row["patient_id"]))
    if errors:
        raise InputError.combine(errors)
    r["call"] = r["call"].astype(np.int64)
    r["confidence"] = r["confidence"].astype(np.int64)
    r["label"] = truth.loc[r["lesion_id"], "label"].astype(np.int64).to_numpy()
    r["score"] = ordinal_score(r["call"], r["confidence"])
    return r


def reader_predictions(
    reads: pd.DataFrame, lesions: pd.DataFrame, *, score: str = "ordinal"
) -> pd.DataFrame:
    """Reads in the shared out-of-fold prediction format (method ``"reader"``, fold -1).

    Args:
        reads: the reads table (module docstring).
        lesions: truth, columns ``lesion_id, label`` (and ``patient_id``, checked if present).
        score: ``"ordinal"`` -> probability ``(ordinal_score - 1) / 9``; ``"call"`` ->
            probability = the call (0/1), so the AUC is that of the binary call.

    Returns:
        DataFrame with columns ``method, config, fold, lesion_id, patient_id, label,
        probability``; ``config`` is the reader's name.
    """
    r = _check_reads(reads, lesions)
    if score == "ordinal":
        prob = (r["score"].to_numpy(np.float64) - 1.0) / 9.0
    elif score == "call":
        prob = r["call"].to_numpy(np.float64)
    else:
        raise ValueError(f"score must be 'ordinal' or 'call', not {score!r}")
    out = pd.DataFrame({
        "method": "reader", "config": r["reader"].to_numpy(), "fold": -1,
        "lesion_id": r["lesion_id"].to_numpy(), "patient_id": r["patient_id"].to_numpy(),
        "label": r["label"].to_numpy(), "probability": prob,
    })
    return out.reset_index(drop=True)


def reader_metrics(
    reads: pd.DataFrame,
    lesions: pd.DataFrame,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-reader ACC, F1, sensitivity, specificity (from the call) and two AUCs.

    ``auc_call`` is the AUC of the binary call (= (sensitivity + specificity) / 2),
    ``auc_ordinal`` the AUC of the 10-point call + confidence score. Every interval is a
    patient-bootstrap percentile CI (``stats.bootstrap_metrics``, seeded; lesions of one
    patient drawn together), the AUCs' included.

    Returns:
        DataFrame, one row per reader, columns ``reader, n_lesions, n_patients``, then
        ``M, M_low, M_high`` for M in ``accuracy, f1, sensitivity, specificity, auc_call,
        auc_ordinal``.
    """
    r = _check_reads(reads, lesions)
    rows = []
    for reader, sub in r.groupby("reader", sort=True):
        y = sub["label"].to_numpy()
        call = sub["call"].to_numpy()
        boot = stats.bootstrap_metrics(y, call.astype(np.float64), sub["patient_id"],
                                       threshold=0.5, n_resamples=n_resamples, level=level,
                                       seed=seed).set_index("metric")
        row: dict[str, object] = {"reader": reader, "n_lesions": len(sub),
                                  "n_patients": int(sub["patient_id"].nunique())}
        for m in ("accuracy", "f1", "sensitivity", "specificity"):
            row[m] = float(boot.loc[m, "estimate"])
            row[f"{m}_low"] = float(boot.loc[m, "ci_low"])
            row[f"{m}_high"] = float(boot.loc[m, "ci_high"])
        ordinal = (sub["score"].to_numpy(np.float64) - 1.0) / 9.0
        ordinal_boot = stats.bootstrap_metrics(y, ordinal, sub["patient_id"], threshold=0.5,
                                               n_resamples=n_resamples, level=level,
                                               seed=seed).set_index("metric")
        for name, b in (("auc_call", boot), ("auc_ordinal", ordinal_boot)):
            row[name] = float(b.loc["auc", "estimate"])
            row[f"{name}_low"] = float(b.loc["auc", "ci_low"])
            row[f"{name}_high"] = float(b.loc["auc", "ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def reader_agreement(reads: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Cohen's kappa of the calls between every pair of readers, on the lesions both read.

    Kappa and its analytic CI come from ``stats.cohen_kappa`` (statsmodels, Fleiss-Cohen-
    Everitt standard error). ``kappa_ordinal`` is the quadratically weighted kappa of the
    10-point scores (``sklearn.metrics.cohen_kappa_score``), given without CI.

    Returns:
        DataFrame with columns ``reader_a, reader_b, n_lesions, agreement, kappa, kappa_low,
        kappa_high, kappa_se, kappa_ordinal``.
    """
    from sklearn.metrics import cohen_kappa_score

    missing = [c for c in ("lesion_id", "reader", "call", "confidence") if c not in reads]
    if missing:
        raise InputError(f"reads table lacks column(s) {', '.join(missing)}")
    r = reads.copy()
    r["reader"] = r["reader"].astype(str)
    r["lesion_id"] = r["lesion_id"].astype(str)
    r["score"] = ordinal_score(r["call"], r["confidence"])
    calls = r.pivot(index="lesion_id", columns="reader", values="call")
    scores = r.pivot(index="lesion_id", columns="reader", values="score")
    rows = []
    for a, b in itertools.combinations(sorted(calls.columns), 2):
        both = calls[[a, b]].dropna().astype(int)
        k = stats.cohen_kappa(both[a].to_numpy(), both[b].to_numpy(), level=level)
        sc = scores.loc[both.index, [a, b]].astype(int)
        if sc[a].nunique() + sc[b].nunique() > 2:
            kw = float(cohen_kappa_score(sc[a], sc[b], weights="quadratic"))
        else:
            kw = float("nan")
        rows.append({"reader_a": a, "reader_b": b, "n_lesions": k.n, "agreement": k.agreement,
                     "kappa": k.kappa, "kappa_low": k.ci_low, "kappa_high": k.ci_high,
                     "kappa_se": k.se, "kappa_ordinal": kw})
    return pd.DataFrame(rows, columns=["reader_a", "reader_b", "n_lesions", "agreement", "kappa",
                                       "kappa_low", "kappa_high", "kappa_se", "kappa_ordinal"])


def readers_vs_models(
    reads: pd.DataFrame,
    lesions: pd.DataFrame,
    oof: pd.DataFrame,
    *,
    models: Sequence[tuple[str, str]] | None = None,
    threshold: float = 0.5,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Each reader against each model on the lesions both scored, corrected for multiplicity.

    AUC: DeLong's test of the reader's 10-point ordinal score against the model's probability
    (``stats.delong_test``, lesion level) and the paired patient-bootstrap interval of the
    difference ``auc_model - auc_reader`` (``stats.bootstrap_auc_difference``: resamples
    patients, so it respects lesions clustering in patients). Calls: McNemar's test of the
    reader's calls against the model's calls at ``threshold`` (``stats.mcnemar_test``; exact
    when < 25 discordant lesions). Holm's step-down correction
    (``statsmodels.stats.multitest.multipletests``) runs over the whole family of the table's
    tests, every DeLong and every McNemar p-value together (2 x readers x models tests): read
    ``delong_p_holm`` and ``mcnemar_p_holm``, not the unadjusted columns, when the table is
    read as a whole.

    Args:
        reads, lesions: as in ``reader_predictions``.
        oof: out-of-fold predictions of the models (method, config, ..., probability).
        models: (method, config) pairs to compare with; default every model in ``oof`` other
            than readers.
        threshold: the models' call threshold.
        n_resamples, level, seed: the patient bootstrap of the AUC difference.

    Returns:
        DataFrame with columns ``reader, method, config, n_lesions, n_patients, auc_reader,
        auc_model, auc_difference, auc_difference_low, auc_difference_high, delong_z,
        delong_p, delong_p_holm, accuracy_reader, accuracy_model, reader_only_correct,
        model_only_correct, mcnemar_statistic, mcnemar_p, mcnemar_p_holm, mcnemar_method``.
    """
    from statsmodels.stats.multitest import multipletests

    r = _check_reads(reads, lesions)
    data = stats.check_oof(oof)
    data = data[data["method"] != "reader"]
    if models is None:
        models = list(dict.fromkeys(zip(data["method"], data["config"], strict=True)))
    rows = []
    for reader, rsub in r.groupby("reader", sort=True):
        rsub = rsub.set_index("lesion_id")
        for method, config in models:
            msub = data[(data["method"] == method) & (data["config"] == config)]
            if msub.empty:
                raise InputError(f"no predictions for model {stats.model_name(method, config)}")
            msub = msub.set_index("lesion_id")
            common = rsub.index.intersection(msub.index)
            y = rsub.loc[common, "label"].to_numpy()
            if not np.array_equal(y, msub.loc[common, "label"].to_numpy()):
                raise InputError(f"labels differ between the reads and model "
                                 f"{stats.model_name(method, config)}")
            score_r = rsub.loc[common, "score"].to_numpy(np.float64)
            prob_m = msub.loc[common, "probability"].to_numpy(np.float64)
            auc_r, auc_m, z, p = stats.delong_test(y, score_r, prob_m)
            patients = rsub.loc[common, "patient_id"].to_numpy()
            diff = stats.bootstrap_auc_difference(y, prob_m, score_r, patients,
                                                  n_resamples=n_resamples, level=level,
                                                  seed=seed)
            call_r = rsub.loc[common, "call"].to_numpy()
            call_m = (prob_m >= threshold).astype(np.int64)
            mc = stats.mcnemar_test(y, call_r, call_m)
            rows.append({
                "reader": reader, "method": method, "config": config, "n_lesions": len(common),
                "n_patients": diff["n_patients"], "auc_reader": auc_r, "auc_model": auc_m,
                "auc_difference": diff["difference"], "auc_difference_low": diff["ci_low"],
                "auc_difference_high": diff["ci_high"], "delong_z": z, "delong_p": p,
                "accuracy_reader": float(np.mean(call_r == y)),
                "accuracy_model": float(np.mean(call_m == y)),
                "reader_only_correct": mc.a_only, "model_only_correct": mc.b_only,
                "mcnemar_statistic": mc.statistic, "mcnemar_p": mc.p_value,
                "mcnemar_method": mc.method,
            })
    columns = ["reader", "method", "config", "n_lesions", "n_patients", "auc_reader",
               "auc_model", "auc_difference", "auc_difference_low", "auc_difference_high",
               "delong_z", "delong_p", "delong_p_holm", "accuracy_reader", "accuracy_model",
               "reader_only_correct", "model_only_correct", "mcnemar_statistic", "mcnemar_p",
               "mcnemar_p_holm", "mcnemar_method"]
    out = pd.DataFrame(rows, columns=[c for c in columns if not c.endswith("_holm")])
    # one family: every DeLong and every McNemar test of the table
    family = np.r_[out["delong_p"].to_numpy(np.float64), out["mcnemar_p"].to_numpy(np.float64)]
    adjusted = multipletests(family, method="holm")[1] if family.size else family
    out["delong_p_holm"] = adjusted[: len(out)]
    out["mcnemar_p_holm"] = adjusted[len(out):]
    return out[columns]


def reader_scores(reads: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Both score versions of every reader in the shared prediction format.

    Config ``"<reader>"`` carries the binary call (its AUC is the paper's reader AUC) and
    ``"<reader> (confidence)"`` the 10-point call + confidence score.
    """
    calls = reader_predictions(reads, lesions, score="call")
    ordinal = reader_predictions(reads, lesions, score="ordinal")
    ordinal["config"] = ordinal["config"] + " (confidence)"
    return pd.concat([calls, ordinal], ignore_index=True)


def format_reader_metrics(table: pd.DataFrame, *, decimals: int = 2,
                          simulated: bool = False) -> pd.DataFrame:
    """A readable version of :func:`reader_metrics`: one row per reader, "0.70 (95 % CI
    0.60–0.80)" (:func:`magn_lib.display.format_interval`); readers named by
    :func:`reader_label` (``simulated`` for the embedded cohort's)."""

    def ci(row: pd.Series, m: str) -> str:
        return format_interval(row[m], row[f"{m}_low"], row[f"{m}_high"], decimals=decimals)

    label, auc = stats.METRIC_LABELS, stats.METRIC_LABELS["auc"]
    columns = {**{m: label[m] for m in ("accuracy", "f1", "sensitivity", "specificity")},
               "auc_call": f"{auc} (call)", "auc_ordinal": f"{auc} (call + confidence)"}
    out = pd.DataFrame({"reader": [reader_label(r, simulated=simulated) for r in table["reader"]],
                        "lesions": table["n_lesions"].astype(int)})
    for m, name in columns.items():
        out[name] = [ci(r, m) for _, r in table.iterrows()]
    return out


def format_readers_vs_models(table: pd.DataFrame, *, decimals: int = 2,
                             simulated: bool = False) -> pd.DataFrame:
    """A readable version of :func:`readers_vs_models`: one row per reader and model.

    The p-values shown are Holm-adjusted over the table's whole family of tests; the AUC
    difference (model minus reader) carries its paired patient-bootstrap 95 % CI.
    """

    p = format_p

    def f(x: float) -> str:
        return f"{x:.{decimals}f}"

    auc = stats.METRIC_LABELS["auc"]
    acc = stats.METRIC_LABELS["accuracy"]
    return pd.DataFrame({
        "reader": [reader_label(r, simulated=simulated) for r in table["reader"]],
        "model": [stats.model_name(m, c) for m, c in zip(table["method"], table["config"],
                                                         strict=True)],
        "lesions": table["n_lesions"].astype(int),
        f"{auc} reader (call + confidence)": [f(x) for x in table["auc_reader"]],
        f"{auc} model": [f(x) for x in table["auc_model"]],
        f"{auc} difference, model − reader (patient bootstrap)": [
            f"{d:+.{decimals}f} (95 % CI {lo:+.{decimals}f} to {hi:+.{decimals}f})"
            for d, lo, hi in zip(table["auc_difference"], table["auc_difference_low"],
                                 table["auc_difference_high"], strict=True)],
        "DeLong p (Holm)": [p(x) for x in table["delong_p_holm"]],
        f"{acc} reader": [f(x) for x in table["accuracy_reader"]],
        f"{acc} model": [f(x) for x in table["accuracy_model"]],
        "only the reader right": table["reader_only_correct"].astype(int),
        "only the model right": table["model_only_correct"].astype(int),
        "McNemar p (Holm)": [p(x) for x in table["mcnemar_p_holm"]],
    })
