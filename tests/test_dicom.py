"""Tests for magn_lib.dicom: geometry against SimpleITK/ITK-GDCM, malformed input, de-id.

Every fixture is a tiny DICOM series written with pydicom (9 columns x 6 rows, a few slices),
non-square on purpose so that a swapped row/column axis cannot pass.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, MRImageStorage, generate_uid

from magn_lib.dicom import (
    LPS_TO_RAS,
    deidentify_series,
    read_series,
    series_identity,
    series_metadata,
    voxel_to_world,
    world_to_voxel,
)
from magn_lib.errors import InputError
from tests.helpers import assert_matches_itk, edit_dicom

PATIENT = "P042"

IDENTITY = {
    "PatientName": "DOE^JANE^MARIE",
    "PatientID": "MRN-4471-XZ",
    "PatientBirthDate": "19580214",
    "AccessionNumber": "ACC7730019",
    "InstitutionName": "Saint Elsewhere General",
    "InstitutionAddress": "12 Harbour Lane, Springfield",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "OperatorsName": "NURSE^RATCHED",
    "StudyDate": "20210315",
    "StudyDescription": "MRI spine for Jane Doe",
    "SeriesDescription": "T1 SAG post Gd (Dr House)",
    "ImageComments": "claustrophobic, call Mrs Doe 555-0199",
}
PRIVATE_TEXT = "DOE JANE MRN-4471-XZ private note"


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])  # deterministic


def _rot(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


# Orientations as (row cosines, column cosines) in DICOM LPS.
AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))
CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))
FLIPPED = ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # normal points to the feet
_OBL = _rot("x", 15.0) @ _rot("y", 10.0)
OBLIQUE = (tuple(_OBL @ AXIAL[0]), tuple(_OBL @ AXIAL[1]))


def write_series(
    folder: Path,
    *,
    n: int = 5,
    rows: int = 6,
    cols: int = 9,
    orientation: tuple = AXIAL,
    origin: tuple = (-10.0, 20.0, 35.0),
    pixel_spacing: tuple = (0.8, 0.7),
    step: float = 3.0,
    slope: float | list[float] = 1.0,
    intercept: float = 0.0,
    jitter_mm: float = 0.0,
    reverse: bool = False,
    seed: int = 0,
    series_uid: str | None = None,
    identity: dict | None = None,
    names: list[str] | None = None,
    gaps: list[float] | None = None,
) -> list[Path]:
    """Write an MR series; returns the files in spatial order (k = 0 .. n-1).

    File names and InstanceNumbers are shuffled; ``reverse`` numbers instances against the
    normal. ``gaps`` overrides the n-1 slice gaps (mm); ``jitter_mm`` adds position noise.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(orientation[0], float), np.asarray(orientation[1], float)
    normal = np.cross(row, col)
    offsets = np.concatenate([[0.0], np.cumsum(gaps)]) if gaps is not None else step * np.arange(n)
    n = len(offsets)
    slopes = slope if isinstance(slope, list) else [slope] * n
    series_uid = series_uid or _uid("series", seed, folder.name)
    study_uid = _uid("study", seed)
    ident = IDENTITY if identity is None else identity
    perm_names = rng.permutation(n)
    perm_inst = rng.permutation(n)
    paths = []
    for k in range(n):
        sop = _uid("sop", seed, folder.name, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop
        ds.Modality = "MR"
        ds.Manufacturer = "SIEMENS"
        ds.ManufacturerModelName = "Avanto"
        ds.MagneticFieldStrength = 1.5
        ds.RepetitionTime = 550.0
        ds.EchoTime = 9.8
        ds.FlipAngle = 90
        ds.SliceThickness = step
        ds.PatientPosition = "HFS"
        for key, value in ident.items():
            setattr(ds, key, value)
        if ident:
            ds.private_block(0x0029, "ACME HOSPITAL", create=True).add_new(0x10, "LO", PRIVATE_TEXT)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = _uid("for", seed)
        ds.SeriesNumber = 3
        ds.InstanceNumber = int(perm_inst[k] if not reverse else n - k)
        pos = np.asarray(origin) + offsets[k] * normal + rng.uniform(-jitter_mm, jitter_mm, 3)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
        ds.PixelSpacing = list(pixel_spacing)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = slopes[k]
        ds.RescaleIntercept = intercept
        pixels = rng.integers(-50, 1000, size=(rows, cols)).astype("<i2")
        ds.PixelData = pixels.tobytes()
        name = names[perm_names[k]] if names else f"IM{seed}_{perm_names[k] * 7 + 3:04d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def assert_names(err: pytest.ExceptionInfo, *, file: Path | str, problem: str) -> None:
    message = str(err.value)
    assert f"patient {PATIENT}" in message
    assert str(file) in message
    assert re.search(problem, message), message


# ------------------------------------------------------------------------------------------
# geometry


def test_axial_affine_and_axis_order_by_hand(tmp_path):
    paths = write_series(tmp_path / "s", slope=0.5, intercept=-3.0)
    img = read_series(tmp_path / "s", patient=PATIENT)
    # i along the row (LPS +x, 0.7 mm), j down the column (LPS +y, 0.8 mm), k along +z, 3 mm;
    # LPS -> RAS negates x and y.
    expected = np.array(
        [[-0.7, 0, 0, 10.0], [0, -0.8, 0, -20.0], [0, 0, 3.0, 35.0], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(img.affine, expected, atol=1e-9)
    assert img.shape == (9, 6, 5)
    assert img.get_data_dtype() == np.float32
    for k, path in enumerate(paths):
        stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
        np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, k].T, stored * 0.5 - 3.0)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")


def test_header_carries_no_identity(tmp_path):
    write_series(tmp_path / "s")
    img = read_series(tmp_path / "s")
    hdr = img.header
    assert hdr["descrip"].item() == b"" and hdr["aux_file"].item() == b""
    assert hdr["intent_name"].item() == b"" and hdr["db_name"].item() == b""
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), img.affine, atol=1e-5)
    blob = img.to_bytes()
    for value in (*IDENTITY.values(), PRIVATE_TEXT):
        assert value.encode() not in blob


@pytest.mark.parametrize(
    ("orientation", "reverse", "slope", "axcode_k"),
    [
        (AXIAL, False, 1.0, "S"),
        (SAGITTAL, False, 1.0, "R"),
        (CORONAL, True, 1.0, "P"),  # (1,0,0) x (0,0,-1) = +y LPS, posterior
        (FLIPPED, True, 1.0, "I"),
        (OBLIQUE, False, 0.37, None),
        (SAGITTAL, True, [0.5, 1.25, 2.0, 0.75, 1.5], "R"),  # per-slice rescale, as Philips does
    ],
    ids=["axial", "sagittal", "coronal-reversed", "flipped", "oblique-rescaled", "slope-per-slice"],
)
def test_matches_simpleitk(tmp_path, orientation, reverse, slope, axcode_k):
    folder = tmp_path / "s"
    write_series(folder, orientation=orientation, reverse=reverse, slope=slope,
                 intercept=-7.25, jitter_mm=2e-4)
    img = read_series(folder, patient=PATIENT)
    assert img.shape == (9, 6, 5)
    assert_matches_itk(img, folder)
    if axcode_k is not None:
        assert nib.aff2axcodes(img.affine)[2] == axcode_k


def test_slices_sorted_by_position_not_name_or_instance(tmp_path):
    # names sort against space and instance numbers run against the normal
    paths = write_series(tmp_path / "s", names=["e.dcm", "d.dcm", "c.dcm", "b.dcm", "a.dcm"],
                         reverse=True, jitter_mm=4e-4)
    img = read_series(tmp_path / "s")
    data = np.asarray(img.dataobj)
    for k, path in enumerate(paths):
        np.testing.assert_array_equal(data[:, :, k].T, pydicom.dcmread(path).pixel_array)
    assert abs(img.affine[2, 2] - 3.0) < 1e-3  # jitter tolerated, spacing kept


def test_ignores_non_image_files(tmp_path):
    folder = tmp_path / "s"
    write_series(folder)
    clean = read_series(folder)
    (folder / ".DS_Store").write_bytes(bytes(range(256)) * 8)
    (folder / "README.txt").write_text("exported from PACS\n")
    (folder / "sub").mkdir()
    dicomdir = Dataset()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = _uid("dicomdir")
    dicomdir.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir.FileSetID = "X"
    dicomdir.save_as(folder / "DICOMDIR", enforce_file_format=True)
    report = dicomdir.copy()
    report.file_meta = dicomdir.file_meta.copy()
    report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # an SR
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    report.save_as(folder / "report.dcm", enforce_file_format=True)
    img = read_series(folder)
    np.testing.assert_array_equal(img.affine, clean.affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(clean.dataobj))


def test_input_is_not_modified(tmp_path):
    folder = tmp_path / "s"
    write_series(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    read_series(folder)
    series_metadata(folder)
    series_identity(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# ------------------------------------------------------------------------------------------
# malformed input: each error names the patient, the file or folder, and the problem


def _raises(folder: Path) -> pytest.ExceptionInfo:
    with pytest.raises(InputError) as err:
        read_series(folder, patient=PATIENT)
    return err


def test_error_several_series_without_a_majority(tmp_path):
    folder = tmp_path / "s"
    write_series(folder, n=4, series_uid="2.25.111", identity={"SeriesDescription": "t1_sag"})
    write_series(folder, series_uid="2.25.222", n=4, seed=1,
                 identity={"SeriesDescription": "DOE JANE t2"})
    err = _raises(folder)
    assert_names(err, file=folder, problem=r"2 series and none has a majority of its 8 images")
    assert "one folder per series" in str(err.value)
    # the reason is published: no UIDs, no descriptions
    assert "2.25." not in str(err.value) and "DOE" not in str(err.value)


def test_several_series_majority_is_read_and_intruders_reported(tmp_path):
    folder = tmp_path / "s"
    write_series(folder / "only", series_uid="2.25.111", identity={})
    expected = read_series(folder / "only")
    for p in (folder / "only").iterdir():
        p.rename(folder / p.name)
    # the intruders sort first by name, as a PACS export may put them
    write_series(folder, series_uid="2.25.222", n=3, seed=1, names=["A1", "A2", "A3"],
                 identity={"SeriesDescription": "DOE JANE t2"})
    (folder / "only").rmdir()
    img = read_series(folder, patient=PATIENT)
    np.testing.assert_array_equal(img.get_fdata(), expected.get_fdata())
    np.testing.assert_allclose(img.affine, expected.affine)
    notes = series_metadata(folder, patient=PATIENT)["notes"]
    assert re.search(r"3 image\(s\) of 1 other series left out \(A1, A2, A3\).*5 of 8", notes)
    assert "2.25." not in notes and "DOE" not in notes


def test_error_inconsistent_orientation(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit_dicom(paths[2], ImageOrientationPatient=[1, 0, 0, 0, 0.9950042, -0.0998334])
    assert_names(_raises(folder), file=folder, problem="inconsistent ImageOrientationPatient")


def test_error_missing_slice(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder, n=6)
    paths[3].unlink()
    assert_names(_raises(folder), file=folder,
                 problem=r"not uniform \(missing slice\?\).*3 mm \(3 gaps\), 6 mm \(1 gap\)")


def test_error_non_uniform_spacing(tmp_path):
    folder = tmp_path / "s"
    write_series(folder, gaps=[3.0, 3.0, 3.6, 2.4])
    assert_names(_raises(folder), file=folder, problem=r"not uniform.*3\.6 mm.*2\.4 mm")


def test_error_duplicate_positions(tmp_path):
    folder = tmp_path / "s"
    write_series(folder, gaps=[3.0, 0.0, 3.0, 3.0])
    assert_names(_raises(folder), file=folder, problem="duplicate slice position")


def test_error_sheared_stack(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    for k, path in enumerate(paths):  # origins slide along x: a gantry-tilt-like shear
        edit_dicom(path, ImagePositionPatient=[-10.0 + 0.5 * k, 20.0, 35.0 + 3.0 * k])
    assert_names(_raises(folder), file=folder, problem="shifted within the slice plane")


def test_error_truncated_pixel_data(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    paths[1].write_bytes(paths[1].read_bytes()[:-40])
    assert_names(_raises(folder), file=paths[1], problem="pixel data cannot be decoded")


def test_error_truncated_header(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    paths[4].write_bytes(paths[4].read_bytes()[:400])
    assert_names(_raises(folder), file=paths[4], problem="without pixel data.*truncated")


def test_error_garbage_dicom_file_and_all_problems_at_once(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    paths[0].write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 10)
    paths[2].write_bytes(paths[2].read_bytes()[:300])
    err = _raises(folder)
    assert_names(err, file=paths[0], problem="(unreadable|damaged or truncated) DICOM file")
    assert str(paths[2]) in str(err.value)  # both problems in one report
    assert len(err.value.errors) == 2


def test_error_not_mr(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit_dicom(paths[3], Modality="CT")
    assert_names(_raises(folder), file=paths[3], problem="modality is 'CT', expected MR")


def test_error_missing_geometry(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit_dicom(paths[2], ImagePositionPatient=None, PixelSpacing=None)
    assert_names(_raises(folder), file=paths[2],
                 problem="missing geometry attribute.*PixelSpacing.*ImagePositionPatient")


def test_error_invalid_orientation(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit_dicom(paths[0], ImageOrientationPatient=[1, 0, 0, 0.5, 0.5, 0])
    assert_names(_raises(folder), file=paths[0], problem="not two orthogonal unit vectors")


def test_error_differing_matrix(tmp_path):
    folder = tmp_path / "s"
    write_series(folder, series_uid="2.25.7")
    write_series(folder / "tmp", series_uid="2.25.7", rows=8, seed=3)
    for p in (folder / "tmp").iterdir():
        p.rename(folder / f"x{p.name}")
    assert_names(_raises(folder), file=folder, problem=r"differ in size.*6x9.*8x9")


def test_error_differing_pixel_spacing(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit_dicom(paths[1], PixelSpacing=[0.9, 0.7])
    assert_names(_raises(folder), file=folder, problem=r"differ in PixelSpacing.*0\.9x0\.7 mm")


def test_error_multiframe(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit_dicom(paths[0], NumberOfFrames=2)
    assert_names(_raises(folder), file=paths[0], problem="multi-frame.*not supported")


def test_error_compressed_without_decoder(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    ds = pydicom.dcmread(paths[2])
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.save_as(paths[2], enforce_file_format=True)
    if pydicom.pixels.get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    err = _raises(folder)
    assert_names(err, file=paths[2], problem="compressed transfer syntax 'JPEG-LS Lossless")
    assert "decompress" in str(err.value)


def test_error_colour_image(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit_dicom(paths[1], SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    assert_names(_raises(folder), file=paths[1], problem="colour image")


def test_error_empty_folder(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(b"\x00\x01junk")
    (folder / "notes.txt").write_text("nothing here")
    assert_names(_raises(folder), file=folder, problem=r"no DICOM images in the folder \(1 other")


def test_error_not_a_folder(tmp_path):
    paths = write_series(tmp_path / "s")
    assert_names(_raises(paths[0]), file=paths[0], problem="not a folder")


def test_error_missing_folder(tmp_path):
    assert_names(_raises(tmp_path / "nope"), file=tmp_path / "nope", problem="does not exist")


# ------------------------------------------------------------------------------------------
# metadata and identity


@pytest.mark.parametrize(
    ("orientation", "label", "obliquity"),
    [(AXIAL, "axial", 0.0), (SAGITTAL, "sagittal", 0.0), (CORONAL, "coronal", 0.0),
     (FLIPPED, "axial", 0.0), (OBLIQUE, "axial", None)],
)
def test_series_metadata(tmp_path, orientation, label, obliquity):
    write_series(tmp_path / "s", orientation=orientation)
    meta = series_metadata(tmp_path / "s", patient=PATIENT)
    assert meta["orientation"] == label
    if obliquity is None:  # normal = R_x(15) R_y(10) z: angle from z is acos(cos15 cos10)
        obliquity = math.degrees(math.acos(math.cos(math.radians(15)) * math.cos(math.radians(10))))
    assert meta["obliquity_deg"] == pytest.approx(obliquity, abs=1e-4)
    assert meta["vendor"] == "Siemens" and meta["model"] == "Avanto"
    assert meta["field_strength_t"] == 1.5 and meta["echo_time_ms"] == 9.8
    assert meta["pixel_spacing_mm"] == (0.8, 0.7)
    assert meta["slice_spacing_mm"] == pytest.approx(3.0, abs=1e-5)
    assert (meta["rows"], meta["columns"], meta["n_slices"]) == (6, 9, 5)
    assert meta["patient_position"] == "HFS"
    text = repr(meta)
    assert not any(value in text for value in (*IDENTITY.values(), PRIVATE_TEXT))


def test_series_identity_reports_planted_values(tmp_path):
    write_series(tmp_path / "s")
    found = series_identity(tmp_path / "s")
    for key, value in IDENTITY.items():
        assert found[key] == value
    assert found["StudyInstanceUID"] == _uid("study", 0)


def test_deidentify_series(tmp_path):
    src, dst = tmp_path / "DOE_JANE_MRN-4471-XZ", tmp_path / "out" / "P042" / "sagittal"
    write_series(src, orientation=SAGITTAL, slope=0.25, intercept=4.0,
                 names=[f"DOE_JANE_{i}.dcm" for i in range(5)])
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    planted = [*series_identity(src).values(), PRIVATE_TEXT]
    deidentify_series(src, dst, pseudonym="P042", seed=7)

    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()} == before
    files = sorted(dst.iterdir())
    assert [p.name for p in files] == [f"{i:04d}.dcm" for i in range(1, 6)]
    for path in files:
        blob = path.read_bytes() + str(path.relative_to(tmp_path / "out")).encode()
        leaked = [v for v in planted if v.encode() in blob]
        assert not leaked, f"{path.name} still holds {leaked}"
        ds = pydicom.dcmread(path)
        assert ds.PatientName == "P042" and ds.PatientID == "P042"
        assert not any(elem.tag.is_private for elem in ds.iterall())
        assert "SeriesDescription" not in ds and "PatientBirthDate" not in ds
    ident = series_identity(dst)
    assert ident["PatientName"] == "P042"
    assert ident["InstitutionName"] != IDENTITY["InstitutionName"]  # replaced by dicognito

    original, copy = read_series(src), read_series(dst)
    np.testing.assert_array_equal(copy.affine, original.affine)
    np.testing.assert_array_equal(np.asarray(copy.dataobj), np.asarray(original.dataobj))

    # same seed, same replacement UIDs; the output folder must be new or empty
    again = deidentify_series(src, tmp_path / "again", pseudonym="P042", seed=7)
    assert pydicom.dcmread(again / "0001.dcm").StudyInstanceUID == pydicom.dcmread(
        files[0]).StudyInstanceUID
    with pytest.raises(InputError, match="patient P042.*not empty"):
        deidentify_series(src, dst, pseudonym="P042", seed=7)


# ------------------------------------------------------------------------------------------
# world <-> voxel


def test_world_to_voxel_by_hand():
    img = nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.array(
        [[2.0, 0, 0, 10], [0, 3.0, 0, 20], [0, 0, 4.0, 30], [0, 0, 0, 1]]))
    np.testing.assert_array_equal(world_to_voxel(img, [14.0, 26.0, 42.0]), [2, 2, 3])
    np.testing.assert_array_equal(world_to_voxel(img, [14.9, 27.4, 31.9]), [2, 2, 0])
    np.testing.assert_array_equal(world_to_voxel(img, [[10, 20, 30], [8, 17, 26]]),
                                  [[0, 0, 0], [-1, -1, -1]])
    # 90 degrees about z: i runs along world +y, j along world -x
    rot = np.array([[0, -1.0, 0, 5], [1.0, 0, 0, -5], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    img90 = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), rot)
    np.testing.assert_array_equal(world_to_voxel(img90, [5 - 3, -5 + 2, 1]), [2, 3, 1])
    ijk = np.array([[1, 2, 3], [0, 3, 1]])
    np.testing.assert_array_equal(world_to_voxel(img90, voxel_to_world(img90, ijk)), ijk)


def test_world_to_voxel_on_dicom_lps_point(tmp_path):
    # an LPS point on slice 2, row 4, column 7 of an oblique stack
    paths = write_series(tmp_path / "s", orientation=OBLIQUE)
    ds = pydicom.dcmread(paths[2])
    row = np.array(ds.ImageOrientationPatient[:3], float)
    col = np.array(ds.ImageOrientationPatient[3:], float)
    lps = np.array(ds.ImagePositionPatient, float) + 7 * 0.7 * row + 4 * 0.8 * col
    img = read_series(tmp_path / "s")
    ras = (LPS_TO_RAS @ np.append(lps, 1.0))[:3]
    np.testing.assert_array_equal(world_to_voxel(img, ras), [7, 4, 2])
    assert np.asarray(img.dataobj)[7, 4, 2] == ds.pixel_array[4, 7]


# ------------------------------------------------------------------------------------------
# real data: Siemens sagittal T1 in four patient positions (dcm_qa_decubitus)


@pytest.mark.parametrize("series", ["HFS/3_t1_fl2d_sag", "HFP/2_t1_fl2d_sag",
                                    "HFDL/2_t1_fl2d_sag", "HFDR/2_t1_fl2d_sag"])
def test_real_decubitus_series_match_simpleitk(series, reference_data):
    root = reference_data / "dicom-decubitus"
    if not root.is_dir():
        pytest.skip(f"reference data dicom-decubitus not found at {root}")
    folder = root / series
    img = read_series(folder, patient=series.split("/")[0])
    assert img.shape == (256, 256, 35)
    assert nib.aff2axcodes(img.affine) == ("P", "I", "R")
    assert_matches_itk(img, folder)
    meta = series_metadata(folder)
    assert meta["orientation"] == "sagittal"
    assert meta["patient_position"] == series.split("/")[0]
    assert meta["slice_spacing_mm"] == pytest.approx(4.8, abs=1e-3)


def test_enhanced_mr_equals_the_classic_series(tmp_path):
    from tests.helpers import to_enhanced_mr

    folder = tmp_path / "classic"
    write_series(folder, orientation=OBLIQUE, slope=[1.0, 2.0, 0.5, 1.5, 3.0], intercept=-7.0)
    enhanced = to_enhanced_mr(folder, tmp_path / "enhanced" / "EMR0001")
    classic, multi = read_series(folder), read_series(enhanced.parent, patient=PATIENT)
    np.testing.assert_array_equal(multi.get_fdata(), classic.get_fdata())
    np.testing.assert_allclose(multi.affine, classic.affine, atol=1e-9)
    assert series_identity(enhanced.parent)["PatientName"] == IDENTITY["PatientName"]
    meta = series_metadata(enhanced.parent)
    assert meta["multi_frame"] and meta["n_slices"] == 5


def test_burned_in_annotation_refused_unless_allowed(tmp_path):
    folder = tmp_path / "s"
    paths = write_series(folder)
    edit_dicom(paths[3], BurnedInAnnotation="YES")
    err = _raises(folder)
    assert_names(err, file=folder, problem=r"burned-in annotation: 1 of 5 image\(s\)")
    img = read_series(folder, allow_burned_in=True)
    assert img.shape == (9, 6, 5)
    assert series_metadata(folder)["burned_in_annotation"] is True
