from __future__ import annotations

import copy
import re
from pathlib import Path

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
    ranked = (f"{magn['auc_ranked']:.2f} (95 % CI {magn['auc_ranked_low']:.2f}–"
              f"{magn['auc_ranked_high']:.2f})")
    assert (f"{magn['auc_fold_mean']:.2f} ± {magn['auc_fold_sd']:.2f} (mean ± SD over the "
            f"folds); pooled over all lesions after ranking within each fold, {ranked} from "
            "resampling patients") in text[2]
    assert "simulated readers" in text[0]
    assert re.search(r"lesion-level DeLong test, .* p (= \d\.\d{3}|< 0\.001)\)", text[2])
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
    assert "5-fold cross-validation" in text[1]
    sites = plain_summary(metrics, pairwise, n_patients=n, n_lesions=n, n_mm=20, embedded=True,
                          n_folds=2, cv_scheme="leave-one-site-out")
    assert "leave-one-site-out over 2 sites" in sites[1] and "fold cross" not in sites[1]


# --------------------------------------------------------------------------------------------
# navigation, machine traces, the single-file report and its PDF


def test_navigation_links_index_neighbours_and_the_other_view():
    from magn_lib.report import STUDY_NAME, PageLink, navigation_html

    nav = navigation_html(run="smoke (profile smoke)", index=PageLink("Index", "../index.html"),
                          previous=PageLink("01 · Cohort", "01_cohort.html"),
                          next=PageLink("03 · <MAGN>", "03_magn.html"), here="Clinician view",
                          views=[PageLink("Analyst view", "../html-full/02_transfer.html")])
    hrefs = re.findall(r'href="([^"]+)"', nav)
    assert hrefs == ["../index.html", "01_cohort.html", "03_magn.html",
                     "../html-full/02_transfer.html"]
    assert STUDY_NAME in nav and "smoke (profile smoke)" in nav
    assert "← 01 · Cohort" in nav and "03 · &lt;MAGN&gt; →" in nav  # escaped
    page = render_html(_executed_notebook(), with_code=False, header_html=nav)
    assert page.index("<main>") < page.index('class="magn-nav"') < page.index("AUC 0.91")


def test_collapse_progress_keeps_each_bars_final_line():
    from magn_lib.report import collapse_progress

    text = ("grid:   0%|          | 0/3 [00:00<?, ?it/s]\rgrid:  33%|###       | 1/3 [00:01<00:02]"
            "\rgrid: 100%|##########| 3/3 [00:03<00:00]\n"
            "fold 0: 1/2 [00:01<00:01]\nfold 0: 2/2 [00:02<00:00]\n"
            "UserWarning: something to keep\nfold 1: 2/2 [00:02<00:00]\n")
    assert collapse_progress(text) == (
        "grid: 100%|##########| 3/3 [00:03<00:00]\nfold 0: 2/2 [00:02<00:00]\n"
        "UserWarning: something to keep\nfold 1: 2/2 [00:02<00:00]\n")
    assert collapse_progress("plain\ntext\n") == "plain\ntext\n"


def test_scrub_notebook_removes_machine_paths_and_keeps_images(tmp_path, monkeypatch):
    import sys
    import tempfile

    from magn_lib.report import scrub_notebook

    project = tmp_path / "checkout"
    home = Path.home()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    nb = _executed_notebook()
    nb.metadata["papermill"] = {
        "input_path": f"{project}/notebooks/01.ipynb",
        "output_path": f"{project}/reports/smoke/executed/01.ipynb",
        "parameters": {"run_dir": f"{tmp_path}/scratch/run"}}
    nb.cells[1].source = f'run_dir = "{project}/reports/smoke"'
    nb.cells[1].outputs += [
        new_output("stream", name="stderr",
                   text=f"{sys.prefix}/lib/python3.11/site-packages/x.py:3: UserWarning: w\n"
                        f"cache in {home}/.cache and {tmp_path}/scratch/job\n"),
        new_output("display_data", data={"text/markdown": f"run in `{project}` at {home}",
                                         "image/png": f"{project}"}),
    ]
    nb.cells[0].source = f"Outputs in {tmp_path}/scratch/x"
    clean = scrub_notebook(nb, project=project)
    assert clean.metadata["papermill"]["input_path"] == "notebooks/01.ipynb"
    assert clean.metadata["papermill"]["output_path"] == "reports/smoke/executed/01.ipynb"
    assert clean.metadata["papermill"]["parameters"]["run_dir"] == "<tmp>/run"
    assert clean.cells[1].source == 'run_dir = "reports/smoke"'
    stream = clean.cells[1].outputs[-2]["text"]
    assert stream.startswith("<env>/lib/python3.11/") and "<home>/.cache" in stream
    assert "<tmp>/job" in stream
    shown = clean.cells[1].outputs[-1]["data"]
    assert shown["text/markdown"] == "run in `&lt;project&gt;` at &lt;home&gt;"
    assert shown["image/png"] == str(project)  # image data is never rewritten
    assert clean.cells[0].source == "Outputs in &lt;tmp&gt;/x"
    assert nb.cells[1].source.startswith('run_dir = "/')  # the input is not modified


def _part(title: str, body: str) -> str:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(f"# {title}\n\n{body}\n\n[back](#{title.replace(' ', '-')})")]
    return render_html(nb, with_code=False, header_html='<nav class="magn-nav">x</nav>')


def test_report_page_joins_the_clinician_views_in_order_and_loads_nothing(tmp_path):
    from magn_lib.report import ReportPart, render_report

    parts = [ReportPart("nb01", "01 · Cohort", "Who is in.", _part("Cohort", "First.")),
             ReportPart("nb02", "02 · Results", "", _part("Results", "Second."))]
    page = render_report(title="magn study report: smoke", run="smoke", parts=parts,
                         front_html="<h2>Summary</h2><p>Sum.</p>",
                         provenance=[("Profile", "smoke")])
    assert page.index("Sum.") < page.index("First.") < page.index("Second.")
    assert page.index('href="#nb01"') < page.index('href="#nb02"')  # contents, in order
    assert 'class="magn-nav"' not in page  # chapters carry no page navigation
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    for anchor in re.findall(r'href="#([^"]+)"', page):
        assert anchor in ids, anchor
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script src" not in page


def test_print_pdf_numbers_a4_pages(tmp_path):
    from magn_lib.report import find_chromium, print_pdf

    if find_chromium() is None:
        pytest.skip("Chromium is not installed")
    pypdf = pytest.importorskip("pypdf")
    page = tmp_path / "report.html"
    page.write_text("<!DOCTYPE html><html><head><style>@page{size:A4;@bottom-center{content:"
                    '"Page " counter(page) " of " counter(pages)}} section{break-before:page}'
                    "</style></head><body><h1>T</h1><section>A</section><section>B</section>"
                    "</body></html>")
    assert print_pdf(page, tmp_path / "report.pdf") is None
    reader = pypdf.PdfReader(tmp_path / "report.pdf")
    assert len(reader.pages) == 3
    assert [p.extract_text().splitlines()[0] for p in reader.pages] == [
        "Page 1 of 3", "Page 2 of 3", "Page 3 of 3"]
    width, height = (float(v) for v in reader.pages[0].mediabox[2:])
    assert (round(width / 72 * 25.4), round(height / 72 * 25.4)) == (210, 297)  # A4 in mm


def test_print_pdf_degrades_with_a_reason(tmp_path):
    from magn_lib.report import print_pdf

    page = tmp_path / "report.html"
    page.write_text("<p>x</p>")
    failing = tmp_path / "chromium"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)
    reason = print_pdf(page, tmp_path / "report.pdf", chromium=str(failing))
    assert reason is not None and "status 3" in reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chromium", "report.html"]


def test_clinician_view_leaves_the_run_folders_out_of_the_parameters_table():
    from magn_lib.config import PARAMETERS_MIMETYPE

    nb = _executed_notebook()
    table = ("**Effective parameters** of this run\n\n| parameter | value | from |\n|---|---|---|\n"
             "| `seed` | 7 | profile |\n| `work_dir` | work/smoke | run |")
    nb.cells[1].outputs.append(new_output("display_data", data={
        "text/markdown": table, PARAMETERS_MIMETYPE: {"run": {"work_dir": "work/smoke"}}}))
    page = render_html(nb, with_code=False)
    assert "Effective parameters" in page and "work/smoke" not in page
    assert "work/smoke" in render_html(nb, with_code=True)  # the analyst keeps it


def test_calibration_direction_follows_the_sign_of_calibration_in_the_large():
    from magn_lib.report import calibration_direction

    # intercept > 0: myeloma more frequent than predicted -> the probabilities are too low
    assert calibration_direction(0.7) == "too low"
    assert calibration_direction(-0.7) == "too high"
    assert calibration_direction(0.0) == "about right"
    with pytest.raises(ValueError):
        calibration_direction(float("nan"))


def _line(**changes):
    from magn_lib.report import external_result_line

    values = dict(site="simulated site B", auc=0.712, auc_low=0.601, auc_high=0.823,
                  internal_auc=0.861, internal_low=0.78, internal_high=0.93, citl=-0.853,
                  citl_low=-1.3, citl_high=-0.4, mean_predicted=0.52, observed=0.3,
                  n_lesions=40, n_patients=24)
    return external_result_line(**{**values, **changes})


def test_external_line_is_rendered_from_the_numbers_given():
    line = _line()
    assert line.startswith("On simulated site B the model's AUC was 0.71 (95 % CI 0.60–0.82) "
                           "on 40 lesions of 24 patients, against 0.86 (95 % CI 0.78–0.93) in "
                           "the internal cross-validation")
    assert "its probabilities were too high by 0.85 on the log-odds scale (95 % CI 0.40–1.30)" \
        in line and "on average 52% predicted against 30% of lesions being myeloma" in line
    low = _line(citl=0.5, citl_low=0.1, citl_high=0.9, mean_predicted=0.2, observed=0.35)
    assert "too low by 0.50 on the log-odds scale (95 % CI 0.10–0.90)" in low
    unclear = _line(citl=0.2, citl_low=-0.3, citl_high=0.7)
    assert ("on average too low by 0.20 on the log-odds scale (95 % CI -0.30 to +0.70, which "
            "includes no miscalibration)") in unclear
    assert "(95 % CI" not in _line(citl_low=None, citl_high=None).split("log-odds scale")[1][:3]


def test_front_page_shows_the_external_part_only_for_a_study_that_has_it(tmp_path):
    from magn_lib.layout import ReportPaths
    from magn_lib.report import write_external_front

    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    write_front_page(run, summary=["Internal result."])
    pd.DataFrame({"Method": ["MAGN"], "AUC": ["0.71 (0.60–0.82)"]}).to_csv(
        run / "artifacts" / "external.csv", index=False)
    png = _figure(run / "artifacts" / "external_calibration.png")
    line = _line()
    record = write_external_front(
        run, line=line, site="simulated site B", simulated=True, n_patients=24,
        tables=[("Site B against site A", run / "artifacts" / "external.csv", "Frozen.")],
        figures=[("Calibration on site B", png, "Below the diagonal: too high.")])
    assert record == ReportPaths(run).front_page_external
    body = front_page_html(run, embedded=True, external=True)
    summary = body[body.index("<h2>Summary</h2>"):body.index("<h2>External validation")]
    assert "Internal result." in summary and "simulated site B the model&#x27;s AUC" in summary
    assert "External validation (simulated site B)" in body
    assert body.count("data:image/png;base64,") == 1 and "Site B against site A" in body
    assert "no external, prospective" not in body
    assert "validated on one external simulated site (simulated site B, 24 patients" in body
    assert body.count("0.71 (95 % CI 0.60–0.82)") == 2  # the summary and the model card
    without = front_page_html(run, embedded=True)  # an earlier run's record is not shown
    assert "simulated site B" not in without and "no external, prospective" in without
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_external_front(run, line=line, site="B", simulated=False, n_patients=2,
                             figures=[("F", run / "missing.png", "")])


def _external_metrics(shift: float):
    """Metrics as ``validate_external`` writes them, of 40 lesions of 20 patients whose frozen
    probabilities carry signal but are shifted by ``shift`` on the log-odds scale."""
    import json

    import numpy as np

    from magn_lib.bundle import finite_json
    from magn_lib.external import external_metrics, internal_estimate, recalibrate

    rng = np.random.default_rng(3)
    n = 40
    label = (np.arange(n) % 10 < 3).astype(int)
    logit = 1.5 * (label - 0.3) + rng.normal(0, 1, n) + np.log(0.3 / 0.7) + shift
    table = pd.DataFrame({"lesion_id": [f"B{i:03d}-L1" for i in range(n)],
                          "patient_id": [f"B{i // 2:03d}" for i in range(n)],
                          "label": label, "probability": 1 / (1 + np.exp(-logit)),
                          "method": "magn", "status": "ok", "threshold": 0.5})
    table["call"] = (table["probability"] >= 0.5).astype(int)
    oof = table.assign(fold=np.arange(n) % 4, probability=1 / (1 + np.exp(-(logit - shift))))
    reader = table.assign(method="reader1", probability=np.where(label == 1, 7, 3),
                          call=label)
    metrics = {
        "bundle": {"config": "multi-view+attention"},
        "radiomics": {"included": False, "reason": "test"},
        "methods": {"magn": external_metrics(table, 0.5, n_resamples=50, seed=1),
                    "reader1": external_metrics(reader, 0.5, n_resamples=50, seed=1,
                                                probabilistic=False)},
        "internal": {"magn": internal_estimate(oof, n_resamples=50, seed=1)},
        "warnings": {"n_lesions": n, "n_unreadable": 1, "n_lesions_with_a_warning": 3,
                     "by_kind": {"field_strength": {"checks": 3, "lesions": 3}}},
        "recalibration": {"requested": True, **recalibrate(table, 0.5, seed=1)},
    }
    return json.loads(json.dumps(finite_json(metrics))), table  # as read from metrics.json


def test_external_line_and_tables_from_the_validation_metrics():
    from magn_lib.report import (
        external_comparison,
        external_line,
        external_recalibration,
        external_result_line,
        external_site_label,
        external_warnings,
    )

    assert external_site_label(["B"], simulated=True) == "simulated site B"
    assert external_site_label([], simulated=True) == "simulated site B"
    assert external_site_label(["North"], simulated=False) == "site North"
    assert external_site_label(["N", "S"], simulated=False) == "the external cohort"

    too_high, table = _external_metrics(shift=2.0)
    magn = too_high["methods"]["magn"]
    citl = magn["calibration"]["calibration_in_the_large"]
    assert citl["estimate"] < 0 and citl["ci_high"] < 0  # shifted up: too high
    line = external_line(too_high, site="simulated site B")
    internal = too_high["internal"]["magn"]["auc_ranked_within_folds"]
    assert line == external_result_line(
        site="simulated site B", auc=magn["auc"]["estimate"],
        auc_low=magn["auc"]["bootstrap"][0], auc_high=magn["auc"]["bootstrap"][1],
        intervals="both AUC intervals: patient bootstrap", internal_auc=internal["estimate"],
        internal_low=internal["ci_low"], internal_high=internal["ci_high"],
        citl=citl["estimate"], citl_low=citl["ci_low"], citl_high=citl["ci_high"],
        mean_predicted=table["probability"].mean(), observed=table["label"].mean(),
        n_lesions=40, n_patients=20, described="MAGN multi-view+attention, frozen at site A")
    assert "its probabilities were too high by" in line
    assert "in the internal cross-validation (both AUC intervals: patient bootstrap);" in line
    # without a bootstrap interval the lesion-level DeLong one stands, named as such
    delong = copy.deepcopy(too_high)
    del delong["methods"]["magn"]["auc"]["bootstrap"]
    assert "(AUC intervals: external DeLong at lesion level" in external_line(
        delong, site="simulated site B")
    assert "of 20 patients (MAGN multi-view+attention, frozen at site A), against" in line
    assert f"{table['probability'].mean():.0%} predicted against 30% of lesions" in line
    too_low, _ = _external_metrics(shift=-2.0)
    assert "its probabilities were too low by" in external_line(too_low, site="site B")

    comparison = external_comparison(too_high, simulated_readers=True)
    assert list(comparison["Model"]) == ["MAGN (multi-view+attention, frozen)",
                                         "Simulated reader 1"]
    assert not [c for c in comparison.columns if "_" in c]
    row = comparison.iloc[0]
    assert row["Lesions (MM)"] == "40 (12)" and row["Calibration-in-the-large"].startswith("-")
    assert comparison.iloc[1]["Calibration slope"] == "–"  # readers: scores, no calibration
    assert comparison.iloc[1]["Internal AUC, folds (mean ± SD)"] == "–"
    warnings = external_warnings(too_high)
    assert warnings.to_dict("records") == [
        {"Input check": "field strength", "Checks": 3, "Lesions": 3},
        {"Input check": "unreadable (not scored)", "Checks": 1, "Lesions": 1}]
    recalibrated = external_recalibration(too_high)
    assert recalibrated is not None and recalibrated.iloc[0]["Evaluated on (lesions)"] < 40
    assert external_recalibration({**too_high, "recalibration": {"requested": False}}) is None
