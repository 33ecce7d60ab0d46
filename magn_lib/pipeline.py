"""The study runner: the numbered notebooks in order, with papermill, into one run folder.

``run_study`` resolves the profile (and ``--set`` overrides) and the run folders, prepares the
embedded cohort when no manifest is given, then executes ``notebooks/NN_*.ipynb`` in order (all
of them, or a selection: ``only``, ``start``, ``stop``). Each notebook gets ``profile``, the
overrides among the parameters it declares, and the run's folders; it resolves everything else
from the profile itself (:func:`magn_lib.config.notebook_parameters`) and publishes the
effective values, which the runner checks against its own resolution and records.

A notebook whose executed copy exists and whose fingerprint (notebook source, the effective
values of the parameters it declares, input manifest checksums, library code, and the
fingerprint of the notebook before it) is unchanged is skipped. A selection behaves as a whole
run would: every notebook before the selection must be up to date (else the run stops and says
what to run), and the report is published only when every notebook is up to date.
Executed notebooks go to ``reports/<run>/executed/``; each is rendered to a clinician view
(``html/``) and a full view (``html-full/``); ``index.html`` links them in order and
``run_manifest.json`` records what ran, where, with what.

Progress: the runner starts each kernel with ``$MAGN_PROGRESS_FILE`` (see
:mod:`magn_lib.progress`), follows that file and prints every notebook's bars (per patient,
lesion, configuration × fold, epoch) in its terminal, on stderr; nothing of them reaches the
executed notebooks or their HTML.

A notebook that raises stops the run: ``run_study`` reports the failing notebook and cell, keeps
the partial executed copy for debugging, publishes no HTML of it and removes ``index.html`` so
that nothing claims the run succeeded.

External validation: a notebook that declares the parameter ``external_cohort`` (notebook 07)
validates the run's frozen model on a second cohort; it is part of the study only when the
profile names one (:func:`left_out`). The external cohort is prepared by the runner like the
main one (:func:`resolve_external_manifest`: the embedded simulated site generated on first use,
or the manifest folder named), and its input checksums enter that notebook's fingerprint.

Notebook hygiene (no outputs in git, a literal-only ``parameters`` cell first whose profile
parameters are ``None``, no ``def`` or ``class``) is checked by :func:`notebook_problems`; what
each study notebook needs from the notebooks before it is checked by :func:`require_upstream`.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import html
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import nbformat

from magn_lib import __version__
from magn_lib.config import (
    PARAMETERS_MIMETYPE,
    RUN_FOLDERS,
    EffectiveParameters,
    Profile,
    RunPaths,
    check_runnable,
    load_profile,
    project_root,
    resolve_parameters,
    resolve_path,
    run_paths,
)
from magn_lib.errors import ConfigError, OutOfSpaceError, UpstreamError, free_bytes
from magn_lib.guards import DataFolder, check_run_folders, data_folders, mark_run_folders
from magn_lib.layout import ReportPaths, default_report_folder, default_work_folder
from magn_lib.progress import PROGRESS_ENV, ProgressTail, format_duration, format_event
from magn_lib.report import (
    IndexEntry,
    PageLink,
    ReportPart,
    atomic_write_text,
    front_page_html,
    navigation_html,
    notebook_title,
    print_pdf,
    render_html,
    render_index,
    render_report,
    scrub_notebook,
)
from magn_lib.repro import environment_info, file_sha256, git_state

__all__ = [
    "RUN_PARAMETERS",
    "STUDY_NEEDS",
    "STUDY_OUTPUTS",
    "NotebookRun",
    "StudyResult",
    "discover_notebooks",
    "embedded_cohort_dir",
    "export_run_bundle",
    "external_cohort_dir",
    "file_sha256",
    "input_checksums",
    "left_out",
    "notebook_problems",
    "record_warning",
    "reported_parameters",
    "require_upstream",
    "resolve_external_manifest",
    "resolve_manifest",
    "run_study",
    "study_command",
]

NOTEBOOK_PATTERN = re.compile(r"^\d{2}_[A-Za-z0-9_]+\.ipynb$")
# parameters the runner provides besides the profile's own
RUN_PARAMETERS = RUN_FOLDERS
# metadata key of an executed notebook that the runner stamps once the notebook completed
RUN_STAMP = "magn_run"
# parameters no notebook reads but `magn export` does, from the run record (the operating point
# of an exported model): overriding them is recorded, and changes what the export fits
EXPORT_PARAMETERS = frozenset({"target_sensitivity"})
# the parameter by which a notebook declares that it validates on the external cohort
EXTERNAL_PARAMETER = "external_cohort"
_PROFILE_KEYS = frozenset(f.name for f in dataclasses.fields(Profile)) - {"profile"}


@dataclass
class NotebookRun:
    """What happened to one notebook in this run. Times are UTC ISO-8601, durations seconds.

    ``parameters`` are the effective values of the parameters the notebook declares (as the
    notebook itself reported them when it executed in this run), ``sources`` says for each
    whether it came from the profile or an override, ``injected`` is what papermill passed.
    """

    name: str
    title: str
    summary: str
    status: str = "pending"  # executed | skipped | failed | not run
    fingerprint: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    injected: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    error: str | None = None


@dataclass
class StudyResult:
    """The outcome of :func:`run_study`.

    ``succeeded``: no notebook failed. ``complete``: every notebook is up to date, so the
    report (``index.html``) was published. ``failure``: ``"input"`` when the failing notebook
    stopped on an :class:`~magn_lib.errors.InputError` (bad data), ``"config"`` on a
    :class:`~magn_lib.errors.ConfigError` or a diverging training
    (:class:`~magn_lib.train.TrainingDiverged`: the learning rate), ``"disk"`` when the disk
    filled, ``"notebook"`` otherwise.
    """

    succeeded: bool
    paths: RunPaths
    notebooks: list[NotebookRun]
    error: str | None = None
    complete: bool = False
    failure: str | None = None
    duration_s: float = 0.0


# --------------------------------------------------------------------------- notebooks


def discover_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The study's notebooks ``NN_name.ipynb`` in order (default folder: ``notebooks/``)."""
    folder = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _is_literal(node.operand)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(
            _is_literal(v) for v in node.values
        )
    return False


def notebook_problems(nb: nbformat.NotebookNode | str | Path) -> list[str]:
    """Hygiene problems of a notebook as it should be in git; ``[]`` when clean.

    Rules: no outputs and no execution counts; the first code cell is tagged ``parameters`` and
    holds only ``name = literal`` assignments (papermill injects its values after that cell, so
    anything derived belongs in the next cell), with ``profile`` a string and every profile
    parameter ``None`` (taken from the profile); no ``def`` or ``class`` anywhere (functions
    belong in ``magn_lib``); every code cell parses; the notebook declares a one-line
    ``metadata.magn.summary`` used on the report's index page.
    """
    if not isinstance(nb, nbformat.NotebookNode):
        nb = nbformat.read(str(nb), as_version=4)
    problems: list[str] = []
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code_cells, 1):
        if cell.get("outputs"):
            problems.append(f"code cell {i} has outputs (clear them before committing)")
        if cell.get("execution_count") is not None:
            problems.append(f"code cell {i} has an execution count (clear outputs)")
        try:
            tree = ast.parse(_strip_magics(cell.source))
        except SyntaxError as exc:
            problems.append(f"code cell {i} does not parse: {exc.msg} (line {exc.lineno})")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                kind = {"ClassDef": "class", "Lambda": "lambda"}.get(type(node).__name__, "def")
                problems.append(
                    f"code cell {i} defines a {kind} (line {node.lineno}); move it to magn_lib"
                )
    if not code_cells:
        problems.append("notebook has no code cell")
    else:
        first = code_cells[0]
        if "parameters" not in first.get("metadata", {}).get("tags", []):
            problems.append("first code cell is not tagged 'parameters'")
        try:
            body = ast.parse(first.source).body
        except SyntaxError:
            body = []
        for stmt in body:
            problems.extend(_parameter_default_problems(stmt))
            if not (
                isinstance(stmt, ast.Assign)
                and all(isinstance(t, ast.Name) for t in stmt.targets)
                and _is_literal(stmt.value)
            ) and not (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and stmt.value is not None
                and _is_literal(stmt.value)
            ):
                problems.append(
                    f"parameters cell line {stmt.lineno}: only `name = literal` assignments are "
                    "allowed (compute derived values in the next cell)"
                )
    summary = nb.metadata.get("magn", {}).get("summary", "")
    if not isinstance(summary, str) or not summary.strip():
        problems.append("notebook metadata lacks magn.summary (one line for the report index)")
    return problems


def _parameter_default_problems(stmt: ast.stmt) -> list[str]:
    """A profile parameter must default to ``None`` (= from the profile): a literal default
    would override the profile silently wherever the notebook runs."""
    if isinstance(stmt, ast.Assign):
        names, value = [t.id for t in stmt.targets if isinstance(t, ast.Name)], stmt.value
    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        names, value = [stmt.target.id], stmt.value
    else:
        return []
    is_none = isinstance(value, ast.Constant) and value.value is None
    is_text = isinstance(value, ast.Constant) and isinstance(value.value, str)
    problems = []
    for name in names:
        if name in _PROFILE_KEYS and not is_none:
            problems.append(
                f"parameters cell line {stmt.lineno}: `{name}` must default to None (its value "
                "comes from the profile; override it with papermill -p or magn study --set)"
            )
        elif name == "profile" and not is_text:
            problems.append(f"parameters cell line {stmt.lineno}: `profile` must be a string "
                            "(a profile name or a YAML file)")
        elif name in RUN_FOLDERS and not (is_none or is_text):
            problems.append(f"parameters cell line {stmt.lineno}: `{name}` must be None (the "
                            "default folder) or a string")
    return problems


def _strip_magics(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def notebook_source_sha256(path: str | Path) -> str:
    """Checksum of what a notebook computes: cell types, sources and tags (not outputs)."""
    nb = nbformat.read(str(path), as_version=4)
    content = [
        (c.cell_type, c.source, sorted(c.get("metadata", {}).get("tags", []))) for c in nb.cells
    ]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def declared_parameters(path: str | Path) -> dict[str, Any]:
    """Names and default values declared in a notebook's ``parameters`` cell."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    return {name: info.get("default") for name, info in declared.items()}


# --------------------------------------------------------------------------- upstream results

# the files by which each study notebook's results are recognised (named by the run's layout)
STUDY_OUTPUTS: dict[str, Callable[[RunPaths], tuple[Path, ...]]] = {
    "01_cohort_statistics": lambda p: (p.ingest_table("lesions"), p.transfer_table("lesions"),
                                       p.table("table1")),
    "02_annotation_transfer": lambda p: (p.crop_cache,),
    "03_magn_training": lambda p: (p.folds_csv, p.oof("magn")),
    "04_radiomics": lambda p: (p.oof("radiomics"), p.oof("first-order")),
    "07_external_validation": lambda p: (p.front_page_external,),
}
# the earlier notebooks whose results each study notebook reads
STUDY_NEEDS: dict[str, tuple[str, ...]] = {
    "01_cohort_statistics": (),
    "02_annotation_transfer": ("01_cohort_statistics",),
    "03_magn_training": ("01_cohort_statistics", "02_annotation_transfer"),
    "04_radiomics": ("01_cohort_statistics", "02_annotation_transfer"),
    "05_radiologist_comparison": ("01_cohort_statistics", "03_magn_training", "04_radiomics"),
    "06_figures": ("01_cohort_statistics", "02_annotation_transfer", "03_magn_training",
                   "04_radiomics"),
    "07_external_validation": ("01_cohort_statistics", "02_annotation_transfer",
                               "03_magn_training", "04_radiomics"),
}


def left_out(declared: Mapping[str, Any] | Sequence[str], profile: Profile, *,
             embedded: bool) -> str | None:
    """Why a notebook declaring the parameters ``declared`` is not part of this study, or
    ``None`` when it is.

    A notebook that declares ``external_cohort`` validates the run's model on an external
    cohort: it is left out when the profile names none (``external_cohort: null``), and when
    the profile names an embedded simulated site while the study runs on a user's own cohort
    (a model trained on patients says nothing when validated on simulated images).
    """
    if EXTERNAL_PARAMETER not in declared:
        return None
    if profile.external_cohort is None:
        return "the profile names no external cohort (external_cohort: null)"
    if profile.external_embedded and not embedded:
        return (f"external_cohort {profile.external_cohort!r} is the embedded simulated site, "
                "and a model trained on your own cohort is not validated on simulated images: "
                "set external_cohort to your external cohort's manifest folder (or null)")
    return None


def study_command(
    params: EffectiveParameters, *, only: Sequence[str] = (), start: str | None = None,
    stop: str | None = None,
) -> str:
    """The ``magn study`` command for a run with these parameters and folders (options at
    their defaults left out), selecting notebooks by their ``NN`` prefix."""
    words = ["magn", "study", "--profile", params.reference]
    if params.manifest_dir:
        words += ["--manifest", params.manifest_dir]
    if params.run_dir != default_report_folder(params.profile.profile):
        words += ["--out", params.run_dir]
    if params.work_dir != default_work_folder(params.run_dir):
        words += ["--work", params.work_dir]
    for key, value in params.overrides.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        words += ["--set", f"{key}={'[' + text + ']' if isinstance(value, list) else text}"]
    if only:
        words += ["--only", ",".join(name[:2] for name in only)]
    if start:
        words += ["--from", start[:2]]
    if stop:
        words += ["--to", stop[:2]]
    return shlex.join(words)


def require_upstream(notebook: str, params: EffectiveParameters) -> None:
    """Check that the notebooks ``notebook`` reads from have run in this run's folders.

    Called near the top of every study notebook, so that a notebook opened alone says what to
    run instead of failing later on a missing file. It also checks that the run's folders
    write nowhere inside the cohort's data, and marks them as run folders
    (:mod:`magn_lib.guards`), before the notebook writes anything.

    Args:
        notebook: the study notebook's name, e.g. ``"03_magn_training"``.
        params: the notebook's :func:`~magn_lib.config.notebook_parameters`.

    Raises:
        UpstreamError: naming the first notebook whose results are missing, the missing file
            and the ``magn study`` command that runs the missing notebooks.
        ConfigError: a run folder inside the cohort's data (:func:`check_run_folders`).
    """
    paths = run_paths(params.run_dir, params.work_dir)
    check_run_folders(paths, _data_folders(params.manifest_dir, params.profile))
    mark_run_folders(paths)
    missing: list[tuple[str, Path]] = []
    for needed in STUDY_NEEDS.get(notebook, ()):
        outputs = STUDY_OUTPUTS.get(needed)
        for path in outputs(paths) if outputs else ():
            if not path.is_file():
                missing.append((needed, path))
                break
    if missing:
        first, path = missing[0]
        last = missing[-1][0]
        which = f"notebook {first}" if first == last else f"notebooks {first} to {last}"
        raise UpstreamError(
            f"{notebook} reads the results of {which}, which have not run for this run "
            f"({_display_path(path)} does not exist)",
            notebook=first, command=study_command(params, stop=last),
        )


# --------------------------------------------------------------------------- checksums


def tree_sha256(folder: str | Path, *, suffixes: tuple[str, ...] | None = None) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (hidden files skipped)."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if suffixes and path.suffix not in suffixes:
            continue
        out[rel.as_posix()] = file_sha256(path)
    return out


def input_checksums(manifest_dir: str | Path) -> dict[str, str]:
    """SHA-256 of every input of a manifest folder, keyed by study ids, never by the names of
    the user's folders and files (PACS exports name them after the patient).

    Keys: each top-level table by its name (``"patients.csv"``); each series folder listed in
    series.csv, wherever it lies, as ``"series/<patient_id>/<view>"`` (one checksum over its
    files' names and checksums); each mask file listed in lesions.csv as
    ``"mask/<patient_id>"`` (``"mask/<patient_id>/2"`` ... for a patient's further mask files);
    every other file under the folder in one ``"other files (N)"`` checksum.
    """
    from magn_lib.manifest import MANIFEST_TABLES, listed_inputs

    folder = Path(manifest_dir)
    listed = listed_inputs(folder)
    out: dict[str, str] = {}
    claimed: set[Path] = set()
    for key, path in listed.items():
        path = Path(path)
        if path.is_dir():
            items = [f"{rel}:{sha}" for rel, sha in tree_sha256(path).items()]
            out[key] = hashlib.sha256("\n".join(items).encode("utf-8", "surrogateescape")
                                      ).hexdigest()
            claimed.update(p.resolve() for p in path.rglob("*"))
        elif path.is_file():
            out[key] = file_sha256(path)
            claimed.add(path.resolve())
    others = []
    for rel, sha in tree_sha256(folder).items():
        path = folder / rel
        if path.resolve() in claimed:
            continue
        if rel in MANIFEST_TABLES:
            out[rel] = sha  # the tables: named by the schema, not by the user
        else:
            others.append(f"{rel}:{sha}")
    if others:
        out[f"other files ({len(others)})"] = hashlib.sha256(
            "\n".join(others).encode("utf-8", "surrogateescape")).hexdigest()
    return dict(sorted(out.items()))


def code_sha256() -> str:
    """One checksum over the library source and the shipped configs (results depend on both)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for base, suffixes in ((root, (".py",)), (root.parent / "configs", (".yaml", ".yml"))):
        if base.is_dir():
            for rel, sha in tree_sha256(base, suffixes=suffixes).items():
                digest.update(f"{base.name}/{rel}:{sha}\n".encode())
    return digest.hexdigest()


def _fingerprint(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- warnings


def record_warning(run_dir: str | Path, source: str, message: str) -> None:
    """Record a warning that must reach the report (e.g. a weights fall-back).

    Notebooks call this; the runner lists every recorded warning on ``index.html`` and in
    ``run_manifest.json``. Repeated identical warnings are kept once.
    """
    path = ReportPaths(resolve_path(run_dir)).warnings_file
    entries = read_warnings(run_dir)
    entry = {"source": source, "message": message}
    if entry not in entries:
        entries.append(entry)
        atomic_write_text(path, json.dumps(entries, indent=2))


def read_warnings(run_dir: str | Path) -> list[dict[str, str]]:
    path = ReportPaths(resolve_path(run_dir)).warnings_file
    if not path.is_file():
        return []
    return json.loads(path.read_text())


def _clear_warnings(run_dir: Path, source: str) -> None:
    """Forget a notebook's warnings before it runs again (it records them afresh)."""
    kept = [w for w in read_warnings(run_dir) if w["source"] != source]
    path = ReportPaths(run_dir).warnings_file
    if kept:
        atomic_write_text(path, json.dumps(kept, indent=2))
    else:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the runner


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _display_path(path: Path) -> str:
    """Path relative to the project root when inside it (reports carry no machine paths)."""
    try:
        return path.resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _run_lock(paths: RunPaths) -> Iterator[None]:
    """Hold the run's report folder and its work folder for the whole run: a second run of
    either (two report folders given one ``--work``, say) stops at once with a clear error."""
    with contextlib.ExitStack() as held:
        for folder, lock_file, option in (
            (paths.report_dir, paths.lock_file, "--out"),
            (paths.work_dir, paths.work_lock, "--work"),
        ):
            folder.mkdir(parents=True, exist_ok=True)
            lock = held.enter_context(open(lock_file, "w"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(
                    f"another `magn study` is using {_display_path(folder)}; wait for it or "
                    f"choose another {option}"
                ) from None
            held.callback(fcntl.flock, lock, fcntl.LOCK_UN)
        yield


def _data_folders(manifest_dir: str | Path | None, profile: Profile) -> list[DataFolder]:
    """The folders holding a run's cohort data: the user's manifest and every folder it points
    to, or the embedded cohort's whole folder (checked before it is generated); and the same of
    the external cohort the profile names."""
    if manifest_dir:
        folders = data_folders(manifest_dir)
    else:
        folders = [DataFolder(embedded_cohort_dir(profile).resolve(),
                              "the embedded cohort's folder")]
    external = profile.external_cohort
    if external is not None and profile.external_embedded:
        folders.append(DataFolder(external_cohort_dir(profile).resolve(),
                                  "the embedded external site's folder"))
    elif external is not None and resolve_path(external).is_dir():
        folders += data_folders(resolve_path(external))
    return folders


def _check_kernel(kernel_name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise RuntimeError(
            f"Jupyter kernel {kernel_name!r} is not registered; run `make setup` (it registers "
            f"the project's environment as kernel 'magn') or pass --kernel NAME"
        ) from None


def embedded_cohort_dir(profile: Profile) -> Path:
    """Where the embedded cohort of a profile lives: ``data/embedded/<parameters>/``.

    It plays the hospital's archive: DICOM with (synthetic) identity in the headers, outside
    ``work/`` and ``reports/``, named by the parameters that determine it so that runs sharing
    them share one copy. ``$MAGN_EMBEDDED_DIR`` moves the ``data/embedded`` folder elsewhere.
    """
    from magn_lib.synthetic.cohort import PHANTOM_VERSION

    name = (f"n{profile.n_patients}-seed{profile.seed}-sep{profile.separability:g}"
            f"-phantom{PHANTOM_VERSION}")
    base = os.environ.get("MAGN_EMBEDDED_DIR")
    return (Path(base) if base else project_root() / "data" / "embedded") / name


def _prepare_embedded_cohort(profile: Profile, *, progress: bool) -> Path:
    """Generate the embedded cohort once (reused when complete); return its manifest."""
    from magn_lib.synthetic import make_cohort

    return make_cohort(
        embedded_cohort_dir(profile),
        n_patients=profile.n_patients,
        seed=profile.seed,
        separability=profile.separability,
        n_jobs=profile.n_jobs,
        progress=progress,
    )


def external_cohort_dir(profile: Profile) -> Path:
    """Where the embedded external site of a profile lives (``external_cohort`` a preset such
    as ``site_b``): ``data/embedded/<preset>-<parameters>/``, beside the embedded cohort and
    named, like it, by the parameters that determine it."""
    from magn_lib.synthetic.cohort import PHANTOM_VERSION

    if not profile.external_embedded:
        raise ConfigError(f"external_cohort: {profile.external_cohort!r} is not an embedded site")
    name = (f"{profile.external_cohort}-n{profile.external_n_patients}"
            f"-seed{profile.external_seed}-sep{profile.external_separability:g}"
            f"-phantom{PHANTOM_VERSION}")
    return embedded_cohort_dir(profile).parent / name


def resolve_external_manifest(profile: Profile, *, progress: bool = True) -> Path | None:
    """The manifest folder of the profile's external cohort: the embedded simulated site
    (generated on first use, :func:`external_cohort_dir`), the folder ``external_cohort``
    names (relative paths from the project root), or ``None`` when it names none.

    Raises:
        ConfigError: ``external_cohort`` names a folder that does not exist.
    """
    external = profile.external_cohort
    if external is None:
        return None
    if not profile.external_embedded:
        folder = resolve_path(external)
        if not folder.is_dir():
            raise ConfigError(f"external_cohort: {folder} is not a folder")
        return folder
    from magn_lib.synthetic import make_cohort

    return make_cohort(
        external_cohort_dir(profile),
        n_patients=profile.external_n_patients,
        seed=profile.external_seed,
        separability=profile.external_separability,
        preset=external,
        n_jobs=profile.n_jobs,
        progress=progress,
    )


def export_run_bundle(params: EffectiveParameters) -> Path:
    """Export the running study's model to its work folder (:attr:`~magn_lib.layout.WorkPaths.
    study_bundle`, replacing an earlier export) as ``magn export`` would once the run is
    finished: the same configuration choice, calibration and operating point
    (:func:`magn_lib.bundle.export_bundle`), from this run's effective parameters.

    Returns:
        The bundle folder.
    """
    from magn_lib.bundle import export_bundle

    paths = run_paths(params.run_dir, params.work_dir)
    record = {"parameters": params.profile.to_dict(),
              "run": {"work_dir": str(paths.work_dir),
                      "embedded_cohort": is_simulated_cohort(params)}}
    return export_bundle(paths.report_dir, paths.study_bundle, work_dir=paths.work_dir,
                         record=record, overwrite=True)


def is_simulated_cohort(params: EffectiveParameters) -> bool:
    """Whether the run's (main) cohort is a generated phantom: the embedded cohort, or one
    written by ``magn generate`` and given as a manifest (it carries the phantom's truth). The
    runner passes the embedded cohort's manifest folder to the notebooks, so ``manifest_dir``
    being set does not mean a user's own cohort."""
    from magn_lib.stages import truth_masks

    if params.manifest_dir is None:
        return True
    return truth_masks(resolve_manifest(params.manifest_dir, params.profile)) is not None


def resolve_manifest(manifest_dir: str | Path | None, profile: Profile, *,
                     progress: bool = True) -> Path:
    """The manifest folder a notebook reads: ``manifest_dir`` when given, else the profile's
    embedded cohort (generated on first use)."""
    if manifest_dir:
        return resolve_path(manifest_dir)
    return _prepare_embedded_cohort(profile, progress=progress)


def _completed_fingerprint(executed: Path) -> str | None:
    if not executed.is_file():
        return None
    try:
        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # an unreadable partial copy simply means "run it again"
        return None
    stamp = nb.metadata.get(RUN_STAMP, {})
    return stamp.get("fingerprint") if stamp.get("status") == "completed" else None


def reported_parameters(nb: nbformat.NotebookNode) -> dict[str, Any] | None:
    """The effective parameters an executed notebook published (its first output of
    :data:`~magn_lib.config.PARAMETERS_MIMETYPE`), or ``None`` when it published none."""
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            record = output.get("data", {}).get(PARAMETERS_MIMETYPE)
            if record is not None:
                return dict(record)
    return None


def _run_label(paths: ReportPaths, profile: str) -> str:
    return f"{paths.report_dir.name} (profile {profile})"


def _href(target: Path, page: Path) -> str:
    """A link from ``page`` to ``target``, relative, with ``/``."""
    return Path(os.path.relpath(target, page.parent)).as_posix()


def _publish_html(nb: nbformat.NotebookNode, position: int, runs: Sequence[NotebookRun],
                  paths: RunPaths, profile: str) -> None:
    """Write both views of ``runs[position]``'s executed notebook, each with the header that
    links the index, its neighbours in reading order and the other view."""
    name = runs[position].name
    title = notebook_title(nb)
    for with_code, page_of, here, other_of, other in (
            (False, paths.html, "Clinician view", paths.full_html, "Analyst view (with code)"),
            (True, paths.full_html, "Analyst view (with code)", paths.html, "Clinician view")):
        page = page_of(name)
        before = runs[position - 1] if position > 0 else None
        after = runs[position + 1] if position + 1 < len(runs) else None
        header = navigation_html(
            run=_run_label(paths, profile),
            index=PageLink("Index", _href(paths.index_html, page)),
            previous=None if before is None else PageLink(
                f"{before.title}", _href(page_of(before.name), page)),
            next=None if after is None else PageLink(
                f"{after.title}", _href(page_of(after.name), page)),
            here=here, views=[PageLink(other, _href(other_of(name), page))])
        text = render_html(nb, with_code=with_code, title=title, header_html=header)
        try:
            with _space_for(page, len(text.encode()), what=f"the HTML of {name}"):
                atomic_write_text(page, text)
        except OutOfSpaceError:
            _unpublish_html(name, paths)  # both views or neither
            raise


@contextlib.contextmanager
def _space_for(path: Path, needed: int, *, what: str) -> Iterator[None]:
    """Turn a full disk while writing ``path`` (``needed`` bytes) into an
    :class:`~magn_lib.errors.OutOfSpaceError` naming its folder and the space."""
    try:
        yield
    except OSError as exc:
        if OutOfSpaceError.is_out_of_space(exc) and not isinstance(exc, OutOfSpaceError):
            raise OutOfSpaceError(_display_path(path.parent), needed=needed, what=what) from exc
        raise


def _withdraw_published(paths: ReportPaths) -> None:
    """Remove what claims a finished study: ``index.html``, ``report.html``, ``report.pdf``."""
    for published in (paths.index_html, paths.report_html, paths.report_pdf):
        published.unlink(missing_ok=True)


@contextlib.contextmanager
def _no_claim_if_disk_full(paths: ReportPaths) -> Iterator[None]:
    """A run stopped by a full disk leaves neither the published report (``index.html``,
    ``report.html``, ``report.pdf``) nor a run record (which could not be written
    completely); the executed notebooks stamped completed stay, for resume."""
    try:
        yield
    except OutOfSpaceError:
        _withdraw_published(paths)
        paths.run_manifest.unlink(missing_ok=True)
        raise


def _retract_report(paths: ReportPaths) -> None:
    """Before a run rewrites its folder: withdraw the published report (``index.html``,
    ``report.html``, ``report.pdf``) and mark the run record as
    running (a record that cannot be rewritten is removed), so that a run that then fails or
    is killed leaves nothing claiming the earlier success."""
    _withdraw_published(paths)
    try:
        record = json.loads(paths.run_manifest.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        paths.run_manifest.unlink(missing_ok=True)
        return
    record.update(status="running", complete=False, error=None)
    text = json.dumps(record, indent=2, default=str)
    with _space_for(paths.run_manifest, len(text.encode()), what="the run record"):
        atomic_write_text(paths.run_manifest, text)


def _unpublish_html(name: str, paths: RunPaths) -> None:
    for path in (paths.html(name), paths.full_html(name)):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the kernels started inside the block."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _execute(
    source: Path, executed: Path, parameters: dict[str, Any], *, kernel_name: str
) -> nbformat.NotebookNode:
    import papermill

    return papermill.execute_notebook(
        str(source),
        str(executed),
        parameters=parameters,
        kernel_name=kernel_name,
        cwd=str(project_root()),
        progress_bar=False,  # the runner prints its own progress (notebooks and their stages)
        log_output=False,
        request_save_on_cell_execute=True,
    )


def _failure(exc: BaseException, name: str, executed: Path) -> tuple[str, str]:
    """The message for a failed notebook and its kind (``"input"`` or ``"notebook"``)."""
    from papermill.exceptions import PapermillExecutionError

    kind = "notebook"
    if isinstance(exc, PapermillExecutionError):
        what = f"cell {exc.exec_count or exc.cell_index}: {exc.ename}: {exc.evalue}"
        kind = {"InputError": "input", "ConfigError": "config",
                "TrainingDiverged": "config"}.get(exc.ename, "notebook")
        no_space = exc.ename in ("OSError", "OutOfSpaceError") and any(
            mark in str(exc.evalue) for mark in ("[Errno 28]", "No space left", "out of disk"))
    else:
        what = f"{type(exc).__name__}: {exc}"
        no_space = OutOfSpaceError.is_out_of_space(exc)
    message = (
        f"notebook {name} failed in {what}. The partial executed copy is kept for debugging at "
        f"{_display_path(executed)}; no HTML of it was published."
    )
    if no_space:
        kind = "disk"
        space = free_bytes(executed)
        message += (
            " The disk is full" + (f" ({space / 1e6:,.1f} MB free where the report is)"
                                   if space is not None else "")
            + ": free some space (or choose other --out/--work folders) and run again; "
            "finished steps are kept."
        )
    return message, kind


# non-terminal output (a log file, a pipe): at most one line per bar in this many seconds,
# besides the line each bar prints when it finishes
LOG_INTERVAL_S = 15.0


class _Console:
    """The runner's terminal output (stderr): one line per notebook and per finished bar; on a
    terminal the bars in progress update one status line, in a log one line every
    :data:`LOG_INTERVAL_S` seconds per bar."""

    def __init__(self, stream: TextIO | None, *, enabled: bool) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._status_shown = False
        self._last_line: dict[str, float] = {}

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self._status_shown:
            self.stream.write("\r\033[K")
            self._status_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _status(self, text: str) -> None:
        import shutil

        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r\033[K" + text[:width])
        self.stream.flush()
        self._status_shown = True

    def on_event(self, event: dict[str, Any]) -> None:
        text = "    " + format_event(event)
        bar = str(event.get("bar"))
        if event.get("event") == "close":
            self._last_line.pop(bar, None)
            self.line(text)
        elif self.tty:
            self._status(text)
        elif bar not in self._last_line:
            self._last_line[bar] = time.monotonic()  # a short bar prints only when it ends
        elif time.monotonic() - self._last_line[bar] >= LOG_INTERVAL_S:
            self._last_line[bar] = time.monotonic()
            self.line(text)


def _match_notebook(token: str, names: Sequence[str], option: str) -> int:
    token = token.strip().removesuffix(".ipynb")
    for i, name in enumerate(names):
        if token == name or token == name[:2]:
            return i
    raise ConfigError(
        f"{option}: {token!r} is not a notebook of the study; choose from "
        + ", ".join(f"{n[:2]} ({n})" for n in names)
    )


def _refuse_left_out(reasons: Mapping[str, str], only: Sequence[str] | str | None,
                     start: str | None, stop: str | None) -> None:
    """A selection naming a notebook that is not part of this study (:func:`left_out`) is a
    usage error that says why, not "no such notebook"."""
    tokens = [("--only", t) for item in ([only] if isinstance(only, str) else only or ())
              for t in str(item).split(",")]
    tokens += [(option, t) for option, t in (("--from", start), ("--to", stop)) if t]
    for option, token in tokens:
        token = token.strip().removesuffix(".ipynb")
        for name, why in reasons.items():
            if token in (name, name[:2]):
                raise ConfigError(f"{option}: {name} is not part of this study: {why}")


def _selection(names: Sequence[str], only: Sequence[str] | str | None, start: str | None,
               stop: str | None) -> list[bool]:
    """Which notebooks run: ``only`` (names or ``NN`` prefixes, a list or comma-separated),
    else the range ``start``..``stop`` (either end open)."""
    if only and (start or stop):
        raise ConfigError("--only cannot be combined with --from/--to")
    if only:
        tokens = only.split(",") if isinstance(only, str) else [
            t for item in only for t in str(item).split(",")]
        chosen = {_match_notebook(t, names, "--only") for t in tokens if t.strip()}
        return [i in chosen for i in range(len(names))]
    first = _match_notebook(start, names, "--from") if start else 0
    last = _match_notebook(stop, names, "--to") if stop else len(names) - 1
    if first > last:
        raise ConfigError(f"--from {names[first]} comes after --to {names[last]}")
    return [first <= i <= last for i in range(len(names))]


def _profile_reference(profile: str | Path | Profile,
                       overrides: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The profile as notebooks can resolve it (a name, or a YAML path relative to the project
    root when inside it) and the overrides; a :class:`Profile` becomes its named profile plus
    the values that differ from it."""
    given = dict(overrides or {})
    if isinstance(profile, Profile):
        base = load_profile(profile.profile).to_dict()
        differ = {k: v for k, v in profile.to_dict().items() if k != "profile" and v != base[k]}
        return profile.profile, {**differ, **given}
    reference = str(profile)
    if Path(reference).suffix in (".yaml", ".yml"):
        reference = _display_path(resolve_path(reference))
    return reference, given


def _previous_durations(run_manifest: Path) -> dict[str, float]:
    try:
        record = json.loads(run_manifest.read_text())
    except (OSError, ValueError):
        return {}
    return {n["name"]: n["duration_s"] for n in record.get("notebooks", [])
            if n.get("status") == "executed" and n.get("duration_s")}


def run_study(
    profile: str | Path | Profile = "demo",
    *,
    overrides: Mapping[str, Any] | None = None,
    only: Sequence[str] | str | None = None,
    start: str | None = None,
    stop: str | None = None,
    manifest_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    force: bool = False,
    kernel_name: str = "magn",
    notebooks_dir: str | Path | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> StudyResult:
    """Run the notebooks of the study in order; see the module docstring.

    Args:
        profile: profile name (``smoke``/``demo``/``paper``) or YAML path (a loaded
            :class:`Profile` is taken as its named profile plus the values that differ).
        overrides: ``{parameter: value}`` replacing the profile's values (``magn study
            --set``), validated like a profile file; ``None`` values are refused.
        only: the notebooks to run (``"03"``, ``"03_magn_training"``, a list or
            ``"01,03"``); the others must be up to date where they come before.
        start, stop: run the notebooks from ``start`` to ``stop`` (``NN`` or names).
        manifest_dir: the user's ``data_manifest`` folder; ``None`` = the embedded cohort,
            generated under ``data/embedded/`` on first use (:func:`embedded_cohort_dir`).
        run_dir: report folder (default ``reports/<profile>``).
        work_dir: intermediate-data folder (default ``work/<name of run_dir>-<8 hex>``,
            :func:`~magn_lib.layout.default_work_folder`).
        force: re-run the selected notebooks even when unchanged.
        kernel_name: Jupyter kernel that executes the notebooks.
        notebooks_dir: folder of ``NN_*.ipynb`` notebooks (default ``notebooks/``).
        progress: print progress (notebooks and their stages) to ``stream``.
        stream: where progress goes (default ``sys.stderr``).

    Returns:
        A :class:`StudyResult`; ``succeeded`` is False when a notebook failed.

    Raises:
        ConfigError: a bad profile, override or selection.
        UpstreamError: a notebook before the selection is not up to date (says what to run).
        RuntimeError: the kernel is not registered, or another run holds the report or the
            work folder.
        OutOfSpaceError: the disk filled while the runner wrote (names the folder and the
            space); the folder is left without ``index.html`` and run record, finished
            notebooks keep their stamps. A notebook stopped by a full disk is a failed
            notebook (``failure == "disk"``).
    """
    t_start = time.time()
    if any(v is None for v in (overrides or {}).values()):
        raise ConfigError("overrides: None means 'from the profile' and cannot be passed on")
    reference, given = _profile_reference(profile, overrides)
    params = resolve_parameters(reference, given, run_dir=run_dir, work_dir=work_dir,
                                manifest_dir=manifest_dir)
    cfg = params.profile
    check_runnable(cfg)
    paths = run_paths(params.run_dir, params.work_dir)
    if manifest_dir is not None and not resolve_path(manifest_dir).is_dir():
        raise ConfigError(f"manifest: {resolve_path(manifest_dir)} is not a folder")
    check_run_folders(paths, _data_folders(manifest_dir, cfg))
    notebooks = discover_notebooks(notebooks_dir)
    if not notebooks:
        raise ConfigError(f"notebooks_dir: no NN_name.ipynb notebooks in {notebooks_dir}")
    declared_of = {p.stem: declared_parameters(p) for p in notebooks}
    reasons = {p.stem: why for p in notebooks
               if (why := left_out(declared_of[p.stem], cfg, embedded=manifest_dir is None))}
    _refuse_left_out(reasons, only, start, stop)
    notebooks = [p for p in notebooks if p.stem not in reasons]
    names = [p.stem for p in notebooks]
    selected = _selection(names, only, start, stop)
    _check_kernel(kernel_name)
    console = _Console(stream, enabled=progress)

    with _run_lock(paths), _no_claim_if_disk_full(paths):
        mark_run_folders(paths)
        started_iso = _now()
        for folder in (paths.executed_dir, paths.html_dir, paths.artifacts_dir, paths.work_dir):
            folder.mkdir(parents=True, exist_ok=True)
        embedded = manifest_dir is None
        if embedded:
            where = _display_path(embedded_cohort_dir(cfg))
            console.line(f"embedded cohort: {where} (generated on first use)")
            manifest = _prepare_embedded_cohort(cfg, progress=console.tty)
        else:
            manifest = resolve_path(manifest_dir)
        for name, why in reasons.items():
            console.line(f"{name}: not part of this study: {why}")
        external = external_inputs = None
        if any(EXTERNAL_PARAMETER in declared_of[name] for name in names):
            if cfg.external_embedded:
                where = _display_path(external_cohort_dir(cfg))
                console.line(f"external cohort: {where} (simulated site "
                             f"{cfg.external_cohort}, generated on first use)")
            external = resolve_external_manifest(cfg, progress=console.tty)
            external_inputs = input_checksums(external)
        inputs = input_checksums(manifest)
        code = code_sha256()
        run_params = {
            "run_dir": _display_path(paths.report_dir),
            "work_dir": _display_path(paths.work_dir),
            "manifest_dir": _display_path(manifest),
        }
        effective = cfg.to_dict()
        previous = _previous_durations(paths.run_manifest)

        # plan: every notebook's parameters and fingerprint (they chain from one to the next,
        # whether the notebook runs now or not)
        runs: list[NotebookRun] = []
        upstream = ""
        for path in notebooks:
            nb = nbformat.read(str(path), as_version=4)
            declared = declared_of[path.stem]
            run = NotebookRun(
                name=path.stem,
                title=notebook_title(nb),
                summary=nb.metadata.get("magn", {}).get("summary", ""),
            )
            run.parameters = {k: effective[k] for k in declared if k in _PROFILE_KEYS}
            run.sources = {k: "override" if k in given else "profile" for k in run.parameters}
            run.injected = {
                **({"profile": reference} if "profile" in declared else {}),
                **{k: v for k, v in given.items() if k in declared},
                **{k: v for k, v in run_params.items() if k in declared},
            }
            run.fingerprint = _fingerprint(
                notebook=notebook_source_sha256(path),
                parameters={**run.parameters, "profile": cfg.profile,
                            **{k: v for k, v in run_params.items() if k in declared}},
                inputs=inputs,
                code=code,
                upstream=upstream,
                **({"external_inputs": external_inputs}
                   if EXTERNAL_PARAMETER in declared else {}),
            )
            upstream = run.fingerprint
            runs.append(run)
        unread = sorted(set(given) - {k for r in runs for k in r.parameters}
                        - EXPORT_PARAMETERS)
        if unread:
            raise ConfigError(f"{unread[0]}: no notebook of the study reads this parameter, "
                              "so overriding it would change nothing")
        up_to_date = [
            _completed_fingerprint(paths.executed(r.name)) == r.fingerprint
            for r in runs
        ]
        first = selected.index(True)
        stale = [r.name for r, ok in zip(runs[:first], up_to_date[:first], strict=True) if not ok]
        if stale:
            raise UpstreamError(
                f"{runs[first].name} comes after {', '.join(stale)}, which "
                f"{'has' if len(stale) == 1 else 'have'} not run with these settings (no "
                "completed executed copy, or its parameters, inputs or code changed since)",
                notebook=stale[0],
                command=study_command(params, start=stale[0], stop=runs[first - 1].name),
            )

        # from here on the folder is being rewritten: nothing may claim an earlier success
        # until this run has ended (a run killed or failing now leaves no index.html and no
        # "succeeded" record)
        _retract_report(paths)
        error = failure = None
        n = len(runs)
        for i, (path, run) in enumerate(zip(notebooks, runs, strict=True)):
            executed = paths.executed(path.stem)
            label = f"[{i + 1}/{n}] {run.name}"
            if error is not None:
                break
            if up_to_date[i] and not (force and selected[i]):
                done = nbformat.read(str(executed), as_version=4)
                timing = done.metadata.get("papermill", {})
                run.status = "skipped"
                run.started, run.finished = timing.get("start_time"), timing.get("end_time")
                run.duration_s = timing.get("duration")
                _adopt_reported(run, reported_parameters(done))
                if not paths.html(run.name).is_file():
                    _publish_html(done, i, runs, paths, cfg.profile)
                console.line(f"{label}: unchanged, skipped")
                continue
            if not selected[i]:
                console.line(f"{label}: out of date, not selected")
                continue

            _unpublish_html(run.name, paths)
            _clear_warnings(paths.report_dir, run.name)
            estimate = previous.get(run.name)
            console.line(f"{label}: running"
                         + (f" (last run took {format_duration(estimate)})" if estimate else ""))
            channel = paths.progress_channel(run.name)
            channel.parent.mkdir(parents=True, exist_ok=True)
            channel.unlink(missing_ok=True)
            run.started = _now()
            t0 = time.time()
            try:
                with _environment(PROGRESS_ENV, str(channel)):
                    tail = ProgressTail(channel, console.on_event) if progress else None
                    with tail or contextlib.nullcontext():
                        done = _execute(path, executed, run.injected, kernel_name=kernel_name)
                mismatch = _adopt_reported(run, reported_parameters(done))
                if mismatch:
                    raise ConfigError(mismatch)
            except Exception as exc:
                run.status = "failed"
                run.finished = _now()
                run.duration_s = round(time.time() - t0, 2)
                if isinstance(exc, ConfigError):
                    message, failure = f"notebook {run.name}: {exc}", "notebook"
                else:
                    message, failure = _failure(exc, run.name, executed)
                run.error = error = message
                console.line(f"{label}: FAILED after {format_duration(run.duration_s)}")
                continue
            finally:
                channel.unlink(missing_ok=True)
            run.finished = _now()
            run.duration_s = round(time.time() - t0, 2)
            run.status = "executed"
            done.metadata[RUN_STAMP] = {"fingerprint": run.fingerprint, "status": "completed"}
            done = scrub_notebook(done, project=project_root())
            text = nbformat.writes(done)
            with _space_for(executed, len(text.encode()), what="the executed notebook"):
                atomic_write_text(executed, text)  # the stamp: only once the notebook finished
            _publish_html(done, i, runs, paths, cfg.profile)
            console.line(f"{label}: done in {format_duration(run.duration_s)}")

        for run in runs:
            if run.status == "pending":
                run.status = "not run"
        succeeded = error is None
        complete = succeeded and all(r.status in ("executed", "skipped") for r in runs)
        warnings = read_warnings(paths.report_dir)
        duration = round(time.time() - t_start, 2)
        manifest_record = {
            "magn_version": __version__,
            "status": "succeeded" if succeeded else "failed",
            "complete": complete,
            "error": error,
            "started": started_iso,
            "finished": _now(),
            "duration_s": duration,
            "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)),
            "git": git_state(project_root()),
            "environment": environment_info(),
            "profile": cfg.profile,
            "profile_file": {"path": _display_path(params.file),
                             "sha256": file_sha256(params.file)},
            "overrides": dict(given),
            "parameters": effective,
            "selection": [r.name for r, chosen in zip(runs, selected, strict=True) if chosen],
            "seeds": {"seed": cfg.seed},
            "run": {**run_params, "embedded_cohort": embedded,
                    **({} if external is None else {
                        "external_manifest_dir": _display_path(external),
                        "external_embedded": cfg.external_embedded})},
            "left_out": reasons,
            "inputs": {"manifest_files_sha256": inputs,
                       **({} if external_inputs is None else
                          {"external_manifest_files_sha256": external_inputs})},
            "code_sha256": code,
            "notebooks": [asdict(r) for r in runs],
            "warnings": warnings,
        }
        record_text = json.dumps(manifest_record, indent=2, default=str)
        # the report first: a record saying "complete" never stands without it (and a full
        # disk removes both: _no_claim_if_disk_full)
        if complete:
            report = _report_page(cfg, runs, manifest_record, paths)
            with _space_for(paths.report_html, len(report.encode()), what="the report page"):
                atomic_write_text(paths.report_html, report)
            console.line("report: printing report.pdf")
            pdf_problem = print_pdf(paths.report_html, paths.report_pdf)
            if pdf_problem:
                paths.report_pdf.unlink(missing_ok=True)
                console.line(f"report: PDF not produced: {pdf_problem}")
            page = _index_page(cfg, runs, manifest_record, paths, pdf_problem=pdf_problem)
            with _space_for(paths.index_html, len(page.encode()), what="the index page"):
                atomic_write_text(paths.index_html, page)
        else:
            _withdraw_published(paths)
        with _space_for(paths.run_manifest, len(record_text.encode()), what="the run record"):
            atomic_write_text(paths.run_manifest, record_text)
    return StudyResult(succeeded=succeeded, paths=paths, notebooks=runs, error=error,
                       complete=complete, failure=failure, duration_s=duration)


def _adopt_reported(run: NotebookRun, record: dict[str, Any] | None) -> str | None:
    """Take the effective parameters a notebook reported as the run's record; return what
    differs from the runner's own resolution (a profile file edited during the run, say)."""
    if record is None:
        return None
    reported = record.get("parameters", {})
    expected = json.loads(json.dumps(run.parameters, default=str))
    differ = {k: (expected.get(k), reported.get(k)) for k in expected
              if k in reported and reported[k] != expected[k]}
    run.parameters = {**run.parameters, **reported}
    run.sources = {**run.sources, **record.get("sources", {})}
    if differ:
        return "ran with other parameters than the runner resolved: " + ", ".join(
            f"{k} {got!r} instead of {want!r}" for k, (want, got) in differ.items()
        ) + " (was the profile file changed during the run?)"
    return None


def _has_external(record: Mapping[str, Any]) -> bool:
    """The run validated on an external cohort (its front page shows that notebook's part; an
    earlier run's part left in the folder is not shown)."""
    return record["run"].get("external_manifest_dir") is not None


def _provenance(cfg: Profile, record: Mapping[str, Any]) -> list[tuple[str, str]]:
    git = record["git"]
    commit = "not a git checkout" if git["commit"] is None else (
        git["commit"][:12] + (" (with uncommitted changes)" if git["dirty"] else "")
    )
    env = record["environment"]
    gpus = ", ".join(g["name"] for g in env["gpus"]) or "none"
    cohort = (
        "embedded synthetic cohort (demonstrates the method; says nothing about patients)"
        if record["run"]["embedded_cohort"] else f"manifest {record['run']['manifest_dir']}"
    )
    external = record["run"].get("external_manifest_dir")
    if external is not None:
        cohort += "; external cohort: " + (
            f"embedded simulated site {cfg.external_cohort} (demonstrates the method; says "
            "nothing about patients)" if record["run"].get("external_embedded")
            else f"manifest {external}")
    return [
        ("Profile", cfg.profile),
        ("Data", cohort),
        ("Finished", record["finished"]),
        ("Duration", f"{record['duration_s'] / 60:.1f} min"),
        ("Code version", f"magn {record['magn_version']}, commit {commit}"),
        ("Machine", f"{env['os']}; CPU {env['cpu']} ({env['cpu_count']} cores); GPU {gpus}"),
        ("Software", f"Python {env['python']}, PyTorch {env['packages'].get('torch')}, "
                     f"PyRadiomics {env['packages'].get('pyradiomics')}"),
    ]


_INTRO = (
    "<p class=\"sub\">Multi-view attention-guided network (Chen et al., Front. Oncol. 2022, "
    "doi:10.3389/fonc.2022.981769): spinal multiple myeloma vs lung-cancer metastasis on "
    "contrast-enhanced T1 MRI. Research use only; not a medical device.</p>"
)


def _report_page(cfg: Profile, runs: list[NotebookRun], record: Mapping[str, Any],
                 paths: ReportPaths) -> str:
    """``report.html``: the front page and every clinician view in one file."""
    parts = [ReportPart(anchor=f"nb{r.name[:2]}", title=r.title, summary=r.summary,
                        page_html=paths.html(r.name).read_text(encoding="utf-8"))
             for r in runs]
    embedded = record["run"]["embedded_cohort"]
    return render_report(
        title=f"magn study report: {cfg.profile}", run=_run_label(paths, cfg.profile),
        parts=parts, front_html=front_page_html(paths.report_dir, embedded=embedded,
                                                external=_has_external(record)),
        provenance=_provenance(cfg, record), intro_html=_INTRO)


def _index_page(
    cfg: Profile, runs: list[NotebookRun], record: Mapping[str, Any], paths: ReportPaths, *,
    pdf_problem: str | None = None,
) -> str:
    entries = [
        IndexEntry(
            title=r.title,
            summary=r.summary,
            clinician_href=paths.relative(paths.html(r.name)),
            full_href=paths.relative(paths.full_html(r.name)),
            status=r.status,
        )
        for r in runs
    ]
    warnings = [f"{w['message']} (from {w['source']})" for w in record["warnings"]]
    page = paths.index_html
    downloads = [PageLink("The whole report as one page (report.html)",
                          _href(paths.report_html, page))]
    if pdf_problem is None:
        downloads.append(PageLink("PDF (report.pdf)", _href(paths.report_pdf, page)))
    header = navigation_html(
        run=_run_label(paths, cfg.profile), here="Index",
        next=PageLink(runs[0].title, _href(paths.html(runs[0].name), page)) if runs else None,
        extra=downloads)
    send = (f'<p class="note">To send the report as one file: <a href="'
            f'{html.escape(_href(paths.report_html, page))}">report.html</a> (opens in any '
            "browser, images included)"
            + (f' or <a href="{html.escape(_href(paths.report_pdf, page))}">report.pdf</a>.'
               if pdf_problem is None else
               f". PDF not produced: {html.escape(pdf_problem)}.") + "</p>")
    return render_index(
        title=f"magn study report: {cfg.profile}",
        entries=entries,
        provenance=_provenance(cfg, record),
        warnings=warnings,
        header_html=header,
        intro_html=_INTRO + send,
        body_html=front_page_html(paths.report_dir,
                                  embedded=record["run"]["embedded_cohort"],
                                  external=_has_external(record)),
        record_href=paths.relative(paths.run_manifest),
    )
