"""MAGN on the demo cohort: multi-view + attention learns the task, and not permuted labels.

The acceptance targets of the MAGN grid on the ``demo`` profile, measured on the demo crop cache
and folds (``work/demo``, ``reports/demo``; built here when ``make study`` has not run):
pooled out-of-fold AUC ≥ 0.85 with the true labels, ≤ 0.6 with the labels permuted between
patients (same folds, same crops, same training) — the check that nothing but the images
carries the signal. Also the wall time of one configuration's 5 folds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Result


def _demo_inputs(tmp: Path) -> tuple[Path, Path]:
    from magn_lib.config import load_profile
    from magn_lib.crops import read_cache
    from magn_lib.cv import ensure_folds
    from magn_lib.ingest import ingest_cohort
    from magn_lib.layout import RunPaths, default_run_paths
    from magn_lib.manifest import load_manifest
    from magn_lib.pipeline import resolve_manifest
    from magn_lib.stages import build_crop_cache, transfer_cohort

    paths = default_run_paths("demo")
    if paths.crop_cache.is_file() and paths.folds_csv.is_file():
        return paths.crop_cache, paths.folds_csv
    cfg = load_profile("demo")
    paths = RunPaths(report_dir=tmp / "reports", work_dir=tmp / "work")
    manifest = load_manifest(resolve_manifest(None, cfg, progress=False), views=cfg.views)
    ingest = ingest_cohort(manifest, paths.work_dir, n_jobs=cfg.n_jobs, progress=False)
    transfer = transfer_cohort(ingest, progress=False)
    built = build_crop_cache(ingest, transfer, paths.crop_cache, views=cfg.views,
                             crop_size=cfg.crop_size, progress=False)
    ensure_folds(built.lesions(), paths.folds_csv, n_splits=cfg.n_folds, seed=cfg.seed)
    read_cache(paths.crop_cache)
    return paths.crop_cache, paths.folds_csv


def _pooled_auc(cache_path: Path, folds, *, out: Path) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score

    from magn_lib.config import load_profile
    from magn_lib.crops import read_cache
    from magn_lib.cv import run_grid
    from magn_lib.data import dataset_factory
    from magn_lib.settings import GridSettings

    cache = read_cache(cache_path)
    labels = dict(zip(folds["lesion_id"], folds["label"], strict=True))
    cache.label[:] = [labels[i] for i in cache.lesion_id]
    cfg = load_profile("demo")
    make = dataset_factory(cache, views=cfg.views, augment=cfg.augment, seed=cfg.seed)
    start = time.perf_counter()
    settings = GridSettings.from_profile(cfg, keep_weights=False, track_test=False)
    grid = run_grid(make, folds, ["multi-view+attention"], settings, out, progress=False)
    seconds = time.perf_counter() - start
    return roc_auc_score(grid.predictions["label"], grid.predictions["probability"]), seconds


def run() -> list[Result]:
    from magn_lib.cv import load_folds

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache, folds_path = _demo_inputs(tmp)
        folds = load_folds(folds_path)
        auc, seconds = _pooled_auc(cache, folds, out=tmp / "true")
        per_patient = folds.groupby("patient_id")["label"].first()
        shuffled = dict(zip(per_patient.index,
                            np.random.default_rng(0).permutation(per_patient.to_numpy()),
                            strict=True))
        permuted = folds.assign(label=folds["patient_id"].map(shuffled).astype(int))
        auc_permuted, _ = _pooled_auc(cache, permuted, out=tmp / "permuted")
    return [
        Result("multi-view+attention pooled OOF AUC, true labels", auc, "the 0.85 target", 0.85,
               unit="", target=1.0, higher_is_better=True,
               note=f"5 folds x 10 epochs in {seconds:.0f} s"),
        Result("multi-view+attention pooled OOF AUC, labels permuted between patients",
               auc_permuted, "the 0.6 ceiling", 0.6, unit="", target=1.0),
    ]
