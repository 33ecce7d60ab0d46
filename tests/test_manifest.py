"""Tests for magn_lib.manifest: the embedded cohort loads with typed tables; each malformed
input is reported as an InputError naming the patient, the file (and CSV line) and the problem;
several problems are reported together."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from magn_lib.errors import InputError
from magn_lib.manifest import (
    GRID_TOLERANCE_MM,
    Manifest,
    combine_manifests,
    load_manifest,
    sagittal_grid,
)
from magn_lib.synthetic import load_truth
from tests.helpers import SMALL_COHORT

N_PATIENTS = SMALL_COHORT.n_patients

TABLES = ("patients.csv", "lesions.csv", "series.csv", "readers.csv")


@pytest.fixture(scope="module")
def source(small_cohort) -> Path:
    return small_cohort / "manifest"


@pytest.fixture
def edit(source: Path, tmp_path: Path) -> Callable[..., Path]:
    """A copy of the manifest CSVs in ``tmp_path`` whose paths point (absolute) at the
    cohort's files; ``edit(name=fn)`` applies ``fn(DataFrame) -> DataFrame`` to a table."""

    def make(**edits: Callable[[pd.DataFrame], pd.DataFrame | None]) -> Path:
        for name in TABLES:
            table = pd.read_csv(source / name, dtype=str, keep_default_na=False)
            for col in ("folder", "mask"):
                if col in table:
                    table[col] = [str(source / p) if p else p for p in table[col]]
            key = name.removesuffix(".csv")
            if key in edits:
                table = edits[key](table)
            if table is not None:
                table.to_csv(tmp_path / name, index=False)
        return tmp_path

    return make


def _one(err: pytest.ExceptionInfo[InputError]) -> InputError:
    assert len(err.value.errors) == 1, str(err.value)
    return err.value.errors[0]


def _set(table: pd.DataFrame, row: int, column: str, value: str) -> pd.DataFrame:
    table.loc[row, column] = value
    return table


def test_embedded_cohort_loads_with_typed_tables(source):
    m = load_manifest(source)
    assert isinstance(m, Manifest) and m.root == source
    assert len(m.patients) == N_PATIENTS
    assert str(m.patients["age"].dtype) == "Float64"
    assert set(m.patients["sex"].dropna()) <= {"M", "F"}
    assert m.lesions["label"].dtype == np.int64 and m.lesions["mask_label"].dtype == np.int64
    assert list(m.readers.columns[:5]) == ["lesion_id", "patient_id", "reader", "call",
                                           "confidence"]
    assert "_line" not in m.lesions.columns
    pid = m.patients["patient_id"].iloc[0]
    assert m.series_folder(pid, "axial").is_dir()
    assert m.mask_path(m.lesions["lesion_id"].iloc[0]).is_file()


def test_sagittal_grid_equals_the_masks_written(source):
    m = load_manifest(source)
    for row in m.lesions.itertuples():
        shape, affine = sagittal_grid(m.series_folder(row.patient_id, "sagittal"))
        img = nib.load(m.mask_path(row.lesion_id))
        assert shape == img.shape
        assert np.allclose(affine, img.affine, atol=1e-4)


def test_unknown_label(edit):
    root = edit(lesions=lambda t: _set(t, 0, "label", "2"))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    assert e.patient == "P001" and e.file.endswith("lesions.csv")
    assert re.search(r"line 2 .*unknown label '2'", e.problem)


def test_duplicate_lesion_id(edit):
    root = edit(lesions=lambda t: _set(t, 1, "lesion_id", t.loc[0, "lesion_id"]))
    with pytest.raises(InputError, match=r"line 3 .*duplicate lesion_id \(first on line 2\)"):
        load_manifest(root)


def test_missing_mask_file(edit, tmp_path):
    gone = str(tmp_path / "masks" / "gone.nii.gz")
    root = edit(lesions=lambda t: _set(t, 0, "mask", gone))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    assert e.patient == "P001" and e.file == gone and "mask file does not exist" in e.problem


def test_missing_series_folder(edit, tmp_path):
    gone = str(tmp_path / "dicom" / "nowhere")
    root = edit(series=lambda t: _set(t, 2, "folder", gone))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    assert e.patient == "P001" and e.file == gone
    assert "line 4: axial series folder does not exist" in e.problem


def test_patient_without_lesion(edit):
    root = edit(patients=lambda t: pd.concat(
        [t, pd.DataFrame([{"patient_id": "P099", "age": "50", "sex": "F", "site": "lumbar"}])]))
    with pytest.raises(InputError) as err:
        load_manifest(root, views=("sagittal",))
    problems = [e for e in err.value.errors if "without lesion" in e.problem]
    assert len(problems) == 1
    assert problems[0].patient == "P099" and "patients.csv line" in problems[0].problem


def test_lesion_without_sagittal_mask(edit):
    root = edit(lesions=lambda t: _set(t, 0, "mask", ""))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    assert e.patient == "P001" and e.file.endswith("lesions.csv")
    assert "lesion without sagittal mask" in e.problem


def test_mask_on_another_grid(edit, source, tmp_path):
    lesions = pd.read_csv(source / "lesions.csv", dtype=str)
    img = nib.load(source / lesions.loc[0, "mask"])
    shifted = img.affine.copy()
    shifted[:3, 3] += [0.0, 0.0, 1.5]
    bad = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), bad)
    flipped = tmp_path / "flipped.nii.gz"  # same voxels, row axis reversed (dcm2niix style)
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1.0, img.shape[1] - 1
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, ::-1, :], img.affine @ flip), flipped)
    with pytest.raises(InputError) as err:
        load_manifest(edit(lesions=lambda t: _set(t, 0, "mask", str(bad))))
    e = _one(err)
    assert e.patient == "P001" and e.file == str(bad)
    assert "grid differs from the sagittal series" in e.problem
    assert "1.5 mm" in e.problem and f"tolerance {GRID_TOLERANCE_MM}" in e.problem
    with pytest.raises(InputError) as err:
        load_manifest(edit(lesions=lambda t: _set(t, 0, "mask", str(flipped))))
    e = _one(err)
    assert e.file == str(flipped) and "flipped or permuted" in e.hint


def test_empty_mask(edit, source, tmp_path):
    lesions = pd.read_csv(source / "lesions.csv", dtype=str)
    img = nib.load(source / lesions.loc[0, "mask"])
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), empty)
    root = edit(lesions=lambda t: _set(t, 0, "mask", str(empty)))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    assert e.patient == "P001" and e.file == str(empty)
    assert "mask is empty for label 1 (labels present: none)" in e.problem


def test_mask_label_absent(edit):
    root = edit(lesions=lambda t: _set(t, 0, "mask_label", "7"))
    with pytest.raises(InputError, match=r"patient P001, file .*P001_sagittal.nii.gz: .*empty "
                                         r"for label 7 \(labels present: \[1"):
        load_manifest(root)


def test_missing_view_only_when_needed(edit):
    root = edit(series=lambda t: t[~((t["patient_id"] == "P002") & (t["view"] == "coronal"))])
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    assert e.patient == "P002" and e.file.endswith("series.csv")
    assert "no coronal series" in e.problem
    m = load_manifest(root, views=("sagittal", "axial"))
    assert m.views == ("sagittal", "axial")


def test_series_in_the_wrong_row(edit):
    def swap(t: pd.DataFrame) -> pd.DataFrame:
        cor, ax = t.index[(t["patient_id"] == "P003") & t["view"].isin(["coronal", "axial"])]
        t.loc[cor, "folder"], t.loc[ax, "folder"] = t.loc[ax, "folder"], t.loc[cor, "folder"]
        return t

    with pytest.raises(InputError) as err:
        load_manifest(edit(series=swap))
    assert {e.patient for e in err.value.errors} == {"P003"}
    assert any("the series in the coronal row is axial" in e.problem for e in err.value.errors)


def test_non_numeric_age(edit):
    root = edit(patients=lambda t: _set(t, 1, "age", "sixty"))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    assert e.patient == "P002" and e.file.endswith("patients.csv")
    assert "line 3: age 'sixty' is not a number" in e.problem


def test_bad_sex_and_site(edit):
    root = edit(patients=lambda t: _set(_set(t, 0, "sex", "X"), 2, "site", "skull"))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    by_patient = {e.patient: e.problem for e in err.value.errors}
    assert "sex 'X' is not one of M, F" in by_patient["P001"]
    assert "site 'skull' is not one of" in by_patient["P003"]


def test_reader_call_and_confidence(edit):
    root = edit(readers=lambda t: _set(_set(t, 0, "call", "yes"), 1, "confidence", "9"))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    problems = [(e.patient, e.problem) for e in err.value.errors]
    assert len(problems) == 2
    assert all(e.file.endswith("readers.csv") for e in err.value.errors)
    assert "line 2" in problems[0][1] and "call 'yes' is not 0 or 1" in problems[0][1]
    assert "line 3" in problems[1][1] and "confidence '9' is not an integer 1-5" in problems[1][1]
    assert problems[0][0] == "P001"


def test_reader_missing_calls(edit):
    root = edit(readers=lambda t: t.iloc[1:])
    with pytest.raises(InputError, match=r"reader1 has no call for 1 lesion\(s\): P001-L1"):
        load_manifest(root)


def test_missing_table_and_column(edit):
    root = edit(series=lambda t: None, patients=lambda t: t.drop(columns="sex"))
    with pytest.raises(InputError) as err:
        load_manifest(root)
    problems = " | ".join(str(e) for e in err.value.errors)
    assert "series.csv is missing" in problems
    assert "required column(s) ['sex'] missing" in problems


def test_hospital_number_as_study_id(edit, source):
    truth = load_truth(source)
    hospital = truth.identity.set_index("patient_id").loc["P001", "PatientID"]
    rename = {"P001": hospital}

    def sub(t: pd.DataFrame) -> pd.DataFrame:
        t["patient_id"] = t["patient_id"].replace(rename)
        return t

    root = edit(patients=sub, lesions=sub, series=sub, readers=sub)
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    assert e.patient == hospital and "DICOM patient identity" in e.problem


def test_labels_differ_within_patient(edit, source):
    lesions = pd.read_csv(source / "lesions.csv", dtype=str)
    pid = lesions["patient_id"][lesions["patient_id"].duplicated()].iloc[0]
    row = int(lesions.index[lesions["patient_id"] == pid][0])
    flip = "0" if lesions.loc[row, "label"] == "1" else "1"
    with pytest.raises(InputError) as err:
        load_manifest(edit(lesions=lambda t: _set(t, row, "label", flip)))
    e = _one(err)
    assert e.patient == pid and "different labels" in e.problem


def test_many_problems_reported_at_once(edit, tmp_path):
    root = edit(
        patients=lambda t: _set(t, 0, "age", "old"),
        lesions=lambda t: _set(_set(t, 1, "label", "MM"), 2, "mask", str(tmp_path / "x.nii")),
        series=lambda t: _set(t, 4, "view", "oblique"),
        readers=lambda t: _set(t, 3, "confidence", "0"),
    )
    with pytest.raises(InputError) as err:
        load_manifest(root)
    problems = err.value.errors
    assert len(problems) >= 5
    text = str(err.value)
    assert text.startswith(f"{len(problems)} problems in the input:")
    for needle in ("age 'old'", "unknown label 'MM'", "mask file does not exist",
                   "unknown view 'oblique'", "confidence '0'"):
        assert needle in text
    assert all(e.file for e in problems)


def test_copied_manifest_with_relative_paths(source, tmp_path):
    """Relative paths resolve against the manifest folder wherever it is moved."""
    moved = tmp_path / "cohort"
    shutil.copytree(source, moved)
    m = load_manifest(moved)
    assert m.series_folder("P001", "sagittal").is_relative_to(moved)


def test_line_numbers_survive_blank_rows_and_semicolons(edit):
    root = edit()
    text = (root / "patients.csv").read_text().splitlines()
    header, rows = text[0], text[1:]
    rows[1] = rows[1].split(",")[0] + ",sixty," + ",".join(rows[1].split(",")[2:])
    lines = [header.replace(",", ";"), "", ";;;", *[r.replace(",", ";") for r in rows]]
    (root / "patients.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8-sig")
    with pytest.raises(InputError) as err:
        load_manifest(root)
    e = _one(err)
    # the header is line 1, then a blank line and an empty row: the second patient is line 5
    assert "patients.csv line 5: age 'sixty' is not a number" in e.problem


def test_centre_column_is_optional_typed_and_checked(edit, source):
    assert "centre" in load_manifest(source).patients  # the embedded cohort names its site
    without = load_manifest(edit(patients=lambda t: t.drop(columns="centre")))
    assert "centre" not in without.patients
    blank = load_manifest(edit(patients=lambda t: _set(t, 0, "centre", "")))
    assert blank.patients["centre"].isna().tolist() == [True] + [False] * (N_PATIENTS - 1)
    assert str(blank.patients["centre"].dtype) == "string"
    with pytest.raises(InputError) as err:
        load_manifest(edit(patients=lambda t: _set(t, 1, "centre", "site B!")))
    problem = _one(err)
    assert problem.patient == "P002" and "centre 'site B!'" in str(problem)
    assert "patients.csv line 3" in str(problem)


def _state(folder: Path) -> dict[str, int]:
    return {p.as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_combine_manifests_makes_ids_unique_and_names_the_centre(source, tmp_path):
    before = _state(source)
    out = combine_manifests({"A": source, "B": source}, tmp_path / "both" / "manifest")
    assert sorted(p.name for p in out.iterdir()) == sorted(TABLES)  # CSV files only
    both = load_manifest(out)
    alone = load_manifest(source)
    ids = alone.patients["patient_id"].tolist()
    assert both.patients["patient_id"].tolist() == [f"{c}-{p}" for c in "AB" for p in ids]
    assert both.patients["centre"].tolist() == ["A"] * len(ids) + ["B"] * len(ids)
    assert both.lesions["lesion_id"].is_unique and len(both.lesions) == 2 * len(alone.lesions)
    assert set(both.lesions["lesion_id"]) == {f"{c}-{les}" for c in "AB"
                                              for les in alone.lesions["lesion_id"]}
    # the paths reach the very files of the source, relative to the combined folder
    for row in both.series.itertuples():
        original = alone.series_folder(row.patient_id.split("-", 1)[1], row.view)
        assert not Path(row.folder).is_absolute()
        assert both.path(row.folder).resolve() == original.resolve()
    assert len(both.readers) == 2 * len(alone.readers)
    assert set(both.readers["patient_id"]) == set(both.patients["patient_id"])
    assert _state(source) == before  # the sources are only read


def test_combine_manifests_refuses_what_it_cannot_do(source, tmp_path):
    with pytest.raises(InputError, match="at least two sites"):
        combine_manifests({"A": source}, tmp_path / "one")
    with pytest.raises(InputError, match="site name"):
        combine_manifests({"A": source, "site B": source}, tmp_path / "bad")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        combine_manifests({"A": source, "B": source}, tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    broken = tmp_path / "broken"
    shutil.copytree(source, broken, ignore=shutil.ignore_patterns("dicom", "masks"))
    with pytest.raises(InputError):
        combine_manifests({"A": source, "B": broken}, tmp_path / "never")
    assert not (tmp_path / "never").exists()  # nothing half-written
