"""One patient of the cohort: phantom, prescriptions, three rendered series, DICOM files,
masks and the rows the cohort's tables record about them."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from magn_lib.synthetic.anatomy import Spine
from magn_lib.synthetic.dicom_writer import uid, write_series
from magn_lib.synthetic.geometry import LPS_TO_RAS
from magn_lib.synthetic.identity import draw_identity
from magn_lib.synthetic.lesions import LesionSpec, draw_distractors, draw_patient_lesions
from magn_lib.synthetic.masks import label_image, max_diameter_cm, save_mask
from magn_lib.synthetic.planning import Knobs
from magn_lib.synthetic.prescription import prescribe
from magn_lib.synthetic.render import Marrow, Phantom, render_series
from magn_lib.synthetic.scanners import (
    VENDORS,
    CoilSensitivity,
    Vendor,
    rician_noise,
    to_stored,
)

__all__ = ["VIEWS", "field_gain", "generate_patient", "site_vendor"]

VIEWS = ("sagittal", "coronal", "axial")


def _series_folder(patient_id: str, series_no: int, description: str) -> Path:
    """Folder of a series, relative to the manifest: named by number and protocol, never by
    identity (spaces and '+' replaced, as PACS exports do)."""
    folder = Path("dicom") / patient_id / f"{series_no:02d}_{description}"
    return Path(str(folder).replace(" ", "_").replace("+", "plus"))


def site_vendor(vendor: Vendor, knobs: Knobs) -> Vendor:
    """The scanner as the site runs it: its protocols with the site's slice thickness, gap and
    in-plane pixel size where the knobs set them (rows and columns follow the pixel size so
    that each series keeps its field of view), its stored-integer target times
    ``intensity_scale``. The scanner itself when no knob departs from the default."""
    thickness, gap, pixel = knobs.slice_thickness_mm, knobs.slice_gap_mm, knobs.pixel_mm
    if thickness is None and gap is None and pixel is None and knobs.intensity_scale == 1.0:
        return vendor
    series = {}
    for view, spec in vendor.series.items():
        rows, cols = spec.rows, spec.cols
        if pixel is not None:
            rows = max(16, round(spec.rows * spec.pixel / pixel))
            cols = max(16, round(spec.cols * spec.pixel / pixel))
        series[view] = dataclasses.replace(
            spec, thickness=spec.thickness if thickness is None else thickness,
            gap=spec.gap if gap is None else gap, pixel=spec.pixel if pixel is None else pixel,
            rows=rows, cols=cols)
    return dataclasses.replace(vendor, series=series,
                               stored_target=vendor.stored_target * knobs.intensity_scale)


def field_gain(field_t: float, field_contrast: float) -> float:
    """Factor on every lesion's enhancement at field strength ``field_t`` (T):
    ``1 + field_contrast * (field_t - 1.5)`` (1 at 1.5 T; > 1 at 3 T for a positive gain, as
    gadolinium-enhanced lesions stand out more against fat-suppressed marrow at 3 T)."""
    return 1.0 + field_contrast * (field_t - 1.5)


def _enhanced(lesions: tuple[LesionSpec, ...], gain: float) -> tuple[LesionSpec, ...]:
    if gain == 1.0:
        return lesions
    return tuple(dataclasses.replace(les, enhancement=les.enhancement * gain) for les in lesions)


def generate_patient(plan: dict[str, Any], manifest_dir: Path, truth_dir: Path,
                     knobs: Knobs) -> dict[str, Any]:
    """Write one patient's series and masks; return its table rows.

    Everything is drawn from ``plan["seed_seq"]`` in a fixed order, so a patient does not
    depend on the others or on the number of workers.
    """
    rng = np.random.default_rng(plan["seed_seq"])
    vendor = site_vendor(VENDORS[plan["vendor"]], knobs)
    pid = plan["patient_id"]
    position = plan["position"]
    spine = Spine.draw(plan["site"], rng)
    coil = CoilSensitivity.draw(position, spine.origin, rng)
    marker_lps = (None if knobs.marker_ras is None
                  else LPS_TO_RAS @ np.asarray(knobs.marker_ras, float))
    lesions = tuple(draw_patient_lesions(spine, rng, label=plan["label"],
                                         n_lesions=plan["n_lesions"], patient_id=pid,
                                         separability=knobs.separability,
                                         size_cm=plan["size_cm"]))
    marrow = Marrow.draw(rng) if knobs.distractors else None
    distractors = (tuple(draw_distractors(spine, rng, taken={les.k for les in lesions},
                                          separability=knobs.separability, patient_id=pid))
                   if knobs.distractors else ())
    # the field's contrast acts on every lesion alike, whatever its class (and on the
    # unmasked distractors), after all draws: the patient's random stream is the same
    gain = field_gain(vendor.field_t, knobs.field_contrast)
    lesions, distractors = _enhanced(lesions, gain), _enhanced(distractors, gain)
    ph = Phantom(spine=spine, lesions=lesions, fat_residual=vendor.fat_residual, coil=coil,
                 marker_lps=marker_lps, marrow=marrow, distractors=distractors)
    stacks = prescribe(spine, lesions, vendor, position, rng, marker_lps=marker_lps)
    ident = draw_identity(rng, plan, vendor)
    uids = {"study": uid(ident["PatientID"], ident["AccessionNumber"], "study"),
            "frame": uid(ident["PatientID"], ident["AccessionNumber"], "frame")}
    series_rows, lesion_stats, truth_series = [], {}, []
    series_no = int(rng.integers(1, 5))
    for view in VIEWS:
        g = stacks[view]
        img, occ = render_series(ph, g)
        if knobs.noise:
            img = rician_noise(img, vendor.noise, rng)
        stored, slope, intercept = to_stored(img, vendor, rng)
        series_no += int(rng.integers(1, 3))
        folder_rel = _series_folder(pid, series_no, vendor.series[view].description)
        write_series(manifest_dir / folder_rel, g=g, stored=stored, slope=slope,
                     intercept=intercept, vendor=vendor, view=view, series_no=series_no,
                     ident=ident, plan=plan, position=position, uids=uids, rng=rng)
        labels = label_image(occ)
        truth_path = truth_dir / "masks" / f"{pid}_{view}.nii.gz"
        save_mask(truth_path, labels, g)
        if view == "sagittal":
            save_mask(manifest_dir / "masks" / f"{pid}_sagittal.nii.gz", labels, g)
        for les in lesions:
            stats = lesion_stats.setdefault(les.lesion_id, {})
            stats[f"voxels_{view}"] = int((labels == les.number).sum())
            if view == "sagittal":
                stats["size_cm"] = round(max_diameter_cm(labels == les.number, g), 2)
        series_rows.append({"patient_id": pid, "view": view, "folder": folder_rel.as_posix()})
        truth_series.append({
            "patient_id": pid, "view": view, "folder": folder_rel.as_posix(),
            "mask": (truth_dir.name + "/" + truth_path.relative_to(truth_dir).as_posix()),
            "rows": g.rows, "cols": g.cols, "n_slices": g.n_slices,
            "pixel_mm": g.pixel[0], "thickness_mm": g.thickness, "spacing_mm": g.spacing,
            "tilt_deg": round(g.tilt_deg(), 2), "rescale_slope": slope,
            "affine_ras": json.dumps(np.round(g.affine_ras(), 6).tolist()),
        })
    lesion_rows = []
    for les in lesions:
        centre_ras = LPS_TO_RAS @ spine.to_world(*les.centre)
        lesion_rows.append({
            "lesion_id": les.lesion_id, "patient_id": pid, "label": plan["label"],
            "mask_label": les.number, "vertebra": les.level,
            **lesion_stats[les.lesion_id],
            **les.truth_row(),
            "centre_x_ras": round(float(centre_ras[0]), 3),
            "centre_y_ras": round(float(centre_ras[1]), 3),
            "centre_z_ras": round(float(centre_ras[2]), 3),
        })
    patient = {
        "patient_id": pid, "label": plan["label"], "age": plan["age"], "sex": plan["sex"],
        "site": plan["site"], "centre": plan["centre"], "vendor": vendor.key,
        "manufacturer": vendor.manufacturer,
        "field_strength_t": vendor.field_t, "position": position,
        "index_vertebra": spine.levels[3], "curvature_per_mm": round(spine.kappa, 6),
        "tilt_deg": round(math.degrees(spine.phi0), 3),
        "origin_ras": json.dumps(np.round(LPS_TO_RAS @ spine.origin, 3).tolist()),
        "n_distractors": len(distractors),
        "marrow_level": None if marrow is None else round(marrow.level, 4),
    }
    return {"patient": patient, "identity": {"patient_id": pid, **ident}, "series": series_rows,
            "truth_series": truth_series, "lesions": lesion_rows,
            "mask": (Path("masks") / f"{pid}_sagittal.nii.gz").as_posix()}
