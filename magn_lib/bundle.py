"""A portable trained model: one folder that ``magn predict`` needs and nothing else.

:func:`export_bundle` packs one configuration of a finished study run; :func:`load_bundle`
reads it back without the checkout, the run's folders or the cohort's manifest. The bundle is
a **folder** (named ``model.magn`` by convention; zip it to send it, unzip it to use it), so
that every file in it can be read and checked with ordinary tools::

    model.magn/
        bundle.json          format, magn version/commit, the configuration and why it was
                             chosen, network, preprocessing, calibration and operating point,
                             training acquisition ranges, training patients, effective profile
        models/fold<k>.pt    the fold models' weights: {"state_dict", "normalize",
                             "init_report"}, loadable with torch.load(weights_only=True)
        oof.csv              the configuration's out-of-fold predictions (lesion_id,
                             patient_id, fold, label, probability): what calibration used
        model_card.md        the model card, for people
        radiomics/           optional (bundles of runs with the radiomics baseline):
            pipeline.joblib    the frozen radiomics pipeline (selection + classifier), refitted
                               once on every lesion of the training cohort at export
            settings.yaml      the pyradiomics settings its features were extracted with
            oof.csv            its run's out-of-fold predictions (calibration, internal estimate)
        checksums.sha256     SHA-256 of every other file (``sha256sum -c`` format)

What the bundle says about its model:

- **Configuration**: the one asked for, else the multi-view configuration with the highest
  pooled out-of-fold AUC among those whose every fold model was kept (profile key
  ``keep_weights``); every candidate's pooled AUC is recorded beside the choice.
- **Preprocessing**: crop size and the rules of :func:`magn_lib.crops.crop_lesion` (largest
  mask slice and its neighbours, no resampling, 0.5/99.5 percentile scaling inside the crop,
  radiological display orientation) and mask transfer by
  :func:`magn_lib.transfer.transfer_mask`; :mod:`magn_lib.predict` applies exactly those.
- **Calibration and operating point**: :func:`magn_lib.calibration.fit_calibration` on the
  configuration's out-of-fold predictions (never a lesion's own fold model).
- **Training acquisition ranges** per view (pixel spacing, slice thickness and spacing, field
  strength, vendors, the 0.5/99.5 intensity percentiles of each volume) of the patients the
  models were trained on, for the input checks of a new case.
- **Training patients**: their study (pseudonymous) ids, the fold that held each out, and a
  SHA-256 of each sagittal volume's voxel values (so a training patient given under another id
  is recognised too). No DICOM identity is stored.
- **Frozen radiomics pipeline** (``bundle.json``, ``radiomics``; :func:`load_radiomics`): the
  run's radiomics comparator (:func:`magn_lib.cv.radiomics_comparator`) as one scikit-learn
  pipeline (:func:`magn_lib.radiomics.make_radiomics_pipeline`: imputation, random-forest
  selection and classifier, with the run's settings) fitted once on every lesion of the
  training cohort, its Platt calibration and operating point fitted on the run's out-of-fold
  radiomics predictions (the same rule as the network's), and the settings file, so that the
  features of a new lesion are extracted exactly as in training. A bundle without it (an older
  one, or a run without radiomics) loads as before; ``radiomics.included`` is then false and
  ``radiomics.reason`` says why. The pipeline file is a pickle: load bundles you trust only
  (the checksums catch damage, not intent).

:func:`load_bundle` checks the format first (a bundle of another format version is refused,
naming both versions) and then every checksum, before any weight is read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from magn_lib import __version__
from magn_lib.calibration import Calibration, fit_calibration
from magn_lib.config import Profile, resolve_path
from magn_lib.cv import GridConfig, build_model, config_by_name, load_folds
from magn_lib.errors import InputError
from magn_lib.files import default_dir_mode, save, write_csv, write_text
from magn_lib.layout import BundlePaths, GridPaths, ReportPaths, WorkPaths
from magn_lib.model import MAGN
from magn_lib.repro import file_sha256, git_state
from magn_lib.settings import NetworkSettings
from magn_lib.stats import binary_metrics

__all__ = [
    "BUNDLE_FORMAT",
    "DISAGREEMENT_RANGE",
    "INTENSITY_PERCENTILES",
    "Bundle",
    "FrozenRadiomics",
    "acquisition_ranges",
    "export_bundle",
    "finite_json",
    "load_bundle",
    "load_radiomics",
    "volume_fingerprint",
]

#: The bundle format this version writes and reads: ``magn-bundle/<major>``; a bundle of
#: another major version is refused.
BUNDLE_FORMAT = "magn-bundle/1"
#: The fold models "disagree" when their calibrated probabilities span more than this
#: (max − min), or when some call MM and others metastasis at the operating point.
DISAGREEMENT_RANGE = 0.3
#: Percentiles of a whole volume's voxel values recorded per training series (and checked for a
#: new one): the intensity scale the crops' own percentile scaling starts from.
INTENSITY_PERCENTILES = (0.5, 99.5)
CROP_PERCENTILES = (0.5, 99.5)  # magn_lib.crops.crop_lesion's default, recorded in the bundle

# the bundle's file names, relative to its folder (the layout names them)
_NAMES = BundlePaths(Path())
_JSON, _CHECKSUMS, _CARD, _OOF = (_NAMES.meta.name, _NAMES.checksums.name,
                                  _NAMES.model_card.name, _NAMES.oof.name)


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None: strict JSON, which
    JavaScript and other readers parse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def volume_fingerprint(img: nib.spatialimages.SpatialImage) -> str:
    """Hex SHA-256 of a volume's shape and voxel values (as float32, C order): the same series
    read again gives the same fingerprint; it holds no identity."""
    data = np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.float32))
    digest = hashlib.sha256(json.dumps(list(data.shape)).encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def _range(values: pd.Series) -> list[float] | None:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return [float(numbers.min()), float(numbers.max())] if len(numbers) else None


def acquisition_ranges(series: pd.DataFrame, intensities: pd.DataFrame | None = None
                       ) -> dict[str, dict[str, Any]]:
    """Per view, the range of each acquisition parameter over a set of series.

    Args:
        series: the ingest stage's series table (``view``, ``pixel_spacing_mm`` as
            ``"row x col"`` text or numbers, ``slice_thickness_mm``, ``slice_spacing_mm``,
            ``field_strength_t``, ``vendor``), one row per series of the training patients.
        intensities: optional ``view, p_low, p_high`` per series (the volume's
            :data:`INTENSITY_PERCENTILES`).

    Returns:
        ``{view: {"pixel_spacing_mm": [min, max], "slice_thickness_mm": [min, max],
        "slice_spacing_mm": [min, max], "field_strength_t": [sorted distinct values],
        "vendors": [sorted names], "intensity_p_low": [min, max], "intensity_p_high": [min,
        max], "n_series": int}}``; a parameter absent from every series is ``None``.
    """
    out: dict[str, dict[str, Any]] = {}
    for view, group in series.groupby("view", sort=True):
        spacing = group["pixel_spacing_mm"].astype(str).str.split("x").explode()
        fields = pd.to_numeric(group.get("field_strength_t"), errors="coerce").dropna()
        vendors = group.get("vendor", pd.Series(dtype=str)).dropna().astype(str)
        entry = {
            "pixel_spacing_mm": _range(spacing),
            "slice_thickness_mm": _range(group.get("slice_thickness_mm", pd.Series())),
            "slice_spacing_mm": _range(group.get("slice_spacing_mm", pd.Series())),
            "field_strength_t": sorted({round(float(v), 3) for v in fields}) or None,
            "vendors": sorted(set(vendors) - {""}) or None,
            "n_series": int(len(group)),
        }
        if intensities is not None:
            mine = intensities[intensities["view"] == view]
            entry["intensity_p_low"] = _range(mine["p_low"])
            entry["intensity_p_high"] = _range(mine["p_high"])
        out[str(view)] = entry
    return out


@dataclass
class Bundle:
    """A loaded model bundle (see the module doc); ``models`` in eval mode on the CPU.

    Attributes:
        root: the bundle folder.
        meta: ``bundle.json`` as a dict.
        config: the configuration of the fold models.
        network: the network settings they were built with (``weights`` None).
        models: ``{fold: MAGN}``.
        calibration: Platt scaling and the operating point.
        oof: the out-of-fold predictions calibration was fitted on.
    """

    root: Path
    meta: dict[str, Any]
    config: GridConfig
    network: NetworkSettings
    models: dict[int, MAGN]
    calibration: Calibration
    oof: pd.DataFrame = field(repr=False)

    @property
    def crop_size(self) -> int:
        return int(self.meta["preprocessing"]["crop_size"])

    @property
    def batch_size(self) -> int:
        """The training batch size (the held-out predictions were scored in batches of it)."""
        return int(self.meta["preprocessing"]["batch_size"])

    @property
    def ranges(self) -> dict[str, dict[str, Any]]:
        return self.meta["training_ranges"]

    @property
    def training_patients(self) -> dict[str, int]:
        """``{study patient id: the fold that held it out}``."""
        return {p["patient_id"]: int(p["fold"]) for p in self.meta["training_patients"]}

    @property
    def radiomics_meta(self) -> dict[str, Any]:
        """``bundle.json``'s ``radiomics`` entry; ``{"included": False, "reason": ...}`` for a
        bundle without the frozen radiomics pipeline (older bundles included)."""
        return self.meta.get("radiomics") or {
            "included": False, "reason": "not in this bundle (exported before bundles carried "
                                         "the radiomics pipeline)"}

    def patient_of_volume(self, fingerprint: str) -> str | None:
        """The training patient whose sagittal volume has this :func:`volume_fingerprint`."""
        for p in self.meta["training_patients"]:
            if p.get("sagittal_sha256") == fingerprint:
                return p["patient_id"]
        return None


# --------------------------------------------------------------------------------------- export

def _run_record(run_dir: Path) -> dict[str, Any]:
    path = ReportPaths(run_dir).run_manifest
    if not path.is_file():
        raise InputError(f"no {path.name}: not the report folder of a study run", file=run_dir,
                         hint="give the --out folder of `magn study` (e.g. reports/demo)")
    record = json.loads(path.read_text())
    if record.get("status") != "succeeded":
        raise InputError(f"the study run did not succeed (status {record.get('status')!r})",
                         file=path, hint="finish the study (magn study) before exporting")
    return record


def _profile(record: Mapping[str, Any]) -> Profile:
    known = set(Profile.__dataclass_fields__)
    return Profile(**{k: v for k, v in record.get("parameters", {}).items() if k in known})


def _work_dir(record: Mapping[str, Any], work_dir: str | os.PathLike[str] | None,
              run_dir: Path) -> Path:
    if work_dir is not None:
        folder = resolve_path(work_dir)
    else:
        recorded = record.get("run", {}).get("work_dir")
        if not recorded:
            raise InputError("the run record names no work folder", file=run_dir,
                             hint="give it with --work")
        folder = resolve_path(recorded)
    if not WorkPaths(folder).grid_dir.is_dir():
        raise InputError("the run's work folder holds no trained models", file=folder,
                         hint="give the run's work folder with --work (magn study --work)")
    return folder


def _ranking(oof: pd.DataFrame, grid_root: Path, n_folds: int) -> pd.DataFrame:
    rows = []
    for name, group in oof.groupby("config", sort=False):
        config = config_by_name(name)
        kept = GridPaths(grid_root).trained_folds(config.name)
        rows.append({"config": config.name, "views": len(config.views),
                     "pooled_auc": binary_metrics(group["label"], group["probability"])["auc"],
                     "kept_folds": len(kept), "complete": len(kept) == n_folds})
    return pd.DataFrame(rows)


def _choose(ranking: pd.DataFrame, config: str | None) -> str:
    if config is not None:
        name = config_by_name(config).name
        row = ranking[ranking["config"] == name]
        if row.empty:
            raise InputError(f"the run has no out-of-fold predictions of {name}",
                             hint=f"its configurations: {', '.join(ranking['config'])}")
        if not bool(row["complete"].iloc[0]):
            raise InputError(f"the run kept {int(row['kept_folds'].iloc[0])} of the fold models "
                             f"of {name}, so it cannot be exported",
                             hint="list it in the profile's keep_weights and run notebook 03 "
                                  "again (finished folds are retrained only for their weights)")
        return name
    candidates = ranking[(ranking["views"] > 1) & ranking["complete"]]
    if candidates.empty:
        raise InputError("the run kept the fold models of no multi-view configuration",
                         hint="name one with --config, or keep multi-view weights "
                              "(profile key keep_weights)")
    best = candidates.sort_values("pooled_auc", ascending=False, kind="stable").iloc[0]
    return str(best["config"])


def _training_intensities(work: WorkPaths, patients: Sequence[str], views: Sequence[str]
                          ) -> tuple[pd.DataFrame, dict[str, str]]:
    rows, fingerprints = [], {}
    for patient in patients:
        for view in views:
            path = work.volume(patient, view)
            if not path.is_file():
                raise InputError("the ingested volume is missing from the work folder",
                                 patient=patient, file=path, hint="run notebook 01 again")
            img = nib.load(path)
            data = np.asarray(img.dataobj, dtype=np.float32)
            low, high = np.percentile(data, INTENSITY_PERCENTILES)
            rows.append({"patient_id": patient, "view": view, "p_low": float(low),
                         "p_high": float(high)})
            if view == "sagittal":
                fingerprints[patient] = volume_fingerprint(img)
    return pd.DataFrame(rows), fingerprints


def _radiomics_card(meta: Mapping[str, Any]) -> str:
    rad = meta.get("radiomics") or {}
    if not rad.get("included"):
        return f"not in this bundle ({rad.get('reason', 'no reason recorded')})."
    return (f"the {rad['config']} radiomics pipeline ({rad['classifier'].replace('_', '-')}, "
            f"{rad['keep']} of the top {rad['top_k']} features by random-forest importance) "
            f"refitted once on all {rad['n_lesions']} training lesions; its pyradiomics "
            "settings travel in `radiomics/settings.yaml`.")


def _model_card(meta: Mapping[str, Any]) -> str:
    cal = meta["calibration"]
    op = cal["operating_point"]

    def interval(kind: str, metric: str) -> str:
        m = op[kind][metric]
        values = [m.get(k) for k in ("estimate", "ci_low", "ci_high")]
        if values[0] is None or not math.isfinite(values[0]):
            return "not estimable (too few lesions of a class outside some fold)"
        if any(v is None or not math.isfinite(v) for v in values[1:]):
            return f"{values[0]:.3f} (no interval: fewer than 2 patients of a class)"
        return f"{values[0]:.3f} (95 % CI {values[1]:.3f}–{values[2]:.3f})"

    no_signal = ("\n- **No signal out of fold:** the out-of-fold scores did not rank MM above "
                 "metastasis, so calibration gives every lesion the training prevalence; this "
                 "model cannot tell the classes apart." if cal["slope"] <= 0 else "")
    rule = ("Youden's J (maximum sensitivity + specificity − 1)" if cal["rule"] == "youden"
            else f"the highest threshold reaching sensitivity {cal['target_sensitivity']}")
    ranking = "\n".join(f"| {r['config']} | {r['pooled_auc']:.3f} | {r['kept_folds']} |"
                        for r in meta["selection"]["ranking"])
    profile = meta["profile"]
    embedded = meta["run"].get("embedded_cohort")
    cohort = ("the embedded **simulated** cohort (synthetic phantoms, not patients): its "
              "numbers say nothing about real patients" if embedded else "the study's cohort")
    return f"""# Model card: MAGN `{meta['config']['name']}` (magn {meta['magn_version']})

**Research use only.** Not a medical device; not validated for clinical decisions.

- **What it does:** the probability that a spinal lesion on contrast-enhanced T1 MRI is
  multiple myeloma (MM) rather than a lung-cancer metastasis, from lesion-centred crops of the
  sagittal, coronal and axial series (views: {', '.join(meta['config']['views'])}) and a
  sagittal lesion mask (Chen et al. 2022, Front. Oncol. 12:981769, re-implemented).
- **Trained on:** {cohort}; {meta['training']['n_lesions']} lesions of
  {meta['training']['n_patients']} patients ({meta['training']['n_mm']} MM), profile
  `{profile.get('profile')}`, {len(meta['folds'])} cross-validation fold models
  ({profile.get('backbone')}, epochs: {profile.get('epochs')}, {meta['preprocessing']['crop_size']}
  px crops). A new lesion is scored by every fold model; the reported probability is the mean
  of their calibrated probabilities.
- **Chosen configuration:** {meta['selection']['reason']}

| configuration | pooled out-of-fold AUC | fold models kept |
|---|---|---|
{ranking}

- **Calibration:** Platt scaling fitted on the out-of-fold predictions (slope
  {cal['slope']:.3f}, intercept {cal['intercept']:.3f}); Brier score {cal['brier_raw']:.3f}
  before, {cal['brier_calibrated']:.3f} after.{no_signal}
- **Operating point:** MM when the calibrated probability is ≥ {cal['threshold']:.4g}, chosen
  by {rule} on the out-of-fold predictions. Sensitivity / specificity of this rule on lesions it
  was not fitted on (refitted without each fold): {interval('cross_validated', 'sensitivity')} /
  {interval('cross_validated', 'specificity')}; on the predictions it was chosen on
  (optimistic): {interval('apparent', 'sensitivity')} / {interval('apparent', 'specificity')}.
  Intervals: patient bootstrap.
- **Models disagree** when the fold models' calibrated probabilities span more than
  {meta['disagreement_range']} or fall on both sides of the threshold.
- **Inputs outside the training ranges** (pixel spacing, slice thickness, field strength,
  vendor, intensity scale; `bundle.json`, `training_ranges`) are flagged in every case report.
- **Radiomics comparator:** {_radiomics_card(meta)}
- **Limitations:** one re-implementation, a small training cohort, no external validation;
  a patient of the training cohort gets an in-sample warning (only the fold model that held
  the patient out is out of sample for them).
"""


@dataclass
class FrozenRadiomics:
    """The bundle's frozen radiomics pipeline (see the module doc).

    Attributes:
        pipeline: the fitted scikit-learn ``Pipeline`` (``predict_proba`` of a feature table
            whose columns are those it was fitted on).
        calibration: Platt scaling and operating point fitted on ``oof``.
        settings: the bundle's pyradiomics settings file.
        config: ``"multi-view"`` or a view's name; ``views`` the views its features come from.
        oof: the run's out-of-fold radiomics predictions of ``config``.
        meta: ``bundle.json``'s ``radiomics`` entry.
    """

    pipeline: Any
    calibration: Calibration
    settings: Path
    config: str
    views: tuple[str, ...]
    oof: pd.DataFrame = field(repr=False)
    meta: dict[str, Any] = field(repr=False, default_factory=dict)

    def feature_table(self, features_by_view: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """The pipeline's input from per-view feature tables (:func:`_radiomics_table`)."""
        return _radiomics_table(self.config, self.views, features_by_view)

    def predict(self, features_by_view: Mapping[str, pd.DataFrame]) -> pd.Series:
        """Raw (uncalibrated) MM probability per lesion (index ``lesion_id``)."""
        table = self.feature_table(features_by_view)
        table = table.reindex(columns=list(self.pipeline.feature_names_in_))
        classes = list(self.pipeline.classes_)
        probability = self.pipeline.predict_proba(table)[:, classes.index(1)]
        return pd.Series(probability, index=table.index, name="probability")


def _radiomics_table(config: str, views: Sequence[str],
                     features_by_view: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One lesion per row, as :func:`magn_lib.radiomics.cross_validate_radiomics` builds a
    configuration's input: the multi-view one prefixes each column with ``<view>_``, a
    single view keeps pyradiomics' names."""
    from magn_lib.radiomics import MULTI_VIEW, combine_views

    if config == MULTI_VIEW:
        return combine_views({v: features_by_view[v] for v in views})
    view = views[0]
    return combine_views({view: features_by_view[view]}).rename(
        columns=lambda c: c.removeprefix(f"{view}_"))


def _radiomics_absent(reason: str) -> dict[str, Any]:
    return {"included": False, "reason": reason}


def _fit_frozen_radiomics(profile: Profile, work: WorkPaths, report: ReportPaths,
                          folds: pd.DataFrame, views_cropped: Sequence[str],
                          target: float | None, n_resamples: int
                          ) -> tuple[dict[str, Any], Any, pd.DataFrame | None, Path | None]:
    """``(meta, pipeline, oof, settings file)`` of the frozen radiomics pipeline, or
    ``(meta with the reason, None, None, None)`` when the run cannot give one."""
    from magn_lib.crops import read_cache
    from magn_lib.cv import radiomics_comparator
    from magn_lib.radiomics import extract_crop_features, make_radiomics_pipeline

    config = radiomics_comparator(profile.views)
    views = tuple(v for v in ("sagittal", "coronal", "axial") if v in profile.views)
    oof_path = report.oof("radiomics")
    if not oof_path.is_file():
        return _radiomics_absent("the run has no out-of-fold radiomics predictions "
                                 "(notebook 04 did not run)"), None, None, None
    missing = [v for v in views if v not in views_cropped]
    if missing:
        return _radiomics_absent(f"its views {', '.join(missing)} are not read by the exported "
                                 "configuration"), None, None, None
    oof = pd.read_csv(oof_path, dtype={"lesion_id": str, "patient_id": str})
    oof = oof[oof["config"] == config][["lesion_id", "patient_id", "fold", "label",
                                        "probability"]].reset_index(drop=True)
    if oof.empty:
        return _radiomics_absent(f"the run has no out-of-fold radiomics predictions of "
                                 f"{config}"), None, None, None
    settings = resolve_path(profile.radiomics_settings)
    if not work.crop_cache.is_file():
        raise InputError("the run's crop cache is missing", file=work.crop_cache,
                         hint="run notebook 02 again")
    cache = read_cache(work.crop_cache)
    features = {}
    for view in views:  # the run's feature cache answers when the settings are unchanged
        features[view], _ = extract_crop_features(
            cache.image[view], cache.mask[view], cache.lesion_id, settings=settings,
            present=cache.present[view], spacing=cache.spacing[view], view=view,
            n_jobs=profile.n_jobs, cache_dir=work.radiomics_dir, progress=False)
    lesions = folds[["lesion_id", "label"]].astype({"lesion_id": str})
    table = _radiomics_table(config, views, features).loc[lesions["lesion_id"]]
    pipeline = make_radiomics_pipeline(
        classifier=profile.radiomics_classifier, top_k=profile.radiomics_top_k,
        keep=profile.radiomics_keep, seed=profile.seed, n_jobs=1)
    pipeline.fit(table, lesions["label"].to_numpy(dtype=int))
    calibration = fit_calibration(oof, target_sensitivity=target, n_resamples=n_resamples,
                                  seed=profile.seed)
    import radiomics
    import sklearn

    meta = {
        "included": True, "config": config, "views": list(views),
        "classifier": profile.radiomics_classifier, "top_k": int(profile.radiomics_top_k),
        "keep": int(profile.radiomics_keep), "seed": int(profile.seed),
        "fitted_on": "every lesion of the training cohort, once, at export (selection and "
                     "classifier inside one pipeline)",
        "n_lesions": int(len(lesions)), "n_mm": int(lesions["label"].sum()),
        "n_features_in": int(table.shape[1]),
        "selected_features": list(pipeline["select"].selected_features_),
        "settings_source": str(profile.radiomics_settings),
        "settings_sha256": file_sha256(settings),
        "calibration": calibration.to_dict(),
        "scikit_learn_version": sklearn.__version__,
        "pyradiomics_version": radiomics.__version__,
    }
    return meta, pipeline, oof, settings


def _write_checksums(folder: Path) -> None:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative != _CHECKSUMS:
            lines.append(f"{file_sha256(path)}  {relative}")
    write_text(folder / _CHECKSUMS, "\n".join(lines) + "\n")


def export_bundle(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    target_sensitivity: float | None = None,
    n_resamples: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the bundle of one configuration of a finished study run (see the module doc).

    Args:
        run: the run's report folder (``reports/<run>``; relative paths from the project root).
        out: the bundle folder to write (conventionally ``<name>.magn``); written to a
            temporary folder beside it and renamed, so it is whole or absent.
        config: the configuration to export; default the best multi-view one by pooled AUC.
        work_dir: the run's work folder; default the one its run record names.
        target_sensitivity: the operating-point rule (None: the profile's
            ``target_sensitivity``; when that is null too, Youden's J).
        n_resamples: bootstrap resamples of the operating point's intervals (default the
            profile's ``n_bootstrap``).
        overwrite: replace an existing bundle at ``out``.

    Returns:
        The bundle folder.

    Raises:
        InputError: not a finished run, missing work folder or models, a configuration whose
            fold models were not all kept, ``out`` existing without ``overwrite``.
    """
    run_dir = resolve_path(run)
    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        raise InputError("the bundle folder exists already", file=out,
                         hint="choose another --out or pass --overwrite")
    record = _run_record(run_dir)
    profile = _profile(record)
    work = WorkPaths(_work_dir(record, work_dir, run_dir))
    report = ReportPaths(run_dir)
    oof_path = report.oof("magn")
    if not oof_path.is_file():
        raise InputError("the run has no out-of-fold MAGN predictions", file=oof_path,
                         hint="run notebook 03 (magn study)")
    oof_all = pd.read_csv(oof_path, dtype={"lesion_id": str, "patient_id": str})
    folds = load_folds(report.folds_csv)
    fold_ids = sorted(folds["fold"].unique().tolist())
    ranking = _ranking(oof_all, work.grid_dir, len(fold_ids))
    name = _choose(ranking, config)
    grid_config = config_by_name(name)
    oof = oof_all[oof_all["config"] == name][["lesion_id", "patient_id", "fold", "label",
                                              "probability"]].reset_index(drop=True)
    target = profile.target_sensitivity if target_sensitivity is None else target_sensitivity
    calibration = fit_calibration(oof, target_sensitivity=target,
                                  n_resamples=n_resamples or profile.n_bootstrap,
                                  seed=profile.seed)

    patients = sorted(folds["patient_id"].astype(str).unique())
    needed = tuple(dict.fromkeys(("sagittal", *grid_config.views)))
    series_table = work.ingest_table("series")
    if not series_table.is_file():
        raise InputError("the run's ingest tables are missing", file=series_table,
                         hint="run notebook 01 again")
    series = pd.read_csv(series_table, dtype={"patient_id": str})
    series = series[series["patient_id"].isin(patients) & series["view"].isin(needed)]
    intensities, fingerprints = _training_intensities(work, patients, needed)
    fold_of = folds.groupby("patient_id")["fold"].first().astype(int).to_dict()

    radiomics_meta, radiomics_pipeline, radiomics_oof, radiomics_settings = (
        _fit_frozen_radiomics(profile, work, report, folds, grid_config.views, target,
                              n_resamples or profile.n_bootstrap))

    network = replace(NetworkSettings.from_profile(profile), weights=None)
    method = ("fixed by the user" if config else "best pooled out-of-fold AUC among the "
              "multi-view configurations whose every fold model was kept")
    auc = float(ranking.loc[ranking["config"] == name, "pooled_auc"].iloc[0])
    meta: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "magn_version": __version__,
        "git": record.get("git") or git_state(Path(__file__).resolve().parent.parent),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": {"name": name, "views": list(grid_config.views),
                   "attention": grid_config.attention},
        "selection": {"method": method,
                      "reason": f"`{name}` ({method}; pooled out-of-fold AUC {auc:.3f})",
                      "ranking": json.loads(ranking.to_json(orient="records"))},
        "network": {k: getattr(network, k) for k in NetworkSettings.__dataclass_fields__},
        "folds": fold_ids,
        "preprocessing": {
            "crop_size": int(profile.crop_size), "batch_size": int(profile.batch_size),
            "crop_percentiles": list(CROP_PERCENTILES), "mask_transfer": "transfer_mask",
            "views_read": list(needed),
            "rules": "largest sagittal-mask slice and its two neighbours as channels; square "
                     "crop of crop_size source pixels (no resampling) centred on the mask "
                     "centroid, zero padding; intensities clipped at the crop's 0.5/99.5 "
                     "percentiles and scaled to [0, 1]; radiological display orientation; "
                     "coronal and axial masks transferred from the sagittal one by world "
                     "coordinates (magn_lib.crops, magn_lib.transfer)",
        },
        "calibration": calibration.to_dict(),
        "disagreement_range": DISAGREEMENT_RANGE,
        "training": {"n_lesions": int(len(oof)), "n_patients": len(patients),
                     "n_mm": int(oof["label"].sum())},
        "training_ranges": acquisition_ranges(series, intensities),
        "intensity_percentiles": list(INTENSITY_PERCENTILES),
        "training_patients": [{"patient_id": p, "fold": int(fold_of[p]),
                               "sagittal_sha256": fingerprints.get(p)} for p in patients],
        "radiomics": radiomics_meta,
        "profile": profile.to_dict(),
        "run": {"name": run_dir.name,
                "embedded_cohort": bool(record.get("run", {}).get("embedded_cohort"))},
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = BundlePaths(staging)
        for fold in fold_ids:
            saved = torch.load(work.grid.fold(name, fold).model, map_location="cpu",
                               weights_only=True)
            state = {"state_dict": saved["state_dict"], "normalize": bool(saved["normalize"]),
                     "init_report": dict(saved["init_report"])}
            save(staged.model(fold), lambda stream, state=state: torch.save(state, stream))
        write_csv(oof, staged.oof)
        if radiomics_pipeline is not None:
            import joblib

            save(staged.radiomics_pipeline,
                 lambda stream: joblib.dump(radiomics_pipeline, stream))
            write_text(staged.radiomics_settings, radiomics_settings.read_text())
            write_csv(radiomics_oof, staged.radiomics_oof)
        write_text(staged.meta, json.dumps(finite_json(meta), indent=2, default=str,
                                           allow_nan=False))
        write_text(staged.model_card, _model_card(meta))
        _write_checksums(staging)
        staging.chmod(default_dir_mode())  # mkdtemp's 0700 would keep colleagues out
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------------- load

def _check_format(meta: Mapping[str, Any], path: Path) -> None:
    found = str(meta.get("format", ""))
    if found != BUNDLE_FORMAT:
        writer = meta.get("magn_version", "an unknown version")
        raise InputError(
            f"bundle format {found or 'unknown'!r} (written by magn {writer}) is not the "
            f"format this magn {__version__} reads ({BUNDLE_FORMAT!r})", file=path,
            hint=f"predict with magn {writer}, or export the model again with this version")


def _verify(root: Path) -> None:
    listing = root / _CHECKSUMS
    if not listing.is_file():
        raise InputError("the bundle has no checksum list", file=listing,
                         hint="export the bundle again (magn export)")
    listed = {}
    for line in listing.read_text().splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            listed[name] = digest
    for required in (_JSON, _OOF):
        if required not in listed:
            raise InputError(f"the checksum list does not cover {required}", file=listing)
    for name, digest in listed.items():
        path = root / name
        if not path.resolve().is_relative_to(root.resolve()):
            raise InputError(f"the checksum list names a file outside the bundle: {name}",
                             file=listing)
        if not path.is_file():
            raise InputError("a file of the bundle is missing", file=path,
                             hint="copy the whole bundle folder")
        if file_sha256(path) != digest:
            raise InputError("a file of the bundle does not match its checksum (changed or "
                             "damaged)", file=path, hint="copy the bundle again")
    unlisted = [p.relative_to(root).as_posix() for p in root.rglob("*")
                if p.is_file() and p.relative_to(root).as_posix() not in listed
                and p.name != _CHECKSUMS]
    if unlisted:
        raise InputError(f"the bundle holds files its checksum list does not: {unlisted[:5]}",
                         file=root, hint="remove them, or export the bundle again")


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle written by :func:`export_bundle`: format check, every checksum, then the
    fold models (``torch.load(weights_only=True)``), in eval mode on the CPU.

    Needs nothing but the bundle folder (no checkout, run folder or manifest).

    Raises:
        InputError: not a bundle, another format version (names both), a missing, changed or
            unlisted file, or weights that do not fit the recorded network.
    """
    root = Path(path).expanduser().absolute()
    meta_path = root / _JSON
    if not meta_path.is_file():
        raise InputError("not a model bundle (no bundle.json)", file=root,
                         hint="give the folder written by magn export")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"bundle.json is not valid JSON ({exc})", file=meta_path) from None
    _check_format(meta, meta_path)
    _verify(root)
    config = config_by_name(meta["config"]["name"])
    network = NetworkSettings(**meta["network"])
    models = {}
    for fold in meta["folds"]:
        file = BundlePaths(root).model(fold)
        saved = torch.load(file, map_location="cpu", weights_only=True)
        model = build_model(config, network)
        model.normalize = bool(saved["normalize"])
        model.init_report = dict(saved["init_report"])
        try:
            model.load_state_dict(saved["state_dict"])
        except RuntimeError as exc:
            raise InputError(f"the weights do not fit the recorded network ({exc})",
                             file=file) from None
        models[int(fold)] = model.eval()
    oof = pd.read_csv(root / _OOF, dtype={"lesion_id": str, "patient_id": str})
    return Bundle(root=root, meta=meta, config=config, network=network, models=models,
                  calibration=Calibration.from_dict(meta["calibration"]), oof=oof)


def load_radiomics(bundle: Bundle) -> FrozenRadiomics | None:
    """The bundle's frozen radiomics pipeline, or None when the bundle has none
    (``bundle.radiomics_meta["reason"]`` says why). The files were checked against the
    bundle's checksums by :func:`load_bundle`.

    Raises:
        InputError: the pipeline was pickled by another scikit-learn version (its predictions
            could differ; both versions named), or its files are missing.
    """
    import warnings

    import joblib
    import sklearn

    meta = bundle.radiomics_meta
    if not meta.get("included"):
        return None
    paths = BundlePaths(bundle.root)
    for path in (paths.radiomics_pipeline, paths.radiomics_settings, paths.radiomics_oof):
        if not path.is_file():
            raise InputError("a file of the bundle's radiomics pipeline is missing", file=path,
                             hint="copy the whole bundle folder")
    written = meta.get("scikit_learn_version")
    if written and written != sklearn.__version__:
        raise InputError(f"the radiomics pipeline was saved with scikit-learn {written}; this "
                         f"environment has {sklearn.__version__}, whose predictions could "
                         "differ", file=paths.radiomics_pipeline,
                         hint=f"use scikit-learn=={written} (requirements.lock)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", sklearn.exceptions.InconsistentVersionWarning)
        pipeline = joblib.load(paths.radiomics_pipeline)
    oof = pd.read_csv(paths.radiomics_oof, dtype={"lesion_id": str, "patient_id": str})
    return FrozenRadiomics(pipeline=pipeline,
                           calibration=Calibration.from_dict(meta["calibration"]),
                           settings=paths.radiomics_settings, config=str(meta["config"]),
                           views=tuple(meta["views"]), oof=oof, meta=dict(meta))
