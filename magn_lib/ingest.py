"""Ingest stage: every DICOM series and sagittal mask of a manifest into de-identified NIfTI.

For each patient of a validated :class:`~magn_lib.manifest.Manifest` this reads every series
the run needs with :func:`magn_lib.dicom.read_series` and writes, under ``work_dir`` (file
names: :class:`magn_lib.layout.WorkPaths`):

- each series as a volume (``volume(patient_id, view)``), float32, affine voxel -> world RAS+ mm;
- each lesion's sagittal mask (``mask(lesion_id, "sagittal")``; its ``mask_label``), uint8 0/1;
- the tables (``ingest_table``): ``series`` (one row per series: grid and acquisition, no
  identity), ``exclusions`` (patients that could not be read, with the reason), and the
  manifest's ``patients`` and ``lesions`` restricted to the patients read.

Only geometry and pixel values leave the DICOM files: NIfTI headers carry no text, file names
carry only the study's pseudonymous ids, and every text written from the user's files (error
reasons in the exclusions table, the series table's ``notes``, pydicom's warnings) passes the
manifest's scrubber (:class:`magn_lib.scrub.Scrubber`): series folders and mask files shown by
study id, the patient's identifying header values redacted, UIDs replaced. Stamps keep file
names as digests only.
A patient whose series cannot be read is excluded with the reason; the others proceed. A
patient whose sources (file names, sizes, modification times, mask label) are unchanged since
the last ingest is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from magn_lib import __version__
from magn_lib.dicom import read_series, series_identity, series_metadata
from magn_lib.errors import InputError
from magn_lib.files import atomic_path, write_csv, write_json
from magn_lib.layout import INGEST_TABLES, WorkPaths
from magn_lib.manifest import Manifest
from magn_lib.scrub import captured_warnings

__all__ = [
    "EXCLUSION_COLUMNS",
    "IngestResult",
    "ingest_cohort",
    "save_nifti",
    "write_deid_key",
]

EXCLUSION_COLUMNS = ("patient_id", "lesion_id", "label", "stage", "reason")
_METADATA_KEYS = (
    "manufacturer", "vendor", "field_strength_t", "orientation", "obliquity_deg",
    "patient_position", "rows", "columns", "slices", "pixel_spacing_mm", "slice_spacing_mm",
    "slice_thickness_mm", "repetition_time_ms", "echo_time_ms",
)


@dataclass(frozen=True)
class IngestResult:
    """What the ingest stage produced.

    Attributes:
        patients, lesions: the manifest's tables restricted to the patients that were read;
            ``lesions["mask"]`` is the converted sagittal mask, relative to ``work_dir``.
        series: one row per ingested series: ``patient_id``, ``view``, ``nifti`` (path
            relative to ``work_dir``), shape, voxel size (mm) and acquisition metadata.
        exclusions: ``EXCLUSION_COLUMNS``; one row per lesion of each excluded patient.
        work_dir: where the files are (named by :attr:`paths`).
        n_read, n_skipped: patients read now / found unchanged from an earlier ingest.
    """

    patients: pd.DataFrame
    lesions: pd.DataFrame
    series: pd.DataFrame
    exclusions: pd.DataFrame
    work_dir: Path
    n_read: int
    n_skipped: int

    @property
    def paths(self) -> WorkPaths:
        """The work folder's layout: ``paths.volume(patient_id, view)``,
        ``paths.mask(lesion_id, "sagittal")``."""
        return WorkPaths(self.work_dir)

    @classmethod
    def load(cls, work_dir: str | Path) -> IngestResult:
        """The result of an earlier :func:`ingest_cohort` into ``work_dir`` (from its tables)."""
        paths = WorkPaths(Path(work_dir))
        if not paths.ingest_table("lesions").is_file():
            raise FileNotFoundError(
                f"no ingest results in {paths.ingest_dir}: run the cohort notebook (01) or "
                "ingest_cohort"
            )
        tables = {name: _read_table(paths.ingest_table(name)) for name in INGEST_TABLES}
        return cls(**tables, work_dir=paths.work_dir, n_read=0,
                   n_skipped=len(tables["patients"]))


def save_nifti(img: nib.Nifti1Image, path: str | Path) -> None:
    """Write ``img`` atomically (temporary name in the same folder, then rename), with no
    header text (``descrip``, ``aux_file``, ``intent_name`` emptied)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header.copy())
    img.header["descrip"] = b""
    img.header["aux_file"] = b""
    img.header["intent_name"] = b""
    with atomic_path(path, suffix=".tmp.nii.gz") as tmp:
        nib.save(img, tmp)


def _signature(paths: Sequence[Path], extra: Any) -> dict[str, Any]:
    """Cheap fingerprint of source files: names, sizes and modification times.

    The names are kept as digests: the stamp lies in the work folder, and the user's folder
    and file names may hold the patient's name (PACS exports name folders so).
    """
    files = []
    for root in paths:
        candidates = sorted(root.rglob("*"), key=os.fsencode) if root.is_dir() else [root]
        for f in candidates:
            if f.is_file():
                st = f.stat()
                name = hashlib.sha256(os.fsencode(f)).hexdigest()[:20]
                files.append([name, st.st_size, st.st_mtime_ns])
    return {"reader": __version__, "files": files, "extra": extra}


def _identity_values(folders: Sequence[Path]) -> dict[str, list[str]]:
    """The identifying values of a patient's series, for the scrubber: ``names`` (person
    names, redacted word by word) and ``secrets`` (every other value, redacted whole)."""
    secrets: set[str] = set()
    names: set[str] = set()
    for folder in folders:
        try:
            found = series_identity(folder)
        except Exception:  # an unreadable folder has already been reported by read_series
            continue
        for keyword, value in found.items():
            if keyword in _PERSON_NAMES or keyword.startswith("Patient"):
                names.add(value)
            else:
                secrets.add(value)
    return {"secrets": sorted(secrets), "names": sorted(names)}


# person-name attributes (VR PN) besides the Patient* ones: redacted word by word
_PERSON_NAMES = frozenset({"ReferringPhysicianName", "PerformingPhysicianName",
                           "NameOfPhysiciansReadingStudy", "OperatorsName",
                           "RequestingPhysician", "OtherPatientNames"})


def _ingest_patient(
    manifest: Manifest, patient_id: str, views: Sequence[str], paths: WorkPaths
) -> dict[str, Any]:
    """Read one patient; return its series rows, or the reason it is excluded.

    Every warning raised while its files are read (pydicom's carry raw header values) is
    captured and re-issued scrubbed (:func:`magn_lib.scrub.captured_warnings`).
    """
    with captured_warnings(manifest.scrubber()):
        return _read_patient(manifest, patient_id, views, paths)


def _read_patient(
    manifest: Manifest, patient_id: str, views: Sequence[str], paths: WorkPaths
) -> dict[str, Any]:
    folders = {view: manifest.series_folder(patient_id, view) for view in views}
    lesions = manifest.lesions[manifest.lesions["patient_id"] == patient_id]
    mask_files = sorted({manifest.path(m) for m in lesions["mask"]})
    stamp = paths.ingest_stamp(patient_id)
    signature = _signature(
        [*folders.values(), *mask_files],
        {"views": list(views), "lesions": lesions[["lesion_id", "mask_label"]]
         .astype(str).values.tolist()},  # mask paths: in the file digests
    )
    if stamp.is_file():
        previous = json.loads(stamp.read_text())
        if previous.get("signature") == signature:
            return {"patient_id": patient_id, "series": previous["series"], "skipped": True}
    scrub = manifest.scrubber()
    try:
        rows = []
        for view, folder in folders.items():
            img = read_series(folder, patient=patient_id,
                              allow_burned_in=manifest.allows_burned_in(patient_id, view))
            meta = series_metadata(folder, patient=patient_id)
            out = paths.volume(patient_id, view)
            save_nifti(img, out)
            rows.append({
                "patient_id": patient_id, "view": view,
                "nifti": out.relative_to(paths.work_dir).as_posix(),
                "shape": "x".join(map(str, img.shape)),
                "voxel_mm": "x".join(f"{z:.3f}" for z in img.header.get_zooms()[:3]),
                **{k: _plain(meta.get(k)) for k in _METADATA_KEYS},
                "notes": meta["notes"],
            })
            if view == "sagittal":
                sagittal = img
        for lesion in lesions.itertuples():
            _save_lesion_mask(manifest, lesion, sagittal, paths)
    except InputError as exc:
        secrets = scrub.with_secrets(**_identity_values(list(folders.values())))
        return {"patient_id": patient_id, "error": str(secrets.error(exc))}
    if any(row["notes"] for row in rows):
        secrets = scrub.with_secrets(**_identity_values(list(folders.values())))
        for row in rows:
            row["notes"] = secrets(row["notes"])
            if row["notes"]:
                warnings.warn(f"patient {patient_id}, {row['view']} series: {row['notes']}",
                              UserWarning, stacklevel=2)
    write_json(stamp, {"signature": signature, "series": rows}, indent=None)
    return {"patient_id": patient_id, "series": rows, "skipped": False}


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def _save_lesion_mask(manifest: Manifest, lesion: Any, sagittal: nib.Nifti1Image,
                      paths: WorkPaths) -> None:
    path = manifest.path(lesion.mask)
    mask = nib.load(path)
    data = np.asanyarray(mask.dataobj)
    # integer labels only: the manifest refuses soft masks (manifest.mask_values_problem)
    binary = (data == int(lesion.mask_label)).astype(np.uint8)
    if binary.shape != sagittal.shape[:3] or not np.allclose(
        mask.affine, sagittal.affine, atol=0.05
    ):
        raise InputError(
            f"lesion {lesion.lesion_id}: mask grid {binary.shape} does not match the sagittal "
            f"series read from DICOM {sagittal.shape[:3]}",
            patient=lesion.patient_id, file=path,
            hint="save the mask on the converted sagittal series",
        )
    if not binary.any():
        raise InputError(
            f"lesion {lesion.lesion_id}: mask holds no voxel of label {lesion.mask_label}",
            patient=lesion.patient_id, file=path,
        )
    out = nib.Nifti1Image(binary, sagittal.affine)
    out.set_qform(sagittal.affine, code=1)
    out.set_sform(sagittal.affine, code=1)
    save_nifti(out, paths.mask(lesion.lesion_id, "sagittal"))


def ingest_cohort(
    manifest: Manifest,
    work_dir: str | Path,
    *,
    views: Sequence[str] | None = None,
    n_jobs: int = 1,
    progress: bool = True,
) -> IngestResult:
    """Run the ingest stage (see the module docstring).

    Args:
        manifest: a cohort validated by :func:`magn_lib.manifest.load_manifest`.
        work_dir: the run's private work folder.
        views: views to ingest (default: the manifest's checked views).
        n_jobs: parallel patients (joblib; -1 = one per core).
        progress: show a tqdm bar.

    Returns:
        An :class:`IngestResult`; its tables are also written to the work folder
        (:meth:`magn_lib.layout.WorkPaths.ingest_table`).
    """
    from joblib import Parallel, delayed

    from magn_lib.progress import tqdm

    paths = WorkPaths(Path(work_dir))
    views = tuple(views or manifest.views)
    if "sagittal" not in views:
        views = ("sagittal", *views)
    patient_ids = manifest.patients["patient_id"].tolist()
    jobs = (delayed(_ingest_patient)(manifest, pid, views, paths) for pid in patient_ids)
    runner = Parallel(n_jobs=n_jobs, return_as="generator")
    results = list(tqdm(runner(jobs), total=len(patient_ids), desc="ingest", unit="patient",
                        disable=not progress))

    failed = {r["patient_id"]: r["error"] for r in results if "error" in r}
    series = pd.DataFrame([row for r in results if "series" in r for row in r["series"]])
    lesions = manifest.lesions
    exclusions = pd.DataFrame(
        [
            {"patient_id": les.patient_id, "lesion_id": les.lesion_id, "label": les.label,
             "stage": "ingest", "reason": failed[les.patient_id]}
            for les in lesions.itertuples() if les.patient_id in failed
        ],
        columns=list(EXCLUSION_COLUMNS),
    )
    keep = ~manifest.patients["patient_id"].isin(failed)
    patients = manifest.patients[keep].reset_index(drop=True)
    lesions = lesions[~lesions["patient_id"].isin(failed)].reset_index(drop=True)
    # the converted mask in the work folder, not the user's file (its name may be a patient's)
    lesions["mask"] = pd.array(
        [paths.mask(lid, "sagittal").relative_to(paths.work_dir).as_posix()
         for lid in lesions["lesion_id"]], dtype="string")
    paths.ingest_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("series", series), ("exclusions", exclusions),
                        ("patients", patients), ("lesions", lesions)):
        _write_csv(frame, paths.ingest_table(name))
    return IngestResult(
        patients=patients,
        lesions=lesions,
        series=series,
        exclusions=exclusions,
        work_dir=paths.work_dir,
        n_read=sum(1 for r in results if r.get("skipped") is False),
        n_skipped=sum(1 for r in results if r.get("skipped") is True),
    )


def _read_table(path: Path) -> pd.DataFrame:
    """A stage table as written by :func:`_write_csv` (ids as text, blanks as missing)."""
    ids = {c: str for c in ("patient_id", "lesion_id")}
    return pd.read_csv(path, dtype=ids)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_csv(frame, path)


def write_deid_key(
    manifest: Manifest, path: str | Path, *, forbidden: Sequence[str | Path] = ()
) -> Path:
    """Write the key from each study ``patient_id`` to the identity in its DICOM headers.

    Written only on request, readable by the owner only, and never inside ``forbidden``
    folders (the run's ``reports/`` and ``work/``): whoever holds the key can re-identify.

    Returns:
        The key file (CSV: patient_id, view, and every identifying attribute found).
    """
    path = Path(path).expanduser().resolve()
    for folder in forbidden:
        folder = Path(folder).expanduser().resolve()
        if path == folder or folder in path.parents:
            raise InputError(
                f"the de-identification key must not be written inside {folder.name}/",
                file=path, hint="choose a private location outside reports/ and work/",
            )
    rows = []
    for item in manifest.series.itertuples():
        identity = series_identity(manifest.path(item.folder), patient=item.patient_id)
        rows.append({"patient_id": item.patient_id, "view": item.view, **identity})
    return write_csv(pd.DataFrame(rows), path, permissions=0o600)
