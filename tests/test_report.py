from __future__ import annotations

import re

import nbformat
import pandas as pd
import pytest
from matplotlib.figure import Figure
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from magn_lib.report import (
    GLOSSARY,
    IndexEntry,
    clinician_notebook,
    front_page_html,
    render_html,
    render_index,
    write_front_page,
)


def _executed_notebook() -> nbformat.NotebookNode:
    nb = new_notebook()
    code = new_code_cell("table = make_table()\ntable")
    code.outputs = [
        new_output("stream", name="stderr", text="100%|#####| 5/5 progress bar\n"),
        new_output("execute_result", data={"text/plain": "AUC 0.91"}, execution_count=1),
    ]
    hidden = new_code_cell("debug_dump()")
    hidden.metadata["tags"] = ["analyst-only"]
    hidden.outputs = [new_output("stream", name="stdout", text="internal detail\n")]
    nb.cells = [new_markdown_cell("# Results\n\nThe model."), code, hidden]
    return nb


def test_clinician_notebook_drops_stderr_and_analyst_cells_without_touching_input():
    nb = _executed_notebook()
    view = clinician_notebook(nb)
    assert len(view.cells) == 2
    assert [o["output_type"] for o in view.cells[1].outputs] == ["execute_result"]
    assert len(nb.cells) == 3 and len(nb.cells[1].outputs) == 2  # input unchanged


def test_render_html_views():
    nb = _executed_notebook()
    clinician = render_html(nb, with_code=False)
    full = render_html(nb, with_code=True)
    assert "AUC 0.91" in clinician and "AUC 0.91" in full
    assert "make_table" not in clinician and "make_table" in full
    assert "progress bar" not in clinician and "internal detail" not in clinician
    for page in (clinician, full):
        # offline: no scripts fetched from a CDN
        assert not re.search(r'<script[^>]+src="https?://', page)
        assert "<title>Results</title>" in page


def _figure(path):
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1], [0, 1])
    fig.savefig(path)
    return path


def test_front_page_embeds_tables_and_figures(tmp_path):
    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    pd.DataFrame({"Method": ["MAGN <multi>"], "AUC": ["0.91 (0.85–0.96)"]}).to_csv(
        run / "artifacts" / "table2.csv", index=False
    )
    png = _figure(run / "artifacts" / "roc.png")
    write_front_page(
        run,
        summary=["We asked whether MRI can tell myeloma from metastasis."],
        tables=[("Table 2", run / "artifacts" / "table2.csv", "Out-of-fold.")],
        figures=[("ROC curves", png, "Five folds and pooled.")],
        model_facts=[("Training data", "60 synthetic patients")],
    )
    body = front_page_html(run, embedded=True)
    assert "We asked whether" in body and "MAGN &lt;multi&gt;" in body  # escaped
    assert body.count("data:image/png;base64,") == 1
    assert "Synthetic data — demonstrates the method, says nothing about patients" in body
    assert "Not a medical device" in body and "60 synthetic patients" in body
    own_cohort = front_page_html(run, embedded=False)
    assert "Synthetic data" not in own_cohort and "Limitations" in own_cohort


def test_front_page_items_must_exist_inside_the_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        write_front_page(run, summary=["x"], tables=[("T", run / "missing.csv", "")])
    outside = tmp_path / "elsewhere.png"
    _figure(outside)
    with pytest.raises(ValueError):
        write_front_page(run, summary=["x"], figures=[("F", outside, "")])


def test_index_and_notebook_pages_open_cleanly_in_chromium(tmp_path, open_page):
    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    (run / "html").mkdir()
    png = _figure(run / "artifacts" / "roc.png")
    write_front_page(run, summary=["Summary."], figures=[("ROC", png, "caption")])
    index = run / "index.html"
    index.write_text(
        render_index(
            title="magn study report",
            entries=[IndexEntry("Results", "The model.", "html/01_results.html",
                                "html-full/01_results.html", "executed")],
            provenance=[("Profile", "smoke")],
            warnings=["weights unavailable: He-uniform initialisation used"],
            body_html=front_page_html(run, embedded=True),
        )
    )
    page_html = render_html(_executed_notebook(), with_code=False)
    (run / "html" / "01_results.html").write_text(page_html)
    for path in (index, run / "html" / "01_results.html"):
        shot = tmp_path / f"{path.stem}.png"
        page, problems = open_page(path, shot)
        assert problems == []
        assert shot.stat().st_size > 5_000
        images = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert all(width > 0 for width in images)
        page.close()
    assert len(GLOSSARY) >= 10


def test_save_table_writes_artifact_csv(tmp_path):
    from magn_lib.layout import ReportPaths
    from magn_lib.report import save_table

    path = save_table(pd.DataFrame({"a": [1, 2]}), ReportPaths(tmp_path / "run").table("flow"))
    assert path == tmp_path / "run" / "artifacts" / "flow.csv"
    assert pd.read_csv(path)["a"].tolist() == [1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["flow.csv"]  # no temporary left


def test_plain_summary_reports_the_primary_comparison():
    import numpy as np

    from magn_lib import stats
    from magn_lib.report import plain_summary

    rng = np.random.default_rng(0)
    n = 60
    y = (np.arange(n) % 3 == 0).astype(int)
    parts = []
    for method, config, signal in (("magn", "multi-view+attention", 0.6),
                                   ("radiomics", "multi-view", 0.2), ("reader", "reader1", 0.3)):
        p = np.clip(signal * y + (1 - signal) * rng.random(n), 0, 1)
        parts.append(pd.DataFrame({"method": method, "config": config, "fold": np.arange(n) % 5,
                                   "lesion_id": [f"L{i}" for i in range(n)],
                                   "patient_id": [f"P{i}" for i in range(n)], "label": y,
                                   "probability": p}))
    oof = pd.concat(parts, ignore_index=True)
    metrics = stats.metrics_table(oof, n_resamples=100)
    pairwise = stats.pairwise_delong(oof)
    text = plain_summary(metrics, pairwise, n_patients=n, n_lesions=n, n_mm=int(y.sum()),
                         embedded=True)
    magn = metrics[metrics["method"] == "magn"].iloc[0]
    # per-fold mean ± SD first, then the rank-pooled AUC with its patient-bootstrap interval
    assert (f"{magn['auc_fold_mean']:.2f} ± {magn['auc_fold_sd']:.2f} (mean ± SD over the "
            f"folds; pooled over all lesions after ranking within each fold "
            f"{magn['auc_ranked']:.2f}, 95 % CI {magn['auc_ranked_low']:.2f}–"
            f"{magn['auc_ranked_high']:.2f}, resampling patients)") in text[2]
    assert "simulated readers" in text[0]
    assert "lesion-level DeLong test" in text[2]
    assert "The simulated readers (not radiologists" in text[2]
    assert "radiologists classified" not in text[2].replace("simulated", "")
    real = plain_summary(metrics, pairwise, n_patients=n, n_lesions=n, n_mm=20, embedded=False)
    assert "The radiologists classified" in real[2] and "simulated" not in " ".join(real)
    # with the paired patient bootstrap of the difference, that is what the summary states
    diff = stats.compare_models(oof, ("magn", "multi-view+attention"),
                                ("radiomics", "multi-view"), n_resamples=200)
    with_diff = plain_summary(metrics, pairwise, n_patients=n, n_lesions=n, n_mm=20,
                              embedded=True, difference=diff)
    assert (f"differ by {diff['difference']:+.2f} (95 % CI {diff['ci_low']:+.2f} to "
            f"{diff['ci_high']:+.2f}, resampling patients)") in with_diff[2]
    assert "DeLong" not in with_diff[2]
    assert "20 myeloma, 40 metastasis" in text[1]
    assert "synthetic" in text[-1]
    assert len(real) == 3
