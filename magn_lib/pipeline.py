"""The study runner: every numbered notebook in order, with papermill, into one run folder.

``run_study`` resolves the profile and run folders, prepares the embedded cohort when no manifest
is given, then executes ``notebooks/NN_*.ipynb`` in order. Each notebook gets the profile
parameters it declares in its ``parameters`` cell (plus the run's folders). A notebook whose
executed copy exists and whose fingerprint (notebook source, injected parameters, input manifest
checksums, library code, and the fingerprint of the notebook before it) is unchanged is skipped.
Executed notebooks go to ``reports/<run>/executed/``; each is rendered to a clinician view
(``html/``) and a full view (``html-full/``); ``index.html`` links them in order and
``run_manifest.json`` records what ran, where, with what.

A notebook that raises stops the run: ``run_study`` reports the failing notebook and cell, keeps
the partial executed copy for debugging, publishes no HTML of it and removes ``index.html`` so
that nothing claims the run succeeded.

Notebook hygiene (no outputs in git, a literal-only ``parameters`` cell first, no ``def`` or
``class``) is checked by :func:`notebook_problems`.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat

from magn_lib import __version__
from magn_lib.config import Profile, RunPaths, load_profile, project_root, resolve_path, run_paths
from magn_lib.errors import ConfigError
from magn_lib.layout import ReportPaths, default_run_paths
from magn_lib.report import (
    IndexEntry,
    atomic_write_text,
    front_page_html,
    notebook_title,
    render_html,
    render_index,
)
from magn_lib.repro import environment_info, file_sha256, git_state

__all__ = [
    "RUN_PARAMETERS",
    "NotebookRun",
    "StudyResult",
    "discover_notebooks",
    "embedded_cohort_dir",
    "file_sha256",
    "input_checksums",
    "notebook_problems",
    "record_warning",
    "resolve_manifest",
    "run_study",
]

NOTEBOOK_PATTERN = re.compile(r"^\d{2}_[A-Za-z0-9_]+\.ipynb$")
# parameters the runner provides besides the profile's own
RUN_PARAMETERS = ("run_dir", "work_dir", "manifest_dir")
# metadata key of an executed notebook that the runner stamps once the notebook completed
RUN_STAMP = "magn_run"


@dataclass
class NotebookRun:
    """What happened to one notebook in this run. Times are UTC ISO-8601, durations seconds."""

    name: str
    title: str
    summary: str
    status: str = "pending"  # executed | skipped | failed | not run
    fingerprint: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    error: str | None = None


@dataclass
class StudyResult:
    """The outcome of :func:`run_study`."""

    succeeded: bool
    paths: RunPaths
    notebooks: list[NotebookRun]
    error: str | None = None


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
    anything derived belongs in the next cell); no ``def`` or ``class`` anywhere (functions
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
    """SHA-256 of every file of a manifest folder: each top-level file (the CSV tables) by
    name, and each sub-folder holding files (a DICOM series, a mask folder) as one checksum
    over its files' names and checksums, keyed ``"folder/"``."""
    folder = Path(manifest_dir)
    per_file = tree_sha256(folder)
    out: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for rel, sha in per_file.items():
        parent, _, name = rel.rpartition("/")
        if parent:
            groups.setdefault(parent + "/", []).append(f"{name}:{sha}")
        else:
            out[rel] = sha
    for parent, items in sorted(groups.items()):
        out[parent] = hashlib.sha256("\n".join(items).encode()).hexdigest()
    return out


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
def _run_lock(paths: ReportPaths) -> Iterator[None]:
    report_dir = paths.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.lock_file, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another `magn study` is writing {_display_path(report_dir)}; wait for it or "
                "choose another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
    name = f"n{profile.n_patients}-seed{profile.seed}-sep{profile.separability:g}"
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


def resolve_manifest(manifest_dir: str | Path | None, profile: Profile, *,
                     progress: bool = True) -> Path:
    """The manifest folder a notebook reads: ``manifest_dir`` when given, else the profile's
    embedded cohort (generated on first use)."""
    if manifest_dir:
        return resolve_path(manifest_dir)
    return _prepare_embedded_cohort(profile, progress=progress)


def _injected_parameters(
    declared: Mapping[str, Any], profile: Profile, run: Mapping[str, str]
) -> dict[str, Any]:
    available = {**profile.to_dict(), **run}
    return {name: available[name] for name in declared if name in available}


def _completed_fingerprint(executed: Path) -> str | None:
    if not executed.is_file():
        return None
    try:
        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # an unreadable partial copy simply means "run it again"
        return None
    stamp = nb.metadata.get(RUN_STAMP, {})
    return stamp.get("fingerprint") if stamp.get("status") == "completed" else None


def _publish_html(nb: nbformat.NotebookNode, name: str, paths: RunPaths) -> None:
    title = notebook_title(nb)
    clinician = render_html(nb, with_code=False, title=title)
    full = render_html(nb, with_code=True, title=title)
    atomic_write_text(paths.html(name), clinician)
    atomic_write_text(paths.full_html(name), full)


def _unpublish_html(name: str, paths: RunPaths) -> None:
    for path in (paths.html(name), paths.full_html(name)):
        path.unlink(missing_ok=True)


def _execute(
    source: Path, executed: Path, parameters: dict[str, Any], *, kernel_name: str, progress: bool
) -> nbformat.NotebookNode:
    import papermill

    return papermill.execute_notebook(
        str(source),
        str(executed),
        parameters=parameters,
        kernel_name=kernel_name,
        cwd=str(project_root()),
        progress_bar=progress,
        log_output=False,
        request_save_on_cell_execute=True,
    )


def _failure_message(exc: BaseException, name: str, executed: Path) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        what = f"cell {exc.exec_count or exc.cell_index}: {exc.ename}: {exc.evalue}"
    else:
        what = f"{type(exc).__name__}: {exc}"
    return (
        f"notebook {name} failed in {what}. The partial executed copy is kept for debugging at "
        f"{_display_path(executed)}; no HTML of it was published."
    )


def run_study(
    profile: str | Path | Profile = "demo",
    *,
    manifest_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    force: bool = False,
    kernel_name: str = "magn",
    notebooks_dir: str | Path | None = None,
    progress: bool = True,
) -> StudyResult:
    """Run every notebook of the study in order; see the module docstring.

    Args:
        profile: profile name (``smoke``/``demo``/``paper``), YAML path, or a loaded Profile.
        manifest_dir: the user's ``data_manifest`` folder; ``None`` = the embedded cohort,
            generated under ``data/embedded/`` on first use (:func:`embedded_cohort_dir`).
        run_dir: report folder (default ``reports/<profile>``).
        work_dir: intermediate-data folder (default ``work/<name of run_dir>``).
        force: re-run every notebook even when unchanged.
        kernel_name: Jupyter kernel that executes the notebooks.
        notebooks_dir: folder of ``NN_*.ipynb`` notebooks (default ``notebooks/``).
        progress: show tqdm bars for notebooks and cells.

    Returns:
        A :class:`StudyResult`; ``succeeded`` is False when a notebook failed.
    """
    from tqdm.auto import tqdm

    cfg = profile if isinstance(profile, Profile) else load_profile(profile)
    paths = run_paths(run_dir or default_run_paths(cfg.profile).report_dir, work_dir)
    notebooks = discover_notebooks(notebooks_dir)
    if not notebooks:
        raise ConfigError(f"notebooks_dir: no NN_name.ipynb notebooks in {notebooks_dir}")
    _check_kernel(kernel_name)

    with _run_lock(paths):
        started = time.time()
        started_iso = _now()
        for folder in (paths.executed_dir, paths.html_dir, paths.artifacts_dir, paths.work_dir):
            folder.mkdir(parents=True, exist_ok=True)
        embedded = manifest_dir is None
        manifest = (
            _prepare_embedded_cohort(cfg, progress=progress)
            if embedded else resolve_path(manifest_dir)
        )
        if not manifest.is_dir():
            raise ConfigError(f"manifest: {manifest} is not a folder")
        inputs = input_checksums(manifest)
        code = code_sha256()
        run_params = {
            "run_dir": _display_path(paths.report_dir),
            "work_dir": _display_path(paths.work_dir),
            "manifest_dir": _display_path(manifest),
        }

        runs: list[NotebookRun] = []
        for path in notebooks:
            nb = nbformat.read(str(path), as_version=4)
            runs.append(
                NotebookRun(
                    name=path.stem,
                    title=notebook_title(nb),
                    summary=nb.metadata.get("magn", {}).get("summary", ""),
                )
            )

        upstream = ""
        error = None
        bar = tqdm(total=len(notebooks), desc="study", unit="notebook", disable=not progress)
        for path, run in zip(notebooks, runs, strict=True):
            bar.set_postfix_str(run.name)
            executed = paths.executed(path.stem)
            run.parameters = _injected_parameters(declared_parameters(path), cfg, run_params)
            run.fingerprint = _fingerprint(
                notebook=notebook_source_sha256(path),
                parameters=run.parameters,
                inputs=inputs,
                code=code,
                upstream=upstream,
            )
            upstream = run.fingerprint
            if not force and _completed_fingerprint(executed) == run.fingerprint:
                done = nbformat.read(str(executed), as_version=4)
                timing = done.metadata.get("papermill", {})
                run.status = "skipped"
                run.started, run.finished = timing.get("start_time"), timing.get("end_time")
                run.duration_s = timing.get("duration")
                if not paths.html(run.name).is_file():
                    _publish_html(done, run.name, paths)
                bar.update()
                continue

            _unpublish_html(run.name, paths)
            _clear_warnings(paths.report_dir, run.name)
            run.started = _now()
            t0 = time.time()
            try:
                done = _execute(
                    path, executed, run.parameters, kernel_name=kernel_name, progress=progress
                )
            except Exception as exc:
                run.status = "failed"
                run.finished = _now()
                run.duration_s = round(time.time() - t0, 2)
                run.error = error = _failure_message(exc, run.name, executed)
                break
            run.finished = _now()
            run.duration_s = round(time.time() - t0, 2)
            run.status = "executed"
            done.metadata[RUN_STAMP] = {"fingerprint": run.fingerprint, "status": "completed"}
            atomic_write_text(executed, nbformat.writes(done))
            _publish_html(done, run.name, paths)
            bar.update()
        bar.close()

        for run in runs:
            if run.status == "pending":
                run.status = "not run"
        succeeded = error is None
        warnings = read_warnings(paths.report_dir)
        manifest_record = {
            "magn_version": __version__,
            "status": "succeeded" if succeeded else "failed",
            "error": error,
            "started": started_iso,
            "finished": _now(),
            "duration_s": round(time.time() - started, 2),
            "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)),
            "git": git_state(project_root()),
            "environment": environment_info(),
            "profile": cfg.profile,
            "parameters": cfg.to_dict(),
            "seeds": {"seed": cfg.seed},
            "run": {**run_params, "embedded_cohort": embedded},
            "inputs": {"manifest_files_sha256": inputs},
            "code_sha256": code,
            "notebooks": [asdict(r) for r in runs],
            "warnings": warnings,
        }
        atomic_write_text(paths.run_manifest, json.dumps(manifest_record, indent=2))

        if succeeded:
            page = _index_page(cfg, runs, manifest_record, paths)
            atomic_write_text(paths.index_html, page)
        else:
            paths.index_html.unlink(missing_ok=True)
            print(f"magn study: {error}", file=sys.stderr)
    return StudyResult(succeeded=succeeded, paths=paths, notebooks=runs, error=error)


def _index_page(
    cfg: Profile, runs: list[NotebookRun], record: Mapping[str, Any], paths: ReportPaths
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
    provenance = [
        ("Profile", cfg.profile),
        ("Data", cohort),
        ("Finished", record["finished"]),
        ("Duration", f"{record['duration_s'] / 60:.1f} min"),
        ("Code version", f"magn {record['magn_version']}, commit {commit}"),
        ("Machine", f"{env['os']}; CPU {env['cpu']} ({env['cpu_count']} cores); GPU {gpus}"),
        ("Software", f"Python {env['python']}, PyTorch {env['packages'].get('torch')}, "
                     f"PyRadiomics {env['packages'].get('pyradiomics')}"),
    ]
    warnings = [f"{w['message']} (from {w['source']})" for w in record["warnings"]]
    intro = (
        "<p class=\"sub\">Multi-view attention-guided network (Chen et al., Front. Oncol. 2022, "
        "doi:10.3389/fonc.2022.981769): spinal multiple myeloma vs lung-cancer metastasis on "
        "contrast-enhanced T1 MRI. Research use only; not a medical device.</p>"
    )
    return render_index(
        title=f"magn study report: {cfg.profile}",
        entries=entries,
        provenance=provenance,
        warnings=warnings,
        intro_html=intro,
        body_html=front_page_html(paths.report_dir,
                                  embedded=record["run"]["embedded_cohort"]),
        record_href=paths.relative(paths.run_manifest),
    )
