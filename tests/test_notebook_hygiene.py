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


@pytest.mark.parametrize("path", STUDY_NOTEBOOKS, ids=lambda p: p.name)
def test_study_notebook_defaults_are_the_demo_profile(path):
    # JupyterLab runs a notebook with its defaults: they must be the demo profile's values, so
    # that opening a notebook by hand gives the run `make study` gives.
    demo = load_profile("demo").to_dict()
    declared = declared_parameters(path)
    for name, default in declared.items():
        if name in demo:
            assert eval(default) == demo[name], f"{path.name}: {name} default differs from demo"
    assert "run_dir" not in declared or eval(declared["run_dir"]) == "reports/demo"
    for name in RUN_PARAMETERS:
        assert name in RUN_PARAMETERS
