"""Batch prediction with a model bundle: a 20-lesion manifest vs the fold models' forward passes.

A small simulated cohort of 20 lesions is ingested and a tiny grid trained, exported with
``export_bundle``; the bundle's fold models are then replaced by the paper's network size
(ResNet50 backbones, 256 px crops, 5 fold models; He-uniform weights, which cost the same as
trained ones) and its checksums rewritten. :func:`magn_lib.predict.predict_manifest` scores the
20 lesions (reading 3 DICOM series per patient, checking, transferring the mask, cropping,
scoring in batches of the training batch size, JSON per lesion); the reference is the forward
passes alone of the same fold models on the same crops, already in memory (timed before and
after, the faster kept). Target: ratio ≤ 1.3. With ``MAGN_BENCH_REPORTS=1`` a second line adds
the case reports (Grad-CAM of one fold model per lesion, figures, HTML), for information.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from benchmarks.common import Result
from magn_lib.bundle import _write_checksums, export_bundle, load_bundle
from magn_lib.cv import build_model, config_by_name
from magn_lib.layout import BundlePaths
from magn_lib.settings import NetworkSettings
from tests.helpers import make_trained_run

PAPER_BACKBONE, PAPER_CROP, PAPER_FOLDS = "resnet50", 256, 5


def _paper_sized(bundle_dir: Path) -> None:
    """Swap the bundle's fold models for He-uniform networks of the paper's size."""
    files = BundlePaths(bundle_dir)
    meta = json.loads(files.meta.read_text())
    meta["network"]["backbone"] = PAPER_BACKBONE
    meta["preprocessing"]["crop_size"] = PAPER_CROP
    meta["folds"] = list(range(PAPER_FOLDS))
    shutil.rmtree(files.models_dir)
    files.models_dir.mkdir()
    config = config_by_name(meta["config"]["name"])
    for fold in meta["folds"]:
        torch.manual_seed(fold)
        model = build_model(config, NetworkSettings(**meta["network"]))
        torch.save({"state_dict": model.state_dict(), "normalize": False,
                    "init_report": model.init_report}, files.model(fold))
    files.meta.write_text(json.dumps(meta, indent=2))
    files.checksums.unlink()
    _write_checksums(bundle_dir)


@torch.no_grad()
def _forward_only(bundle, dataset) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=bundle.batch_size, shuffle=False)
    batches = [{v: x for v, x in b["images"].items()} for b in loader]
    start = time.perf_counter()
    for model in bundle.models.values():
        for images in batches:
            model(images)
    return time.perf_counter() - start


def run() -> list[Result]:
    from magn_lib.crops import CropCache, LesionCrops
    from magn_lib.data import CropDataset
    from magn_lib.manifest import load_manifest
    from magn_lib.predict import CaseInput, _prepare, predict_manifest

    root = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        run_ = make_trained_run(root / "study", class_counts={1: (8, 10), 0: (8, 10)},
                                crop_size=32, batch_size=16)
        bundle_dir = export_bundle(run_.report, root / "model.magn")
        _paper_sized(bundle_dir)
        bundle = load_bundle(bundle_dir)
        manifest = load_manifest(run_.manifest)
        n_lesions = len(manifest.lesions)

        # the reference: forward passes of every fold model on the 20 lesions' crops
        views = bundle.meta["preprocessing"]["views_read"]
        prepared = [_prepare(bundle, CaseInput(
            lesion_id=les.lesion_id, patient_id=les.patient_id,
            series={v: manifest.series_folder(les.patient_id, v) for v in views},
            mask=manifest.mask_path(les.lesion_id), mask_label=int(les.mask_label)))
            for les in manifest.lesions.itertuples()]
        cache = CropCache.from_lesions(
            [LesionCrops(lesion_id=f"c{i}", patient_id=f"c{i}", label=0, crops=p.crops)
             for i, p in enumerate(prepared)], views=bundle.config.views,
            crop_size=bundle.crop_size)
        dataset = CropDataset(cache, views=bundle.config.views)
        _forward_only(bundle, Subset(dataset, range(2)))  # warm-up: allocator, oneDNN
        forward = _forward_only(bundle, dataset)

        timings: dict[str, float] = {}
        start = time.perf_counter()
        predict_manifest(bundle, run_.manifest, root / "scores", report=False,
                         timings=timings)
        scores = time.perf_counter() - start
        forward = min(forward, _forward_only(bundle, dataset))  # before and after: less noise
        with_reports = None
        if os.environ.get("MAGN_BENCH_REPORTS"):
            start = time.perf_counter()
            predict_manifest(bundle, run_.manifest, root / "reports", report=True)
            with_reports = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    size = f"{n_lesions} lesions, {PAPER_FOLDS} fold models, {PAPER_BACKBONE}, {PAPER_CROP} px"
    note = (f"read+check+crop {timings['prepare']:.1f} s, scoring {timings['score']:.1f} s; "
            f"torch threads {torch.get_num_threads()}")
    results = [Result(name=f"magn predict batch ({size})", value=scores,
                      reference="the fold models' forward passes alone",
                      reference_value=forward, target=1.3, note=note)]
    if with_reports is not None:
        results.append(Result(
            name=f"magn predict batch with case reports ({size})", value=with_reports,
            reference="the fold models' forward passes alone", reference_value=forward,
            note="Grad-CAM of one fold model per lesion, figures and HTML"))
    return results
