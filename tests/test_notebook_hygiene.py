"""Notebooks in git carry no outputs, start with a literal-only parameters cell, define nothing."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from magn_lib.config import load_profile
from magn_lib.pipeline import (
    RUN_PARAMETERS,
    declared_parameters,
    discover_notebooks,
    notebook_problems,
)

STUDY_NOTEBOOKS = discover_notebooks()


def _clean() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["magn"] = {"summary": "One line."}
    params = new_code_cell('profile = "demo"\nepochs = 10\nviews = ["sagittal", "axial"]\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# Title"), params, new_code_cell("x = epochs * 2\nprint(x)")]
    return nb


def test_clean_notebook_passes():
    assert notebook_problems(_clean()) == []


def test_outputs_are_caught():
    nb = _clean()
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="20\n")]
    nb.cells[2].execution_count = 3
    problems = notebook_problems(nb)
    assert any("has outputs" in p for p in problems)
    assert any("execution count" in p for p in problems)


def test_missing_parameters_tag_is_caught():
    nb = _clean()
    nb.cells[1].metadata["tags"] = []
    assert any("not tagged 'parameters'" in p for p in notebook_problems(nb))


def test_derived_value_in_parameters_cell_is_caught():
    nb = _clean()
    nb.cells[1].source += "steps = epochs * 3\n"
    assert any("only `name = literal`" in p for p in notebook_problems(nb))


@pytest.mark.parametrize(
    "code", ["def helper(x):\n    return x\n", "class Thing:\n    pass\n", "f = lambda x: x\n"]
)
def test_definitions_are_caught(code):
    nb = _clean()
    nb.cells.append(new_code_cell(code))
    assert any("move it to magn_lib" in p for p in notebook_problems(nb))


def test_missing_summary_is_caught():
    nb = _clean()
    del nb.metadata["magn"]
    assert any("magn.summary" in p for p in notebook_problems(nb))


@pytest.mark.parametrize("path", STUDY_NOTEBOOKS, ids=lambda p: p.name)
def test_study_notebook_is_clean(path):
    assert notebook_problems(path) == []


def _parameter_problems(path) -> list[str]:
    """What is wrong with a notebook's parameters cell: a name that neither the profile nor the
    runner provides (papermill never sets it: a typo or a stale name), or a default other than
    the demo profile's (JupyterLab runs a notebook with its defaults: they must give the run
    `make study` gives)."""
    demo = load_profile("demo").to_dict()
    problems = []
    for name, default in declared_parameters(path).items():
        if name in demo:
            if eval(default) != demo[name]:
                problems.append(f"{name}: default {default} is not the demo profile's "
                                f"{demo[name]!r}")
        elif name not in RUN_PARAMETERS:
            problems.append(f"{name}: neither a profile parameter nor one of {RUN_PARAMETERS}")
        elif name == "run_dir" and eval(default) != "reports/demo":
            problems.append(f"run_dir: default {default} is not 'reports/demo'")
    return problems


@pytest.mark.parametrize("path", STUDY_NOTEBOOKS, ids=lambda p: p.name)
def test_study_notebook_parameters_are_the_demo_profile(path):
    assert _parameter_problems(path) == []


def test_bad_parameters_cell_is_caught(tmp_path):
    nb = _clean()
    nb.cells[1].source = ('profile = "demo"\nepoch = 10\nseed = 1\nrun_dir = "reports/mine"\n'
                          'work_dir = "work/demo"\n')
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    problems = _parameter_problems(path)
    assert len(problems) == 3, problems
    assert problems[0].startswith("epoch: neither a profile parameter")
    assert problems[1].startswith("seed: default 1 is not the demo profile's 2022")
    assert problems[2].startswith("run_dir: default")
    nb.cells[1].source = 'profile = "demo"\nepochs = 10\nseed = 2022\nrun_dir = "reports/demo"\n'
    nbformat.write(nb, path)
    assert _parameter_problems(path) == []
