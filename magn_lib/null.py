"""The permutation null check: does the training pipeline learn labels that carry no signal?

Labels are permuted *between patients* (each patient keeps one label for all its lesions, as a
disease does), the folds are re-made on the permuted labels (stratified on what is trained on,
exactly as for the true labels), and the very same cross-validation is run. Repeated over
``R`` permutations, the mean per-fold AUC must sit at chance, no permutation may stray far, and
the true labels must beat every permutation. The rule (:func:`null_rule`):

- ``|mean - 0.5| <= max(0.05, 2.6 * SD / sqrt(R))`` over the permutations' AUCs,
- every permuted AUC in ``[0.2, 0.8]``,
- the true-label AUC above every permuted one.

A one-sided bar ("permuted AUC <= 0.6") is not enough: it passes a pipeline that leaks
(permuted AUC above 0.5 but under the bar) and fails a correct one by chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from magn_lib.confounds import auc_summary
from magn_lib.cv import make_folds

__all__ = ["NullRule", "null_rule", "permute_between_patients", "permutation_null",
           "permutation_seeds"]


def permute_between_patients(lesions: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``lesions`` (``lesion_id, patient_id, label``) with the patients' labels permuted:
    every patient receives another patient's label (the class counts of patients stay), all
    of its lesions the same one."""
    per_patient = lesions.groupby("patient_id", sort=True)["label"].agg(_one_label)
    shuffled = np.random.default_rng(seed).permutation(per_patient.to_numpy())
    mapping = dict(zip(per_patient.index, shuffled, strict=True))
    return lesions.assign(label=lesions["patient_id"].map(mapping).astype(int))


def _one_label(labels: pd.Series) -> int:
    if labels.nunique() != 1:
        raise ValueError(f"patient {labels.name!r} has lesions of both labels")
    return int(labels.iloc[0])


def permutation_seeds(n: int, *, exclude: Sequence[int | None] = (), start: int = 90001
                      ) -> list[int]:
    """``n`` permutation seeds from ``start`` on, skipping the ``exclude`` seeds (the profile's
    reporting and tuning seeds: a permutation must not reuse what anything was chosen on)."""
    used = {int(s) for s in exclude if s is not None}
    out, seed = [], start
    while len(out) < n:
        if seed not in used:
            out.append(seed)
        seed += 1
    return out


@dataclass(frozen=True)
class NullRule:
    """The verdict of :func:`null_rule` and the numbers behind it."""

    passed: bool
    mean: float  # mean of the permuted AUCs
    sd: float  # their SD (ddof 1)
    band: float  # allowed |mean - 0.5|
    n_permutations: int
    centred: bool  # |mean - 0.5| <= band
    bounded: bool  # every permuted AUC in [low, high]
    beaten: bool  # true AUC above every permuted one

    def line(self) -> str:
        verdict = "passes" if self.passed else "FAILS"
        return (f"{verdict}: mean {self.mean:.3f} (SD {self.sd:.3f}, R={self.n_permutations}) "
                f"within 0.5 ± {self.band:.3f}: {self.centred}; all in range: {self.bounded}; "
                f"true labels above every permutation: {self.beaten}")


def null_rule(true_auc: float, permuted: Sequence[float], *, floor: float = 0.05,
              z: float = 2.6, bounds: tuple[float, float] = (0.2, 0.8)) -> NullRule:
    """Apply the null check's pass rule (module docstring) to one statistic.

    Args:
        true_auc: the statistic with the true labels.
        permuted: the statistic under each permutation (R >= 2 values, NaN not allowed).
        floor, z: the band is ``max(floor, z * SD / sqrt(R))``.
        bounds: the range every permuted value must lie in.
    """
    values = np.asarray(permuted, dtype=float)
    if values.size < 2 or np.isnan(values).any():
        raise ValueError(f"need >= 2 permuted values without NaN, got {values.tolist()}")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    band = max(floor, z * sd / math.sqrt(values.size))
    centred = abs(mean - 0.5) <= band
    bounded = bool(np.all((values >= bounds[0]) & (values <= bounds[1])))
    beaten = bool(true_auc > values.max())
    return NullRule(passed=centred and bounded and beaten, mean=mean, sd=sd, band=band,
                    n_permutations=int(values.size), centred=centred, bounded=bounded,
                    beaten=beaten)


def permutation_null(evaluate: Callable[[pd.DataFrame, str], pd.DataFrame],
                     lesions: pd.DataFrame, seeds: Sequence[int], *, n_folds: int,
                     fold_seed: int) -> pd.DataFrame:
    """Run ``evaluate`` on the true labels and on each permutation, folds re-made each time.

    Args:
        evaluate: ``evaluate(folds, name) -> oof``: trains and scores with the labels of
            ``folds`` (a fold table made by :func:`magn_lib.cv.make_folds`); ``name`` is
            ``"true"`` or ``"permutation-<seed>"`` (e.g. for an output folder). Its out-of-fold
            predictions need ``fold, label, probability`` (one model).
        lesions: ``lesion_id, patient_id, label`` with the true labels.
        seeds: one permutation per seed (:func:`permutation_seeds`).
        n_folds, fold_seed: how the folds are made, for the true and the permuted labels
            alike.

    Returns:
        One row per run: ``run`` ("true" or the permutation's name), ``seed`` (-1 for the
        true labels), ``auc_fold_mean, auc_fold_sd, auc`` (pooled), ``n_lesions``.
    """
    base = lesions[["lesion_id", "patient_id", "label"]].reset_index(drop=True)
    runs = [("true", -1, base)] + [(f"permutation-{s}", int(s), permute_between_patients(base, s))
                                   for s in seeds]
    rows = []
    for name, seed, labelled in runs:
        folds = make_folds(labelled, n_splits=n_folds, seed=fold_seed)
        oof = evaluate(folds, name)
        rows.append({"run": name, "seed": seed, "n_lesions": len(oof), **auc_summary(oof)})
    return pd.DataFrame(rows)
