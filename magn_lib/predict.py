"""Score new lesions with an exported model bundle (``magn predict --model BUNDLE``).

A lesion goes through the steps of the study (:mod:`magn_lib.bundle` records them): its DICOM
series are read (:func:`magn_lib.dicom.read_series`), its sagittal mask (NIfTI, or NRRD as
3D Slicer and ITK-SNAP save it) is checked against the sagittal grid and transferred to the
other views (:func:`magn_lib.transfer.transfer_mask`), the lesion-centred crops are cut with the
bundle's crop size (:func:`magn_lib.crops.crop_lesion`), and every fold model scores it, in
batches of the training batch size (CPU convolutions differ in the last digits with the batch
size; the study's held-out predictions were scored so).

Per lesion (:func:`predict_case`, or every lesion of a manifest with :func:`predict_manifest`,
which also writes one CSV) the outputs go to ``<out>/<lesion id>/``:

- ``prediction.json``: the calibrated probability of multiple myeloma (the mean of the fold
  models' Platt-calibrated probabilities), the call at the bundle's operating point, every
  fold model's raw and calibrated probability, their spread (min–max, SD) and the "models
  disagree" flag (:data:`magn_lib.bundle.DISAGREEMENT_RANGE`), the input checks against the
  training ranges, the in-sample warning, and the research-use disclaimer;
- ``case_report.html``: the same for a reader, one self-contained file, with each view's crop,
  its (transferred) mask and the Grad-CAM overlay (:func:`magn_lib.explain.gradcam`) of one
  fold model: the fold model that held the patient out for a training patient, else the fold
  model whose calibrated probability is the median.

**In-sample**: a lesion of a training patient (its study id given, or its sagittal volume's
voxels identical to a training patient's) was seen by every fold model but one; the report
says so and gives that one held-out model's probability as the only out-of-sample one.

**Identity**: nothing read from the DICOM headers reaches an output (only geometry, pixel
values and the whitelisted acquisition parameters for the checks); the lesion is named by the
id the user gives (letters, digits, ``._-``), input paths are not written, and identifying
header values are removed from error messages.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from magn_lib import __version__
from magn_lib.bundle import (
    DISAGREEMENT_RANGE,
    INTENSITY_PERCENTILES,
    Bundle,
    finite_json,
    volume_fingerprint,
)
from magn_lib.crops import Crop, CropCache, LesionCrops, crop_lesion
from magn_lib.data import CropDataset
from magn_lib.dicom import read_series, series_identity
from magn_lib.errors import InputError
from magn_lib.layout import PredictionPaths
from magn_lib.manifest import GRID_TOLERANCE_MM
from magn_lib.report import atomic_write_text

__all__ = [
    "DISCLAIMER",
    "PREDICTION_FORMAT",
    "RANGE_MARGIN",
    "CaseInput",
    "format_probability",
    "predict_case",
    "predict_manifest",
    "read_mask",
]

PREDICTION_FORMAT = "magn-prediction/1"
DISCLAIMER = ("Research use only. This is not a medical device and has not been validated for "
              "clinical use; it must not guide the diagnosis or treatment of a patient.")
#: An acquisition value counts as outside the training range when it lies more than this
#: fraction beyond the range's ends (absorbs rounding in the headers).
RANGE_MARGIN = 0.05
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PARAMETER_NAMES = {
    "pixel_spacing_mm": ("pixel spacing", "mm"),
    "slice_thickness_mm": ("slice thickness", "mm"),
    "slice_spacing_mm": ("slice spacing", "mm"),
    "intensity_p_low": (f"{INTENSITY_PERCENTILES[0]:g}th intensity percentile", ""),
    "intensity_p_high": (f"{INTENSITY_PERCENTILES[1]:g}th intensity percentile", ""),
}


def format_probability(p: float) -> str:
    """A probability with the digits it needs: ``0.713``, ``1.2e-05``, ``1 − 3.4e-06``."""
    p = float(p)
    if not math.isfinite(p):
        return "n/a"
    if 0.001 <= p <= 0.999:
        return f"{p:.3f}"
    if p < 0.001:
        return f"{p:.2g}" if p > 0 else "0 (below float precision)"
    rest = 1.0 - p
    return f"1 − {rest:.2g}" if rest > 0 else "1 (to float precision)"


@dataclass(frozen=True)
class CaseInput:
    """One lesion to score: the series folders by view, the sagittal mask and its label, the
    user's id for the lesion and, when known, the study (pseudonymous) id of its patient."""

    lesion_id: str
    series: Mapping[str, str | PathLike[str]]
    mask: str | PathLike[str]
    mask_label: int = 1
    patient_id: str | None = None


@dataclass
class _Prepared:
    """One lesion read, checked and cropped: its crops by view, the input checks that fired,
    the sagittal volume's fingerprint and each view's acquisition parameters (as the input
    checks read them from the headers: ``pixel_spacing_mm``, ``slice_thickness_mm``,
    ``slice_spacing_mm``, ``field_strength_t``, ``vendor``)."""

    case: CaseInput
    crops: dict[str, Crop]
    checks: list[dict[str, Any]]
    fingerprint: str
    acquisition: dict[str, dict[str, Any]] = field(default_factory=dict)


def _check_id(value: str | None, what: str) -> None:
    if value is not None and not _SAFE_ID.match(str(value)):
        raise InputError(f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-' "
                         "(it names the output files)", hint=f"give a study id as --{what}")


# ----------------------------------------------------------------------------------- the mask

def _nrrd_as_nifti(path: Path) -> nib.Nifti1Image:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected a 3D single-component mask, got {img.GetDimension()}D with "
                         f"{img.GetNumberOfComponentsPerPixel()} component(s)", file=path,
                         hint="export one segment as a labelmap (3D Slicer: Export to file)")
    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # ITK's array view is [k, j, i]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = lps_to_ras @ np.array(img.GetOrigin())
    return nib.Nifti1Image(data, affine)


def read_mask(path: str | PathLike[str]) -> nib.Nifti1Image:
    """A lesion mask as NIfTI (affine: voxel → world RAS+ mm) from a ``.nii``/``.nii.gz`` or a
    ``.nrrd``/``.nhdr`` file (LPS in the file, as 3D Slicer and ITK-SNAP write it).

    Raises:
        InputError: a missing file, another format, or a file that cannot be read (named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("the mask file does not exist", file=path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            img = nib.load(path)
            return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
        if name.endswith((".nrrd", ".nhdr")):
            return _nrrd_as_nifti(path)
    except InputError:
        raise
    except Exception as exc:  # a damaged file: name it, whatever the reader raised
        raise InputError(f"the mask cannot be read ({type(exc).__name__}: {exc})",
                         file=path) from None
    raise InputError("the mask must be NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr)", file=path)


def _on_grid(mask: nib.Nifti1Image, sagittal: nib.Nifti1Image, *, label: int, file: Path,
             patient: str) -> nib.Nifti1Image:
    """The binary lesion mask on the sagittal grid; a mask saved on a sub-box of that grid (as
    3D Slicer crops segmentations to their extent) is padded back onto it."""
    data = np.asanyarray(mask.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    binary = (np.rint(data) == label).astype(np.uint8)
    shape = sagittal.shape[:3]
    # where the mask's voxel (0, 0, 0) and its axes fall on the sagittal grid
    to_grid = np.linalg.inv(sagittal.affine) @ mask.affine
    axes_match = np.allclose(to_grid[:3, :3], np.eye(3), atol=1e-3)
    offset = to_grid[:3, 3]
    zooms = np.linalg.norm(sagittal.affine[:3, :3], axis=0)
    # the manifest's tolerance: voxel centres at most GRID_TOLERANCE_MM from the series' own
    integral = bool(np.all(np.abs(offset - np.rint(offset)) * zooms <= GRID_TOLERANCE_MM))
    corner_mm = float(np.linalg.norm(mask.affine[:3, 3] - sagittal.affine[:3, 3]))
    if not (axes_match and integral):
        raise InputError(
            f"the mask is not on the sagittal series' grid (mask {binary.shape} voxels, series "
            f"{shape}; first voxel {corner_mm:.2f} mm apart, axes "
            f"{'equal' if axes_match else 'different'})", patient=patient, file=file,
            hint="save the mask on the sagittal series as loaded from its DICOM folder")
    start = np.rint(offset).astype(int)
    if binary.shape != shape or start.any():
        if (start < 0).any() or (start + binary.shape > np.array(shape)).any():
            raise InputError(f"the mask's box reaches outside the sagittal series (offset "
                             f"{start.tolist()}, size {list(binary.shape)}, series "
                             f"{list(shape)})", patient=patient, file=file)
        full = np.zeros(shape, dtype=np.uint8)
        full[tuple(slice(s, s + n) for s, n in zip(start, binary.shape, strict=True))] = binary
        binary = full
    elif not np.allclose(mask.affine, sagittal.affine, atol=GRID_TOLERANCE_MM):
        raise InputError("the mask is not on the sagittal series' grid", patient=patient,
                         file=file, hint="save the mask on the converted sagittal series")
    if not binary.any():
        raise InputError(f"the mask holds no voxel of label {label}", patient=patient,
                         file=file, hint="give the lesion's value with --mask-label")
    return nib.Nifti1Image(binary, sagittal.affine)


# -------------------------------------------------------------------------------- input checks

def _outside(value: float, bounds: Sequence[float] | None) -> bool:
    if bounds is None or value is None or not math.isfinite(float(value)):
        return False
    lo, hi = bounds
    return float(value) < lo - RANGE_MARGIN * abs(lo) or float(value) > hi + RANGE_MARGIN * abs(hi)


def _fmt_range(bounds: Sequence[float], unit: str) -> str:
    lo, hi = (f"{b:.3g}" for b in bounds)
    text = lo if lo == hi else f"{lo}–{hi}"
    return f"{text} {unit}".strip()


def _input_checks(view: str, meta: Mapping[str, Any], intensity: tuple[float, float],
                  ranges: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every way the series of ``view`` lies outside the training ranges (one dict each)."""
    checks = []
    values = {
        "pixel_spacing_mm": list(meta.get("pixel_spacing_mm") or []),
        "slice_thickness_mm": [meta.get("slice_thickness_mm")],
        "slice_spacing_mm": [meta.get("slice_spacing_mm")],
        "intensity_p_low": [intensity[0]],
        "intensity_p_high": [intensity[1]],
    }
    for key, found in values.items():
        bounds = ranges.get(key)
        bad = [v for v in found if v is not None and _outside(v, bounds)]
        if bad:
            label, unit = _PARAMETER_NAMES[key]
            shown = " × ".join(f"{float(v):.3g}" for v in found if v is not None)
            checks.append({
                "view": view, "parameter": key, "value": [float(v) for v in found if v is not None],
                "training_range": list(bounds),
                "message": f"{view} {label} {shown} {unit}".rstrip()
                           + f", outside the {_fmt_range(bounds, unit)} the model was trained on",
            })
    field_t = meta.get("field_strength_t")
    fields = ranges.get("field_strength_t")
    if field_t is not None and fields and not any(abs(field_t - f) < 0.05 for f in fields):
        checks.append({"view": view, "parameter": "field_strength_t", "value": [field_t],
                       "training_range": fields,
                       "message": f"{view} field strength {field_t:g} T; the model was trained "
                                  f"on {', '.join(f'{f:g}' for f in fields)} T only"})
    vendor = meta.get("vendor")
    vendors = ranges.get("vendors")
    if vendor and vendors and vendor not in vendors:
        checks.append({"view": view, "parameter": "vendor", "value": [vendor],
                       "training_range": vendors,
                       "message": f"{view} scanner vendor {vendor}; the model was trained on "
                                  f"{', '.join(vendors)} only"})
    return checks


def _crop_checks(view: str, crop: Crop) -> list[dict[str, Any]]:
    out = []
    if crop.mask_truncated:
        out.append({"view": view, "parameter": "mask_truncated", "value": [True],
                    "training_range": None,
                    "message": f"{view}: the lesion is larger than the crop; part of it is "
                               "not seen by the model"})
    if crop.clipped:
        out.append({"view": view, "parameter": "clipped", "value": [True],
                    "training_range": None,
                    "message": f"{view}: the crop reaches beyond the image (zero padding)"})
    return out


def _transfer_checks(view: str, sagittal_mask: nib.Nifti1Image, moved: nib.Nifti1Image
                     ) -> list[dict[str, Any]]:
    from magn_lib.stages import _flag
    from magn_lib.transfer import mask_centroid_world, mask_volume_mm3

    n_voxels = int(np.count_nonzero(np.asanyarray(moved.dataobj)))
    source = mask_volume_mm3(sagittal_mask)
    ratio = mask_volume_mm3(moved) / source if source else float("nan")
    shift = (float(np.linalg.norm(mask_centroid_world(moved) - mask_centroid_world(
        sagittal_mask))) if n_voxels else float("nan"))
    reason = _flag(n_voxels, ratio, shift, view)
    if not reason:
        return []
    return [{"view": view, "parameter": "mask_transfer", "value": [ratio, shift],
             "training_range": None, "message": reason}]


# ------------------------------------------------------------------------------------ a case

def _scrubbed(exc: InputError, secrets: Sequence[str]) -> InputError:
    problem = exc.problem
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            problem = problem.replace(secret, "[redacted]")
    return InputError(problem, patient=exc.patient, file=exc.file, hint=exc.hint)


def _identity_values(folders: Sequence[Path]) -> list[str]:
    values: set[str] = set()
    for folder in folders:
        try:
            found = series_identity(folder)
        except Exception:  # unreadable: read_series reports it
            continue
        for value in found.values():
            values.add(value)
            values.update(part for part in value.replace("^", " ").split() if len(part) >= 4)
    return sorted(values)


def _acquisition(folder: Path, img: nib.Nifti1Image) -> dict[str, Any]:
    """The acquisition parameters the input checks compare, as
    :func:`magn_lib.dicom.series_metadata` gives them, without a second scan of the series:
    spacings from the volume read (``[i, j, k]`` = columns, rows, slices), the rest from the
    first readable header."""
    import pydicom

    from magn_lib.dicom import _vendor

    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    out: dict[str, Any] = {"pixel_spacing_mm": (zooms[1], zooms[0]),
                           "slice_spacing_mm": zooms[2], "slice_thickness_mm": None,
                           "field_strength_t": None, "vendor": None}
    tags = ["Manufacturer", "MagneticFieldStrength", "SliceThickness", "Rows"]
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except Exception:  # not DICOM (read_series already accepted the series)
            continue
        if "Rows" not in ds:
            continue
        for key, keyword in (("slice_thickness_mm", "SliceThickness"),
                             ("field_strength_t", "MagneticFieldStrength")):
            value = ds.get(keyword)
            try:
                out[key] = None if value in (None, "") else float(value)
            except (TypeError, ValueError):
                out[key] = None
        out["vendor"] = _vendor(str(ds.get("Manufacturer", "") or ""))
        break
    return out


def _prepare(bundle: Bundle, case: CaseInput,
             cache: dict[str, tuple[Any, dict[str, Any], tuple[float, float]]] | None = None
             ) -> _Prepared:
    """Read, check and crop one lesion; ``cache`` keeps each series read (a patient's series
    serve all its lesions in a batch)."""
    _check_id(case.lesion_id, "lesion-id")
    _check_id(case.patient_id, "patient-id")
    name = case.lesion_id
    views = bundle.meta["preprocessing"]["views_read"]
    missing = [v for v in views if v not in case.series]
    if missing:
        raise InputError(f"no series given for view(s) {', '.join(missing)}", patient=name,
                         hint="give --sagittal, --coronal and --axial")
    folders = {v: Path(case.series[v]) for v in views}
    cache = {} if cache is None else cache
    try:
        volumes, checks, acquisition = {}, [], {}
        for view in views:
            key = str(folders[view].absolute())
            if key not in cache:
                img = read_series(folders[view], patient=name)
                data = np.asarray(img.dataobj, dtype=np.float32)
                cache[key] = (img, _acquisition(folders[view], img),
                              tuple(float(x) for x in np.percentile(data, INTENSITY_PERCENTILES)))
            volumes[view], meta, intensity = cache[key]
            acquisition[view] = dict(meta)
            checks += _input_checks(view, meta, intensity, bundle.ranges.get(view, {}))
        sagittal = volumes["sagittal"]
        lesion = _on_grid(read_mask(case.mask), sagittal, label=case.mask_label,
                          file=Path(case.mask), patient=name)
        crops = {}
        for view in bundle.config.views:
            if view == "sagittal":
                view_mask = lesion
            else:
                from magn_lib.transfer import transfer_mask

                view_mask = transfer_mask(lesion, volumes[view])
                checks += _transfer_checks(view, lesion, view_mask)
            crops[view] = crop_lesion(volumes[view], view_mask, view=view,
                                      size=bundle.crop_size, lesion_id=name, patient_id=name)
            checks += _crop_checks(view, crops[view])
    except InputError as exc:
        # identifying header values are looked up only now (one more header scan per series)
        raise _scrubbed(exc, _identity_values(list(folders.values()))) from None
    return _Prepared(case=case, crops=crops, checks=checks,
                     fingerprint=volume_fingerprint(sagittal), acquisition=acquisition)


def _score(bundle: Bundle, prepared: Sequence[_Prepared]) -> np.ndarray:
    """Raw MM probability of every fold model for every case: ``[n_cases, n_folds]``, in
    batches of the training batch size."""
    from magn_lib.train import predict

    cache = CropCache.from_lesions(
        [LesionCrops(lesion_id=f"case{i}", patient_id=f"case{i}", label=0, crops=p.crops)
         for i, p in enumerate(prepared)],
        views=bundle.config.views, crop_size=bundle.crop_size)
    dataset = CropDataset(cache, views=bundle.config.views)
    columns = [predict(model, dataset, batch_size=bundle.batch_size)["probability"].to_numpy()
               for _, model in sorted(bundle.models.items())]
    return np.stack(columns, axis=1)


def _in_sample(bundle: Bundle, prepared: _Prepared) -> dict[str, Any] | None:
    patients = bundle.training_patients
    by_id = prepared.case.patient_id if prepared.case.patient_id in patients else None
    by_image = bundle.patient_of_volume(prepared.fingerprint)
    patient = by_id or by_image
    if patient is None:
        return None
    how = [w for w, hit in (("study patient id", by_id), ("identical sagittal image", by_image))
           if hit]
    return {"patient_id": patient, "matched_by": how, "held_out_fold": patients[patient]}


def _result(bundle: Bundle, prepared: _Prepared, raw: np.ndarray) -> dict[str, Any]:
    cal = bundle.calibration
    folds = sorted(bundle.models)
    calibrated = cal.calibrate(raw)
    probability = float(np.mean(calibrated))
    fold_calls = [cal.call(float(c)) for c in calibrated]
    spread = {"min": float(calibrated.min()), "max": float(calibrated.max()),
              "sd": float(np.std(calibrated, ddof=1)) if len(calibrated) > 1 else 0.0}
    spread["range"] = spread["max"] - spread["min"]
    disagree = bool(spread["range"] > DISAGREEMENT_RANGE or len(set(fold_calls)) > 1)
    in_sample = _in_sample(bundle, prepared)
    fold_rows = []
    for fold, p_raw, p_cal, call in zip(folds, raw, calibrated, fold_calls, strict=True):
        fold_rows.append({"fold": fold, "probability_raw": float(p_raw),
                          "probability_calibrated": float(p_cal), "call": call,
                          "trained_on_this_patient": bool(in_sample is not None
                                                          and in_sample["held_out_fold"] != fold)})
    warnings = []
    if in_sample is not None:
        held = in_sample["held_out_fold"]
        in_sample["held_out_probability"] = float(calibrated[folds.index(held)])
        warnings.append(
            f"In-sample: this lesion's patient ({in_sample['patient_id']}, recognised by "
            f"{' and '.join(in_sample['matched_by'])}) was in the training cohort: "
            f"{len(folds) - 1} of the {len(folds)} fold models saw it in training; only fold "
            f"model {held} did not, and its calibrated probability is "
            f"{format_probability(in_sample['held_out_probability'])}. The ensemble's "
            "probability is not an out-of-sample estimate.")
    if disagree:
        warnings.append(
            f"Models disagree: the fold models' calibrated probabilities span "
            f"{format_probability(spread['min'])}–{format_probability(spread['max'])}"
            + (" and fall on both sides of the threshold" if len(set(fold_calls)) > 1 else "")
            + f" (flag: range > {DISAGREEMENT_RANGE} or split calls).")
    if cal.no_signal:
        warnings.insert(0, "No signal: out of fold this model did not rank multiple myeloma "
                           "above metastasis, so every lesion gets the training prevalence as "
                           "its probability. The call carries no information.")
    warnings += [c["message"] for c in prepared.checks]
    init = {m.init_report.get("used") for m in bundle.models.values()}
    warnings += sorted({m.init_report["message"] for m in bundle.models.values()
                        if m.init_report.get("message")})
    op = cal.operating_point
    return {
        "format": PREDICTION_FORMAT,
        "lesion_id": prepared.case.lesion_id,
        "patient_id": prepared.case.patient_id,
        "probability_mm": probability,
        "probability_mm_text": format_probability(probability),
        "call": cal.call(probability),
        "threshold": cal.threshold,
        "operating_point": {"rule": cal.rule, "target_sensitivity": cal.target_sensitivity,
                            "cross_validated": op.get("cross_validated"),
                            "apparent": op.get("apparent")},
        "fold_models": fold_rows,
        "spread": spread,
        "models_disagree": disagree,
        "disagreement_rule": f"calibrated fold probabilities span more than "
                             f"{DISAGREEMENT_RANGE}, or fall on both sides of the threshold",
        "in_sample": in_sample,
        "input_checks": prepared.checks,
        "warnings": warnings,
        "crops": {v: {"slice_index": int(c.slice_index), "clipped": bool(c.clipped),
                      "mask_truncated": bool(c.mask_truncated),
                      "pixel_spacing_mm": list(c.pixel_spacing_mm)}
                  for v, c in prepared.crops.items()},
        "model": {"config": bundle.config.name, "bundle_format": bundle.meta["format"],
                  "trained_with_magn": bundle.meta["magn_version"],
                  "trained_at_commit": (bundle.meta.get("git") or {}).get("commit"),
                  "initialisation": sorted(str(i) for i in init),
                  "simulated_training_cohort": bool(bundle.meta["run"].get("embedded_cohort"))},
        "predicted_with_magn": __version__,
        "disclaimer": DISCLAIMER,
    }


# ---------------------------------------------------------------------------------- the report

def _explained_fold(result: Mapping[str, Any]) -> int:
    if result["in_sample"] is not None:
        return int(result["in_sample"]["held_out_fold"])
    rows = result["fold_models"]
    median = float(np.median([r["probability_calibrated"] for r in rows]))
    return int(min(rows, key=lambda r: abs(r["probability_calibrated"] - median))["fold"])


def _figure_png(bundle: Bundle, prepared: _Prepared, result: Mapping[str, Any], fold: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from magn_lib.explain import gradcam

    model = bundle.models[fold]
    views = list(bundle.config.views)
    images = {v: torch.from_numpy(prepared.crops[v].image)[None] for v in views}
    target = [1 if result["call"] == "multiple myeloma" else 0]
    with torch.enable_grad():
        cams = gradcam(model, images, targets=target)
    fig, axes = plt.subplots(len(views), 3, figsize=(7.5, 2.6 * len(views)), squeeze=False)
    for row, view in enumerate(views):
        crop = prepared.crops[view]
        middle = crop.image[1]
        for col, title in enumerate(("crop", "lesion mask", "Grad-CAM")):
            ax = axes[row, col]
            ax.imshow(middle, cmap="gray", vmin=0, vmax=1)
            if col == 1 and crop.mask.any():
                ax.contour(crop.mask, levels=[0.5], colors=["#ffd400"], linewidths=1.2)
            if col == 2:
                ax.imshow(cams[view][0], cmap="jet", alpha=0.4, vmin=0, vmax=1)
            ax.set_title(f"{view}: {title}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1b1b;
background:#fafafa}
main{max-width:860px;margin:0 auto;padding:16px 20px 40px;background:#fff}
h1{font-size:1.4rem;margin:.4rem 0}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid
#ddd;padding-bottom:.2rem}
.result{display:flex;flex-wrap:wrap;gap:12px;align-items:baseline}
.prob{font-size:2rem;font-weight:600}.call{font-size:1.2rem;padding:2px 10px;border-radius:4px;
background:#e8eef8}
.warn{background:#fff4e0;border-left:4px solid #e69500;padding:8px 12px;margin:8px 0}
.note{background:#eef2f5;border-left:4px solid #6b7b8c;padding:8px 12px;margin:8px 0}
table{border-collapse:collapse;width:100%;font-size:.9rem}
td,th{border-bottom:1px solid #e3e3e3;padding:4px 6px;text-align:left;overflow-wrap:anywhere}
figure{margin:0}img{max-width:100%;height:auto;display:block}
.small{font-size:.85rem;color:#555}
"""


def _case_html(result: Mapping[str, Any], png: str, fold: int) -> str:
    esc = html.escape
    op = result["operating_point"]
    cross = op.get("cross_validated") or {}

    def ci(metric: str) -> str:
        m = cross.get(metric) or {}
        values = [m.get(k) for k in ("estimate", "ci_low", "ci_high")]
        if any(v is None or not math.isfinite(v) for v in values):
            return "not estimable (too few lesions)" if values[0] is None or not \
                math.isfinite(values[0]) else f"{values[0]:.2f} (no interval: too few patients)"
        return f"{values[0]:.2f} (95 % CI {values[1]:.2f}–{values[2]:.2f})"

    rule = ("Youden's J" if op["rule"] == "youden"
            else f"target sensitivity {op['target_sensitivity']}")
    warnings = "".join(f'<div class="warn">{esc(w)}</div>' for w in result["warnings"]) or \
        '<div class="note">No input check fired: every acquisition parameter checked lies in ' \
        "the training ranges.</div>"
    rows = "".join(
        f"<tr><td>{r['fold']}</td><td>{esc(format_probability(r['probability_raw']))}</td>"
        f"<td>{esc(format_probability(r['probability_calibrated']))}</td><td>{esc(r['call'])}"
        f"</td><td>{'yes' if r['trained_on_this_patient'] else 'no'}</td></tr>"
        for r in result["fold_models"])
    spread = result["spread"]
    model = result["model"]
    simulated = ("<p class=\"note\">The models were trained on a <b>simulated</b> cohort "
                 "(synthetic phantoms): their probabilities say nothing about real patients."
                 "</p>" if model["simulated_training_cohort"] else "")
    init = ", ".join(model["initialisation"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MAGN case report: lesion {esc(result['lesion_id'])}</title>
<style>{_CSS}</style></head>
<body><main>
<p class="warn"><b>{esc(DISCLAIMER)}</b></p>
<h1>Lesion {esc(result['lesion_id'])}</h1>
<div class="result"><span class="prob">{esc(result['probability_mm_text'])}</span>
<span>calibrated probability of multiple myeloma</span>
<span class="call">{esc(result['call'])}</span></div>
<p>Call at the model's operating point: multiple myeloma when the probability is ≥
{result['threshold']:.4g} ({esc(rule)} on the out-of-fold predictions). Sensitivity and
specificity of this rule on lesions it was not fitted on: {ci('sensitivity')} and
{ci('specificity')}.</p>
{simulated}
<h2>Warnings and input checks</h2>
{warnings}
<h2>Fold models</h2>
<p>Spread of the calibrated probabilities: {esc(format_probability(spread['min']))} –
{esc(format_probability(spread['max']))} (SD {spread['sd']:.3f}).
Models disagree: <b>{'yes' if result['models_disagree'] else 'no'}</b>
(flag: {esc(result['disagreement_rule'])}).</p>
<table><thead><tr><th>fold model</th><th>raw probability</th><th>calibrated</th>
<th>call</th><th>trained on this patient</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Where the model looked</h2>
<figure><img alt="crops, masks and Grad-CAM of lesion {esc(result['lesion_id'])}"
src="data:image/png;base64,{png}">
<figcaption class="small">Per view: the crop the model reads (middle of its three slices),
the lesion mask (sagittal as given; coronal and axial transferred through world
coordinates) and the Grad-CAM heatmap of fold model {fold} for the called class (red = most
evidence). Grad-CAM shows what drove the score, not where the lesion is.</figcaption></figure>
<h2>Model</h2>
<table><tbody>
<tr><th>configuration</th><td>{esc(model['config'])}</td></tr>
<tr><th>trained with</th><td>magn {esc(str(model['trained_with_magn']))}, commit
{esc(str(model['trained_at_commit']))}</td></tr>
<tr><th>initialisation</th><td>{esc(init)}</td></tr>
<tr><th>scored with</th><td>magn {esc(result['predicted_with_magn'])}</td></tr>
</tbody></table>
<p class="small">{esc(DISCLAIMER)}</p>
</main></body></html>
"""


def _write_case(out: Path, bundle: Bundle, prepared: _Prepared, result: dict[str, Any],
                report: bool, pdf: bool = False) -> None:
    files = PredictionPaths(out)
    lesion_id = prepared.case.lesion_id
    if report:
        fold = _explained_fold(result)
        result["gradcam_fold"] = fold
        html_path = files.case_report(lesion_id)
        atomic_write_text(html_path,
                          _case_html(result, _figure_png(bundle, prepared, result, fold), fold))
        if pdf:
            from magn_lib.report import print_pdf

            why_not = print_pdf(html_path, html_path.with_suffix(".pdf"))
            result["case_report_pdf"] = why_not or html_path.with_suffix(".pdf").name
    atomic_write_text(files.prediction(lesion_id),
                      json.dumps(finite_json(result), indent=2, allow_nan=False))


# --------------------------------------------------------------------------------- entry points

def predict_case(bundle: Bundle, case: CaseInput, out: str | PathLike[str] | None = None, *,
                 report: bool = True, pdf: bool = False) -> dict[str, Any]:
    """Score one lesion; with ``out``, write ``<out>/<lesion id>/prediction.json`` and
    ``case_report.html`` (see the module doc), and with ``pdf`` also ``case_report.pdf``
    printed from it by Chromium (:func:`magn_lib.report.print_pdf`; when it cannot, the JSON's
    ``case_report_pdf`` says why). Returns the prediction (what the JSON holds).

    Raises:
        InputError: a bad id, a missing view, an unreadable series or mask, a mask off the
            sagittal grid (the error names the file) — before anything is written.
    """
    prepared = _prepare(bundle, case)
    result = _result(bundle, prepared, _score(bundle, [prepared])[0])
    if out is not None:
        _write_case(Path(out), bundle, prepared, result, report, pdf)
    return result


CSV_COLUMNS = ("lesion_id", "patient_id", "status", "probability_mm", "call", "threshold",
               "fold_min", "fold_max", "fold_sd", "models_disagree", "in_sample",
               "n_input_warnings", "error")


def predict_manifest(
    bundle: Bundle,
    manifest_dir: str | PathLike[str],
    out: str | PathLike[str],
    *,
    report: bool = True,
    pdf: bool = False,
    on_lesion: Callable[[str], None] | None = None,
    timings: dict[str, float] | None = None,
    on_prepared: Callable[[_Prepared], None] | None = None,
) -> pd.DataFrame:
    """Score every lesion of a manifest (:func:`magn_lib.manifest.load_manifest`); write each
    lesion's outputs under ``<out>/<lesion id>/`` and ``<out>/predictions.csv`` (one row per
    lesion, :data:`CSV_COLUMNS` plus ``p_fold<k>`` raw probabilities).

    A lesion that cannot be read gets a row with ``status = "error"`` and the reason (other
    lesions go on); lesions are scored together in batches of the training batch size.
    ``timings`` (if given) receives the seconds spent preparing, scoring and reporting;
    ``on_prepared`` (if given) is called with each lesion read and cropped (its crops and
    acquisition parameters, before scoring), e.g. to score the same crops with another model.

    Returns:
        The CSV's table.
    """
    from magn_lib.manifest import load_manifest

    out = Path(out)
    views = bundle.meta["preprocessing"]["views_read"]
    manifest = load_manifest(manifest_dir, views=views)
    clock = {"prepare": 0.0, "score": 0.0, "report": 0.0}
    cases = [CaseInput(lesion_id=str(lesion.lesion_id), patient_id=str(lesion.patient_id),
                       series={v: manifest.series_folder(lesion.patient_id, v) for v in views},
                       mask=manifest.mask_path(lesion.lesion_id),
                       mask_label=int(getattr(lesion, "mask_label", 1) or 1))
             for lesion in manifest.lesions.itertuples()]
    series_cache: dict[str, Any] = {}
    current = {"patient": None}

    def prepare(case: CaseInput) -> _Prepared:
        if case.patient_id != current["patient"]:  # keep one patient's series at a time
            series_cache.clear()
            current["patient"] = case.patient_id
        t0 = time.perf_counter()
        try:
            return _prepare(bundle, case, series_cache)
        finally:
            clock["prepare"] += time.perf_counter() - t0

    # reading the next lesions (Python, DICOM) overlaps with scoring the last batch (torch,
    # which releases the interpreter lock): one reader thread, lesions in manifest order
    prepared, failed, parts, batch = [], [], [], []

    def score(batch: list[_Prepared]) -> None:
        t0 = time.perf_counter()
        parts.append(_score(bundle, batch))
        clock["score"] += time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as reader:
        for case, future in [(c, reader.submit(prepare, c)) for c in cases]:
            try:
                item = future.result()
            except InputError as exc:
                failed.append({"lesion_id": case.lesion_id, "patient_id": case.patient_id,
                               "status": "error", "error": exc.problem})
                continue
            if on_prepared is not None:
                on_prepared(item)
            batch.append(item)
            if len(batch) == bundle.batch_size:
                prepared += batch
                score(batch)
                batch = []
    if batch:
        prepared += batch
        score(batch)
    raw = np.concatenate(parts) if parts else np.zeros((0, len(bundle.models)))
    t0 = time.perf_counter()
    rows = []
    folds = sorted(bundle.models)
    for case_data, probabilities in zip(prepared, raw, strict=True):
        result = _result(bundle, case_data, probabilities)
        _write_case(out, bundle, case_data, result, report, pdf)
        rows.append({
            "lesion_id": result["lesion_id"], "patient_id": result["patient_id"],
            "status": "ok", "probability_mm": result["probability_mm"], "call": result["call"],
            "threshold": result["threshold"], "fold_min": result["spread"]["min"],
            "fold_max": result["spread"]["max"], "fold_sd": result["spread"]["sd"],
            "models_disagree": result["models_disagree"],
            "in_sample": result["in_sample"] is not None,
            "n_input_warnings": len(result["input_checks"]), "error": "",
            **{f"p_fold{k}": float(p) for k, p in zip(folds, probabilities, strict=True)},
        })
        if on_lesion is not None:
            on_lesion(result["lesion_id"])
    clock["report"] = time.perf_counter() - t0
    table = pd.DataFrame(rows + failed)
    for column in CSV_COLUMNS:
        if column not in table:
            table[column] = pd.NA
    table = table[[*CSV_COLUMNS, *(c for c in table.columns if c not in CSV_COLUMNS)]]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(PredictionPaths(out).table, table.to_csv(index=False, float_format="%.10g"))
    if timings is not None:
        timings.update(clock)
    return table
