"""Where the study may write, and where the identity key may go.

Two rules, checked on resolved paths (symlinks followed, relative paths taken from the
project root) before anything is written:

- **The cohort's data are never written to.** A run's report and work folders must not lie
  inside the manifest folder, nor inside any folder the manifest points to (each series folder
  of ``series.csv``, the folder of each mask file of ``lesions.csv``, wherever they are); a
  report folder, which is meant to be shared, must not hold any of them either
  (:func:`check_run_folders`, called by the study runner and by every notebook).
- **The identity key never enters a run's folders.** Every run marks its report and work
  folders with a marker file (:data:`magn_lib.layout.RUN_MARKER`, :func:`mark_run_folders`);
  the de-identification key is refused inside any folder holding one, found by walking up from
  the key's resolved path, wherever the run lives, and inside the default parents ``reports/``
  and ``work/`` (:func:`check_key_location`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from magn_lib.errors import ConfigError, InputError
from magn_lib.files import write_text
from magn_lib.layout import RUN_MARKER, RunPaths

__all__ = [
    "DataFolder",
    "check_key_location",
    "check_run_folders",
    "data_folders",
    "mark_run_folders",
    "run_folder_holding",
]

# the manifest tables' columns that point to data, and whether the path is a folder or a file
_POINTERS = (("series.csv", "folder", True), ("lesions.csv", "mask", False))


@dataclass(frozen=True)
class DataFolder:
    """A folder holding the cohort's data: ``path`` (resolved) and what it is, in words
    (``"the manifest folder"``, ``"series folder of series.csv line 3"``)."""

    path: Path
    what: str


def _resolved(path: str | os.PathLike[str]) -> Path:
    from magn_lib.config import resolve_path

    return resolve_path(path).resolve()


def _rows(table: Path) -> list[dict[str, str]]:
    """The rows of a manifest CSV as text, tolerant of what spreadsheets write (BOM, CRLF,
    blank rows, ``;`` as delimiter); ``[]`` when it cannot be read (the manifest's own
    validation reports that later, after this guard)."""
    try:
        text = table.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    except OSError:
        return []
    header = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if header.count(";") > header.count(",") else ","
    try:
        return [row for row in csv.DictReader(io.StringIO(text, newline=""),
                                              delimiter=delimiter)
                if any((value or "").strip() for value in row.values() if isinstance(value,
                                                                                     str))]
    except csv.Error:
        return []


def data_folders(manifest_dir: str | os.PathLike[str]) -> list[DataFolder]:
    """Every folder holding the cohort's data: the manifest folder, each series folder and the
    folder of each mask file the manifest names (resolved; listed once each).

    Args:
        manifest_dir: the manifest folder (holding ``series.csv``, ``lesions.csv``, ...);
            paths inside its tables are relative to it or absolute.
    """
    root = _resolved(manifest_dir)
    found = {root: DataFolder(root, "the manifest folder")}
    for table, column, is_folder in _POINTERS:
        for line, row in enumerate(_rows(root / table), start=2):
            value = (row.get(column) or "").strip()
            if not value:
                continue
            path = Path(value).expanduser()
            path = (path if path.is_absolute() else root / path).resolve()
            folder = path if is_folder else path.parent
            what = f"{'series' if is_folder else 'mask'} folder of {table} line {line}"
            found.setdefault(folder, DataFolder(folder, what))
    return list(found.values())


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_run_folders(paths: RunPaths, data: Iterable[DataFolder]) -> None:
    """Refuse a run whose folders would write into the cohort's data (see the module doc).

    Args:
        paths: the run's report and work folders.
        data: the folders holding the data (:func:`data_folders`; for the embedded cohort its
            whole folder).

    Raises:
        ConfigError: naming the run folder, the data folder and what to do; raised before
            anything is written.
    """
    report, work = _resolved(paths.report_dir), _resolved(paths.work_dir)
    for item in data:
        for option, folder in (("run_dir (--out)", report), ("work_dir (--work)", work)):
            if _inside(folder, item.path):
                raise ConfigError(
                    f"{option}: {folder} lies inside {item.path}, {item.what}; the study never "
                    "writes into the cohort's data: choose a folder outside it"
                )
        if _inside(item.path, report):
            raise ConfigError(
                f"run_dir (--out): the report folder {report} would hold {item.path}, "
                f"{item.what}; a report folder is meant to be shared: choose one that holds "
                "no patient data"
            )


def mark_run_folders(paths: RunPaths) -> None:
    """Write the marker of a run into its report and work folders (created when missing), so
    that no identity key is ever written inside them (:func:`check_key_location`)."""
    for kind, marker in (("report", paths.report_marker), ("work", paths.work_marker)):
        record = json.dumps({"magn_run": kind,
                             "purpose": "a magn study run folder: no identity key may be "
                                        "written inside it"}) + "\n"
        try:
            if marker.read_text() == record:
                continue
        except OSError:
            pass
        write_text(marker, record)


def run_folder_holding(path: str | os.PathLike[str]) -> Path | None:
    """The report or work folder of a run that holds ``path`` (resolved; the path itself or
    the nearest folder above it with a run marker), or ``None``."""
    resolved = _resolved(path)
    for folder in (resolved, *resolved.parents):
        if (folder / RUN_MARKER).is_file():
            return folder
    return None


def check_key_location(path: str | os.PathLike[str], *,
                       forbidden: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Where the de-identification key may be written: never inside a run's report or work
    folder (any run, wherever it lives) nor inside ``forbidden`` folders (the default
    ``reports/`` and ``work/``). Symlinks are followed.

    Returns:
        The key file's resolved path.

    Raises:
        InputError: naming the run folder or the forbidden folder that would hold the key.
    """
    resolved = _resolved(path)
    hint = "choose a private location outside every run's report and work folders"
    run = run_folder_holding(resolved)
    if run is not None:
        raise InputError(
            f"the de-identification key must not be written inside {run}, a folder of a study "
            "run (report folders are shared; work folders travel with them)",
            file=resolved, hint=hint,
        )
    for folder in forbidden:
        folder = _resolved(folder)
        if _inside(resolved, folder):
            raise InputError(
                f"the de-identification key must not be written inside {folder.name}/",
                file=resolved, hint=hint,
            )
    return resolved
