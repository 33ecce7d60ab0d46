"""Overhead of the study runner over plain papermill on one small notebook.

The runner adds fingerprinting, two HTML renderings, the run manifest and the index page; the
reference is ``papermill.execute_notebook`` alone on the same notebook and kernel. One-off
imports (PyTorch, for the environment record) are done before timing: they are paid once per
study, not per notebook.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from benchmarks.common import Result


def _notebook() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "magn", "display_name": "magn", "language": "python"}
    nb.metadata["magn"] = {"summary": "A small table."}
    params = new_code_cell('run_dir = "reports/demo"\nseed = 0\n')
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell(
        "import numpy as np, pandas as pd\n"
        "pd.DataFrame(np.random.default_rng(seed).normal(size=(20, 4))).describe()"
    )
    nb.cells = [new_markdown_cell("# Bench"), params, body]
    return nb


def run() -> list[Result]:
    import papermill
    import torch  # noqa: F401 - imported once per process by the runner; not per-notebook cost

    from magn_lib.pipeline import run_study

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "notebooks").mkdir()
        (tmp / "manifest").mkdir()
        (tmp / "manifest" / "lesions.csv").write_text("lesion_id,label\nP001-L1,1\n")
        source = tmp / "notebooks" / "01_bench.ipynb"
        nbformat.write(_notebook(), source)

        t0 = time.perf_counter()
        papermill.execute_notebook(
            str(source), str(tmp / "plain.ipynb"), kernel_name="magn", progress_bar=False
        )
        plain = time.perf_counter() - t0

        kwargs = dict(manifest_dir=tmp / "manifest", run_dir=tmp / "out", work_dir=tmp / "work",
                      notebooks_dir=tmp / "notebooks", progress=False)
        t0 = time.perf_counter()
        run_study("smoke", **kwargs)
        runner = time.perf_counter() - t0

        t0 = time.perf_counter()
        run_study("smoke", **kwargs)
        resumed = time.perf_counter() - t0

    return [
        Result("magn study, one notebook", runner, "papermill.execute_notebook", plain,
               target=1.5, note="extra: fingerprints, 2 HTML views, manifest, index"),
        Result("magn study, unchanged (resume)", resumed, "papermill.execute_notebook", plain,
               target=0.5, note="skips execution"),
    ]
