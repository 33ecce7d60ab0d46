"""The second embedded site (``preset="site_b"``): it differs from site A on every knob, as read
from what a hospital's files show (DICOM headers, intensities, masks, the manifest), not from
the generator's parameters; within a site, the site's draws never follow the label."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage
from scipy.stats import chi2_contingency

from magn_lib.dicom import read_series, series_metadata
from magn_lib.ingest import ingest_cohort
from magn_lib.manifest import load_manifest
from magn_lib.synthetic import POSITIONS, VENDORS, load_truth, make_cohort
from magn_lib.synthetic.planning import PRESETS, SITE_B, parse_knobs, plan_cohort
from magn_lib.synthetic.scanners import POSITION_WEIGHTS, VENDOR_WEIGHTS

N_PATIENTS = 10
SEED = 21
# Immerkaer's noise estimator (1996): mean |I * K| * sqrt(pi / 2) / 6 is the noise SD of an
# image that is locally planar; the phantom's anatomy is smooth at the pixel scale
_LAPLACE_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    return {
        "A": make_cohort(root / "a", n_patients=N_PATIENTS, seed=SEED, n_jobs=1,
                         progress=False),
        "B": make_cohort(root / "b", n_patients=N_PATIENTS, seed=SEED, preset="site_b",
                         n_jobs=1, progress=False),
    }


def _sagittal_measurements(manifest_dir) -> pd.DataFrame:
    """One row per patient, from its sagittal DICOM series, its mask and the manifest."""
    series = pd.read_csv(manifest_dir / "series.csv", dtype=str)
    lesions = pd.read_csv(manifest_dir / "lesions.csv", dtype={"patient_id": str})
    rows = []
    for row in series[series["view"] == "sagittal"].itertuples():
        folder = manifest_dir / row.folder
        meta = series_metadata(folder)
        header = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        img = read_series(folder)
        data = img.get_fdata()
        mask = nib.load(manifest_dir / "masks" / f"{row.patient_id}_sagittal.nii.gz")
        lesion = np.asanyarray(mask.dataobj) > 0
        core = ndimage.binary_erosion(lesion, np.ones((3, 3, 1)))
        ring = (ndimage.binary_dilation(lesion, np.ones((9, 9, 1)))
                & ~ndimage.binary_dilation(lesion, np.ones((5, 5, 1))))
        high_pass = [np.abs(ndimage.convolve(data[:, :, k], _LAPLACE_DIFFERENCE)).mean()
                     for k in range(data.shape[2])]
        sigma = np.sqrt(np.pi / 2) / 6 * float(np.median(high_pass))
        voxel_mm3 = float(np.prod(img.header.get_zooms()[:3]))
        mine = lesions[lesions["patient_id"] == row.patient_id]
        volumes = [(np.asanyarray(mask.dataobj) == label).sum() * voxel_mm3
                   for label in mine["mask_label"]]
        rows.append({
            "patient_id": row.patient_id,
            "scanner": f"{meta['manufacturer']} {meta['model']}",
            "manufacturer": meta["manufacturer"],
            "field_t": meta["field_strength_t"],
            "thickness_mm": meta["slice_thickness_mm"],
            "gap_mm": meta["slice_spacing_mm"] - meta["slice_thickness_mm"],
            "pixel_mm": meta["pixel_spacing_mm"][0],
            "position": meta["patient_position"],
            "bits_stored": int(header.BitsStored),
            "p995": float(np.percentile(data, 99.5)),
            "contrast": float(data[core].mean() / data[ring].mean()),
            "noise": sigma / float(np.percentile(data, 99.5)),
            "myeloma": int(mine["label"].iloc[0]),
            # equivalent-sphere diameter of the mean lesion volume, cm
            "lesion_cm": float((6 * np.mean(volumes) / np.pi) ** (1 / 3) / 10),
        })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def measured(sites):
    return {site: _sagittal_measurements(folder) for site, folder in sites.items()}


def test_site_b_differs_from_site_a_on_every_knob(measured):
    a, b = measured["A"], measured["B"]
    # vendor mix: scanners site A lacks, a manufacturer site A has none of
    assert not set(a["scanner"]) & set(b["scanner"])
    assert set(b["manufacturer"]) - set(a["manufacturer"]) == {"CANON_MEC"}
    # field strength: most of site B at 3 T, most of site A at 1.5 T
    assert (b["field_t"] == 3.0).mean() > 0.5 > (a["field_t"] == 3.0).mean()
    # contrast follows the field at site B: its 3 T lesions stand out more than site A's and
    # than its own 1.5 T ones
    b3 = b[b["field_t"] == 3.0]["contrast"].mean()
    assert b3 > 1.15 * a["contrast"].mean()
    assert b3 > 1.1 * b[b["field_t"] == 1.5]["contrast"].mean()
    # noise (relative to the image's bright end) follows the field: lower at site B
    assert b["noise"].median() < 0.75 * a["noise"].median()
    # slice thickness and gap, in-plane pixel size: site B's one protocol
    assert np.allclose(b["thickness_mm"], 4.5) and a["thickness_mm"].max() <= 4.0
    assert np.allclose(b["gap_mm"], 0.9, atol=1e-3) and a["gap_mm"].max() <= 0.5 + 1e-3
    assert b["pixel_mm"].min() > 0.86 > 0.82 > a["pixel_mm"].max()
    # intensity scaling: larger stored (and rescaled) values
    assert b["p995"].median() > 2 * a["p995"].median()
    # patient positioning: fewer head-first supine examinations
    assert (b["position"] != "HFS").mean() > (a["position"] != "HFS").mean()
    # prevalence of myeloma (patients)
    assert b["myeloma"].mean() == pytest.approx(0.6) and a["myeloma"].mean() == pytest.approx(0.4)
    # lesion size, from the masks
    assert b["lesion_cm"].mean() < 0.85 * a["lesion_cm"].mean()


def test_manifest_names_the_site(sites):
    for site, folder in sites.items():
        patients = pd.read_csv(folder / "patients.csv", dtype=str)
        assert list(patients.columns) == ["patient_id", "age", "sex", "site", "centre"]
        assert set(patients["centre"]) == {site}
        manifest = load_manifest(folder)
        assert set(manifest.patients["centre"]) == {site}


def test_site_b_plants_its_own_identity_and_ingest_strips_it(sites, tmp_path):
    cohort = sites["B"].parent
    truth = load_truth(cohort)
    identity = truth.identity.set_index("patient_id")
    series = pd.read_csv(sites["B"] / "series.csv", dtype=str)
    for row in series.itertuples():
        ds = pydicom.dcmread(next((sites["B"] / row.folder).iterdir()), stop_before_pixels=True)
        planted = identity.loc[row.patient_id]
        assert str(ds.PatientName) == planted["PatientName"]
        assert "RIVERSIDE" in ds.InstitutionName.upper()
        assert "Riverside Avenue" in ds.InstitutionAddress
        private = [e for e in ds if e.tag.is_private and not e.tag.is_private_creator]
        assert planted["PatientID"] in [str(e.value) for e in private]
    manifest = load_manifest(sites["B"])
    ingested = ingest_cohort(manifest, tmp_path / "work", n_jobs=1, progress=False)
    assert ingested.exclusions.empty
    assert set(ingested.series["vendor"]) >= {"Canon", "Siemens"}
    secrets = {s for s in truth.planted_strings() if len(s) >= 4}
    for path in (tmp_path / "work").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in content, (secret, path.name)


def test_site_within_a_site_is_no_label_proxy():
    # the site's draws (scanner, position) are independent of the class inside the site
    plans = pd.DataFrame(plan_cohort(3000, 5, parse_knobs({"preset": "site_b"})))
    for column in ("vendor", "position"):
        assert chi2_contingency(pd.crosstab(plans["label"], plans[column])).pvalue > 0.01
    sizes = plans.groupby("label")["size_cm"].agg(lambda s: s.iloc[0])
    assert sizes[0] == sizes[1]  # size pooled over both classes, as at site A


def test_site_b_plan_follows_its_knobs():
    plans = pd.DataFrame(plan_cohort(4000, 3, parse_knobs({"preset": "site_b"})))
    share = plans["vendor"].value_counts(normalize=True)
    for vendor, weight in SITE_B["vendor_weights"].items():
        assert share[vendor] == pytest.approx(weight, abs=0.03)
    share = plans["position"].value_counts(normalize=True)
    for position, weight in SITE_B["position_weights"].items():
        assert share.get(position, 0.0) == pytest.approx(weight, abs=0.03)
    assert (plans.groupby("patient_id")["label"].first().mean()
            == pytest.approx(SITE_B["myeloma_fraction"], abs=1e-3))
    assert set(plans["centre"]) == {"B"}
    site_a = pd.DataFrame(plan_cohort(4000, 3, parse_knobs({})))
    ratio = plans["size_cm"].iloc[0][0] / site_a["size_cm"].iloc[0][0]
    assert ratio == pytest.approx(SITE_B["lesion_size_scale"])


def test_explicit_site_a_knobs_give_site_a_byte_for_byte(tmp_path):
    site_a = {"site_name": "A", "vendor_weights": VENDOR_WEIGHTS,
              "position_weights": dict(zip(POSITIONS, POSITION_WEIGHTS, strict=True)),
              "field_contrast": 0.0, "intensity_scale": 1.0, "lesion_size_scale": 1.0,
              "slice_thickness_mm": None, "slice_gap_mm": None, "pixel_mm": None,
              "myeloma_fraction": None}
    default = make_cohort(tmp_path / "default", n_patients=2, seed=4, n_jobs=1,
                          progress=False).parent
    explicit = make_cohort(tmp_path / "explicit", n_patients=2, seed=4, n_jobs=1,
                           progress=False, **site_a).parent

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((root / "manifest").rglob("*")) if p.is_file()}

    assert digest(default) == digest(explicit)


def test_site_knobs_are_checked():
    for knobs, match in (
        ({"vendor_weights": {"toshiba": 1.0}}, "vendor_weights"),
        ({"vendor_weights": {"canon": -1.0}}, "vendor_weights"),
        ({"position_weights": {"XYZ": 1.0}}, "position_weights"),
        ({"slice_thickness_mm": 0.0}, "slice_thickness_mm"),
        ({"slice_gap_mm": -1}, "slice_gap_mm"),
        ({"pixel_mm": "fine"}, "pixel_mm"),
        ({"intensity_scale": 0}, "intensity_scale"),
        ({"myeloma_fraction": 1.0}, "myeloma_fraction"),
        ({"lesion_size_scale": 5}, "lesion_size_scale"),
        ({"field_contrast": True}, "field_contrast"),
        ({"site_name": ""}, "site_name"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_knobs(knobs)
    with pytest.raises(ValueError, match="site_b"):
        parse_knobs({"preset": "site_c"})
    assert "site_b" in PRESETS and set(SITE_B["vendor_weights"]) <= set(VENDORS)
    # explicit knobs override the preset's
    assert parse_knobs({"preset": "site_b", "site_name": "C"}).site_name == "C"
