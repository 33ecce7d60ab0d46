"""Coverage of the AUC intervals on lesions clustered in patients, at demo and paper size.

    python -m benchmarks stats

Simulated cohorts (one class per patient, 1-3 lesions a patient, a latent score with an
intra-patient correlation of 0.72 as in the embedded phantom, true lesion-pair AUC
``Phi(d / sqrt 2)``): the share of cohorts whose nominal 95 % interval holds the true AUC, for
the patient bootstrap (the study's headline interval), Obuchowski's clustered DeLong and the
lesion-level DeLong interval (which treats lesions of a patient as independent). The target
for the patient bootstrap is coverage >= 0.92 (ratio >= 0.968 of nominal); the others are
reported beside it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from benchmarks.common import Result
from magn_lib import stats

NOMINAL = 0.95


def _cohort(rng: np.random.Generator, n_patients: int, *, d: float, icc: float,
            mm_share: float, lesions_weights: tuple[float, float, float]):
    y, z, pid = [], [], []
    for p in range(n_patients):
        label, shared = int(rng.random() < mm_share), rng.normal()
        for _ in range(int(rng.choice(3, p=lesions_weights)) + 1):
            y.append(label)
            pid.append(f"P{p}")
            z.append(d * label + np.sqrt(icc) * shared + np.sqrt(1 - icc) * rng.normal())
    return np.array(y), 1.0 / (1.0 + np.exp(-np.array(z))), np.array(pid)


def _coverage(n_patients: int, n_cohorts: int, lesions_weights: tuple[float, float, float],
              *, d: float = 1.1, icc: float = 0.72, mm_share: float = 79 / 217,
              n_resamples: int = 1000) -> dict[str, float]:
    truth = float(sps.norm.cdf(d / np.sqrt(2)))
    hits = {"patient bootstrap": 0, "Obuchowski": 0, "lesion-level DeLong": 0}
    for r in range(n_cohorts):
        y, prob, pid = _cohort(np.random.default_rng(10_000 + r), n_patients, d=d, icc=icc,
                               mm_share=mm_share, lesions_weights=lesions_weights)
        auc = stats.bootstrap_metrics(y, prob, pid, n_resamples=n_resamples,
                                      seed=r).set_index("metric").loc["auc"]
        hits["patient bootstrap"] += auc.ci_low <= truth <= auc.ci_high
        _, lo, hi = stats.obuchowski_ci(y, prob, pid)
        hits["Obuchowski"] += lo <= truth <= hi
        _, lo, hi = stats.delong_ci(y, prob)
        hits["lesion-level DeLong"] += lo <= truth <= hi
    return {k: v / n_cohorts for k, v in hits.items()}


def run() -> list[Result]:
    results = []
    # demo: ~60 patients, ~75 lesions; paper: 217 patients, 269 lesions (about 1.24 a patient)
    for size, n_patients, weights in (("demo size", 60, (0.8, 0.15, 0.05)),
                                      ("paper size", 217, (0.8, 0.16, 0.04))):
        coverage = _coverage(n_patients, 400, weights)
        for method, value in coverage.items():
            target = 0.92 / NOMINAL if method == "patient bootstrap" else None
            results.append(Result(
                name=f"AUC 95% interval coverage, {method}, {size}", value=value,
                reference="nominal", reference_value=NOMINAL, unit="", target=target,
                higher_is_better=True, note="400 simulated cohorts, latent ICC 0.72"))
    return results
