"""A cohort without signal gives no finding (slow): ``separability: 0`` with its true labels.

    python -m benchmarks null_cohort

The demo-sized embedded cohort of the reporting seed at ``separability: 0`` (no class signal
in the images; size, lesion count, site, age and sex label-independent: a true null), analysed
with its *true* labels by the study's own code on patient-grouped folds made as the study makes
them: MAGN multi-view and multi-view + attention (:func:`magn_lib.cv.run_grid`), the
radiomics comparator (:func:`magn_lib.radiomics.cross_validate_radiomics`, every view and
multi-view), the trivial first-order baseline (:mod:`magn_lib.baseline`) and the simulated
readers (ordinal AUC). Target for every method that learns from the images: the pooled AUC's
patient-bootstrap 95 % CI (:func:`magn_lib.stats.metrics_table`) contains 0.5; a method whose
interval excludes 0.5 here reports a "finding" on no signal. The simulated readers are printed
(:func:`magn_lib.readers.reader_metrics`) but not held to it: by their documented design
(:mod:`magn_lib.synthetic.readers`) they read the true label with noise and see nothing of the
images, so they stay informative on a null cohort.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import Result, embedded_crop_cache

CONFIGS = ["multi-view", "multi-view+attention"]


def intervals(folder: Path) -> pd.DataFrame:
    """One row per method: ``method, auc, auc_low, auc_high`` (patient bootstrap)."""
    from magn_lib.baseline import cross_validate_first_order
    from magn_lib.config import load_profile, resolve_path
    from magn_lib.crops import read_cache
    from magn_lib.cv import make_folds, run_grid
    from magn_lib.data import dataset_factory
    from magn_lib.manifest import load_manifest
    from magn_lib.pipeline import resolve_manifest
    from magn_lib.radiomics import cross_validate_radiomics, extract_crop_features, load_settings
    from magn_lib.readers import reader_metrics
    from magn_lib.settings import GridSettings
    from magn_lib.stats import metrics_table

    cfg = load_profile("demo", separability=0.0)
    cache = read_cache(embedded_crop_cache(cfg, folder))
    lesions = cache.lesions()
    folds = make_folds(lesions, n_splits=cfg.n_folds, seed=cfg.seed)
    make = dataset_factory(cache, views=cfg.views, augment=cfg.augment, seed=cfg.seed)
    settings = GridSettings.from_profile(cfg, keep_weights=False, track_test=False)
    magn = run_grid(make, folds, CONFIGS, settings, folder / "grid", progress=False).predictions
    magn = magn.assign(method="magn") if "method" not in magn else magn

    radiomics_settings = load_settings(resolve_path(cfg.radiomics_settings))
    features = {view: extract_crop_features(
        cache.image[view], cache.mask[view], cache.lesion_id, settings=radiomics_settings,
        present=cache.present[view], spacing=cache.spacing[view], view=view,
        n_jobs=cfg.n_jobs, progress=False)[0] for view in cfg.views}
    radiomics, _ = cross_validate_radiomics(
        features, folds, classifier=cfg.radiomics_classifier, top_k=cfg.radiomics_top_k,
        keep=cfg.radiomics_keep, seed=cfg.seed, n_jobs=cfg.n_jobs)
    trivial = cross_validate_first_order(cache, folds, seed=cfg.seed)

    columns = ["method", "config", "label", "probability", "patient_id", "fold", "lesion_id"]
    oof = pd.concat([t[columns] for t in (magn, radiomics, trivial)], ignore_index=True)
    table = metrics_table(oof, n_resamples=cfg.n_bootstrap, seed=cfg.seed)
    rows = [{"method": f"{r.method} {r.config}", "auc": r.auc, "auc_low": r.auc_low,
             "auc_high": r.auc_high} for r in table.itertuples()]
    manifest = load_manifest(resolve_manifest(None, cfg, progress=False), views=cfg.views)
    reads = manifest.readers[manifest.readers["lesion_id"].isin(lesions["lesion_id"])]
    for r in reader_metrics(reads, lesions, n_resamples=cfg.n_bootstrap,
                            seed=cfg.seed).itertuples():
        rows.append({"method": f"simulated reader {r.reader}", "auc": r.auc_ordinal,
                     "auc_low": r.auc_ordinal_low, "auc_high": r.auc_ordinal_high})
    return pd.DataFrame(rows)


def run() -> list[Result]:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        table = intervals(Path(tmp))
    seconds = time.perf_counter() - start
    print(table.round(3).to_string(index=False))
    learners = table[~table["method"].str.startswith("simulated reader")]
    contains = (learners["auc_low"] <= 0.5) & (learners["auc_high"] >= 0.5)
    results = [Result(
        f"{row.method}: pooled AUC at separability 0 (true labels)", row.auc, "chance", 0.5,
        unit="", note=f"patient-bootstrap 95 % CI {row.auc_low:.3f}-{row.auc_high:.3f}")
        for row in table.itertuples()]
    results.append(Result(
        "image-based methods whose CI contains 0.5 on the null cohort", float(contains.sum()),
        "every one", float(len(learners)), unit="", target=1.0, higher_is_better=True,
        note=f"{len(table)} rows in {seconds:.0f} s; the simulated readers read the labels"))
    return results
