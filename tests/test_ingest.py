"""Ingest stage on a tiny embedded cohort: NIfTI out, identity never, bad patients excluded."""

from __future__ import annotations

import shutil
import stat

import nibabel as nib
import numpy as np
import pytest

from magn_lib.errors import InputError
from magn_lib.ingest import EXCLUSION_COLUMNS, ingest_cohort, write_deid_key
from magn_lib.manifest import load_manifest
from magn_lib.synthetic import load_truth
from tests.helpers import SMALL_COHORT

N_PATIENTS = SMALL_COHORT.n_patients


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return small_cohort


@pytest.fixture(scope="module")
def manifest(cohort):
    return load_manifest(cohort / "manifest")


@pytest.fixture(scope="module")
def ingested(manifest, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return ingest_cohort(manifest, work, progress=False)


def _all_bytes(folder):
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def test_every_series_and_mask_is_written(ingested, manifest, cohort):
    assert ingested.exclusions.empty and ingested.n_read == N_PATIENTS
    assert len(ingested.series) == 3 * N_PATIENTS
    truth = load_truth(cohort)
    for row in truth.series.itertuples():
        img = nib.load(ingested.paths.volume(row.patient_id, row.view))
        assert img.get_data_dtype() == np.float32
        assert img.header["descrip"].item() == b"" and img.header["aux_file"].item() == b""
    for lesion in manifest.lesions.itertuples():
        mask = nib.load(ingested.paths.mask(lesion.lesion_id, "sagittal"))
        source = nib.load(manifest.mask_path(lesion.lesion_id))
        expected = np.asanyarray(source.dataobj) == lesion.mask_label
        np.testing.assert_array_equal(np.asanyarray(mask.dataobj) == 1, expected)
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    assert set(ingested.series["vendor"]) >= {"GE", "Philips", "Siemens"}


def test_no_identity_reaches_the_work_folder(ingested, cohort):
    planted = {s for s in load_truth(cohort).planted_strings() if len(s) >= 4}
    assert planted
    for path, content in _all_bytes(ingested.work_dir):
        rel = str(path.relative_to(ingested.work_dir))
        for secret in planted:
            assert secret not in rel, f"{secret!r} in file name {rel}"
            assert secret.encode() not in content, f"{secret!r} inside {rel}"


def test_second_ingest_skips_unchanged_patients(ingested, manifest):
    again = ingest_cohort(manifest, ingested.work_dir, progress=False)
    assert again.n_skipped == N_PATIENTS and again.n_read == 0
    assert again.series.equals(ingested.series)


def test_bad_patient_is_excluded_with_reason_and_the_rest_proceed(cohort, tmp_path):
    copy = tmp_path / "cohort"
    shutil.copytree(cohort / "manifest", copy / "manifest")
    manifest = load_manifest(copy / "manifest")
    victim = manifest.patients["patient_id"].iloc[1]
    folder = manifest.series_folder(victim, "axial")
    broken = sorted(folder.iterdir())[2]
    broken.write_bytes(broken.read_bytes()[:-500])  # truncated pixel data
    before = {p: p.stat().st_mtime_ns for p in (copy / "manifest").rglob("*") if p.is_file()}

    result = ingest_cohort(manifest, tmp_path / "work", progress=False)

    assert list(result.exclusions.columns) == list(EXCLUSION_COLUMNS)
    assert set(result.exclusions["patient_id"]) == {victim}
    reason = result.exclusions["reason"].iloc[0]
    assert f"patient {victim}" in reason and broken.name in reason and "truncated" in reason
    assert str(copy) not in reason  # no machine paths in what reaches the report
    for secret in load_truth(cohort).planted_strings():
        if len(secret) >= 4:
            assert secret not in reason
    assert victim not in set(result.patients["patient_id"])
    assert len(result.patients) == N_PATIENTS - 1
    assert result.paths.ingest_table("exclusions").is_file()
    after = {p: p.stat().st_mtime_ns for p in (copy / "manifest").rglob("*") if p.is_file()}
    assert after == before  # the user's data are never modified


def test_deid_key_only_where_allowed(manifest, tmp_path):
    reports = tmp_path / "reports"
    with pytest.raises(InputError, match="must not be written inside reports/"):
        write_deid_key(manifest, reports / "run" / "key.csv", forbidden=[reports])
    key = write_deid_key(manifest, tmp_path / "private" / "key.csv", forbidden=[reports])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text()
    assert "PatientID" in text and text.count("\n") == 1 + 3 * N_PATIENTS
