"""The study runner on small fixture notebooks: resume, --force, failure path, HTML, manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from magn_lib import cli
from magn_lib.pipeline import (
    NOTEBOOK_PATTERN,
    RUN_STAMP,
    discover_notebooks,
    notebook_problems,
    read_warnings,
    record_warning,
    run_study,
)

FIRST = '''\
import sys
from magn_lib.config import resolve_path
counter = resolve_path(run_dir) / "artifacts" / "count.txt"
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print(f"first notebook ran, time {n}, epochs {epochs}")
print("stderr-chatter", file=sys.stderr)
'''

SECOND = '''\
from magn_lib.pipeline import record_warning
record_warning(run_dir, "02_second", "pretrained weights unavailable: He-uniform used")
if seed == 13:
    raise ValueError("planted failure for the test")
print("second notebook done")
'''


def _notebook(title: str, summary: str, parameters: str, body: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "magn", "display_name": "magn", "language": "python"}
    nb.metadata["magn"] = {"summary": summary}
    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {title}\n\nWhat this shows."), params, new_code_cell(body)]
    return nb


@pytest.fixture
def study(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(
        _notebook("First step", "Counts its runs.", 'run_dir = "reports/x"\nepochs = 1\n', FIRST),
        notebooks / "01_first.ipynb",
    )
    nbformat.write(
        _notebook("Second step", "Fails on seed 13.", 'run_dir = ""\nseed = 0\n', SECOND),
        notebooks / "02_second.ipynb",
    )
    (notebooks / "scratch.ipynb").write_text("{}")  # not NN_name: ignored by the runner
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "lesions.csv").write_text("lesion_id,label\nP001-L1,1\n")
    return {
        "notebooks_dir": notebooks,
        "manifest_dir": manifest,
        "run_dir": tmp_path / "out",
        "work_dir": tmp_path / "work",
        "progress": False,
    }


def _count(run_dir: Path) -> int:
    return int((run_dir / "artifacts" / "count.txt").read_text())


def test_discovery_and_hygiene_of_fixtures(study):
    found = discover_notebooks(study["notebooks_dir"])
    assert [p.name for p in found] == ["01_first.ipynb", "02_second.ipynb"]
    assert all(NOTEBOOK_PATTERN.match(p.name) for p in found)
    assert all(notebook_problems(p) == [] for p in found)


def test_run_resume_force_and_report(study):
    run_dir = study["run_dir"]
    result = run_study("smoke", **study)
    assert result.succeeded
    assert [r.status for r in result.notebooks] == ["executed", "executed"]
    assert _count(run_dir) == 1

    # parameters injected: only those each notebook declares, from the profile and the run
    first, second = result.notebooks
    assert first.parameters == {"run_dir": str(run_dir), "epochs": 1}
    assert set(second.parameters) == {"run_dir", "seed"} and second.parameters["seed"] == 7

    # HTML: a clinician view without code, prompts or stderr; a full view with code
    clinician = (run_dir / "html" / "01_first.html").read_text()
    full = (run_dir / "html-full" / "01_first.html").read_text()
    assert "first notebook ran, time 1" in clinician
    assert "resolve_path" not in clinician and "stderr-chatter" not in clinician
    code_markup = r'class="[^"]*\bjp-(InputPrompt|OutputPrompt|CodeMirrorEditor)\b'
    assert not re.search(code_markup, clinician)
    assert re.search(code_markup, full)
    assert "resolve_path" in full
    index = (run_dir / "index.html").read_text()
    assert index.index("html/01_first.html") < index.index("html/02_second.html")
    assert "Counts its runs." in index and "html-full/02_second.html" in index
    assert "He-uniform used" in index  # warnings recorded by notebooks reach the front page

    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["profile"] == "smoke"
    assert manifest["parameters"]["epochs"] == 1 and manifest["seeds"] == {"seed": 7}
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert set(manifest["inputs"]["manifest_files_sha256"]) == {"lesions.csv"}
    assert len(manifest["inputs"]["manifest_files_sha256"]["lesions.csv"]) == 64
    assert manifest["environment"]["python"].startswith("3.")
    assert "torch" in manifest["environment"]["packages"]
    for nb in manifest["notebooks"]:
        assert nb["started"] and nb["finished"] and nb["duration_s"] > 0
    assert manifest["warnings"] == [
        {"source": "02_second", "message": "pretrained weights unavailable: He-uniform used"}
    ]

    # unchanged inputs and parameters: both skipped, nothing re-executed, report still there
    again = run_study("smoke", **study)
    assert [r.status for r in again.notebooks] == ["skipped", "skipped"]
    assert _count(run_dir) == 1 and (run_dir / "index.html").is_file()

    # a changed input manifest file re-runs everything downstream of it
    (study["manifest_dir"] / "lesions.csv").write_text("lesion_id,label\nP001-L1,0\n")
    changed = run_study("smoke", **study)
    assert [r.status for r in changed.notebooks] == ["executed", "executed"]
    assert _count(run_dir) == 2

    forced = run_study("smoke", force=True, **study)
    assert [r.status for r in forced.notebooks] == ["executed", "executed"]
    assert _count(run_dir) == 3


def test_changed_parameter_reruns_only_that_notebook_and_later(study, tmp_path):
    run_study("smoke", **study)
    profile = tmp_path / "other.yaml"
    profile.write_text("profile: smoke\nseed: 8\nepochs: 1\n")
    rerun = run_study(profile, **study)
    assert [r.status for r in rerun.notebooks] == ["skipped", "executed"]
    assert _count(study["run_dir"]) == 1


def test_failure_is_honest(study, tmp_path, capsys):
    run_dir = study["run_dir"]
    run_dir.mkdir(parents=True)
    (run_dir / "index.html").write_text("stale page from an earlier run")
    failing = tmp_path / "failing.yaml"
    failing.write_text("profile: smoke\nseed: 13\n")

    code = cli.main([
        "study", "--profile", str(failing), "--manifest", str(study["manifest_dir"]),
        "--out", str(run_dir), "--work", str(study["work_dir"]),
        "--notebooks", str(study["notebooks_dir"]),
    ])
    assert code != 0
    err = capsys.readouterr().err
    assert "02_second failed" in err and "planted failure" in err

    partial = nbformat.read(str(run_dir / "executed" / "02_second.ipynb"), as_version=4)
    assert RUN_STAMP not in partial.metadata  # never stamped as completed
    assert any(o.get("ename") == "ValueError" for c in partial.cells for o in c.get("outputs", []))
    assert not (run_dir / "html" / "02_second.html").exists()
    assert not (run_dir / "html-full" / "02_second.html").exists()
    assert not (run_dir / "index.html").exists()
    assert (run_dir / "html" / "01_first.html").exists()
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["status"] == "failed" and "02_second" in manifest["error"]
    assert [n["status"] for n in manifest["notebooks"]] == ["executed", "failed"]

    # the failed notebook is not treated as done on the next run
    result = run_study(failing, **study)
    assert [r.status for r in result.notebooks] == ["skipped", "failed"]


def test_missing_kernel_is_a_clear_error(study):
    with pytest.raises(RuntimeError, match="kernel 'no-such-kernel' is not registered"):
        run_study("smoke", kernel_name="no-such-kernel", **study)


def test_record_warning_keeps_each_once(tmp_path):
    record_warning(tmp_path, "03", "a")
    record_warning(tmp_path, "03", "a")
    record_warning(tmp_path, "04", "b")
    assert read_warnings(tmp_path) == [
        {"source": "03", "message": "a"}, {"source": "04", "message": "b"}
    ]
