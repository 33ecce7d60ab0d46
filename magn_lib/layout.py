"""Where a study run keeps its files: every file and folder name of the report and work folders.

A run has two folders. The **report folder** (``reports/<run>/``) is shareable: nothing in it
identifies a patient. The **work folder** (``work/<run>-<8 hex>/``, unique to the report
folder) is private: volumes, masks, crops and models of the cohort. This module is the only
place that spells their file names; stages, notebooks and the runner ask the objects below for
paths::

    reports/<run>/                               ReportPaths
        executed/<notebook>.ipynb                  executed(notebook)
        html/<notebook>.html                       html(notebook)        clinician view
        html-full/<notebook>.html                  full_html(notebook)   with code
        index.html  run_manifest.json              index_html  run_manifest
        report.html  report.pdf                    report_html  report_pdf   one file to send
        warnings.json  .lock                       warnings_file  lock_file
        .magn-run.json                             report_marker         "a run's folder"
        artifacts/<name>.csv                       table(name)
        artifacts/<name>.png, .svg                 figure(name)  figure_png(name)
        artifacts/folds.csv                        folds_csv             shared by every method
        artifacts/oof_<method>.csv                 oof(method)           out-of-fold predictions
        artifacts/front_page.json                  front_page
        artifacts/screens/<page>.png               screens_dir           test screenshots
    work/<run>-<8 hex>/                          WorkPaths             default_work_folder
        .magn-run.json  .lock                      work_marker  work_lock
        nifti/<patient_id>/<view>.nii.gz           volume(patient_id, view)
        nifti/<patient_id>/.ingest.json            ingest_stamp(patient_id)
        masks/<lesion_id>/<view>.nii.gz            mask(lesion_id, view)  sagittal: ingest;
                                                                          others: transfer
        ingest/<table>.csv                         ingest_table(name)
        transfer/<table>.csv                       transfer_table(name)
        crops.npz                                  crop_cache
        magn_cv/                                   grid_dir, grid        GridPaths
            <config>/fold<k>/                        fold_dir(config, k), fold(config, k)
                started.json  done.json              FoldPaths
                predictions.csv  history.csv
                model.pt  checkpoint.pt
                task.log  progress.jsonl             (Ray executor only)
        radiomics/<kind>-<view>-<key>.pkl          radiomics_dir, feature_cache(...)

:class:`RunPaths` is both (one run); :class:`WorkPaths` and :class:`ReportPaths` serve code that
holds only one of the folders (a stage result knows its work folder, ``record_warning`` its
report folder). The embedded cohort's own folder (DICOM, manifest, phantom truth) is not a run
folder and is laid out by :mod:`magn_lib.synthetic`. The folders of the commands outside a
study are :class:`BundlePaths` (``magn export``), :class:`PredictionPaths` (``magn predict``)
and :class:`ExternalPaths` (``magn validate``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

__all__ = [
    "BundlePaths",
    "ExternalPaths",
    "PredictionPaths",
    "FoldPaths",
    "GridPaths",
    "INGEST_TABLES",
    "RUN_MARKER",
    "ReportPaths",
    "RunPaths",
    "TRANSFER_TABLES",
    "WorkPaths",
    "default_run_paths",
    "default_report_folder",
    "default_run_parents",
    "default_work_folder",
    "feature_cache",
    "run_paths",
]

#: The tables the ingest stage writes under ``ingest/`` (one CSV each).
INGEST_TABLES: tuple[str, ...] = ("patients", "lesions", "series", "exclusions")
#: The tables the transfer stage writes under ``transfer/`` (one CSV each).
TRANSFER_TABLES: tuple[str, ...] = ("qc", "lesions", "exclusions")

_REPORTS = "reports"  # the default report folders' parent, under the project root
_WORK = "work"  # the default work folders' parent
_FEATURE_KINDS = {"crops": "radiomics", "volumes": "radiomics3d"}
#: the file that marks a folder as a run's report or work folder (:mod:`magn_lib.guards`)
RUN_MARKER = ".magn-run.json"


def _table(name: str, known: tuple[str, ...], stage: str) -> str:
    if name not in known:
        raise ValueError(f"{stage} writes no table {name!r}; its tables are {known}")
    return f"{name}.csv"


@dataclass(frozen=True)
class FoldPaths:
    """The files of one (configuration, fold) folder of the MAGN grid.

    ``started.json`` and ``done.json`` hold the fold's fingerprint (``done`` also its metrics);
    ``predictions.csv`` its out-of-fold predictions, ``history.csv`` its learning curve,
    ``model.pt`` the kept weights and ``checkpoint.pt`` the transient resume state. Under the
    Ray executor the task also keeps its output in ``task.log`` and its progress events in
    ``progress.jsonl`` (which the driver relays to the run's progress channel).
    """

    folder: Path

    @property
    def started(self) -> Path:
        return self.folder / "started.json"

    @property
    def done(self) -> Path:
        return self.folder / "done.json"

    @property
    def predictions(self) -> Path:
        return self.folder / "predictions.csv"

    @property
    def history(self) -> Path:
        return self.folder / "history.csv"

    @property
    def model(self) -> Path:
        return self.folder / "model.pt"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.pt"

    @property
    def log(self) -> Path:
        return self.folder / "task.log"

    @property
    def progress(self) -> Path:
        return self.folder / "progress.jsonl"


@dataclass(frozen=True)
class GridPaths:
    """The MAGN grid's output folder: ``<root>/<config name>/fold<k>/``."""

    #: the grid folder's name inside a run's work folder
    DEFAULT_NAME: ClassVar[str] = "magn_cv"

    root: Path

    def config_dir(self, config: str) -> Path:
        """The folder of one configuration (``config`` is its name, e.g. ``"multi-view"``)."""
        return Path(self.root) / config

    def fold_dir(self, config: str, fold: int) -> Path:
        return self.config_dir(config) / f"fold{int(fold)}"

    def fold(self, config: str, fold: int) -> FoldPaths:
        return FoldPaths(self.fold_dir(config, fold))

    def trained_folds(self, config: str) -> list[int]:
        """The folds of ``config`` whose trained weights were kept, in order."""
        folds = []
        for folder in self.config_dir(config).glob("fold*"):
            number = folder.name.removeprefix("fold")
            if number.isdigit() and FoldPaths(folder).model.is_file():
                folds.append(int(number))
        return sorted(folds)


def feature_cache(folder: str | Path, *, source: str, view: str | None, key: str) -> Path:
    """The file caching one radiomics extraction: ``<folder>/<kind>-<view>-<key[:20]>.pkl``.

    Args:
        folder: the cache folder (a run's :attr:`WorkPaths.radiomics_dir`).
        source: ``"crops"`` (2D features of the crop cache) or ``"volumes"`` (3D features).
        view: the view extracted, or None for an unnamed set.
        key: the hash of everything the features depend on.
    """
    if source not in _FEATURE_KINDS:
        raise ValueError(f"source must be one of {tuple(_FEATURE_KINDS)}, got {source!r}")
    return Path(folder) / f"{_FEATURE_KINDS[source]}-{view or source}-{key[:20]}.pkl"


@dataclass(frozen=True)
class WorkPaths:
    """The private work folder of a run (intermediate data of the cohort); see the module doc."""

    work_dir: Path

    @property
    def nifti_dir(self) -> Path:
        return self.work_dir / "nifti"

    def volume(self, patient_id: str, view: str) -> Path:
        """A patient's ingested ``view`` volume (NIfTI, affine to world RAS+ mm)."""
        return self.nifti_dir / patient_id / f"{view}.nii.gz"

    def ingest_stamp(self, patient_id: str) -> Path:
        """What the ingest of one patient read and wrote (for skipping an unchanged patient)."""
        return self.nifti_dir / patient_id / ".ingest.json"

    @property
    def masks_dir(self) -> Path:
        return self.work_dir / "masks"

    def mask(self, lesion_id: str, view: str) -> Path:
        """A lesion's binary mask on its patient's ``view`` grid: the sagittal one is written
        by ingest (from the manifest's mask), the others by the transfer stage."""
        return self.masks_dir / lesion_id / f"{view}.nii.gz"

    @property
    def ingest_dir(self) -> Path:
        return self.work_dir / "ingest"

    def ingest_table(self, name: str) -> Path:
        """One of :data:`INGEST_TABLES` as written by the ingest stage."""
        return self.ingest_dir / _table(name, INGEST_TABLES, "ingest")

    @property
    def transfer_dir(self) -> Path:
        return self.work_dir / "transfer"

    def transfer_table(self, name: str) -> Path:
        """One of :data:`TRANSFER_TABLES` as written by the transfer stage."""
        return self.transfer_dir / _table(name, TRANSFER_TABLES, "transfer")

    @property
    def crop_cache(self) -> Path:
        """The crop cache that training and radiomics read (:func:`magn_lib.crops.read_cache`)."""
        return self.work_dir / "crops.npz"

    @property
    def grid_dir(self) -> Path:
        """The MAGN grid's output folder (``run_grid``'s ``out_dir``)."""
        return self.work_dir / GridPaths.DEFAULT_NAME

    @property
    def grid(self) -> GridPaths:
        return GridPaths(self.grid_dir)

    def fold_dir(self, config: str, fold: int) -> Path:
        """The folder of one (configuration name, fold) of the MAGN grid."""
        return self.grid.fold_dir(config, fold)

    def fold(self, config: str, fold: int) -> FoldPaths:
        return self.grid.fold(config, fold)

    @property
    def radiomics_dir(self) -> Path:
        """The radiomics feature caches (:func:`feature_cache`)."""
        return self.work_dir / "radiomics"

    @property
    def work_marker(self) -> Path:
        """Marks the folder as a run's work folder (no identity key may go inside it)."""
        return self.work_dir / RUN_MARKER

    @property
    def work_lock(self) -> Path:
        """Held by the study runner while a run uses the work folder."""
        return self.work_dir / ".lock"

    def progress_channel(self, notebook: str) -> Path:
        """The progress events a running notebook writes for the study runner (JSON lines)."""
        return self.work_dir / ".progress" / f"{notebook}.jsonl"


@dataclass(frozen=True)
class ReportPaths:
    """The shareable report folder of a run; see the module doc."""

    report_dir: Path

    @property
    def executed_dir(self) -> Path:
        return self.report_dir / "executed"

    def executed(self, notebook: str) -> Path:
        """The executed copy of notebook ``notebook`` (its name without ``.ipynb``)."""
        return self.executed_dir / f"{notebook}.ipynb"

    @property
    def html_dir(self) -> Path:
        return self.report_dir / "html"

    def html(self, notebook: str) -> Path:
        """The clinician view (no code) of a notebook."""
        return self.html_dir / f"{notebook}.html"

    @property
    def full_html_dir(self) -> Path:
        return self.report_dir / "html-full"

    def full_html(self, notebook: str) -> Path:
        """The full view (with code) of a notebook."""
        return self.full_html_dir / f"{notebook}.html"

    @property
    def index_html(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def report_html(self) -> Path:
        """Every clinician view in one self-contained page (to send as one file)."""
        return self.report_dir / "report.html"

    @property
    def report_pdf(self) -> Path:
        """:attr:`report_html` printed to PDF (A4) by a headless Chromium."""
        return self.report_dir / "report.pdf"

    @property
    def run_manifest(self) -> Path:
        """What ran, where and with what (parameters, checksums, versions, timings)."""
        return self.report_dir / "run_manifest.json"

    @property
    def warnings_file(self) -> Path:
        """Warnings the notebooks recorded for the front page."""
        return self.report_dir / "warnings.json"

    @property
    def lock_file(self) -> Path:
        """Held by the study runner while it writes the folder."""
        return self.report_dir / ".lock"

    @property
    def report_marker(self) -> Path:
        """Marks the folder as a run's report folder (no identity key may go inside it)."""
        return self.report_dir / RUN_MARKER

    @property
    def artifacts_dir(self) -> Path:
        return self.report_dir / "artifacts"

    def table(self, name: str) -> Path:
        """An artefact table: ``artifacts/<name>.csv``."""
        return self.artifacts_dir / f"{name}.csv"

    def figure(self, name: str) -> Path:
        """An artefact figure without suffix, as :func:`magn_lib.plots.save_figure` takes it
        (it writes ``<name>.png`` and ``<name>.svg``)."""
        return self.artifacts_dir / name

    def figure_png(self, name: str) -> Path:
        """The PNG that :func:`magn_lib.plots.save_figure` wrote for :meth:`figure` ``(name)``."""
        return self.artifacts_dir / f"{name}.png"

    @property
    def folds_csv(self) -> Path:
        """The run's fold table, written once and read by every method."""
        return self.table("folds")

    def oof(self, method: str) -> Path:
        """Out-of-fold predictions of one method (``"magn"``, ``"radiomics"``, ``"first-order"``
        (the trivial baseline), ``"readers"``)."""
        return self.table(f"oof_{method}")

    @property
    def front_page(self) -> Path:
        """What ``index.html`` shows above the notebook list (written by the last notebook)."""
        return self.artifacts_dir / "front_page.json"

    @property
    def screens_dir(self) -> Path:
        """Screenshots of the pages, kept by the tests so a person can look without a browser."""
        return self.artifacts_dir / "screens"

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the report folder, with ``/`` (a link from ``index.html``)."""
        return Path(path).relative_to(self.report_dir).as_posix()


@dataclass(frozen=True)
class RunPaths(WorkPaths, ReportPaths):
    """Where one run reads and writes: its report folder and its work folder (see the module
    doc). ``report_dir`` is shareable; ``work_dir`` is private."""

    report_dir: Path
    work_dir: Path


def run_paths(run_dir: str | Path, work_dir: str | Path | None = None) -> RunPaths:
    """The :class:`RunPaths` of a run; ``work_dir`` defaults to :func:`default_work_folder`.

    Relative folders are taken from the project root (:func:`magn_lib.config.resolve_path`).
    """
    from magn_lib.config import resolve_path  # config re-exports this module

    report_dir = resolve_path(run_dir)
    work = resolve_path(work_dir if work_dir else default_work_folder(report_dir))
    return RunPaths(report_dir=report_dir, work_dir=work)


def default_report_folder(name: str) -> str:
    """The report folder of run ``name`` when none is given, relative to the project root:
    ``reports/<name>`` (POSIX)."""
    return f"{_REPORTS}/{name}"


def default_work_folder(run_dir: str | Path) -> str:
    """The work folder of the run reported in ``run_dir`` when none is given, relative to the
    project root: ``work/<name of run_dir>-<8 hex>`` (POSIX).

    The 8 hex digits are a BLAKE2b hash of the report folder's resolved absolute path
    (relative ones taken from the project root, symlinks followed), so two runs whose report
    folders share their last name (``site_a/out``, ``site_b/out``) never share intermediate
    data, and one report folder always finds its own.
    """
    from magn_lib.config import resolve_path

    resolved = resolve_path(run_dir).resolve()
    digest = hashlib.blake2b(str(resolved).encode("utf-8", "surrogateescape"),
                             digest_size=4).hexdigest()
    return f"{_WORK}/{resolved.name}-{digest}"


def default_run_paths(name: str) -> RunPaths:
    """The folders of run ``name`` (e.g. a profile's) when none are given:
    ``reports/<name>`` and ``work/<name>-<8 hex>`` (:func:`default_work_folder`) under the
    project root."""
    from magn_lib.config import project_root

    return run_paths(project_root() / _REPORTS / name)


def default_run_parents() -> tuple[Path, Path]:
    """The folders holding the default report and work folders (``reports/``, ``work/`` under
    the project root); a de-identification key must never be written inside them."""
    from magn_lib.config import project_root

    return project_root() / _REPORTS, project_root() / _WORK


@dataclass(frozen=True)
class BundlePaths:
    """Files of an exported model bundle (a folder written by ``magn export``)::

        <bundle>/bundle.json        meta           what the model is, how it was trained
                 checksums.sha256   checksums      SHA-256 of every other file
                 model_card.md      model_card
                 oof.csv            oof            the training run's out-of-fold predictions
                 models/fold<k>.pt  model(k)       one state dict per fold model
                 radiomics/pipeline.joblib         radiomics_pipeline  optional: the frozen
                                                   radiomics pipeline (refitted on all lesions)
                 radiomics/settings.yaml           radiomics_settings  its pyradiomics settings
                 radiomics/oof.csv                 radiomics_oof  its run's out-of-fold
                                                   predictions (calibration, internal estimate)
    """

    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "bundle.json"

    @property
    def checksums(self) -> Path:
        return self.root / "checksums.sha256"

    @property
    def model_card(self) -> Path:
        return self.root / "model_card.md"

    @property
    def oof(self) -> Path:
        return self.root / "oof.csv"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def model(self, fold: int) -> Path:
        return self.models_dir / f"fold{int(fold)}.pt"

    @property
    def radiomics_dir(self) -> Path:
        return self.root / "radiomics"

    @property
    def radiomics_pipeline(self) -> Path:
        return self.radiomics_dir / "pipeline.joblib"

    @property
    def radiomics_settings(self) -> Path:
        return self.radiomics_dir / "settings.yaml"

    @property
    def radiomics_oof(self) -> Path:
        return self.radiomics_dir / "oof.csv"


@dataclass(frozen=True)
class PredictionPaths:
    """Files ``magn predict`` writes under its ``--out`` folder::

        <out>/predictions.csv                       table       one row per lesion (batch)
              <lesion_id>/prediction.json           prediction(lesion_id)
              <lesion_id>/case_report.html          case_report(lesion_id)
    """

    root: Path

    @property
    def table(self) -> Path:
        return self.root / "predictions.csv"

    def case_dir(self, lesion_id: str) -> Path:
        return self.root / str(lesion_id)

    def prediction(self, lesion_id: str) -> Path:
        return self.case_dir(lesion_id) / "prediction.json"

    def case_report(self, lesion_id: str) -> Path:
        return self.case_dir(lesion_id) / "case_report.html"


@dataclass(frozen=True)
class ExternalPaths:
    """Files ``magn validate`` writes under its ``--out`` folder (an external validation)::

        <out>/predictions.csv          predictions       one row per lesion and method
              metrics.json             metrics           discrimination, calibration, internal
                                                         estimate, warnings, recalibration
              input_checks.csv         input_checks      one row per input check that fired
              calibration_curve.csv    calibration_curve reliability table per method
              decision_curve.csv       decision_curve    net benefit per method and threshold
              breakdown.csv            breakdown         metrics per acquisition variable level
              cases/<lesion_id>/prediction.json  case(lesion_id)  MAGN's case output
    """

    root: Path

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def input_checks(self) -> Path:
        return self.root / "input_checks.csv"

    @property
    def calibration_curve(self) -> Path:
        return self.root / "calibration_curve.csv"

    @property
    def decision_curve(self) -> Path:
        return self.root / "decision_curve.csv"

    @property
    def breakdown(self) -> Path:
        return self.root / "breakdown.csv"

    @property
    def cases_dir(self) -> Path:
        return self.root / "cases"

    def case(self, lesion_id: str) -> Path:
        return self.cases_dir / str(lesion_id) / "prediction.json"
