"""Notebooks in git carry no outputs, start with a literal-only parameters cell, define nothing."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from magn_lib.config import load_profile, notebook_parameters
from magn_lib.layout import default_work_folder
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
    params = new_code_cell('profile = "demo"\nrun_dir = None\nepochs = None\nviews = None\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# Title"), params, new_code_cell("x = epochs\nprint(x)")]
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


@pytest.mark.parametrize(
    ("line", "problem"),
    [("epochs = 10", "`epochs` must default to None"),
     ('views = ["axial"]', "`views` must default to None"),
     ("profile = None", "`profile` must be a string"),
     ("run_dir = 3", "`run_dir` must be None")],
)
def test_profile_parameters_must_default_to_none(line, problem):
    # a literal default would silently override the profile wherever the notebook runs
    nb = _clean()
    nb.cells[1].source += line + "\n"
    assert any(problem in p for p in notebook_problems(nb))


@pytest.mark.parametrize("path", STUDY_NOTEBOOKS, ids=lambda p: p.name)
def test_study_notebook_opened_by_hand_runs_demo(path):
    # JupyterLab runs a notebook with its parameters cell as written: the `demo` profile, with
    # the default run folders, and every parameter the notebook declares taken from it
    declared = declared_parameters(path)
    assert eval(declared.pop("profile")) == "demo"
    namespace = {name: eval(default) for name, default in declared.items()}
    assert {k: v for k, v in namespace.items() if v is not None} == {}
    params = notebook_parameters(namespace)
    assert params.profile == load_profile("demo") and params.overrides == {}
    assert (params.run_dir, params.work_dir) == ("reports/demo",
                                                 default_work_folder("reports/demo"))
    assert set(params.keys) == set(declared) - set(RUN_PARAMETERS)


def test_study_notebooks_say_what_they_need_and_check_it():
    from magn_lib.pipeline import STUDY_NEEDS

    assert list(STUDY_NEEDS) == [p.stem for p in STUDY_NOTEBOOKS]
    for path in STUDY_NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        params = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        before = " ".join(c.source for c in nb.cells[:params] if c.cell_type == "markdown")
        assert "**What this notebook needs:**" in before, path.name
        for needed in STUDY_NEEDS[path.stem]:
            assert f"**{needed[:2]}**" in before, f"{path.name} does not name {needed}"
        top = next(c for c in nb.cells[params + 1:] if c.cell_type == "code").source
        assert "params = notebook_parameters(globals())" in top, path.name
        assert f'require_upstream("{path.stem}", params)' in top, path.name
