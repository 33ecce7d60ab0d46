"""The data manifest: the door through which a cohort (embedded or a user's own) enters.

A manifest folder holds four CSV files (schema in ``data_manifest/README.md``)::

    patients.csv   patient_id, age, sex[, site, centre, ...]  one row per patient
    lesions.csv    lesion_id, patient_id, label, mask[, mask_label, vertebra, size_cm, ...]
    series.csv     patient_id, view, folder                    one row per patient and view
    readers.csv    lesion_id, reader, call, confidence[, patient_id]   optional; radiologists' reads

Paths are relative to the manifest folder (absolute paths are accepted). Lesion masks are
NIfTI files on the grid of the patient's sagittal series as a correct DICOM-to-NIfTI
conversion gives it: data ``[i, j, k]`` with ``i`` = DICOM column index, ``j`` = row index,
``k`` = slice index in order of increasing position along ``row cosines x column cosines``,
and an affine to world RAS+ mm (the convention of ``magn_lib.dicom.read_series``).

:func:`load_manifest` checks everything it can without reading pixel data of the DICOM
series (headers only) and reports every problem at once as one :class:`InputError`, each line
naming the patient, the file (and the CSV line) and what is wrong. :func:`combine_manifests`
writes one manifest of several cohorts (sites), for a leave-one-site-out cross-validation.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from magn_lib.config import VIEWS
from magn_lib.dicom import SeriesGrid, series_grid
from magn_lib.errors import InputError
from magn_lib.scrub import Scrubber, captured_warnings

__all__ = [
    "GRID_TOLERANCE_MM",
    "LABELS",
    "MANIFEST_TABLES",
    "SEXES",
    "SITES",
    "Manifest",
    "combine_manifests",
    "listed_inputs",
    "load_manifest",
    "mask_values_problem",
    "sagittal_grid",
]

LABELS = {0: "lung-cancer metastasis", 1: "multiple myeloma"}
SEXES = ("M", "F")
SITES = ("cervical", "thoracic", "lumbar", "sacrococcygeal")
# Largest distance between corresponding voxel centres of a mask and its series grid.
GRID_TOLERANCE_MM = 0.05

_COLUMNS = {
    "patients.csv": ("patient_id", "age", "sex"),
    "lesions.csv": ("lesion_id", "patient_id", "label", "mask"),
    "series.csv": ("patient_id", "view", "folder"),
    "readers.csv": ("lesion_id", "reader", "call", "confidence"),
}
#: The manifest folder's tables (readers.csv optional).
MANIFEST_TABLES: tuple[str, ...] = tuple(_COLUMNS)
_TABLE_FILE = {name.removesuffix(".csv"): name for name in MANIFEST_TABLES}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_YES_NO = {"": False, "no": False, "n": False, "false": False, "0": False,
           "yes": True, "y": True, "true": True, "1": True}
_SEX_ALIASES = {"m": "M", "male": "M", "f": "F", "female": "F"}


@dataclass(frozen=True)
class Manifest:
    """A validated cohort: typed tables and the folder their paths are relative to.

    Attributes:
        root: the manifest folder.
        patients: ``patient_id`` (str), ``age`` (Float64, years), ``sex`` ("M"/"F"),
            ``site`` (vertebral site: one of ``SITES`` or missing), ``centre`` (the
            hospital or site the patient was imaged at, str, missing when blank; only when
            patients.csv has the column) and any extra columns (str).
        lesions: ``lesion_id``, ``patient_id`` (str), ``label`` (int64: 1 myeloma, 0
            metastasis), ``mask`` (str, path), ``mask_label`` (int64, default 1),
            ``size_cm`` (Float64, may be missing), ``vertebra`` (str) and extra columns.
        series: ``patient_id``, ``view`` (one of ``VIEWS``), ``folder`` (str, path).
        readers: ``lesion_id``, ``patient_id`` (from lesions.csv), ``reader`` (str), ``call``
            (int64, 1 = myeloma), ``confidence`` (int64, 1-5) - the reads table of
            ``magn_lib.readers``; empty when the cohort has no reader calls.
        views: the views that were required and checked.
    """

    root: Path
    patients: pd.DataFrame
    lesions: pd.DataFrame
    series: pd.DataFrame
    readers: pd.DataFrame
    views: tuple[str, ...]

    def path(self, relative: str | PathLike[str]) -> Path:
        """A manifest path as an absolute path (relative ones are taken from ``root``)."""
        return self.root / Path(relative)

    def series_folder(self, patient_id: str, view: str) -> Path:
        """The DICOM folder of one patient's ``view``."""
        rows = self.series[(self.series["patient_id"] == patient_id)
                           & (self.series["view"] == view)]
        if rows.empty:
            raise KeyError(f"no {view} series for patient {patient_id}")
        return self.path(rows["folder"].iloc[0])

    def allows_burned_in(self, patient_id: str, view: str) -> bool:
        """Whether series.csv opts this series in despite ``BurnedInAnnotation = YES``
        (column ``allow_burned_in``: yes/no, default no)."""
        rows = self.series[(self.series["patient_id"] == patient_id)
                           & (self.series["view"] == view)]
        return bool(not rows.empty and "allow_burned_in" in rows
                    and bool(rows["allow_burned_in"].iloc[0]))

    def scrubber(self) -> Scrubber:
        """The scrubber for texts about this cohort: each series folder shown as
        ``"P001 sagittal series"``, each mask file as ``"P001 mask"``, the manifest folder as
        ``"manifest"`` (:class:`magn_lib.scrub.Scrubber`)."""
        return _scrubber(self.root, self.series, self.lesions)

    def mask_path(self, lesion_id: str) -> Path:
        """The sagittal mask file of a lesion (select ``mask_label`` inside it)."""
        rows = self.lesions[self.lesions["lesion_id"] == lesion_id]
        if rows.empty:
            raise KeyError(f"no lesion {lesion_id}")
        return self.path(rows["mask"].iloc[0])


def _scrubber(root: Path, series: pd.DataFrame | None, lesions: pd.DataFrame | None
              ) -> Scrubber:
    labels: dict[Path, str] = {root: "manifest"}
    if series is not None:
        for pid, view, folder in zip(series["patient_id"], series["view"], series["folder"],
                                     strict=True):
            if str(folder):
                labels[root / str(folder)] = f"{pid} {view} series"
    if lesions is not None:
        for pid, mask in zip(lesions["patient_id"], lesions["mask"], strict=True):
            if str(mask):
                labels[root / str(mask)] = f"{pid} mask"
    return Scrubber.build(labels=labels)


def sagittal_grid(folder: str | PathLike[str]) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape ``(columns, rows, slices)`` and RAS+ affine of a DICOM series, from headers only.

    The grid :func:`magn_lib.dicom.read_series` gives the series (the same choice of series
    in a mixed folder, the same checks: :func:`magn_lib.dicom.series_grid`): ``i`` = column
    index, ``j`` = row index, ``k`` = slices sorted by position along ``row cosines x column
    cosines``.

    Raises:
        InputError: no readable DICOM image, or headers that do not form one grid.
    """
    grid = series_grid(Path(folder))
    return grid.shape, grid.affine


def _series_grid(folder: Path, patient: str) -> SeriesGrid | None:
    """The series' grid, or ``None`` when its DICOM cannot be read: that patient is then
    excluded by the ingest stage with the reason, and the others proceed."""
    try:
        return series_grid(folder, patient=patient)
    except InputError:
        return None


def _corners(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    idx = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                    for k in (0, shape[2] - 1)])
    return (affine @ idx.T).T[:, :3]


def _same_voxels_reordered(mask_shape: Sequence[int], mask_affine: np.ndarray,
                           grid: SeriesGrid) -> bool:
    """True when the mask covers the series' voxel centres in another axis order or sense."""
    a = np.sort(_corners(mask_shape, mask_affine), axis=0)
    b = np.sort(_corners(grid.shape, grid.affine), axis=0)
    return sorted(mask_shape) == sorted(grid.shape) and np.allclose(a, b, atol=0.5)


class _Collector:
    """Collects problems; each names the patient, the file and the CSV line."""

    def __init__(self) -> None:
        self.errors: list[InputError] = []

    def add(self, problem: str, *, patient: str | None = None, file: Any = None,
            hint: str | None = None) -> None:
        self.errors.append(InputError(problem, patient=patient or None, file=file, hint=hint))


_DELIMITERS = (",", ";", "\t")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


def _split(line: str, delimiter: str) -> list[str]:
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter,
                                               skipinitialspace=True), [])]


def _read_csv(root: Path, name: str, errors: _Collector, *, optional: bool = False
              ) -> pd.DataFrame | None:
    """One manifest table as text cells, tolerant of what spreadsheets write.

    Accepted: a UTF-8 byte-order mark, CRLF or CR line ends, blank lines and rows whose cells
    are all empty (Excel's trailing ``,,,``), empty trailing columns, and a ``;`` or tab
    delimiter (detected from the header: the delimiter that yields the required columns; with
    ``;`` a decimal comma such as ``3,87`` is read as ``3.87``). Anything else (another
    encoding, a row with more non-empty cells than the header) is refused with the fix.
    The ``_line`` column keeps each row's line number in the file (the header is line 1).
    """
    path = root / name
    if not path.is_file():
        if not optional:
            errors.add(f"{name} is missing from the manifest folder", file=path,
                       hint="see data_manifest/README.md and the templates beside it")
        return None
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        errors.add(f"not UTF-8 text (byte {raw[err.start:err.start + 1]!r} at offset "
                   f"{err.start})", file=path,
                   hint="save the table as 'CSV UTF-8' (Excel: Save As > CSV UTF-8; "
                   "LibreOffice: Text CSV, character set Unicode (UTF-8))")
        return None
    lines = text.splitlines()
    header_at = next((n for n, line in enumerate(lines) if line.strip(" ,;\t")), None)
    if header_at is None:
        errors.add("the file is empty (no header line)", file=path,
                   hint=f"the first line names the columns: {', '.join(_COLUMNS[name])}")
        return None
    required = _COLUMNS[name]
    delimiter = next((d for d in _DELIMITERS
                      if set(required) <= set(_split(lines[header_at], d))), ",")
    header = _split(lines[header_at], delimiter)
    while header and not header[-1]:
        header.pop()  # empty trailing columns
    missing = [c for c in required if c not in header]
    if missing:
        hint = None
        for other in _DELIMITERS[1:]:
            if other in lines[header_at] and "," not in lines[header_at]:
                hint = (f"the header is split by {other!r}, not ','; it must name the columns "
                        f"{', '.join(required)}")
        errors.add(f"required column(s) {missing} missing; has {header}", file=path, hint=hint)
        return None
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated or "" in header:
        what = f"duplicate column(s) {duplicated}" if duplicated else "an empty column name"
        errors.add(f"line {header_at + 1}: header has {what}", file=path,
                   hint="give every column one unique name")
        return None
    reader = csv.reader(io.StringIO("\n".join(lines[header_at + 1:])), delimiter=delimiter,
                        skipinitialspace=True)
    rows, numbers = [], []
    for record in reader:
        cells = [c.strip() for c in record]
        line = header_at + 1 + reader.line_num
        if not any(cells):
            continue  # a blank line or a row of empty cells
        if len(cells) > len(header):
            if any(cells[len(header):]):
                errors.add(f"line {line}: {len(cells)} cells, the header names {len(header)} "
                           "columns", file=path,
                           hint="remove the extra cells, or quote cells that contain the "
                           f"delimiter {delimiter!r}")
                continue
            cells = cells[:len(header)]
        cells += [""] * (len(header) - len(cells))
        if delimiter == ";":
            cells = [c.replace(",", ".") if _DECIMAL_COMMA.match(c) else c for c in cells]
        rows.append(cells)
        numbers.append(line)
    table = pd.DataFrame(rows, columns=header, dtype=str)
    if table.empty:
        table = pd.DataFrame({c: pd.Series(dtype=str) for c in header})
    table["_line"] = np.asarray(numbers, dtype=np.int64)
    return table


def _where(name: str, row: pd.Series) -> str:
    return f"{name} line {row['_line']}"


def _check_patients(table: pd.DataFrame, errors: _Collector, root: Path) -> pd.DataFrame:
    file = root / "patients.csv"
    ages, sexes, sites = [], [], []
    seen: dict[str, int] = {}
    for _, row in table.iterrows():
        pid, where = row["patient_id"], _where("patients.csv", row)
        if not pid:
            errors.add(f"{where}: empty patient_id", file=file)
        elif not _ID.match(pid):
            errors.add(f"{where}: patient_id {pid!r} has characters other than letters, digits, "
                       "'_', '-', '.'", patient=pid, file=file,
                       hint="use short pseudonymous ids such as P001")
        elif pid in seen:
            errors.add(f"{where}: duplicate patient_id (first on line {seen[pid]})",
                       patient=pid, file=file)
        else:
            seen[pid] = row["_line"]
        age: float = math.nan
        if row["age"]:
            try:
                age = float(row["age"])
            except ValueError:
                errors.add(f"{where}: age {row['age']!r} is not a number", patient=pid,
                           file=file, hint="age in years, or leave the cell empty if unknown")
            else:
                if not 0 <= age <= 120:
                    errors.add(f"{where}: age {age:g} is outside 0-120 years", patient=pid,
                               file=file)
                    age = math.nan
        ages.append(age)
        sex = _SEX_ALIASES.get(row["sex"].lower()) if row["sex"] else None
        if row["sex"] and sex is None:
            errors.add(f"{where}: sex {row['sex']!r} is not one of M, F", patient=pid,
                       file=file, hint="write M or F, or leave the cell empty if unknown")
        sexes.append(sex)
        site = row.get("site", "") or None
        if site is not None and site.lower() not in SITES:
            errors.add(f"{where}: site {site!r} is not one of {', '.join(SITES)}", patient=pid,
                       file=file)
            site = None
        sites.append(site.lower() if site else None)
        centre = row.get("centre", "") or None
        if centre is not None and not _ID.match(centre):
            errors.add(f"{where}: centre {centre!r} has characters other than letters, digits, "
                       "'_', '-', '.'", patient=pid, file=file,
                       hint="name the site by a short code such as A, B or site-2")
    out = table.copy()
    out["patient_id"] = out["patient_id"].astype("string")
    out["age"] = pd.array(ages, dtype="Float64")
    out["sex"] = pd.Categorical(sexes, categories=list(SEXES))
    out["site"] = pd.Categorical(sites, categories=list(SITES))
    if "centre" in out:
        out["centre"] = out["centre"].replace("", pd.NA).astype("string")
    return out


def _check_lesions(table: pd.DataFrame, patients: set[str], errors: _Collector, root: Path
                   ) -> pd.DataFrame:
    file = root / "lesions.csv"
    labels, mask_labels, sizes = [], [], []
    seen: dict[str, int] = {}
    for _, row in table.iterrows():
        lid, pid, where = row["lesion_id"], row["patient_id"], _where("lesions.csv", row)
        where_l = f"{where} (lesion {lid})"
        if not lid:
            errors.add(f"{where}: empty lesion_id", patient=pid, file=file)
        elif not _ID.match(lid):
            errors.add(f"{where}: lesion_id {lid!r} has characters other than letters, digits, "
                       "'_', '-', '.'", patient=pid, file=file)
        elif lid in seen:
            errors.add(f"{where_l}: duplicate lesion_id (first on line {seen[lid]})",
                       patient=pid, file=file, hint="lesion ids must be unique in the cohort")
        else:
            seen[lid] = row["_line"]
        if pid not in patients:
            errors.add(f"{where_l}: patient_id {pid!r} is not in patients.csv", patient=pid,
                       file=file)
        label = row["label"]
        if label in ("0", "1"):
            labels.append(int(label))
        else:
            errors.add(f"{where_l}: unknown label {label!r}", patient=pid, file=file,
                       hint="1 = multiple myeloma, 0 = lung-cancer metastasis")
            labels.append(-1)
        mask_label = row.get("mask_label", "") or "1"
        try:
            value = int(mask_label)
            if value < 1 or str(value) != mask_label.lstrip("+"):
                raise ValueError
        except ValueError:
            errors.add(f"{where_l}: mask_label {mask_label!r} is not a positive integer",
                       patient=pid, file=file, hint="the label value of this lesion in the mask")
            value = -1
        mask_labels.append(value)
        size = row.get("size_cm", "")
        try:
            sizes.append(float(size) if size else math.nan)
        except ValueError:
            errors.add(f"{where_l}: size_cm {size!r} is not a number", patient=pid, file=file)
            sizes.append(math.nan)
        if not row["mask"]:
            errors.add(f"{where_l}: lesion without sagittal mask (empty mask cell)", patient=pid,
                       file=file, hint="every lesion needs a mask drawn on its sagittal series")
    out = table.copy()
    for col in ("lesion_id", "patient_id", "mask"):
        out[col] = out[col].astype("string")
    out["label"] = np.asarray(labels, dtype=np.int64)
    out["mask_label"] = np.asarray(mask_labels, dtype=np.int64)
    out["_mask_label_given"] = [bool(row.get("mask_label", "")) for _, row in table.iterrows()]
    out["size_cm"] = pd.array(sizes, dtype="Float64")
    if "vertebra" not in out:
        out["vertebra"] = ""
    out["vertebra"] = out["vertebra"].astype("string")
    # one diagnosis per patient (pathology is per patient)
    valid = out[out["label"] >= 0]
    for pid, labs in valid.groupby("patient_id")["label"]:
        if labs.nunique() > 1:
            lines = ", ".join(str(x) for x in table.loc[labs.index, "_line"])
            errors.add(f"lesions.csv lines {lines}: lesions of one patient carry different "
                       "labels", patient=str(pid), file=file,
                       hint="the diagnosis (1 myeloma / 0 metastasis) is per patient")
    return out


def _check_series(table: pd.DataFrame, patients: set[str], views: tuple[str, ...],
                  errors: _Collector, root: Path) -> pd.DataFrame:
    file = root / "series.csv"
    seen: dict[tuple[str, str], int] = {}
    for _, row in table.iterrows():
        pid, view, where = row["patient_id"], row["view"], _where("series.csv", row)
        if view not in VIEWS:
            errors.add(f"{where}: unknown view {view!r}", patient=pid, file=file,
                       hint=f"views are {', '.join(VIEWS)}")
            continue
        if pid not in patients:
            errors.add(f"{where}: patient_id {pid!r} is not in patients.csv", patient=pid,
                       file=file)
        key = (pid, view)
        if key in seen:
            errors.add(f"{where}: a second {view} series for this patient (first on line "
                       f"{seen[key]})", patient=pid, file=file, hint="one series per view")
            continue
        seen[key] = row["_line"]
        if view not in views:
            continue  # not needed by this run: not checked
        folder = root / row["folder"] if row["folder"] else None
        if folder is None:
            errors.add(f"{where}: empty folder for the {view} series", patient=pid, file=file)
        elif not folder.is_dir():
            errors.add(f"{where}: {view} series folder does not exist", patient=pid,
                       file=folder, hint="paths are relative to the manifest folder")
        elif not any(p.is_file() for p in folder.iterdir()):
            errors.add(f"{where}: {view} series folder is empty", patient=pid, file=folder)
        elif view != "sagittal":  # the sagittal grid is read below, with the masks
            grid = _series_grid(folder, pid)
            found = None if grid is None else grid.plane
            if found is not None and found != view:
                errors.add(f"{where}: the series in the {view} row is {found}", patient=pid,
                           file=folder, hint="check which folder holds which view")
    for pid in sorted(patients):
        for view in views:
            if (pid, view) not in seen:
                errors.add(f"series.csv: no {view} series for this patient", patient=pid,
                           file=file, hint=f"add a row, or run with views not including {view}")
    out = table.copy()
    out["patient_id"] = out["patient_id"].astype("string")
    out["view"] = pd.Categorical(out["view"], categories=list(VIEWS))
    out["folder"] = out["folder"].astype("string")
    allowed = []
    for _, row in table.iterrows():
        cell = str(row.get("allow_burned_in", "") or "").lower()
        if cell not in _YES_NO:
            errors.add(f"{_where('series.csv', row)}: allow_burned_in {cell!r} is not yes or no",
                       patient=row["patient_id"], file=file,
                       hint="yes only after checking that the images hold no burned-in text "
                       "that identifies the patient")
        allowed.append(_YES_NO.get(cell, False))
    out["allow_burned_in"] = np.asarray(allowed, dtype=bool)
    return out


def _check_masks(lesions: pd.DataFrame, series: pd.DataFrame, errors: _Collector, root: Path
                 ) -> None:
    """Each mask: exists, readable, on its patient's sagittal grid, holds its label."""
    grids: dict[str, SeriesGrid | None] = {}
    masks: dict[Path, tuple[Any, np.ndarray | None]] = {}
    sag = series[series["view"] == "sagittal"]
    folder_of = dict(zip(sag["patient_id"], sag["folder"], strict=True))
    for _, row in lesions.iterrows():
        pid, lid = str(row["patient_id"]), str(row["lesion_id"])
        where = f"{_where('lesions.csv', row)} (lesion {lid})"
        if not row["mask"]:
            continue
        path = root / str(row["mask"])
        if not path.is_file():
            errors.add(f"{where}: mask file does not exist", patient=pid, file=path,
                       hint="paths are relative to the manifest folder")
            continue
        if path not in masks:
            try:
                img = nib.load(path)
                data = np.asanyarray(img.dataobj)
                if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
                    data = data.reshape(data.shape[:3])
                masks[path] = (img, data)
            except Exception as err:  # noqa: BLE001 - nibabel raises many types on bad files
                errors.add(f"{where}: mask cannot be read as NIfTI ({type(err).__name__}: {err})",
                           patient=pid, file=path, hint="save the mask as .nii or .nii.gz")
                masks[path] = (None, None)
        img, data = masks[path]
        if img is None or data is None:
            continue
        if data.ndim != 3:
            errors.add(f"{where}: mask has {data.ndim} dimensions, expected 3", patient=pid,
                       file=path)
            continue
        problem = mask_values_problem(data, label_given=bool(row["_mask_label_given"]))
        if problem is not None:
            errors.add(f"{where}: {problem[0]}", patient=pid, file=path, hint=problem[1])
            continue
        # grid of the sagittal series, read once per patient from the DICOM headers
        if pid not in grids:
            grids[pid] = None
            folder = folder_of.get(pid)
            if folder and (root / folder).is_dir():
                grids[pid] = _series_grid(root / folder, pid)
                if grids[pid] is not None:
                    tokens = {t for value in grids[pid].patient_ids
                              for t in re.split(r"[\^\s\\,'\[\]]+", value) if t}
                    if pid in grids[pid].patient_ids or pid in tokens:
                        errors.add("patient_id equals or appears in the DICOM patient identity "
                                   "of the sagittal series", patient=pid, file=root / folder,
                                   hint="study ids must be pseudonyms, not hospital numbers "
                                   "or names")
        grid = grids[pid]
        if grid is not None:
            shape = tuple(int(n) for n in data.shape)
            affine = img.affine
            diff = (np.abs(_corners(shape, affine) - _corners(grid.shape, grid.affine)).max()
                    if shape == grid.shape else math.inf)
            if diff > GRID_TOLERANCE_MM:
                if _same_voxels_reordered(shape, affine, grid):
                    hint = ("it covers the same voxels with axes flipped or permuted (as some "
                            "converters write); save it on the sagittal series as converted "
                            "with i = column, j = row, k = slice along the normal")
                else:
                    hint = "draw or resample the mask on the patient's sagittal series"
                detail = (f"voxel centres differ by up to {diff:.3g} mm" if shape == grid.shape
                          else f"shape {shape} vs series {grid.shape}")
                errors.add(f"{where}: mask grid differs from the sagittal series ({detail}, "
                           f"tolerance {GRID_TOLERANCE_MM} mm)", patient=pid, file=path,
                           hint=hint)
                continue
        label = int(row["mask_label"])
        if label >= 1 and not np.any(np.rint(data) == label):
            present = np.unique(np.rint(data[data != 0])).astype(int)[:10].tolist()
            errors.add(f"{where}: mask is empty for label {label} (labels present: "
                       f"{present or 'none'})", patient=pid, file=path,
                       hint="check mask_label, or draw the lesion")


def mask_values_problem(data: np.ndarray, *, label_given: bool = True
                        ) -> tuple[str, str] | None:
    """What is wrong with a mask's values, as ``(problem, fix)``, or ``None``.

    The rule: a mask holds integer labels only (0 = background); values between (a soft or
    probabilistic mask, e.g. 0.3 and 0.9) are refused, never thresholded silently; a mask with
    labels other than 1 needs the lesion's ``mask_label`` in lesions.csv (with
    ``label_given=False`` it is refused, never read as label 1 by default).
    """
    values = np.unique(np.asarray(data))
    if not np.isfinite(values).all():
        return ("mask holds NaN or infinite values",
                "save the mask with integer labels (0 = background, 1 = lesion)")
    fractional = values[values != np.rint(values)]
    if fractional.size:
        shown = ", ".join(f"{v:g}" for v in fractional[:4]) + (" ..." if fractional.size > 4
                                                               else "")
        return (f"mask holds {fractional.size} non-integer value(s) ({shown}): a soft or "
                "probabilistic mask, which is not thresholded silently",
                "threshold it at the level you choose and save it with integer labels "
                "(0 = background, 1 = lesion)")
    labels = values[values != 0].astype(np.int64)
    if (labels < 0).any():
        return (f"mask holds negative labels ({labels[labels < 0][:4].tolist()})",
                "labels are 0 = background, 1, 2, ... = lesions")
    if not label_given and set(labels.tolist()) - {1}:
        return (f"mask holds the labels {labels[:10].tolist()} and lesions.csv gives no "
                "mask_label for this lesion",
                "add a mask_label column with the value of this lesion in the mask")
    return None


def _check_readers(table: pd.DataFrame, lesions: pd.DataFrame, errors: _Collector, root: Path
                   ) -> pd.DataFrame:
    file = root / "readers.csv"
    patient_of = dict(zip(lesions["lesion_id"], lesions["patient_id"], strict=True))
    calls, confidences = [], []
    seen: dict[tuple[str, str], int] = {}
    for _, row in table.iterrows():
        lid, reader = row["lesion_id"], row["reader"]
        pid = patient_of.get(lid)
        where = f"{_where('readers.csv', row)} (lesion {lid}, {reader})"
        if lid not in patient_of:
            errors.add(f"{where}: lesion_id {lid!r} is not in lesions.csv", file=file)
        if not reader:
            errors.add(f"{where}: empty reader name", patient=pid, file=file)
        key = (lid, reader)
        if key in seen:
            errors.add(f"{where}: a second call by this reader (first on line {seen[key]})",
                       patient=pid, file=file)
        seen[key] = row["_line"]
        if row["call"] in ("0", "1"):
            calls.append(int(row["call"]))
        else:
            errors.add(f"{where}: call {row['call']!r} is not 0 or 1", patient=pid, file=file,
                       hint="1 = multiple myeloma, 0 = metastasis")
            calls.append(-1)
        if row["confidence"] in ("1", "2", "3", "4", "5"):
            confidences.append(int(row["confidence"]))
        else:
            errors.add(f"{where}: confidence {row['confidence']!r} is not an integer 1-5",
                       patient=pid, file=file, hint="1 = unsure ... 5 = certain")
            confidences.append(-1)
    for reader, rows in table.groupby("reader"):
        missing = sorted(set(patient_of) - set(rows["lesion_id"]))
        if reader and missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            errors.add(f"readers.csv: {reader} has no call for {len(missing)} lesion(s): "
                       f"{shown}", patient=patient_of[missing[0]], file=file,
                       hint="every reader reads every lesion; complete or drop the reader")
    if "patient_id" in table:
        for _, row in table.iterrows():
            lid = row["lesion_id"]
            if lid in patient_of and row["patient_id"] != patient_of[lid]:
                errors.add(f"{_where('readers.csv', row)} (lesion {lid}): patient_id "
                           f"{row['patient_id']!r} differs from lesions.csv "
                           f"({patient_of[lid]!r})", patient=patient_of[lid], file=file)
    out = table.copy()
    out["patient_id"] = [patient_of.get(lid, "") for lid in out["lesion_id"]]
    out = out[["lesion_id", "patient_id"] + [c for c in out if c not in
                                              ("lesion_id", "patient_id")]]
    for col in ("lesion_id", "patient_id", "reader"):
        out[col] = out[col].astype("string")
    out["call"] = np.asarray(calls, dtype=np.int64)
    out["confidence"] = np.asarray(confidences, dtype=np.int64)
    return out


def listed_inputs(path: str | PathLike[str]) -> dict[str, Path]:
    """The series folders and mask files a manifest folder lists, keyed by study ids:
    ``"series/<patient_id>/<view>"`` and ``"mask/<patient_id>"`` (``"mask/<patient_id>/2"``
    for a patient's second mask file...). Read leniently (no validation): rows that cannot be
    read are left out."""
    root = Path(path)
    errors = _Collector()
    out: dict[str, Path] = {}
    series = _read_csv(root, "series.csv", errors, optional=True)
    if series is not None:
        for _, row in series.iterrows():
            if row["patient_id"] and row["view"] and row["folder"]:
                out.setdefault(f"series/{row['patient_id']}/{row['view']}", root / row["folder"])
    lesions = _read_csv(root, "lesions.csv", errors, optional=True)
    if lesions is not None:
        seen: dict[str, list[Path]] = {}
        for _, row in lesions.iterrows():
            if not (row["patient_id"] and row["mask"]):
                continue
            masks = seen.setdefault(row["patient_id"], [])
            mask = root / row["mask"]
            if mask not in masks:
                masks.append(mask)
                n = len(masks)
                out[f"mask/{row['patient_id']}" + (f"/{n}" if n > 1 else "")] = mask
    return out


def load_manifest(path: str | PathLike[str], *, views: Sequence[str] = VIEWS) -> Manifest:
    """Read and validate a manifest folder.

    Args:
        path: the manifest folder (holding ``patients.csv``, ``lesions.csv``, ``series.csv``
            and optionally ``readers.csv``).
        views: the views this run needs; every patient must have a series for each. The
            sagittal series is always needed: the masks are drawn on it.

    Returns:
        A :class:`Manifest` of typed tables (CSV bookkeeping columns removed).

    Raises:
        InputError: every problem found, at once (``err.errors`` lists them one by one), each
            naming the patient, the file (and CSV line) and what is wrong.
    """
    root = Path(path)
    views = tuple(views)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {views!r}")
    checked_views = ("sagittal",) + tuple(v for v in views if v != "sagittal")
    if not root.is_dir():
        raise InputError("manifest folder does not exist", file=root,
                         hint="pass the folder holding patients.csv, lesions.csv, series.csv")
    errors = _Collector()
    tables = {name: _read_csv(root, name, errors, optional=name == "readers.csv")
              for name in _COLUMNS}
    patients_t, lesions_t, series_t = (tables["patients.csv"], tables["lesions.csv"],
                                       tables["series.csv"])
    readers_t = tables["readers.csv"]
    patients = lesions = series = readers = None
    if patients_t is not None:
        patients = _check_patients(patients_t, errors, root)
    ids = set(patients["patient_id"].astype(str)) if patients is not None else set()
    if lesions_t is not None:
        lesions = _check_lesions(lesions_t, ids, errors, root)
        if patients is not None:
            with_lesion = set(lesions["patient_id"].astype(str))
            for _, row in patients_t.iterrows():
                if row["patient_id"] and row["patient_id"] not in with_lesion:
                    errors.add(f"{_where('patients.csv', row)}: patient without lesion in "
                               "lesions.csv", patient=row["patient_id"], file=root / "lesions.csv",
                               hint="remove the patient or add the lesion(s)")
    # pydicom's warnings carry raw header values (UIDs): captured and re-issued scrubbed
    with captured_warnings(_scrubber(root, series_t, lesions_t)):
        if series_t is not None:
            series = _check_series(series_t, ids, checked_views, errors, root)
        if lesions is not None and series is not None:
            _check_masks(lesions, series, errors, root)
    if readers_t is not None and lesions is not None:
        readers = _check_readers(readers_t, lesions, errors, root)
    if errors.errors:
        raise InputError.combine(errors.errors)
    assert patients is not None and lesions is not None and series is not None
    if readers is None:
        readers = pd.DataFrame({"lesion_id": pd.Series(dtype="string"),
                                "patient_id": pd.Series(dtype="string"),
                                "reader": pd.Series(dtype="string"),
                                "call": pd.Series(dtype=np.int64),
                                "confidence": pd.Series(dtype=np.int64)})
    drop = {"columns": ["_line", "_mask_label_given"], "errors": "ignore"}
    return Manifest(root=root, patients=patients.drop(**drop).reset_index(drop=True),
                    lesions=lesions.drop(**drop).reset_index(drop=True),
                    series=series.drop(**drop).reset_index(drop=True),
                    readers=readers.drop(**drop).reset_index(drop=True), views=tuple(views))


def combine_manifests(sources: Mapping[str, str | PathLike[str]], out_dir: str | PathLike[str]
                      ) -> Path:
    """Write one manifest of several cohorts (one per site), for a leave-one-site-out
    cross-validation (``cv_scheme: leave-one-site-out``).

    Every source is validated first (:func:`load_manifest`). The combined folder holds only the
    four CSV files: its paths point at the sources' DICOM folders and masks (relative to
    ``out_dir`` where possible), which are read, never copied or modified. Study ids are made
    unique by prefixing the site's name: patient ``P001`` of site ``A`` becomes ``A-P001``, its
    lesion ``P001-L1`` becomes ``A-P001-L1``; ``patients.csv`` gains (or has replaced) the
    ``centre`` column, the site's name. ``readers.csv`` is combined when every site has reads
    by the same reader names (else it is left out, with a warning).

    Args:
        sources: ``{site name: manifest folder}``, at least two; names of letters, digits,
            ``_``, ``-``, ``.`` (e.g. ``{"A": ..., "B": ...}``).
        out_dir: the new manifest folder; must not exist yet or be empty.

    Returns:
        ``out_dir`` (load it with :func:`load_manifest`).

    Raises:
        InputError: a source that does not validate (its problems, at once), fewer than two
            sources, a bad site name, or an ``out_dir`` that holds files.
    """
    from magn_lib.files import write_csv

    out = Path(out_dir)
    if len(sources) < 2:
        raise InputError(f"combine_manifests needs at least two sites, got {list(sources)}",
                         hint="pass {site name: manifest folder} for each site")
    bad = [name for name in sources if not isinstance(name, str) or not _ID.match(name)]
    if bad:
        raise InputError(f"site name(s) {bad} must be letters, digits, '_', '-', '.'",
                         hint="name the sites by short codes such as A and B")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("the combined manifest's folder exists and is not empty", file=out,
                         hint="choose a new folder: nothing in an existing one is replaced")
    tables: dict[str, list[pd.DataFrame]] = {"patients": [], "lesions": [], "series": [],
                                             "readers": []}
    out_abs = out.resolve()

    def moved(root: Path, relative: str) -> str:
        target = (root / relative).resolve()
        try:
            return Path(os.path.relpath(target, out_abs)).as_posix()
        except ValueError:  # another drive (Windows): keep it absolute
            return target.as_posix()

    for name, folder in sources.items():
        manifest = load_manifest(folder)
        root = Path(folder)
        # the files as written (text cells, spreadsheet habits undone), extra columns kept
        raw = {table: _read_csv(root, _TABLE_FILE[table], _Collector()).drop(columns="_line")
               for table in ("patients", "lesions", "series")}
        renamed = {pid: f"{name}-{pid}" for pid in manifest.patients["patient_id"]}
        patients = raw["patients"].copy()
        patients["patient_id"] = patients["patient_id"].map(renamed)
        patients["centre"] = name
        lesions = raw["lesions"].copy()
        lesions["lesion_id"] = name + "-" + lesions["lesion_id"]
        lesions["patient_id"] = lesions["patient_id"].map(renamed)
        lesions["mask"] = [moved(root, m) for m in lesions["mask"]]
        series = raw["series"].copy()
        series["patient_id"] = series["patient_id"].map(renamed)
        series["folder"] = [moved(root, f) for f in series["folder"]]
        tables["patients"].append(patients)
        tables["lesions"].append(lesions)
        tables["series"].append(series)
        reads = manifest.readers[["lesion_id", "patient_id", "reader", "call",
                                  "confidence"]].astype(str)
        reads["lesion_id"] = name + "-" + reads["lesion_id"]
        reads["patient_id"] = reads["patient_id"].map(renamed)
        tables["readers"].append(reads)
    # one readers table only when every site's readers read under the same names (every
    # reader must call every lesion); otherwise the comparison with readers is left out
    reader_sets = {frozenset(r["reader"]) for r in tables["readers"]}
    if len(reader_sets) != 1 or not next(iter(reader_sets)):
        if any(not r.empty for r in tables["readers"]):
            warnings.warn("combine_manifests: the sites' readers differ (or some site has "
                          "none), so the combined manifest has no readers.csv", stacklevel=2)
        del tables["readers"]
    out.mkdir(parents=True, exist_ok=True)
    for table, frames in tables.items():
        write_csv(pd.concat(frames, ignore_index=True).fillna(""), out / _TABLE_FILE[table])
    return out
