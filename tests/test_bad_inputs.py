"""Bad and unusual input, by class: each test builds a broken copy of a tiny embedded cohort
(3 simulated patients) and checks that the study reads it, excludes the one patient with the
real reason, or refuses it with the fix, and that no identity reaches what the study writes.

Classes (issue "hardening"): identity through side doors, undecodable file names,
spreadsheet CSVs, intruders in series folders, Enhanced MR, masks that are not 0/1, messages
that name the real cause and the size guard.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from magn_lib.dicom import MAX_FILE_BYTES, read_series, series_metadata
from magn_lib.errors import InputError
from magn_lib.ingest import ingest_cohort
from magn_lib.manifest import load_manifest
from magn_lib.pipeline import input_checksums
from magn_lib.scrub import escape_name
from magn_lib.stages import exclusions, transfer_cohort
from magn_lib.synthetic import make_cohort
from tests.helpers import edit_dicom, to_enhanced_mr

N_PATIENTS = 3


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The tiny cohort, generated once for this module (never modified)."""
    root = tmp_path_factory.mktemp("pristine")
    make_cohort(root, n_patients=N_PATIENTS, seed=11, n_jobs=1, progress=False)
    return root


@pytest.fixture
def cohort(pristine, tmp_path) -> Path:
    """A fresh copy of the tiny cohort's manifest folder, for one test to break."""
    return Path(shutil.copytree(pristine / "manifest", tmp_path / "manifest"))


def _series(manifest: Path) -> pd.DataFrame:
    return pd.read_csv(manifest / "series.csv", dtype=str)


def _folder(manifest: Path, patient: str, view: str) -> Path:
    table = _series(manifest)
    row = table[(table["patient_id"] == patient) & (table["view"] == view)]
    return manifest / row["folder"].iloc[0]


def _files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: os.fsencode(p.name))


def _rename_series(manifest: Path, patient: str, view: str, new_name: str) -> Path:
    """Rename a series folder (as a PACS export names it) and point series.csv at it."""
    table = _series(manifest)
    at = (table["patient_id"] == patient) & (table["view"] == view)
    old = manifest / table.loc[at, "folder"].iloc[0]
    new = old.parent / new_name
    old.rename(new)
    table.loc[at, "folder"] = new.relative_to(manifest).as_posix()
    table.to_csv(manifest / "series.csv", index=False)
    return new


def _plant_intruders(folder: Path, source: Path, n: int | None, *, prefix: str, **changes
                     ) -> None:
    """Copy ``n`` slices of another series (``source``) into ``folder`` under names that sort
    before (prefix "0") or after (prefix "z") the folder's own files. ``n=None``: as many as
    the folder keeps of its own (it keeps that many), so that no series has a majority."""
    if n is None:
        own = _files(folder)
        n = min(len(own), len(_files(source)))
        for path in own[n:]:
            path.unlink()
    for k, path in enumerate(_files(source)[:n]):
        target = folder / f"{prefix}{k:03d}.dcm"
        shutil.copy(path, target)
        if changes:
            edit_dicom(target, **changes)


def _all_text(folder: Path) -> str:
    """Every file under ``folder`` as text, for grepping: its name and content (binary files
    decoded leniently; of a NIfTI volume its header and extensions, the rest is voxels)."""
    parts = []
    for path in sorted(folder.rglob("*")):
        parts.append(escape_name(path.name))
        if path.name.endswith((".nii", ".nii.gz")):
            header = nib.load(path).header
            parts.append(header.binaryblock.decode("latin-1"))
            parts.extend(e.get_content().decode("latin-1") for e in header.extensions)
        elif path.is_file():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


# ------------------------------------------------------------------------------ identity


def test_identity_never_reaches_outputs_through_side_doors(cohort, pristine, tmp_path):
    """Names planted in a folder name, a mask file name, intruders' SeriesDescription and
    malformed UIDs: every output of ingest, transfer, the exclusions table, the input
    checksums and every captured warning is grepped for them."""
    identity = pd.read_csv(pristine / "truth" / "identity.csv", dtype=str)
    name = identity.loc[identity["patient_id"] == "P001", "PatientName"].iloc[0]
    surname = name.split("^")[0]
    # a series folder named after the patient, as PACS exports do
    _rename_series(cohort, "P001", "sagittal", f"{name.replace('^', '_')}_T1_SAG")
    # a mask file named after the patient
    lesions = pd.read_csv(cohort / "lesions.csv", dtype=str)
    at = lesions["patient_id"] == "P001"
    old_mask = cohort / lesions.loc[at, "mask"].iloc[0]
    new_mask = old_mask.with_name(f"{surname}_mask.nii.gz")
    old_mask.rename(new_mask)
    lesions.loc[at, "mask"] = new_mask.relative_to(cohort).as_posix()
    lesions.to_csv(cohort / "lesions.csv", index=False)
    # intruders named in their description, with a malformed UID, in two patients' folders:
    # P002 keeps a majority (read, intruders reported); P003 has none (excluded)
    bad_uid = "1.2.826.0.1.3680043.8.498.0042.ABC"
    for patient, n in (("P002", 3), ("P003", None)):
        folder = _folder(cohort, patient, "coronal")
        source = _folder(cohort, "P001", "axial")
        _plant_intruders(folder, source, n, prefix="0", SeriesDescription="MUSTERMANN ERIKA",
                         SeriesInstanceUID=bad_uid, ImageComments=f"for {name}")
    # a malformed UID in one header read by every stage
    edit_dicom(_files(_folder(cohort, "P002", "sagittal"))[0], FrameOfReferenceUID=bad_uid)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = load_manifest(cohort)
        work = tmp_path / "work"
        ingest = ingest_cohort(manifest, work, progress=False)
        transfer = transfer_cohort(ingest, views=manifest.views, progress=False)
    report = tmp_path / "report"
    report.mkdir()
    exclusions(ingest, transfer).to_csv(report / "exclusions.csv", index=False)
    (report / "run_manifest.json").write_text(json.dumps(input_checksums(cohort)))
    (report / "warnings.txt").write_text("\n".join(str(w.message) for w in caught))

    assert set(ingest.exclusions["patient_id"]) == {"P003"}
    reason = ingest.exclusions["reason"].iloc[0]
    assert "mixed folder" in reason and "P003 coronal series" in reason, reason
    notes = ingest.series.set_index(["patient_id", "view"]).loc[("P002", "coronal"), "notes"]
    assert "3 image(s) of 1 other series left out" in notes
    messages = [str(w.message) for w in caught]
    assert any("Invalid value for VR UI" in m and "[UID]" in m for m in messages), messages

    written = _all_text(work) + _all_text(report)
    planted = {name, name.replace("^", "_"), surname, "MUSTERMANN", "ERIKA", bad_uid,
               "0042.ABC"}
    for patient_identity in identity.drop(columns=["patient_id"]).itertuples(index=False):
        planted.update(v for v in patient_identity if isinstance(v, str) and len(v) >= 6)
    (tmp_path / "written.txt").write_text(written)
    leaked = sorted(p for p in planted if re.search(
        rf"(?<![0-9A-Za-z]){re.escape(p)}(?![0-9A-Za-z])", written, flags=re.IGNORECASE))
    assert not leaked, f"identity reached the outputs: {leaked}"


def test_burned_in_annotation_excluded_unless_opted_in(cohort, tmp_path):
    for path in _files(_folder(cohort, "P002", "sagittal"))[:2]:
        edit_dicom(path, BurnedInAnnotation="YES")
    ingest = ingest_cohort(load_manifest(cohort), tmp_path / "w1", progress=False)
    assert ingest.exclusions["patient_id"].unique().tolist() == ["P002"]
    reason = ingest.exclusions["reason"].iloc[0]
    assert "burned-in annotation: 2 of" in reason and "allow_burned_in = yes" in reason
    # the user checked the images and opts this one series in
    table = _series(cohort)
    table["allow_burned_in"] = np.where(
        (table["patient_id"] == "P002") & (table["view"] == "sagittal"), "yes", "")
    table.to_csv(cohort / "series.csv", index=False)
    manifest = load_manifest(cohort)
    assert manifest.allows_burned_in("P002", "sagittal")
    assert not manifest.allows_burned_in("P002", "axial")
    ingest = ingest_cohort(manifest, tmp_path / "w2", progress=False)
    assert ingest.exclusions.empty and len(ingest.patients) == N_PATIENTS


# ------------------------------------------------------------------------------ file names


def test_undecodable_file_names_are_read_sorted_by_bytes_and_shown_escaped(cohort, tmp_path):
    folder = _folder(cohort, "P001", "sagittal")
    expected = read_series(folder)
    files = _files(folder)
    # Latin-1 names from an old PACS: not valid UTF-8
    latin = [os.fsdecode(b"IM-\xe9t\xe9-%03d.dcm" % k) for k in range(len(files))]
    for path, new in zip(files, latin, strict=True):
        path.rename(folder / new)
    img = read_series(folder, patient="P001")
    np.testing.assert_array_equal(img.get_fdata(), expected.get_fdata())
    # a damaged file with such a name: the message names it escaped, and can be written
    victim = folder / latin[2]
    victim.write_bytes(victim.read_bytes()[:400])
    with pytest.raises(InputError) as err:
        read_series(folder, patient="P001")
    assert "IM-\\xe9t\\xe9-002.dcm" in str(err.value)
    str(err.value).encode("utf-8")
    ingest = ingest_cohort(load_manifest(cohort), tmp_path / "work", progress=False)
    table = (tmp_path / "work").rglob("exclusions.csv")
    written = next(table).read_text(encoding="utf-8")
    assert "P001 sagittal series/IM-\\xe9t\\xe9-002.dcm" in written
    assert ingest.exclusions["patient_id"].unique().tolist() == ["P001"]
    assert escape_name(os.fsdecode(b"a\xffb")) == "a\\xffb"


# ------------------------------------------------------------------------------ CSV


def _rewrite(path: Path, *, bom=False, newline="\n", delimiter=",", decimal=".",
             extra_rows=(), encoding="utf-8") -> None:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    lines = [delimiter.join(table.columns)]
    for _, row in table.iterrows():
        lines.append(delimiter.join(c.replace(".", decimal) if re.fullmatch(r"\d+\.\d+", c)
                                    else c for c in row))
    lines[1:1] = list(extra_rows)
    text = newline.join(lines) + newline
    path.write_bytes(("\ufeff" if bom else "").encode(encoding) + text.encode(encoding))


@pytest.mark.parametrize("variant", ["bom-crlf", "blank-and-empty-rows", "semicolon"])
def test_spreadsheet_csvs_are_read(cohort, pristine, variant):
    expected = load_manifest(pristine / "manifest", views=["sagittal"])
    for name in ("patients.csv", "lesions.csv", "series.csv", "readers.csv"):
        if variant == "bom-crlf":
            _rewrite(cohort / name, bom=True, newline="\r\n")
        elif variant == "blank-and-empty-rows":
            _rewrite(cohort / name, extra_rows=["", ",,,", " , , "], newline="\r\n")
            with open(cohort / name, "a") as f:
                f.write(",,,,\n\n")
        else:
            _rewrite(cohort / name, delimiter=";", decimal=",")
    found = load_manifest(cohort, views=["sagittal"])
    for table in ("patients", "lesions", "series", "readers"):
        pd.testing.assert_frame_equal(getattr(found, table), getattr(expected, table))


def test_spreadsheet_csvs_refused_with_the_fix(cohort):
    _rewrite(cohort / "patients.csv", encoding="cp1252")
    with open(cohort / "patients.csv", "ab") as f:
        f.write("P009,50,F,lumbar,Müller\n".encode("cp1252"))
    _rewrite(cohort / "series.csv", delimiter="|")
    with pytest.raises(InputError) as err:
        load_manifest(cohort)
    message = str(err.value)
    assert "patients.csv: not UTF-8 text" in message and "CSV UTF-8" in message
    assert "series.csv: required column(s)" in message


# ------------------------------------------------------------------------------ intruders


@pytest.mark.parametrize("prefix", ["0", "z"])
def test_intruders_majority_read_whatever_the_name_order(cohort, tmp_path, prefix):
    sagittal = _folder(cohort, "P001", "sagittal")
    coronal = _folder(cohort, "P001", "coronal")
    expected = read_series(sagittal)
    _plant_intruders(sagittal, _folder(cohort, "P001", "axial"), 3, prefix=prefix)
    _plant_intruders(coronal, _folder(cohort, "P001", "axial"), 2, prefix=prefix)
    # a folder without a majority: only that patient is excluded
    p2 = _folder(cohort, "P002", "axial")
    _plant_intruders(p2, _folder(cohort, "P002", "coronal"), None, prefix=prefix)
    manifest = load_manifest(cohort)  # never stops the run
    img = read_series(sagittal, patient="P001")
    np.testing.assert_array_equal(img.get_fdata(), expected.get_fdata())
    ingest = ingest_cohort(manifest, tmp_path / "work", progress=False)
    assert ingest.exclusions["patient_id"].unique().tolist() == ["P002"]
    assert "none has a majority" in ingest.exclusions["reason"].iloc[0]
    notes = ingest.series.set_index(["patient_id", "view"])["notes"].fillna("")
    assert notes[("P001", "sagittal")].startswith("mixed folder: 3 image(s) of 1 other series")
    assert notes[("P001", "coronal")].startswith("mixed folder: 2 image(s)")


# ------------------------------------------------------------------------------ Enhanced MR


def test_enhanced_mr_read_through_per_frame_functional_groups(cohort, tmp_path):
    folder = _folder(cohort, "P001", "sagittal")
    classic = read_series(folder)
    enhanced = tmp_path / "enhanced"
    to_enhanced_mr(folder, enhanced / "EMR0001")
    img = read_series(enhanced, patient="P001")
    np.testing.assert_array_equal(img.get_fdata(), classic.get_fdata())
    np.testing.assert_allclose(img.affine, classic.affine, atol=1e-6)
    assert series_metadata(enhanced)["multi_frame"] is True
    # the same through the whole ingest: the manifest accepts it, the mask fits its grid
    shutil.rmtree(folder)
    shutil.copytree(enhanced, folder)
    broken = _folder(cohort, "P002", "coronal")
    to_enhanced_mr(broken, tmp_path / "flat" / "EMR", functional_groups=False)
    shutil.rmtree(broken)
    shutil.copytree(tmp_path / "flat", broken)
    ingest = ingest_cohort(load_manifest(cohort), tmp_path / "work", progress=False)
    volume = nib.load(ingest.paths.volume("P001", "sagittal"))
    np.testing.assert_array_equal(volume.get_fdata(), classic.get_fdata())
    assert ingest.exclusions["patient_id"].unique().tolist() == ["P002"]
    reason = ingest.exclusions["reason"].iloc[0]
    assert "multi-frame DICOM object" in reason and "no per-frame functional group" in reason


# ------------------------------------------------------------------------------ masks


@pytest.mark.parametrize("kind", ["soft", "multi-label without mask_label"])
def test_masks_other_than_0_1_refused_with_the_rule(cohort, kind):
    lesions = pd.read_csv(cohort / "lesions.csv", dtype=str)
    if kind == "soft":
        path = cohort / lesions.loc[lesions["patient_id"] == "P001", "mask"].iloc[0]
        mask = nib.load(path)
        data = np.asanyarray(mask.dataobj).astype(np.float32)
        inside = data > 0
        data[inside] = 0.9
        data[np.roll(inside, 1, axis=0) & ~inside] = 0.3  # a soft rim
        nib.save(nib.Nifti1Image(data, mask.affine), path)
        match = r"P001.*2 non-integer value\(s\) \(0\.3, 0\.9\).*not thresholded silently"
    else:
        # a patient with two lesions has labels 1 and 2 in one mask file; without mask_label
        # neither may be read as "label 1" by default
        counts = lesions["patient_id"].value_counts()
        assert (counts == 2).any(), "the tiny cohort must hold a patient with two lesions"
        twice = counts[counts == 2].index[0]
        lesions.drop(columns=["mask_label"]).to_csv(cohort / "lesions.csv", index=False)
        match = rf"{twice}.*labels \[1, 2\] and lesions.csv gives no mask_label"
    with pytest.raises(InputError, match=match):
        load_manifest(cohort)


# ------------------------------------------------------------------------------ messages


def test_messages_name_the_real_cause_and_big_files_are_refused_unread(cohort, tmp_path):
    # a missing slice in the sagittal series: the ingest says so, not "mask grid differs"
    sagittal = _folder(cohort, "P001", "sagittal")
    files = sorted(_files(sagittal), key=lambda p: float(pydicom.dcmread(
        p, stop_before_pixels=True).SliceLocation))
    files[len(files) // 2].unlink()
    # a file far larger than any slice (sparse: no disk used) and a large file of zeros
    huge = _folder(cohort, "P002", "axial") / "export.bin"
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    zeros = _folder(cohort, "P003", "axial") / "padding"
    with open(zeros, "wb") as f:
        f.truncate(64 * 2**20)
    started = time.perf_counter()
    ingest = ingest_cohort(load_manifest(cohort), tmp_path / "work", progress=False)
    elapsed = time.perf_counter() - started
    reasons = dict(zip(ingest.exclusions["patient_id"], ingest.exclusions["reason"],
                       strict=True))
    assert set(reasons) == {"P001", "P002"}
    assert "missing slice" in reasons["P001"] and "grid" not in reasons["P001"]
    assert "P002 axial series/export.bin" in reasons["P002"]
    assert "2.0 GiB in a series folder (limit 2 GiB)" in reasons["P002"]
    assert elapsed < 60  # the zeros are probed on their first 64 kB, not parsed


# ------------------------------------------------------------------------------ valid input


def test_sagittal_only_run_is_valid_input(cohort, tmp_path):
    """``views: [sagittal]`` (a documented option): nothing to transfer, an empty but typed QC
    table, and the proposed model, its kept weights and the radiomics comparator all
    sagittal."""
    from magn_lib.config import Profile
    from magn_lib.cv import configs_for, proposed_configs, radiomics_comparator
    from magn_lib.settings import GridSettings
    from magn_lib.stages import QC_COLUMNS, TransferResult

    manifest = load_manifest(cohort, views=["sagittal"])
    ingest = ingest_cohort(manifest, tmp_path / "work", views=manifest.views, progress=False)
    transfer = transfer_cohort(ingest, views=manifest.views, progress=False)
    assert transfer.qc.empty and list(transfer.qc.columns) == list(QC_COLUMNS)
    assert len(transfer.lesions) == len(manifest.lesions)
    loaded = TransferResult.load(tmp_path / "work")
    assert loaded.qc[loaded.qc["flagged"]].empty  # typed: a boolean mask, not column labels
    assert [c.name for c in configs_for(["sagittal"])] == ["sagittal", "sagittal+attention"]
    assert proposed_configs(["sagittal"]) == ("sagittal+attention", "sagittal")
    assert radiomics_comparator(["sagittal"]) == "sagittal"
    settings = GridSettings.from_profile(Profile(views=["sagittal"]))
    assert settings.keeps_weights("sagittal+attention") and settings.keeps_weights("sagittal")
    assert proposed_configs(["sagittal", "coronal", "axial"]) == ("multi-view+attention",
                                                                   "multi-view")
