"""The portable model bundle (``magn export``) and case reports (``magn predict``), end to end on
a tiny trained run: exported, moved away from its run, the run's work folder deleted, and used
from another working folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from magn_lib import cli, config
from magn_lib.bundle import BUNDLE_FORMAT, export_bundle, load_bundle
from magn_lib.dicom import series_identity
from magn_lib.errors import InputError
from magn_lib.manifest import load_manifest
from magn_lib.predict import CaseInput, format_probability, predict_case, predict_manifest
from tests.helpers import make_trained_run

VIEWS3 = ("sagittal", "coronal", "axial")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained run exported, the bundle moved elsewhere and the run's work folder deleted;
    plus a patient the models never saw (a second simulated cohort)."""
    root = tmp_path_factory.mktemp("bundle")
    # one lesion per patient and one backbone shared by the views: small and quick
    run = make_trained_run(root / "study", crop_size=48, class_counts={1: (2, 2), 0: (2, 2)},
                           shared_backbone=True)
    written = export_bundle(run.report, root / "study" / "model.magn")
    bundle_path = root / "elsewhere" / "moved.magn"
    bundle_path.parent.mkdir()
    shutil.move(written, bundle_path)
    shutil.rmtree(run.work)
    from magn_lib.synthetic import make_cohort

    new = make_cohort(root / "new", n_patients=1, seed=99, n_jobs=1, progress=False)
    manifest = load_manifest(run.manifest)
    return SimpleNamespace(root=root, run=run, bundle_path=bundle_path, manifest=manifest,
                           new=load_manifest(new), oof=run.oof, bundle=load_bundle(bundle_path))


@pytest.fixture
def elsewhere(exported, monkeypatch, tmp_path):
    """Another working folder, and a project root that holds nothing of the study."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(config, "project_root", lambda: tmp_path / "no-checkout")
    return cwd


def _case(manifest, lesion_id: str, **kwargs) -> CaseInput:
    lesion = manifest.lesions.set_index("lesion_id").loc[lesion_id]
    return CaseInput(lesion_id=kwargs.pop("as_id", lesion_id),
                     series={v: manifest.series_folder(lesion["patient_id"], v) for v in VIEWS3},
                     mask=manifest.mask_path(lesion_id), mask_label=int(lesion["mask_label"]),
                     **kwargs)


def _identity(manifest) -> list[str]:
    """Every identifying header value of the manifest's series, and each part of every person
    name (lower case)."""
    values = set()
    for row in manifest.series.itertuples():
        for keyword, value in series_identity(manifest.path(row.folder)).items():
            values.add(value.lower())
            if keyword.endswith("Name"):
                values.update(p.lower() for p in value.split("^") if len(p) >= 3)
    return sorted(v for v in values if len(v) >= 3)


def test_held_out_prediction_from_a_moved_bundle_without_the_run(exported, elsewhere):
    oof = exported.oof
    held = oof[oof["config"] == "multi-view"].iloc[0]
    case = _case(exported.manifest, held["lesion_id"], as_id="case-1")
    code = cli.main(["predict", "--model", str(exported.bundle_path), "--out", "out",
                     "--sagittal", str(case.series["sagittal"]),
                     "--coronal", str(case.series["coronal"]),
                     "--axial", str(case.series["axial"]),
                     "--mask", str(case.mask), "--mask-label", str(case.mask_label),
                     "--lesion-id", "case-1"])
    assert code == cli.EXIT_OK
    result = json.loads((elsewhere / "out" / "case-1" / "prediction.json").read_text())
    own = next(r for r in result["fold_models"] if r["fold"] == int(held["fold"]))
    assert own["probability_raw"] == pytest.approx(held["probability"], abs=1e-6)
    # the lesion's patient trained the other fold models: recognised from its image alone
    assert result["in_sample"]["held_out_fold"] == int(held["fold"])
    assert result["in_sample"]["matched_by"] == ["identical sagittal image"]
    assert any(w.startswith("In-sample") for w in result["warnings"])
    assert not own["trained_on_this_patient"]
    assert all(r["trained_on_this_patient"] for r in result["fold_models"] if r is not own)
    assert (elsewhere / "out" / "case-1" / "case_report.html").is_file()
    assert result["disclaimer"].startswith("Research use only")


def test_a_new_patient_and_no_identity_in_any_output(exported, elsewhere):
    new = exported.new
    lesion_id = new.lesions["lesion_id"].iloc[0]
    bundle = exported.bundle
    result = predict_case(bundle, _case(new, lesion_id, as_id="new-1"), elsewhere / "out",
                          pdf=bool(shutil.which("chromium")))
    assert result["in_sample"] is None
    assert not any(w.startswith("In-sample") for w in result["warnings"])
    # the same lesion named with a training patient's study id is in-sample by that id
    trained = sorted(bundle.training_patients)[0]
    by_id = predict_case(bundle, _case(new, lesion_id, as_id="new-2", patient_id=trained))
    assert by_id["in_sample"]["matched_by"] == ["study patient id"]

    secrets = _identity(new)
    assert len(secrets) >= 3  # the simulated DICOM carries names and ids
    files = [p for p in (elsewhere / "out").rglob("*")]
    # embedded PNGs hold pixels only (no text chunk); their base64 would match short strings
    texts = [re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", p.read_text()).lower()
             for p in files if p.is_file() and p.suffix != ".pdf"]
    names = {"new-1", "prediction.json", "case_report.html"}
    if shutil.which("chromium"):
        names.add("case_report.pdf")
        pdf = elsewhere / "out" / "new-1" / "case_report.pdf"
        assert pdf.read_bytes().startswith(b"%PDF-")
        assert result["case_report_pdf"] == "case_report.pdf"  # printed from the HTML checked
    assert {p.name for p in files} == names
    for secret in secrets:
        assert not any(secret in t for t in texts), secret
        assert not any(secret in str(p.relative_to(elsewhere)).lower() for p in files), secret
    p = result["probability_mm"]
    assert format_probability(p) in result["probability_mm_text"]
    assert (format_probability(1e-5), format_probability(1 - 3.4e-6)) == ("1e-05", "1 − 3.4e-06")


def _decimated_axial(folder: Path, out: Path) -> Path:
    """The axial series resampled to 8 mm slices: every other slice kept, thickness 8 mm."""
    out.mkdir(parents=True)
    files = sorted(folder.iterdir())
    datasets = sorted((pydicom.dcmread(f) for f in files),
                      key=lambda d: float(d.ImagePositionPatient[2]))
    for i, ds in enumerate(datasets[::2]):
        ds.SliceThickness = 8.0
        ds.InstanceNumber = i + 1
        ds.save_as(out / f"slice{i:03d}.dcm")
    return out


def test_input_checks_fire_on_8mm_slices_and_a_mask_off_the_grid(exported, tmp_path):
    bundle = exported.bundle
    new = exported.new
    lesion_id = new.lesions["lesion_id"].iloc[0]
    case = _case(new, lesion_id, as_id="thick")
    axial = _decimated_axial(Path(case.series["axial"]), tmp_path / "axial8")
    result = predict_case(bundle, CaseInput(**{**case.__dict__,
                                               "series": {**case.series, "axial": axial}}))
    thickness = [c for c in result["input_checks"]
                 if c["view"] == "axial" and c["parameter"] == "slice_thickness_mm"]
    low, high = bundle.ranges["axial"]["slice_thickness_mm"]
    assert thickness and thickness[0]["value"] == [8.0]
    assert f"axial slice thickness 8 mm, outside the {low:.3g}–{high:.3g} mm" in \
        thickness[0]["message"]
    assert thickness[0]["message"] in result["warnings"]
    # the unchanged series raises no thickness check
    plain = predict_case(bundle, case)
    assert not [c for c in plain["input_checks"] if c["parameter"] == "slice_thickness_mm"]

    img = nib.load(case.mask)
    shifted = img.affine.copy()
    shifted[:3, 3] += [1.3, 0.0, 0.0]
    off = tmp_path / "off_grid_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), shifted), off)
    out = tmp_path / "never"
    with pytest.raises(InputError, match="not on the sagittal series' grid") as caught:
        predict_case(bundle, CaseInput(**{**case.__dict__, "mask": off}), out)
    assert str(off) in str(caught.value)
    assert not out.exists()  # nothing half-written


def test_nrrd_mask_and_a_mask_cropped_to_its_box(exported, tmp_path):
    import SimpleITK as sitk

    bundle = exported.bundle
    new = exported.new
    case = _case(new, new.lesions["lesion_id"].iloc[0], as_id="nrrd")
    reference = predict_case(bundle, case)["fold_models"]
    img = nib.load(case.mask)
    data = (np.rint(np.asanyarray(img.dataobj)) == case.mask_label).astype(np.uint8)
    # as 3D Slicer saves a segment: LPS, cropped to the segment's bounding box
    box = np.argwhere(data)
    lo, hi = box.min(axis=0), box.max(axis=0) + 1
    cropped = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    origin_ras = img.affine[:3, :3] @ lo + img.affine[:3, 3]
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    itk = sitk.GetImageFromArray(cropped.transpose(2, 1, 0).copy())
    itk.SetSpacing(zooms.tolist())
    flip = np.diag([-1.0, -1.0, 1.0])
    itk.SetDirection((flip @ (img.affine[:3, :3] / zooms)).ravel().tolist())
    itk.SetOrigin((flip @ origin_ras).tolist())
    path = tmp_path / "lesion.seg.nrrd"
    sitk.WriteImage(itk, str(path))
    again = predict_case(bundle, CaseInput(**{**case.__dict__, "mask": path, "mask_label": 1}))
    for a, b in zip(again["fold_models"], reference, strict=True):
        assert a["probability_raw"] == pytest.approx(b["probability_raw"], abs=1e-7)


def test_batch_mode_one_row_and_one_report_per_lesion(exported, elsewhere, open_page):
    bundle = exported.bundle
    out = elsewhere / "batch"
    table = predict_manifest(bundle, exported.run.manifest, out)
    lesions = exported.manifest.lesions["lesion_id"].tolist()
    written = pd.read_csv(out / "predictions.csv", dtype={"lesion_id": str})
    assert sorted(written["lesion_id"]) == sorted(lesions) == sorted(table["lesion_id"])
    assert (written["status"] == "ok").all() and written["in_sample"].all()
    for lesion_id in lesions:
        assert (out / lesion_id / "case_report.html").is_file()
        assert (out / lesion_id / "prediction.json").is_file()
    oof = exported.oof[exported.oof["config"] == "multi-view"].set_index("lesion_id")
    for row in written.itertuples():
        fold = int(oof.loc[row.lesion_id, "fold"])
        assert getattr(row, f"p_fold{fold}") == pytest.approx(oof.loc[row.lesion_id,
                                                                      "probability"], abs=1e-6)
    # one case report in a real browser: renders, images decode, nothing overflows
    page, problems = open_page(out / lesions[0] / "case_report.html", elsewhere / "shot.png")
    assert problems == []
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - "
                             "document.documentElement.clientWidth")
    assert overflow <= 0
    assert "Research use only" in page.inner_text("body")
    page.close()


def test_bundle_contents_checks_and_refusals(exported, tmp_path):
    bundle = exported.bundle
    meta = bundle.meta
    assert meta["format"] == BUNDLE_FORMAT and meta["config"]["name"] == "multi-view"
    assert "best pooled out-of-fold AUC" in meta["selection"]["reason"]
    assert set(meta["training_ranges"]) == set(VIEWS3)
    assert {p["patient_id"] for p in meta["training_patients"]} == set(
        exported.manifest.patients["patient_id"])
    assert meta["preprocessing"]["crop_size"] == 48 and meta["profile"]["crop_size"] == 48
    files = {p.relative_to(exported.bundle_path).as_posix()
             for p in exported.bundle_path.rglob("*") if p.is_file()}
    assert files == {"bundle.json", "checksums.sha256", "model_card.md", "oof.csv",
                     "models/fold0.pt", "models/fold1.pt"}
    assert "Research use only" in (exported.bundle_path / "model_card.md").read_text()

    def copy() -> Path:
        """A copy of the bundle of hard links (quick); replace a file before changing it."""
        target = tmp_path / f"copy{len(list(tmp_path.iterdir()))}.magn"
        shutil.copytree(exported.bundle_path, target, copy_function=os.link)
        return target

    damaged = copy()
    weights = damaged / "models" / "fold1.pt"
    data = bytearray(weights.read_bytes())
    data[200:203] = b"\x00\x01\x02"
    weights.unlink()
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match its checksum"):
        load_bundle(damaged)
    future = copy()
    record = json.loads((future / "bundle.json").read_text())
    record["format"] = "magn-bundle/2"
    (future / "bundle.json").unlink()
    (future / "bundle.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="'magn-bundle/2'.*not the format this magn"):
        load_bundle(future)
    extra = copy()
    (extra / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="checksum list does not"):
        load_bundle(extra)
    with pytest.raises(InputError, match="exists already"):
        export_bundle(exported.run.report, exported.bundle_path)
    # the run's work folder is gone: exporting again says so
    with pytest.raises(InputError, match="work folder"):
        export_bundle(exported.run.report, tmp_path / "again.magn")


def test_configuration_choice_and_a_configuration_without_kept_models():
    from magn_lib.bundle import _choose

    ranking = pd.DataFrame([
        {"config": "axial", "views": 1, "pooled_auc": 0.99, "kept_folds": 5, "complete": True},
        {"config": "multi-view", "views": 3, "pooled_auc": 0.80, "kept_folds": 5,
         "complete": True},
        {"config": "multi-view+attention", "views": 3, "pooled_auc": 0.90, "kept_folds": 2,
         "complete": False},
    ])
    assert _choose(ranking, None) == "multi-view"  # the best complete multi-view one
    assert _choose(ranking, "axial") == "axial"
    with pytest.raises(InputError, match="keep_weights"):
        _choose(ranking, "multi-view+attention")


def test_input_checks_against_ranges_and_strict_json():
    from magn_lib.bundle import acquisition_ranges, finite_json
    from magn_lib.predict import _input_checks

    series = pd.DataFrame({
        "view": ["axial", "axial"], "pixel_spacing_mm": ["0.5x0.5", "0.7x0.7"],
        "slice_thickness_mm": [3.0, 6.0], "slice_spacing_mm": [3.3, 6.6],
        "field_strength_t": [1.5, 3.0], "vendor": ["GE", "Siemens"]})
    intensities = pd.DataFrame({"view": ["axial", "axial"], "p_low": [0.0, 10.0],
                                "p_high": [900.0, 2000.0]})
    ranges = acquisition_ranges(series, intensities)["axial"]
    assert ranges["pixel_spacing_mm"] == [0.5, 0.7] and ranges["vendors"] == ["GE", "Siemens"]
    inside = {"pixel_spacing_mm": (0.6, 0.6), "slice_thickness_mm": 6.2,  # within the margin
              "slice_spacing_mm": 4.0, "field_strength_t": 3.0, "vendor": "GE"}
    assert _input_checks("axial", inside, (5.0, 1000.0), ranges) == []
    outside = {**inside, "slice_thickness_mm": 8.0, "field_strength_t": 0.55,
               "vendor": "Philips", "pixel_spacing_mm": (0.6, 1.2)}
    checks = {c["parameter"]: c["message"] for c in
              _input_checks("axial", outside, (5.0, 5000.0), ranges)}
    assert checks == {
        "slice_thickness_mm": "axial slice thickness 8 mm, outside the 3–6 mm the model was "
                              "trained on",
        "pixel_spacing_mm": "axial pixel spacing 0.6 × 1.2 mm, outside the 0.5–0.7 mm the model "
                            "was trained on",
        "intensity_p_high": "axial 99.5th intensity percentile 5e+03, outside the 900–2e+03 the "
                            "model was trained on",
        "field_strength_t": "axial field strength 0.55 T; the model was trained on 1.5, 3 T only",
        "vendor": "axial scanner vendor Philips; the model was trained on GE, Siemens only",
    }
    assert finite_json({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0],
                                                                          "b": None}


def test_mask_grid_rule_tolerance_box_and_refusal(tmp_path):
    from magn_lib.predict import _on_grid

    affine = np.diag([0.7, 0.7, 4.0, 1.0])
    affine[:3, 3] = [-50.0, 20.0, 3.0]
    series = nib.Nifti1Image(np.zeros((20, 16, 6), np.float32), affine)
    data = np.zeros((20, 16, 6), np.uint8)
    data[5:8, 4:6, 2] = 2
    name = tmp_path / "m.nii.gz"
    close = affine.copy()
    close[:3, 3] += 0.03  # within the manifest's 0.05 mm
    on = _on_grid(nib.Nifti1Image(data, close), series, label=2, file=name, patient="L1")
    np.testing.assert_array_equal(np.asanyarray(on.dataobj), data == 2)
    np.testing.assert_array_equal(on.affine, series.affine)
    # saved on its bounding box (3D Slicer): padded back onto the series grid
    box = affine.copy()
    box[:3, 3] = affine[:3, :3] @ [5, 4, 2] + affine[:3, 3]
    padded = _on_grid(nib.Nifti1Image(data[5:8, 4:6, 2:3], box), series, label=2, file=name,
                      patient="L1")
    np.testing.assert_array_equal(np.asanyarray(padded.dataobj), data == 2)
    half = affine.copy()
    half[:3, 3] += [0.35, 0, 0]  # half a pixel off
    with pytest.raises(InputError, match="not on the sagittal series' grid") as caught:
        _on_grid(nib.Nifti1Image(data, half), series, label=2, file=name, patient="L1")
    assert str(name) in str(caught.value)
    with pytest.raises(InputError, match="no voxel of label 1"):
        _on_grid(nib.Nifti1Image(data, affine), series, label=1, file=name, patient="L1")
