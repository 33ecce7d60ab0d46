"""Tests for magn_lib.synthetic: DICOM validity, geometry against SimpleITK, the marker test,
view consistency, determinism, planted identity and cohort counts (simulated readers:
test_synthetic_readers.py)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from magn_lib.dicom import read_series
from magn_lib.synthetic import (
    PAPER_CLASS_COUNTS,
    _Knobs,
    _plan,
    load_truth,
    make_cohort,
)
from tests.helpers import SMALL_COHORT, assert_matches_itk

MARKER_RAS = SMALL_COHORT.marker_ras
N_PATIENTS = SMALL_COHORT.n_patients
POSITIONS = SMALL_COHORT.positions
VENDORS = SMALL_COHORT.vendors

TO_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def cohort(small_cohort) -> Path:
    return small_cohort


@pytest.fixture(scope="module")
def truth(cohort):
    return load_truth(cohort)


@pytest.fixture(scope="module")
def series(cohort) -> pd.DataFrame:
    return pd.read_csv(cohort / "manifest" / "series.csv", dtype=str)


def _sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _sitk_affine_ras(img: sitk.Image) -> np.ndarray:
    """SimpleITK (LPS, index = column, row, slice) -> 4x4 voxel-to-RAS+ affine."""
    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = TO_RAS @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = TO_RAS @ np.array(img.GetOrigin())
    return affine


def _folders(cohort: Path, series: pd.DataFrame):
    for row in series.itertuples():
        yield row.patient_id, row.view, cohort / "manifest" / row.folder


def test_layout_and_manifest_tables(cohort, truth):
    manifest = cohort / "manifest"
    for name in ("patients.csv", "lesions.csv", "series.csv", "readers.csv"):
        assert (manifest / name).is_file()
    patients = pd.read_csv(manifest / "patients.csv", dtype={"patient_id": str})
    lesions = pd.read_csv(manifest / "lesions.csv")
    assert list(patients.columns) == ["patient_id", "age", "sex", "site", "centre"]
    assert patients["patient_id"].tolist() == [f"P{i:03d}" for i in range(1, N_PATIENTS + 1)]
    assert lesions.groupby("patient_id").size().between(1, 3).all()
    assert set(lesions["label"]) <= {0, 1}
    # truth masks are not referenced by the manifest the pipeline reads
    for name in ("patients.csv", "lesions.csv", "series.csv", "readers.csv"):
        assert "truth" not in (manifest / name).read_text()
    for pid in patients["patient_id"]:
        for view in ("sagittal", "coronal", "axial"):
            assert truth.mask_path(pid, view).is_file()


def test_dicom_files_are_valid_mr_images_with_full_geometry(cohort, series, truth):
    for pid, view, folder in _folders(cohort, series):
        files = sorted(folder.iterdir())
        headers = [pydicom.dcmread(f) for f in files]
        frames = set()
        for ds in headers:
            assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
            assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
            assert ds.Modality == "MR"
            for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                        "SliceThickness", "SpacingBetweenSlices", "PatientPosition",
                        "FrameOfReferenceUID", "Manufacturer", "MagneticFieldStrength"):
                assert key in ds, (pid, view, key)
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
            frames.add(ds.FrameOfReferenceUID)
        assert len(frames) == 1
        row = truth.patients.set_index("patient_id").loc[pid]
        assert headers[0].PatientPosition == row["position"]
        # slices stacked at SpacingBetweenSlices >= SliceThickness along row x column
        iop = np.array(headers[0].ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        pos = np.array([ds.ImagePositionPatient for ds in headers], float) @ normal
        order = np.argsort(pos)
        steps = np.diff(pos[order])
        spacing = float(headers[0].SpacingBetweenSlices)
        assert np.allclose(steps, spacing, atol=1e-4)
        assert float(headers[0].SliceThickness) <= spacing
        # neither instance numbers nor file names follow the spatial order
        instance = np.array([int(ds.InstanceNumber) for ds in headers])[order]
        assert not np.all(np.diff(instance) > 0)
        assert not np.all(np.diff(order) > 0)
        if view == "sagittal":
            assert 0.6 <= float(headers[0].PixelSpacing[0]) <= 0.8
            assert 3.0 <= float(headers[0].SliceThickness) <= 4.0
        if view == "axial":
            tilt = math.degrees(math.acos(abs(normal[2])))
            assert 0.0 <= tilt <= 20.5
    # the three series of one exam share a frame of reference; patients do not
    by_patient = {}
    for pid, _, folder in _folders(cohort, series):
        ds = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        by_patient.setdefault(pid, set()).add(ds.FrameOfReferenceUID)
    assert all(len(v) == 1 for v in by_patient.values())
    assert len({next(iter(v)) for v in by_patient.values()}) == N_PATIENTS


def test_vendors_and_positions_as_asked(cohort, truth, series):
    assert truth.patients["vendor"].tolist() == list(VENDORS)
    assert truth.patients["position"].tolist() == list(POSITIONS)
    makers = {}
    for pid, _, folder in _folders(cohort, series):
        ds = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        makers[pid] = (ds.Manufacturer, float(ds.MagneticFieldStrength), "RescaleSlope" in ds)
    assert makers["P001"] == ("GE MEDICAL SYSTEMS", 1.5, True)
    assert makers["P002"][:2] == ("Philips Medical Systems", 3.0)
    assert makers["P003"] == ("SIEMENS", 1.5, False)


@pytest.mark.parametrize("index", range(N_PATIENTS))
def test_marker_lands_at_its_world_point_in_every_view(cohort, series, index):
    """A bright point planted at MARKER_RAS is the brightest voxel of all three series, and
    SimpleITK maps that voxel back to MARKER_RAS within half a voxel along each axis."""
    pid = f"P{index + 1:03d}"
    marker = np.array(MARKER_RAS)
    for view in ("sagittal", "coronal", "axial"):
        folder = cohort / "manifest" / series.query("patient_id == @pid and view == @view")[
            "folder"].iloc[0]
        img = _sitk_read(folder)
        arr = sitk.GetArrayFromImage(img)  # [k, j, i]
        k, j, i = np.unravel_index(int(np.argmax(arr)), arr.shape)
        ras = TO_RAS @ np.array(img.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))
        axes = TO_RAS @ np.array(img.GetDirection()).reshape(3, 3)  # columns: i, j, k in RAS
        offset = axes.T @ (marker - ras)
        half = np.array(img.GetSpacing()) / 2
        # 0.01 mm: a point on the very border of two voxels may fall to either (noise)
        assert np.all(np.abs(offset) <= half + 0.01), (pid, POSITIONS[index], view, offset)
        # the study's own reader puts the marker at the same world point
        ours = read_series(folder)
        data = np.asanyarray(ours.dataobj)
        brightest = np.unravel_index(int(np.argmax(data)), data.shape)
        found = nib.affines.apply_affine(ours.affine, brightest)
        steps = ours.affine[:3, :3] / np.linalg.norm(ours.affine[:3, :3], axis=0)
        offset = steps.T @ (marker - found)
        assert np.all(np.abs(offset) <= np.asarray(ours.header.get_zooms()[:3]) / 2 + 0.01), (
            pid, POSITIONS[index], view, offset)


def test_read_series_equals_simpleitk_on_every_series(cohort, series):
    """Voxel-centre world coordinates within 0.01 mm and identical intensities, every series."""
    for _, _, folder in _folders(cohort, series):
        assert_matches_itk(read_series(folder), folder)


def test_geometry_and_masks_equal_simpleitk(cohort, series, truth):
    """Series affines (truth) and the manifest's sagittal masks equal SimpleITK's reading of
    the DICOM (the independent reference), and every mask sits on bright lesion voxels."""
    lesions = pd.read_csv(cohort / "manifest" / "lesions.csv")
    tseries = truth.series.set_index(["patient_id", "view"])
    for pid, view, folder in _folders(cohort, series):
        img = _sitk_read(folder)
        ref = _sitk_affine_ras(img)
        recorded = np.array(json.loads(tseries.loc[(pid, view), "affine_ras"]))
        assert np.allclose(recorded, ref, atol=1e-3)
        mask = nib.load(truth.mask_path(pid, view))
        assert mask.shape == img.GetSize()
        assert np.allclose(mask.affine, ref, atol=1e-3)
        assert mask.header.get_data_dtype() == np.uint8
        if view == "sagittal":
            rel = lesions.loc[lesions["patient_id"] == pid, "mask"].iloc[0]
            drawn = nib.load(cohort / "manifest" / rel)
            assert drawn.shape == img.GetSize() and np.allclose(drawn.affine, ref, atol=1e-3)
            assert np.array_equal(np.asarray(drawn.dataobj), np.asarray(mask.dataobj))
        # the mask is aligned with the image: lesions enhance against their surroundings
        data = sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(float)  # -> [i, j, k]
        labels = np.asarray(mask.dataobj)
        for value in np.unique(labels[labels > 0]):
            inside = labels == value
            ring = ndimage.binary_dilation(inside, iterations=4) & (labels == 0)
            assert np.median(data[inside]) > 1.3 * np.median(data[ring]), (pid, view, value)


def test_views_agree_on_where_each_lesion_is(cohort, truth):
    """The three true masks of a lesion have centroids within a few mm of each other in world
    coordinates: the views sample one phantom."""
    for les in truth.lesions.itertuples():
        centroids = []
        for view in ("sagittal", "coronal", "axial"):
            img = nib.load(truth.mask_path(les.patient_id, view))
            ijk = np.argwhere(np.asarray(img.dataobj) == les.mask_label)
            assert len(ijk) > 0, (les.lesion_id, view)
            centroids.append(nib.affines.apply_affine(img.affine, ijk).mean(axis=0))
        spread = np.max([np.linalg.norm(a - b) for a in centroids for b in centroids])
        assert spread < 5.0, (les.lesion_id, spread)


def test_same_seed_byte_identical_and_n_jobs_free(tmp_path):
    a = make_cohort(tmp_path / "a", n_patients=2, seed=9, n_jobs=1, progress=False)
    b = make_cohort(tmp_path / "b", n_patients=2, seed=9, n_jobs=2, progress=False)
    c = make_cohort(tmp_path / "c", n_patients=1, seed=10, n_jobs=1, progress=False)

    def digest(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    da, db = digest(a.parent), digest(b.parent)
    assert da == db  # every file, pixel data included, byte for byte
    pix_a = next(p for p in sorted((a / "dicom" / "P001").rglob("*")) if p.is_file())
    view_dir = pix_a.parent.name
    c_dirs = [p for p in (c / "dicom" / "P001").iterdir()]
    assert pydicom.dcmread(pix_a).PixelData != pydicom.dcmread(
        next(next(iter(c_dirs)).iterdir())).PixelData
    assert view_dir  # the folder exists and is named by series, not identity
    # a complete cohort with the same parameters is reused; other parameters are refused
    assert make_cohort(tmp_path / "a", n_patients=2, seed=9, progress=False) == a
    with pytest.raises(FileExistsError, match="other parameters"):
        make_cohort(tmp_path / "a", n_patients=2, seed=8, progress=False)


def test_identity_planted_in_headers_but_not_in_names(cohort, truth, series):
    identity = truth.identity.set_index("patient_id")
    planted = truth.planted_strings()
    assert len(planted) >= 10 * N_PATIENTS
    paths = [p.relative_to(cohort).as_posix() for p in cohort.rglob("*")]
    for value in planted:
        assert not any(value in p for p in paths), value
    for pid, _, folder in _folders(cohort, series):
        ds = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        row = identity.loc[pid]
        assert str(ds.PatientName) == row["PatientName"]
        assert ds.PatientID == row["PatientID"] != pid  # hospital number, not the study id
        for key in ("PatientBirthDate", "AccessionNumber", "InstitutionName",
                    "ReferringPhysicianName", "StudyDate"):
            assert str(ds[key].value) == row[key]
        # free text and a private block carry identity too
        given = row["PatientName"].split("^")[1].title()
        assert given in ds.AdditionalPatientHistory and given in ds.ImageComments
        private = [e for e in ds if e.tag.is_private and not e.tag.is_private_creator]
        assert row["PatientID"] in [str(e.value) for e in private]


def test_truth_tables(truth):
    les = truth.lesions
    assert {"pattern", "irregularity", "posterior_elements", "soft_tissue",
            "metastasis_likeness", "centre_x_ras", "size_cm"} <= set(les.columns)
    assert set(les["pattern"]) <= {"homogeneous", "heterogeneous", "rim"}
    assert (les["size_cm"] > 0.5).all() and (les["size_cm"] < 12).all()
    assert set(truth.patients["site"]) <= {"cervical", "thoracic", "lumbar", "sacrococcygeal"}


def test_paper_counts_and_table1_from_the_plan():
    """217 patients give the paper's class counts and, exactly, its Table 1 sex and site
    counts by class (Chen et al. 2022, Table 1), when nothing is made label-independent."""
    plans = _plan(217, 2022, _Knobs(label_independent=()))
    df = pd.DataFrame([{k: v for k, v in p.items() if k != "seed_seq"} for p in plans])
    for label, (n_patients, n_lesions) in PAPER_CLASS_COUNTS.items():
        sub = df[df["label"] == label]
        assert len(sub) == n_patients and sub["n_lesions"].sum() == n_lesions
        assert sub["n_lesions"].between(1, 3).all()
    mm, met = df[df["label"] == 1], df[df["label"] == 0]
    assert (mm["sex"] == "M").sum() == 53 and (met["sex"] == "M").sum() == 74
    assert mm["site"].value_counts().to_dict() == {"thoracic": 40, "lumbar": 21, "cervical": 12,
                                                   "sacrococcygeal": 6}
    assert abs(mm["age"].mean() - 58.57) < 3 and abs(met["age"].mean() - 56.64) < 3
    # demo and smoke sizes
    demo = _plan(60, 2022, _Knobs())
    assert sum(p["n_lesions"] for p in demo) == 75  # pooled over the classes, same total
    assert sum(p["label"] for p in demo) == 22
    counted = _plan(10, 1, _Knobs(class_counts={1: (4, 5), 0: (6, 9)}))
    assert sum(p["n_lesions"] for p in counted if p["label"] == 0) == 9


def test_knob_errors(tmp_path):
    with pytest.raises(TypeError, match="unknown knob"):
        make_cohort(tmp_path / "x", n_patients=1, seed=0, separabilty=1.0)
    with pytest.raises(ValueError, match="separability"):
        make_cohort(tmp_path / "x", n_patients=1, seed=0, separability=-1)
    with pytest.raises(ValueError, match="class_counts"):
        make_cohort(tmp_path / "x", n_patients=3, seed=0, class_counts={1: (1, 5), 0: (2, 2)})
    with pytest.raises(ValueError, match="vendors"):
        make_cohort(tmp_path / "x", n_patients=1, seed=0, vendors=("toshiba",))
