"""Cohort-level stages on a tiny embedded cohort: transfer QC and flags, truth, crops, flow."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from magn_lib.ingest import IngestResult, ingest_cohort, save_nifti
from magn_lib.manifest import load_manifest
from magn_lib.stages import (
    TransferResult,
    build_crop_cache,
    compare_with_truth,
    exclusions,
    inclusion_flow,
    transfer_cohort,
    transfer_example,
    truth_masks,
)
from tests.helpers import SMALL_COHORT

N_PATIENTS = SMALL_COHORT.n_patients


@pytest.fixture(scope="module")
def stages(tmp_path_factory, small_cohort):
    cohort = small_cohort
    manifest = load_manifest(cohort / "manifest")
    work = tmp_path_factory.mktemp("work")
    ingest = ingest_cohort(manifest, work, progress=False)
    transfer = transfer_cohort(ingest, progress=False)
    return cohort, manifest, ingest, transfer


def test_transfer_qc_and_truth(stages):
    cohort, manifest, ingest, transfer = stages
    n_lesions = len(manifest.lesions)
    assert len(transfer.qc) == 2 * n_lesions and set(transfer.qc["view"]) == {"coronal", "axial"}
    assert not transfer.qc["flagged"].any() and transfer.exclusions.empty
    assert transfer.qc["volume_ratio"].between(0.7, 1.3).all()
    assert (transfer.qc["centroid_shift_mm"] < 2.0).all()
    for row in transfer.qc.itertuples():
        assert transfer.paths.mask(row.lesion_id, row.view).is_file()

    scored = compare_with_truth(transfer, truth_masks(cohort))
    assert scored["dice"].median() >= 0.8 and scored["dice"].min() > 0.5
    assert (scored["assd_mm"] < 2.0).all()
    assert truth_masks(cohort / "manifest") is not None
    assert truth_masks(ingest.work_dir) is None  # no truth for a user's cohort


def test_stage_results_reload(stages):
    _, _, ingest, transfer = stages
    again = TransferResult.load(ingest.work_dir)
    assert again.lesions["lesion_id"].tolist() == transfer.lesions["lesion_id"].tolist()
    assert again.qc["reason"].tolist() == transfer.qc["reason"].tolist()
    loaded = IngestResult.load(ingest.work_dir)
    assert loaded.patients["patient_id"].tolist() == ingest.patients["patient_id"].tolist()
    with pytest.raises(FileNotFoundError, match="run the cohort notebook"):
        TransferResult.load(ingest.work_dir / "nowhere")


def test_lesion_outside_a_view_is_flagged_and_excluded(stages, tmp_path):
    _, manifest, ingest, _ = stages
    work = tmp_path / "work"
    shutil.copytree(ingest.work_dir, work)
    moved = IngestResult.load(work)
    victim = moved.lesions.iloc[0]
    axial = nib.load(moved.paths.volume(victim.patient_id, "axial"))
    far = axial.affine.copy()
    far[:3, 3] += 300.0  # the stack no longer covers the lesion
    save_nifti(nib.Nifti1Image(np.asanyarray(axial.dataobj), far), moved.paths.volume(
        victim.patient_id, "axial"))

    result = transfer_cohort(moved, progress=False)

    flagged = result.qc[result.qc["flagged"]]
    patient_lesions = set(moved.lesions.loc[moved.lesions.patient_id == victim.patient_id,
                                            "lesion_id"])
    assert set(flagged["lesion_id"]) == patient_lesions
    assert set(flagged["view"]) == {"axial"}
    assert all("axial mask is empty after transfer" in r for r in flagged["reason"])
    assert set(result.exclusions["lesion_id"]) == patient_lesions
    assert (result.exclusions["stage"] == "transfer").all()
    assert not set(result.lesions["lesion_id"]) & patient_lesions
    assert len(exclusions(moved, result)) == len(patient_lesions)

    flow = inclusion_flow(manifest.lesions, moved, result)
    assert flow["lesions"].tolist() == [len(manifest.lesions)] * 2 + [
        len(manifest.lesions) - len(patient_lesions)
    ]
    assert flow["patients"].iloc[0] == N_PATIENTS
    assert (flow["lesions_mm"] + flow["lesions_met"] == flow["lesions"]).all()


def test_crop_cache_built_once_and_rebuilt_on_change(stages, tmp_path):
    _, _, ingest, transfer = stages
    path = tmp_path / "crops.npz"
    views = ("sagittal", "coronal", "axial")
    cache = build_crop_cache(ingest, transfer, path, views=views, crop_size=32, progress=False)
    assert len(cache) == len(transfer.lesions)
    for view in views:
        assert cache.image[view].shape == (len(cache), 3, 32, 32)
        assert cache.image[view].dtype == np.float32 and cache.present[view].all()
        assert cache.mask[view].reshape(len(cache), -1).max(axis=1).min() == 1
    stamp = path.stat().st_mtime_ns
    build_crop_cache(ingest, transfer, path, views=views, crop_size=32, progress=False)
    assert path.stat().st_mtime_ns == stamp  # unchanged inputs: reused
    bigger = build_crop_cache(ingest, transfer, path, views=views, crop_size=40, progress=False)
    assert bigger.image["axial"].shape[-1] == 40


def test_transfer_example_matches_the_crop(stages):
    from magn_lib.plots import plot_transfer_example

    _, _, ingest, transfer = stages
    lesion_id = transfer.lesions["lesion_id"].iloc[0]
    example = transfer_example(ingest, transfer, lesion_id, views=("sagittal", "axial"),
                               crop_size=24)
    for item in example.values():
        top, left, bottom, right = item["box"]
        assert bottom - top == right - left == 24
        assert item["mask"].any() and item["crop"].shape == (24, 24)
        if top >= 0 and left >= 0 and bottom <= item["mask"].shape[0] \
                and right <= item["mask"].shape[1]:
            np.testing.assert_array_equal(item["mask"][top:bottom, left:right],
                                          item["crop_mask"])
    fig = plot_transfer_example(example, title=lesion_id)
    assert len(fig.axes) == 6


def test_patient_table_for_table1(stages):
    import pandas as pd

    from magn_lib.stages import patient_table

    _, manifest, _, _ = stages
    table = patient_table(manifest.patients, manifest.lesions)
    assert list(table["patient_id"]) == list(manifest.patients["patient_id"])
    largest = manifest.lesions.groupby("patient_id")["size_cm"].max()
    assert np.allclose(table.set_index("patient_id")["tumour_size_cm"], largest[table.patient_id])
    # a blank site falls back to the first lesion's vertebral level
    patients = manifest.patients.copy()
    patients["site"] = pd.NA
    lesions = manifest.lesions.copy()
    lesions["vertebra"] = "L3"
    assert set(patient_table(patients, lesions)["site"]) == {"lumbar"}


def test_scanner_table_counts_patients(stages):
    from magn_lib.stages import scanner_table

    _, manifest, ingest, _ = stages
    table = scanner_table(ingest.series, ingest.lesions)
    assert table.loc["all", "all"] == N_PATIENTS
    assert {"GE 1.5 T", "Siemens 1.5 T", "Philips 3 T"} <= set(table.index)


def test_transfer_quality_plot(stages):
    from magn_lib.plots import plot_transfer_quality

    cohort, _, _, transfer = stages
    fig = plot_transfer_quality(compare_with_truth(transfer, truth_masks(cohort)))
    assert len(fig.axes) == 2
