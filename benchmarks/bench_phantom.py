"""The phantom is hard in the right way (no training; minutes per cohort).

On demo-sized embedded cohorts of three seeds (the demo's reporting seed and
``MAGN_PHANTOM_SEEDS``, comma-separated), per-fold mean AUCs on 5 patient-grouped folds:

- the trivial baseline (logistic regression on first-order lesion intensity statistics,
  :mod:`magn_lib.baseline`): target ≤ 0.70;
- every label-only check (:mod:`magn_lib.confounds`): reported, near 0.5 expected;
- a *structure probe*, the reference that the class signal is in the images at all: a
  logistic regression on three hand-made structure features per view (the Spearman
  correlation of intensity with depth inside the mask, i.e. a dark core and bright rim; mask
  solidity; mask compactness): target ≥ 0.75.

The trained network's numbers are ``bench_magn_demo`` (expensive) and ``bench_null``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from benchmarks.common import Result


def structure_probe_features(cache) -> pd.DataFrame:
    """Per lesion and view: ``<view>_rim`` (Spearman correlation of the largest slice's
    intensity with the distance to the mask's edge: negative = bright rim, dark core),
    ``<view>_solidity`` (mask area over its closed area) and ``<view>_compactness``
    (perimeter² / (4π area), pixels). NaN where the view has no crop or a tiny mask."""
    columns = {}
    for view in cache.views:
        values = np.full((len(cache), 3), np.nan)
        for i in range(len(cache)):
            mask = cache.mask[view][i] > 0
            if not cache.present[view][i] or mask.sum() < 10:
                continue
            image = cache.image[view][i, 1]
            depth = ndimage.distance_transform_edt(mask)
            area = mask.sum()
            perimeter = (mask & ~ndimage.binary_erosion(mask)).sum()
            closed = ndimage.binary_closing(mask, iterations=4) | mask
            values[i] = (stats.spearmanr(image[mask], depth[mask]).statistic,
                         area / closed.sum(), perimeter ** 2 / (4 * np.pi * area))
        for j, name in enumerate(("rim", "solidity", "compactness")):
            columns[f"{view}_{name}"] = values[:, j]
    return pd.DataFrame(columns, index=pd.Index(cache.lesion_id.astype(str), name="lesion_id"))


def measure(seed: int, tmp: Path) -> dict[str, float]:
    """Per-fold mean AUCs on the demo-sized cohort of ``seed``: trivial, probe, checks."""
    from magn_lib.baseline import cross_validate_features, cross_validate_first_order
    from magn_lib.config import load_profile
    from magn_lib.confounds import auc_summary, confound_checks, confound_features
    from magn_lib.cv import make_folds
    from tests.helpers import build_crop_cache_of

    cfg = load_profile("demo")
    cache, lesions, patients = build_crop_cache_of(
        tmp / f"seed{seed}", n_patients=cfg.n_patients, seed=seed, crop_size=cfg.crop_size,
        views=cfg.views, separability=cfg.separability)
    folds = make_folds(cache.lesions(), n_splits=cfg.n_folds, seed=seed)
    out = {"trivial": auc_summary(cross_validate_first_order(cache, folds, seed=seed)),
           "probe": auc_summary(cross_validate_features(
               structure_probe_features(cache), folds, method="probe", config="structure"))}
    checks = confound_checks(confound_features(cache, lesions=lesions, patients=patients),
                             folds, seed=seed)
    flat = {f"{k}": v["auc_fold_mean"] for k, v in out.items()}
    flat.update({f"check: {r.check}": r.auc_fold_mean for r in checks.itertuples()})
    return flat


def run() -> list[Result]:
    from magn_lib.config import load_profile

    cfg = load_profile("demo")
    seeds = [cfg.seed] + [int(s) for s in os.environ.get("MAGN_PHANTOM_SEEDS", "31,47").split(",")
                          if s]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            start = time.perf_counter()
            auc = measure(seed, Path(tmp))
            took = f"seed {seed}: cohort, crops and fits in {time.perf_counter() - start:.0f} s"
            results.append(Result(f"trivial first-order baseline per-fold mean AUC, seed {seed}",
                                  auc.pop("trivial"), "the 0.70 ceiling", 0.70, unit="",
                                  target=1.0, note=took))
            results.append(Result(f"structure probe per-fold mean AUC, seed {seed}",
                                  auc.pop("probe"), "the 0.75 floor", 0.75, unit="",
                                  target=1.0, higher_is_better=True))
            for name, value in auc.items():
                results.append(Result(f"{name} per-fold mean AUC, seed {seed}", value,
                                      "chance", 0.5, unit=""))
    return results
