"""The run layout: every file name of the report and work folders is spelled once, in
``magn_lib/layout.py``; the library, the notebooks and the benchmarks ask it for paths."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from magn_lib.config import project_root
from magn_lib.config import run_paths as run_paths_from_config
from magn_lib.layout import (
    FoldPaths,
    GridPaths,
    ReportPaths,
    RunPaths,
    WorkPaths,
    default_run_parents,
    default_run_paths,
    default_work_folder,
    feature_cache,
    run_paths,
)

ROOT = Path(__file__).resolve().parent.parent

# The names of the run and work folders, written out here independently of layout.py so that a
# literal copied from there into another module is caught.
FILE_NAMES = frozenset({
    "crops.npz", "folds.csv", "predictions.csv", "history.csv", "done.json", "started.json",
    "model.pt", "checkpoint.pt", "run_manifest.json", "warnings.json", "front_page.json",
    ".ingest.json", ".lock", "index.html", "qc.csv", "report.html", "report.pdf",
    ".magn-run.json", "front_page_external.json",
})
FOLDER_NAMES = frozenset({
    "magn_cv", "nifti", "masks", "ingest", "transfer", "radiomics", "artifacts", "executed",
    "html", "html-full", "screens", "external", "bundle",
})
# the default parents of the report and work folders, under the project root
PARENT_NAMES = frozenset({"reports", "work"})
# a literal joined onto one of the run's folders (``paths.artifacts_dir / "table1.csv"``) is a
# file name the layout should give
RUN_FOLDERS = frozenset({
    "report_dir", "work_dir", "run_dir", "artifacts_dir", "executed_dir", "html_dir",
    "full_html_dir", "nifti_dir", "masks_dir", "ingest_dir", "transfer_dir", "grid_dir",
    "radiomics_dir", "art",
})
# literal beginnings of generated names: oof_<method>.csv, the fold<k> glob,
# radiomics-<view>-<key>.pkl, <folder>/... (a path spelled as text)
PREFIXES = re.compile(
    r"^(oof_|fold\*$|radiomics(3d)?-|("
    + "|".join(map(re.escape, FOLDER_NAMES | PARENT_NAMES)) + r")/)"
)
# <view>.nii.gz: a view's volume or mask file
VIEW_FILE = re.compile(r"^(sagittal|coronal|axial)\.nii\.gz$")
# generated names ending like a run file: f"{view}.nii.gz", f"{name}.html", f"{name}.csv"
F_STRING_ENDINGS = (".nii.gz", ".html", ".ipynb", ".csv", ".pt", ".pkl", ".npz")
# (the embedded cohort's own folder is laid out by the synthetic cohort, not a run folder)
NOT_RUN_FOLDERS = ("magn_lib/synthetic",)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings or bare string statements."""
    ids = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            ids.add(id(node.value))
    return ids


def _is_path_join(parent: ast.AST | None, node: ast.AST) -> bool:
    return isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div) and \
        parent.right is node


def _joins_run_folder(parent: ast.AST | None, node: ast.AST) -> bool:
    """``<a run folder> / "name"``, the folder named as a variable or an attribute."""
    if not _is_path_join(parent, node):
        return False
    left = parent.left
    name = left.id if isinstance(left, ast.Name) else getattr(left, "attr", None)
    return name in RUN_FOLDERS


def _joins_project_root(parent: ast.AST | None, node: ast.AST) -> bool:
    """``project_root() / "work"``: a default run folder's parent."""
    if not _is_path_join(parent, node):
        return False
    left = parent.left
    return (isinstance(left, ast.Call) and isinstance(left.func, ast.Name | ast.Attribute)
            and getattr(left.func, "id", getattr(left.func, "attr", "")) == "project_root")


def run_file_literals(source: str) -> list[tuple[int, str]]:
    """``(line, literal)`` of every string in ``source`` that spells a run or work file name:
    a known file name, a known folder joined onto a path (``x / "masks"``), a generated name's
    literal part (``f"oof_{m}.csv"``, ``f"fold{k}"``, ``f"{view}.nii.gz"``), or a path written
    as text (``"html/..."``). Docstrings and comments are not code and are skipped."""
    tree = ast.parse(source)
    docstrings = _docstring_nodes(tree)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings or isinstance(parents.get(id(node)), ast.JoinedStr):
                continue
            text = node.value
            parent = parents.get(id(node))
            if (text in FILE_NAMES or VIEW_FILE.match(text) or PREFIXES.match(text)
                    or (text in FOLDER_NAMES and _is_path_join(parent, node))
                    or _joins_run_folder(parent, node)
                    or (text in PARENT_NAMES and _joins_project_root(parent, node))):
                found.append((node.lineno, text))
        elif isinstance(node, ast.JoinedStr):
            pieces = [v.value for v in node.values if isinstance(v, ast.Constant)]
            first, last = node.values[0], node.values[-1]
            starts = isinstance(first, ast.Constant) and PREFIXES.match(first.value) or (
                isinstance(first, ast.Constant) and first.value == "fold"
                and len(node.values) > 1)
            ends = (isinstance(last, ast.Constant) and len(node.values) > 1
                    and isinstance(node.values[-2], ast.FormattedValue)
                    and last.value in F_STRING_ENDINGS)
            if starts or ends:
                found.append((node.lineno, "".join(pieces)))
    return found


def _sources() -> list[tuple[str, str]]:
    """``(where, code)`` of every library and benchmark module and every notebook code cell
    after the ``parameters`` cell (which holds literals only, by rule)."""
    out = []
    for folder in ("magn_lib", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "magn_lib/layout.py" or rel.startswith(NOT_RUN_FOLDERS):
                continue
            out.append((rel, path.read_text()))
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
                continue
            code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                             for line in cell.source.splitlines())
            out.append((f"{path.relative_to(ROOT).as_posix()} cell {i}", code))
    return out


def test_no_run_file_name_is_spelled_outside_the_layout():
    offenders = [f"{where} line {line}: {text!r}"
                 for where, code in _sources() for line, text in run_file_literals(code)]
    assert offenders == [], "ask magn_lib.layout for these paths:\n" + "\n".join(offenders)


@pytest.mark.parametrize("code", [
    'cache = paths.work_dir / "crops.npz"',
    'folder = work_dir / "magn_cv" / config',
    'out = work_dir / "masks" / lesion_id / f"{view}.nii.gz"',
    'save(frame, run_dir / "artifacts" / f"oof_{method}.csv")',
    'folds = sorted(p for p in grid.glob("fold*"))',
    'where = out_dir / name / f"fold{int(fold)}"',
    'href = f"html/{name}.html"',
    'record = report_dir / "run_manifest.json"',
    'path = folder / f"radiomics-{view}-{key[:20]}.pkl"',
    'stamp = work_dir / "nifti" / pid / ".ingest.json"',
    'sagittal = lesion_dir / "sagittal.nii.gz"',
    'work = project_root() / "work" / name',
    'paths = run_paths("reports/demo")',
    'table1 = pd.read_csv(paths.artifacts_dir / "table1.csv")',
    'figure = art / "fig4_roc.png"',
])
def test_the_scan_finds_run_file_literals(code):
    assert run_file_literals(code), code


@pytest.mark.parametrize("code", [
    '"""Writes ``masks/<lesion_id>/<view>.nii.gz`` and ``crops.npz``."""',
    'x = {"masks": masks, "images": images}  # a dataset item, not a folder',
    'row = {"stage": "ingest", "method": "radiomics"}',
    'tmp = tempfile.mkstemp(suffix=".nii.gz")',
    'label = f"fold {k}"',
    'table = frame.groupby("fold")',
    'kwargs = dict(run_dir=tmp / "out", work_dir=tmp / "work")',
    'path = paths.oof("magn")',
])
def test_the_scan_leaves_other_strings_alone(code):
    assert run_file_literals(code) == [], code


def test_run_paths_name_every_file_of_a_run(tmp_path):
    paths = RunPaths(report_dir=tmp_path / "reports" / "r", work_dir=tmp_path / "work" / "r")
    report, work = paths.report_dir, paths.work_dir
    assert paths.executed("01_cohort") == report / "executed" / "01_cohort.ipynb"
    assert paths.html("01_cohort") == report / "html" / "01_cohort.html"
    assert paths.full_html("01_cohort") == report / "html-full" / "01_cohort.html"
    assert paths.relative(paths.full_html("01_cohort")) == "html-full/01_cohort.html"
    assert paths.table("table1") == report / "artifacts" / "table1.csv"
    assert paths.figure("fig4_roc") == report / "artifacts" / "fig4_roc"
    assert paths.figure_png("fig4_roc") == report / "artifacts" / "fig4_roc.png"
    assert paths.oof("magn") == report / "artifacts" / "oof_magn.csv"
    assert paths.folds_csv == report / "artifacts" / "folds.csv"
    assert paths.front_page.parent == paths.artifacts_dir
    assert paths.front_page_external.parent == paths.artifacts_dir
    assert paths.front_page_external != paths.front_page
    assert paths.external_dir.parent == report  # shareable: predictions and metrics, no images
    assert paths.study_bundle.is_relative_to(work)  # private: the run's trained weights
    assert {paths.run_manifest.parent, paths.index_html.parent, paths.warnings_file.parent,
            paths.lock_file.parent} == {report}
    assert paths.volume("P001", "axial") == work / "nifti" / "P001" / "axial.nii.gz"
    assert paths.ingest_stamp("P001").parent == paths.volume("P001", "axial").parent
    assert paths.mask("P001-L1", "sagittal") == work / "masks" / "P001-L1" / "sagittal.nii.gz"
    assert paths.ingest_table("series") == work / "ingest" / "series.csv"
    assert paths.transfer_table("qc") == work / "transfer" / "qc.csv"
    assert paths.crop_cache == work / "crops.npz"
    assert paths.grid_dir == work / "magn_cv" and paths.grid == GridPaths(work / "magn_cv")
    assert paths.fold_dir("multi-view", 3) == work / "magn_cv" / "multi-view" / "fold3"
    fold = paths.fold("multi-view", 3)
    assert fold == FoldPaths(paths.fold_dir("multi-view", 3))
    files = [fold.started, fold.done, fold.predictions, fold.history, fold.model, fold.checkpoint]
    assert {f.parent for f in files} == {fold.folder} and len({f.name for f in files}) == 6
    assert paths.radiomics_dir == work / "radiomics"
    # a run's paths are the work and report layouts of its two folders
    assert isinstance(paths, WorkPaths) and isinstance(paths, ReportPaths)
    assert paths.crop_cache == WorkPaths(work).crop_cache
    assert paths.oof("x") == ReportPaths(report).oof("x")


def test_stage_tables_are_checked_by_name(tmp_path):
    with pytest.raises(ValueError, match="ingest writes no table 'qc'"):
        WorkPaths(tmp_path).ingest_table("qc")
    with pytest.raises(ValueError, match="transfer writes no table"):
        WorkPaths(tmp_path).transfer_table("series")


def test_trained_folds_are_those_with_a_kept_model(tmp_path):
    grid = GridPaths(tmp_path)
    for fold in (0, 2, 10):
        grid.fold_dir("multi-view", fold).mkdir(parents=True)
        grid.fold("multi-view", fold).model.write_bytes(b"weights")
    grid.fold_dir("multi-view", 1).mkdir()  # started, never finished
    (grid.config_dir("multi-view") / "fold_notes").mkdir()
    assert grid.trained_folds("multi-view") == [0, 2, 10]
    assert grid.trained_folds("axial") == []


def test_feature_cache_names(tmp_path):
    key = "0123456789abcdef0123456789"
    assert feature_cache(tmp_path, source="crops", view="axial", key=key) == \
        tmp_path / "radiomics-axial-0123456789abcdef0123.pkl"
    assert feature_cache(tmp_path, source="volumes", view=None, key=key).name == \
        "radiomics3d-volumes-0123456789abcdef0123.pkl"
    with pytest.raises(ValueError, match="source must be one of"):
        feature_cache(tmp_path, source="slices", view="axial", key=key)


def test_default_run_folders():
    assert run_paths_from_config is run_paths  # still importable from config
    paths = default_run_paths("demo")
    assert paths == RunPaths(report_dir=project_root() / "reports" / "demo",
                             work_dir=project_root() / default_work_folder(paths.report_dir))
    assert paths.work_dir.parent == project_root() / "work"
    assert default_run_parents() == (paths.report_dir.parent, paths.work_dir.parent)
