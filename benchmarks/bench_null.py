"""Permutation null check of the MAGN grid (slow): does training learn labels without signal?

    python -m benchmarks null                        # demo-sized, R = 4 (make bench)
    MAGN_NULL_R=10 python -m benchmarks null         # demo-sized, R = 10 (the full check)
    MAGN_NULL_PROFILE=smoke python -m benchmarks null   # smoke-sized: the machinery only

Labels are permuted between patients R times (seeds from ``magn_lib.null.permutation_seeds``,
never the profile's reporting or tuning seed), the folds are re-made on the permuted labels,
and the profile's primary configuration (multi-view + attention) is cross-validated by the same
``run_grid`` code on the same crop cache as the true labels. Primary statistic: the mean
per-fold AUC; the pooled out-of-fold AUC is reported too. Pass rule
(:func:`magn_lib.null.null_rule`): the permutations' mean within 0.5 ± max(0.05, 2.6·SD/√R), no
permutation outside [0.2, 0.8], and the true-label AUC above every permuted one.

Inputs: the profile's crop cache of a finished run (``work/<profile>/crops.npz``) when there
is one, else built here from the profile's embedded cohort (ingest, transfer, crops). The
default is the demo size: the rule's last part (the true labels beat every permutation) needs a
grid that learns, and the smoke grid (12 patients, one epoch) does not, so on the smoke size
the rule checks the machinery only and its last part is expected to fail.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import Result, embedded_crop_cache

CONFIG = "multi-view+attention"


def profile_inputs(profile: str, tmp: Path) -> Path:
    """The crop cache of ``profile``'s embedded cohort: a finished run's, or built in ``tmp``."""
    from magn_lib.config import load_profile
    from magn_lib.layout import default_run_paths

    paths = default_run_paths(profile)
    if paths.crop_cache.is_file():
        return paths.crop_cache
    return embedded_crop_cache(load_profile(profile), tmp)


def null_table(profile: str, n_permutations: int, out: Path) -> tuple[pd.DataFrame, float]:
    """The true-label run and ``n_permutations`` permuted runs; returns the table of
    :func:`magn_lib.null.permutation_null` and the seconds it took."""
    from magn_lib.config import load_profile
    from magn_lib.crops import read_cache
    from magn_lib.cv import run_grid
    from magn_lib.data import dataset_factory
    from magn_lib.null import permutation_null, permutation_seeds
    from magn_lib.settings import GridSettings

    cfg = load_profile(profile)
    cache = read_cache(profile_inputs(profile, out))
    settings = GridSettings.from_profile(cfg, keep_weights=False, track_test=False)

    def evaluate(folds: pd.DataFrame, name: str) -> pd.DataFrame:
        labels = dict(zip(folds["lesion_id"], folds["label"], strict=True))
        cache.label[:] = [labels[i] for i in cache.lesion_id.astype(str)]
        make = dataset_factory(cache, views=cfg.views, augment=cfg.augment, seed=cfg.seed)
        return run_grid(make, folds, [CONFIG], settings, out / name, progress=False).predictions

    seeds = permutation_seeds(n_permutations, exclude=(cfg.seed, *cfg.tuning_seeds))
    start = time.perf_counter()
    table = permutation_null(evaluate, cache.lesions(), seeds, n_folds=cfg.n_folds,
                             fold_seed=cfg.seed)
    return table, time.perf_counter() - start


def run() -> list[Result]:
    from magn_lib.null import null_rule

    profile = os.environ.get("MAGN_NULL_PROFILE", "demo")
    n_permutations = int(os.environ.get("MAGN_NULL_R", "4"))
    with tempfile.TemporaryDirectory() as tmp:
        table, seconds = null_table(profile, n_permutations, Path(tmp))
    print(table.round(3).to_string(index=False))
    true, permuted = table.iloc[0], table.iloc[1:]
    results = []
    for statistic, column in (("per-fold mean AUC", "auc_fold_mean"), ("pooled AUC", "auc")):
        rule = null_rule(float(true[column]), permuted[column].to_numpy())
        note = rule.line() + (f"; {profile} grid, {len(table)} runs in {seconds:.0f} s"
                              if column == "auc" else "")
        results.append(Result(
            f"{CONFIG} {statistic}, labels permuted between patients (mean of R={len(permuted)})",
            rule.mean, "chance", 0.5, unit="", note=note))
        results.append(Result(
            f"null rule on the {statistic} ({'primary' if column == 'auc_fold_mean' else 'also'})",
            float(rule.passed), "pass", 1.0, unit="", target=1.0, higher_is_better=True,
            note=f"true labels {float(true[column]):.3f}"))
    return results
