"""The whole study end to end on the smoke profile, as a user runs it: the README's commands,
as written, in a fresh copy of the checkout; every notebook, the report, the terminal's
progress, the effective parameters, no leaks; and each notebook opened alone."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from magn_lib.config import load_profile, project_root
from magn_lib.layout import RunPaths, default_work_folder
from magn_lib.pipeline import (
    STUDY_NEEDS,
    discover_notebooks,
    embedded_cohort_dir,
    external_cohort_dir,
    reported_parameters,
)
from magn_lib.progress import PROGRESS_ENV
from magn_lib.synthetic import load_truth

# the smoke study takes ~4 min on 2 free cores; far longer on a machine shared by others
pytestmark = pytest.mark.timeout(3600)
# the tests sharing the smoke run need one worker, in this order: pytest runs with
# `--dist loadfile` (pyproject.toml), which keeps a module on one worker; the mark names them
study = pytest.mark.xdist_group("smoke-study")

# what a clone holds that the study needs (data/, reports/ and work/ are made by the run)
CHECKOUT = ("magn_lib", "configs", "notebooks", "pyproject.toml", "README.md")
# what tqdm, papermill or a widget would leave in a page: "42%|", "12/12 [00:03<",
# "Executing", "HBox(children=", "IProgress"
RAY_MARKER_ENV = "MAGN_TEST_RAY_IMPORTED"
RAY_STAND_IN = f"""import os, traceback
with open(os.environ["{RAY_MARKER_ENV}"], "a") as marker:
    marker.write("".join(traceback.format_stack()) + "\\n")
raise ImportError("Ray was imported by a sequential study")
"""
PROGRESS_TEXT = re.compile(r"\d+%\||\d+/\d+ \[\d+:\d\d|Executing:|HBox\(children=|IProgress")


def readme_blocks() -> list[list[str]]:
    """The commands of each README block marked ``<!-- tested: ... -->``, continuation lines
    joined and comments dropped."""
    lines = (project_root() / "README.md").read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if not line.startswith("<!-- tested:"):
            continue
        start = next(j for j in range(i, len(lines)) if lines[j].startswith("```bash")) + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        text = "\n".join(lines[start:end]).replace("\\\n", " ")
        blocks.append([" ".join(shlex.split(cmd, comments=True)) for cmd in text.splitlines()])
    return blocks


def test_readme_marks_the_commands_it_promises():
    smoke, paper = readme_blocks()
    assert smoke[0] == "magn study --profile smoke"
    assert smoke[1] == ("magn study --profile smoke --only 04 --set "
                        "radiomics_classifier=random_forest")
    assert smoke[2].startswith("papermill -k magn notebooks/04_radiomics.ipynb")
    assert paper[1] == ("papermill -k magn notebooks/03_magn_training.ipynb "
                        "reports/paper/03_magn_training.ipynb -p profile paper")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the checkout, whose ``magn_lib`` the commands import (``PYTHONPATH``)."""
    root = tmp_path_factory.mktemp("clone") / "magn"
    root.mkdir()
    for name in CHECKOUT:
        source = project_root() / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    env = {k: v for k, v in os.environ.items() if k not in ("MAGN_EMBEDDED_DIR", PROGRESS_ENV)}
    # a stand-in `ray` ahead of the installed one: a sequential study must never import Ray
    # (the executor imports it only for `executor: ray`); an import leaves the marker file
    stand_in = tmp_path_factory.mktemp("no-ray")
    (stand_in / "ray").mkdir()
    (stand_in / "ray" / "__init__.py").write_text(RAY_STAND_IN)
    env["PYTHONPATH"] = os.pathsep.join((str(stand_in), str(root)))
    env[RAY_MARKER_ENV] = str(stand_in / "imported")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def run(command: str, *, timeout: float = 3000) -> subprocess.CompletedProcess:
        return subprocess.run(shlex.split(command), cwd=root, env=env, text=True,
                              capture_output=True, timeout=timeout)

    return SimpleNamespace(root=root, run=run, ray_marker=Path(env[RAY_MARKER_ENV]))


@pytest.fixture(scope="module")
def smoke_run(checkout):
    command = readme_blocks()[0][0]
    done = checkout.run(command)
    root = checkout.root
    reports = root / "reports" / "smoke"
    return SimpleNamespace(
        done=done, root=root, reports=reports, ray_marker=checkout.ray_marker,
        work=root / default_work_folder(reports),
        paths=RunPaths(reports, root / default_work_folder(reports)),
        cohort=root / "data" / "embedded" / embedded_cohort_dir(load_profile("smoke")).name,
        site_b=root / "data" / "embedded" / external_cohort_dir(load_profile("smoke")).name,
        manifest=json.loads((reports / "run_manifest.json").read_text()),
    )


@study
def test_the_readme_study_command_runs_every_notebook(smoke_run):
    done = smoke_run.done
    assert done.returncode == 0, done.stderr[-3000:]
    names = [p.stem for p in discover_notebooks()]
    for name in names:
        assert (smoke_run.reports / "executed" / f"{name}.ipynb").is_file()
        assert (smoke_run.reports / "html" / f"{name}.html").is_file()
        assert (smoke_run.reports / "html-full" / f"{name}.html").is_file()
    assert not smoke_run.ray_marker.exists(), smoke_run.ray_marker.read_text()[-3000:]
    manifest = smoke_run.manifest
    assert manifest["status"] == "succeeded" and manifest["complete"]
    assert manifest["run"]["embedded_cohort"]
    assert [n["status"] for n in manifest["notebooks"]] == ["executed"] * len(names)

    # the terminal: each notebook, and inside 03 every configuration × fold with its epochs
    terminal = done.stderr.splitlines()
    for i, name in enumerate(names, 1):
        assert f"[{i}/{len(names)}] {name}: running" in terminal
        assert any(re.fullmatch(rf"\[{i}/{len(names)}\] {name}: done in \d+:\d\d", line)
                   for line in terminal), name
    folds = {(m[1], int(m[2])) for line in terminal
             if (m := re.fullmatch(r"\s+(\S+) fold (\d+): 1/1 epoch, loss=[\d.]+ "
                                   r"\(\d+:\d\d elapsed\)", line))}
    configs = {n["config"] for n in _read_csv(smoke_run, "fold_metrics_magn.csv")}
    assert len(configs) == 8 and folds == {(c, k) for c in configs for k in range(3)}
    for stage in ("ingest: 12/12 patient", "transfer: ", "crops: ", "MAGN grid: 24/24 fold"):
        assert any(line.strip().startswith(stage) for line in terminal), stage
    # the last line: status, elapsed time, where the report is
    assert re.fullmatch(r"magn study: done in \d+:\d\d \(7 executed\)\. "
                        r"Report: reports/smoke/index\.html", done.stdout.strip())


def _read_csv(smoke_run, name):
    import csv

    with open(smoke_run.reports / "artifacts" / name) as stream:
        return list(csv.DictReader(stream))


@study
def test_pages_carry_no_progress_text(smoke_run):
    pages = [smoke_run.reports / "index.html",
             *sorted((smoke_run.reports / "html").glob("*.html")),
             *sorted((smoke_run.reports / "html-full").glob("*.html"))]
    assert len(pages) == 15
    for page in pages:
        found = PROGRESS_TEXT.search(page.read_text())
        assert found is None, f"{page.name}: {found and found.group(0)}"
    for executed in (smoke_run.reports / "executed").glob("*.ipynb"):
        nb = nbformat.read(str(executed), as_version=4)
        streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not any(PROGRESS_TEXT.search(json.dumps(o)) for o in streams), executed.name


@study
def test_each_notebook_reports_the_profile_it_ran(smoke_run, checkout):
    done = checkout.run("magn config --profile smoke")
    assert done.returncode == 0 and done.stderr == ""
    smoke = json.loads(done.stdout)
    for record in smoke_run.manifest["notebooks"]:
        nb = nbformat.read(str(smoke_run.reports / "executed" / f"{record['name']}.ipynb"),
                           as_version=4)
        reported = reported_parameters(nb)
        assert reported["profile"] == "smoke" and reported["parameters"], record["name"]
        assert reported["parameters"] == {k: smoke[k] for k in reported["parameters"]}
        assert set(reported["sources"].values()) == {"profile"}
        assert record["parameters"] == reported["parameters"]
        assert record["injected"]["profile"] == "smoke"
        assert not set(record["injected"]) - {"profile", "run_dir", "work_dir", "manifest_dir"}
    # the settings sentence of notebook 03 is this run's, not the paper's
    page = (smoke_run.reports / "html" / "03_magn_training.html").read_text()
    assert "Training in this run:</strong> Adam, learning rate 0.001" in page
    assert "1 epoch, batch 8" in page and "3-fold cross-validation" in page


# every table and figure the study writes (figures as PNG and SVG); `make study` on the demo
# profile writes the same set
STUDY_TABLES = {
    "attention_fidelity.csv",
    "attention_fidelity_summary.csv",
    "calibration.csv",
    "confound_checks.csv",
    "decision_curves.csv",
    "delong_pairwise.csv",
    "external_breakdown.csv",
    "external_input_checks.csv",
    "external_validation.csv",
    "exclusions.csv",
    "fold_metrics_magn.csv",
    "fold_metrics_radiomics.csv",
    "folds.csv",
    "front_page.json",
    "front_page_external.json",
    "inclusion_flow.csv",
    "learning_curves_magn.csv",
    "metrics_first_order.csv",
    "metrics_magn.csv",
    "metrics_radiomics.csv",
    "oof_first-order.csv",
    "oof_magn.csv",
    "oof_radiomics.csv",
    "oof_readers.csv",
    "primary_comparison.csv",
    "radiomics_refused.csv",
    "radiomics_selected.csv",
    "reader_agreement.csv",
    "reader_metrics.csv",
    "readers_vs_models.csv",
    "scanners.csv",
    "table1.csv",
    "table1_report.csv",
    "table2.csv",
    "table2_numbers.csv",
    "table_s2_sagittal.csv",
    "transfer_qc.csv",
    "transfer_vs_truth.csv",
}
STUDY_FIGURES = {
    "calibration",
    "crops_axial",
    "crops_coronal",
    "crops_sagittal",
    "decision_curves",
    "external_calibration",
    "external_decision_curves",
    "fig2_transfer_met",
    "fig2_transfer_mm",
    "fig4_roc",
    "fig5_gradcam_met",
    "fig5_gradcam_mm",
    "learning_curves",
    "roc_all_models",
    "transfer_quality",
}


@study
def test_artifacts_of_the_study(smoke_run):
    artifacts_dir = smoke_run.reports / "artifacts"
    artifacts = {p.name for p in artifacts_dir.iterdir()}
    expected = STUDY_TABLES | {f"{stem}.{ext}" for stem in STUDY_FIGURES for ext in ("png", "svg")}
    assert expected <= artifacts, sorted(expected - artifacts)
    for name in expected:
        assert (artifacts_dir / name).stat().st_size > 0, name
    front = json.loads(smoke_run.paths.front_page.read_text())
    assert len(front["summary"]) >= 3 and len(front["tables"]) == 2 and len(front["figures"]) >= 4
    index = (smoke_run.reports / "index.html").read_text()
    assert "Table 2" in index and "Fig. 4" in index and "Model card" in index
    external = json.loads(smoke_run.paths.front_page_external.read_text())
    assert index.count("data:image/png;base64,") == len(front["figures"]) + len(
        external["figures"])
    assert "3-fold cross-validation" in index and "5-fold" not in index


@study
def test_simulated_readers_are_called_simulated_on_every_page_that_shows_them(smoke_run):
    """The embedded cohort's readers are simulated: the front page, notebooks 05 and 06 (and
    the tables they show) say so, and no page names them radiologists."""
    pages = {"index": smoke_run.reports / "index.html",
             **{p.stem: p for p in (smoke_run.reports / "html").glob("0[56]_*.html")}}
    assert len(pages) == 3
    for name, page in pages.items():
        text = page.read_text()
        assert "simulated reader" in text.lower(), name
        assert "Radiologist 1" not in text and "Radiologist 2" not in text, name
    table2 = _read_csv(smoke_run, "table2.csv")
    readers = [r for r in table2 if "reader" in r["Configuration"].lower()]
    assert [r["Configuration"] for r in readers] == ["Simulated reader 1", "Simulated reader 2"]
    versus = _read_csv(smoke_run, "readers_vs_models.csv")
    assert len(versus) >= 4 and all(r["delong_p_holm"] and r["mcnemar_p_holm"] for r in versus)


@study
def test_the_front_page_shows_the_external_result(smoke_run):
    """Notebook 07 validated the run's frozen model on the simulated site B: the front page's
    line is the one rendered from the measured numbers, the direction of the calibration
    follows the sign of calibration-in-the-large, and every page calls the site simulated."""
    import html

    from magn_lib.external import load_external
    from magn_lib.report import external_line

    outcome = load_external(smoke_run.paths.external_dir)
    magn = outcome.metrics["methods"]["magn"]
    assert magn["n_patients"] == load_profile("smoke").external_n_patients
    line = external_line(outcome.metrics, site="simulated site B")
    assert line.startswith("On simulated site B the model's AUC ")
    citl = (magn["calibration"] or {}).get("calibration_in_the_large", {}).get("estimate")
    if citl is not None and citl != 0:
        assert ("too low" if citl > 0 else "too high") in line
    for page in (smoke_run.paths.index_html, smoke_run.paths.report_html):
        text = html.unescape(page.read_text())
        assert f"<b>External validation.</b> {line}" in text, page.name
        assert "External validation (simulated site B)" in text, page.name
        assert "no external, prospective" not in text, page.name
    clinician = html.unescape(smoke_run.paths.html("07_external_validation").read_text())
    assert "simulated site B" in clinician and "says nothing about patients" in clinician
    assert line in clinician
    record = smoke_run.manifest
    assert record["run"]["external_embedded"] is True and record["left_out"] == {}
    assert record["inputs"]["external_manifest_files_sha256"]
    assert smoke_run.paths.study_bundle.is_dir()  # the bundle stays private, in work/


@study
def test_no_identity_in_reports_or_work(smoke_run):
    # the identities planted in both sites' DICOM headers (site B: the external cohort)
    planted = {s for cohort in (smoke_run.cohort, smoke_run.site_b)
               for s in load_truth(cohort).planted_strings() if len(s) >= 4}
    assert len(planted) > 10
    for folder in (smoke_run.root / "reports", smoke_run.root / "work"):
        for path in folder.rglob("*"):
            rel = str(path.relative_to(smoke_run.root))
            assert not any(s in rel for s in planted), rel
            if path.is_file():
                content = path.read_bytes()
                leaked = [s for s in planted if s.encode() in content]
                assert not leaked, f"{leaked} in {rel}"


# every element's right edge and scroll width, against the 1280-px window (playwright's default
# viewport, which `open_page` keeps)
TOO_WIDE = """() => { const width = document.documentElement.clientWidth; const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const box = el.getBoundingClientRect();
    if (box.width > 0 && (box.right > width + 1 || el.scrollWidth > width + 1))
      wide.push(`${el.tagName.toLowerCase()}.${el.className} ${Math.round(box.right)} px`);
  }
  return wide.slice(0, 5); }"""


def _machine_traces(smoke_run) -> re.Pattern:
    """The machine's home, the project's absolute paths and the temporary folder, as text."""
    import tempfile

    places = {str(Path.home()), str(smoke_run.root), str(project_root()),
              tempfile.gettempdir(), str(Path(tempfile.gettempdir()).resolve())}
    return re.compile("|".join(re.escape(p) + r"(?![\w.-])" for p in sorted(places)))


def _broken_links(page, path: Path, run_dir: Path) -> list[str]:
    """hrefs and srcs of a loaded page that leave the run folder or lead nowhere."""
    from urllib.parse import unquote, urlsplit

    ids = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
    links = page.eval_on_selector_all(
        "[href], [src]", "els => els.map(e => e.getAttribute('href') ?? e.getAttribute('src'))")
    broken = []
    for link in links:
        if link.startswith("data:"):
            continue
        if link.startswith("#"):
            if link[1:] not in ids and unquote(link[1:]) not in ids:
                broken.append(link)
            continue
        parts = urlsplit(link)
        target = (path.parent / unquote(parts.path)).resolve()
        if parts.scheme or parts.netloc or not target.is_relative_to(run_dir.resolve()) \
                or not target.is_file():
            broken.append(link)
    return broken


@study
def test_every_page_and_the_report_in_chromium(smoke_run, open_page, tmp_path):
    paths = smoke_run.paths
    clinician = [paths.index_html, *sorted(paths.html_dir.glob("*.html")), paths.report_html]
    analyst = sorted(paths.full_html_dir.glob("*.html"))
    assert len(clinician) == 9 and len(analyst) == 7
    traces = _machine_traces(smoke_run)
    paths.screens_dir.mkdir(parents=True, exist_ok=True)
    kept = {paths.index_html: "index", paths.html("03_magn_training"): "03_magn_training",
            paths.full_html("03_magn_training"): "03_magn_training-analyst",
            paths.report_html: "report"}
    for page_path in clinician + analyst:
        name = page_path.relative_to(paths.report_dir).as_posix()
        shot = paths.screens_dir / f"{kept[page_path]}.png" if page_path in kept \
            else tmp_path / f"{page_path.stem}.png"
        page, problems = open_page(page_path, shot)
        assert problems == [], f"{name}: {problems}"
        assert page.evaluate(TOO_WIDE) == [], name
        assert _broken_links(page, page_path, paths.report_dir) == [], name
        text = page.inner_text("body")
        assert not traces.search(text), f"{name}: {traces.search(text).group(0)}"
        assert str(smoke_run.root) not in page_path.read_text(), name
        assert "Traceback" not in text, name
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert all(w > 0 for w in widths), f"{name}: a figure did not load"
        if page_path in clinician:
            assert not re.search(r"\w+(Error|Exception|Warning): ", text), name
            assert page.query_selector_all(".jp-InputArea-editor, .jp-InputPrompt") == []
            assert not re.search(r"(?<![\w<])work/", text), f"{name}: points into work/"
        if page_path != paths.report_html:  # every page but the single file has the header
            nav = page.query_selector("nav.magn-nav")
            assert nav is not None and "Run: smoke" in nav.inner_text(), name
        page.close()
    assert sorted(p.name for p in paths.screens_dir.iterdir()) == sorted(
        f"{v}.png" for v in kept.values())


@study
def test_navigation_links_the_notebooks_in_reading_order(smoke_run):
    paths = smoke_run.paths
    names = [n["name"] for n in smoke_run.manifest["notebooks"]]
    for views, other in ((paths.html, paths.full_html), (paths.full_html, paths.html)):
        for i, name in enumerate(names):
            nav = re.search(r'<nav[^>]*magn-nav.*?</nav>', views(name).read_text(), re.S)
            hrefs = [(views(name).parent / h).resolve()
                     for h in re.findall(r'href="([^"]+)"', nav.group(0))]
            expected = [paths.index_html, *([views(names[i - 1])] if i else []),
                        *([views(names[i + 1])] if i + 1 < len(names) else []), other(name)]
            assert hrefs == [p.resolve() for p in expected], name
    index = paths.index_html.read_text()
    assert 'href="report.html"' in index and 'href="report.pdf"' in index


@study
def test_clinician_tables_carry_labels_not_column_names(smoke_run):
    from html.parser import HTMLParser

    class Headers(HTMLParser):
        def __init__(self):
            super().__init__()
            self.headers, self._inside = [], False

        def handle_starttag(self, tag, attrs):
            self._inside = self._inside or tag == "th"
            if tag == "th":
                self.headers.append("")

        def handle_endtag(self, tag):
            self._inside = self._inside and tag != "th"

        def handle_data(self, data):
            if self._inside:
                self.headers[-1] += data

    paths = smoke_run.paths
    pages = [paths.index_html, *sorted(paths.html_dir.glob("*.html")), paths.report_html]
    n_headers = 0
    for page in pages:
        parser = Headers()
        parser.feed(page.read_text())
        snake = [h.strip() for h in parser.headers if "_" in h]
        assert snake == [], f"{page.name}: {snake}"
        n_headers += len(parser.headers)
        # no DataFrame index: nbconvert's rendering of a raw DataFrame is gone
        assert 'class="dataframe"' not in page.read_text(), page.name
    assert n_headers > 100  # the pages do show tables
    report = paths.report_html.read_text()
    assert re.search(r"\d\.\d\d \(95 % CI \d\.\d\d–\d\.\d\d\)", report)
    assert not re.search(r"\d\.\d+ \[\d\.\d+, \d\.\d+\]", report)  # the other style


@study
def test_report_pdf_is_printed_with_numbered_pages(smoke_run):
    from magn_lib.report import find_chromium

    if find_chromium() is None:
        pytest.skip("Chromium is not installed")
    pypdf = pytest.importorskip("pypdf")
    pdf = smoke_run.paths.report_pdf
    assert pdf.read_bytes().startswith(b"%PDF-")
    pages = pypdf.PdfReader(pdf).pages
    n = len(pages)
    # the front page and summary, seven chapters (each starts a page), glossary, provenance
    assert n >= 1 + 7 + 2
    assert [p.extract_text().splitlines()[0] for p in pages] == [
        f"Page {i} of {n}" for i in range(1, n + 1)]
    text = "\n".join(p.extract_text() for p in pages)
    names = [n["name"] for n in smoke_run.manifest["notebooks"]]
    assert all(f"{name[:2]} ·" in text for name in names)


@study
def test_published_files_have_the_umask_permissions(smoke_run):
    from magn_lib.files import default_file_mode

    published = [p for p in smoke_run.reports.rglob("*") if p.is_file()]
    assert len(published) > 50
    wrong = {p.relative_to(smoke_run.reports).as_posix(): oct(p.stat().st_mode & 0o777)
             for p in published if p.stat().st_mode & 0o777 != default_file_mode()}
    assert wrong == {}, f"expected {oct(default_file_mode())}"


@study
def test_executed_notebooks_carry_no_machine_traces(smoke_run):
    traces = _machine_traces(smoke_run)
    for path in sorted(smoke_run.paths.executed_dir.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        recorded = nb.metadata["papermill"]
        assert recorded["input_path"] == f"notebooks/{path.name}"
        assert recorded["output_path"] == f"reports/smoke/executed/{path.name}"
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                out.get("data", {}).pop("image/png", None)  # base64 may spell anything
        text = nbformat.writes(nb)
        assert not traces.search(text), f"{path.name}: {traces.search(text).group(0)}"


@study
def test_second_run_skips_everything(smoke_run, checkout):
    again = checkout.run(readme_blocks()[0][0])
    assert again.returncode == 0, again.stderr[-2000:]
    assert [line for line in again.stderr.splitlines() if "skipped" in line] == [
        f"[{i}/7] {n['name']}: unchanged, skipped"
        for i, n in enumerate(smoke_run.manifest["notebooks"], 1)]
    assert again.stdout.strip().endswith("(7 skipped). Report: reports/smoke/index.html")


@study
def test_export_and_predict_reproduce_the_held_out_prediction(smoke_run, capsys, tmp_path):
    import pandas as pd

    from magn_lib import cli
    from magn_lib.manifest import load_manifest

    bundle = tmp_path / "smoke.magn"
    assert cli.main(["export", "--run", str(smoke_run.reports), "--work", str(smoke_run.work),
                     "--out", str(bundle)]) == cli.EXIT_OK
    chosen = json.loads((bundle / "bundle.json").read_text())["config"]["name"]
    assert chosen in ("multi-view", "multi-view+attention")
    manifest = load_manifest(smoke_run.cohort / "manifest")
    oof = pd.read_csv(smoke_run.paths.oof("magn"), dtype={"lesion_id": str})
    held_out = oof[oof["config"] == chosen].iloc[0]
    lesion = manifest.lesions.set_index("lesion_id").loc[held_out["lesion_id"]]
    series = {v: manifest.series_folder(lesion["patient_id"], v)
              for v in ("sagittal", "coronal", "axial")}
    code = cli.main(["predict", "--model", str(bundle), "--out", str(tmp_path / "out"),
                     "--lesion-id", "case-1", "--mask", str(manifest.mask_path(
                         held_out["lesion_id"])), "--mask-label", str(int(lesion["mask_label"])),
                     *(f"--{v}={series[v]}" for v in series)])
    assert code == cli.EXIT_OK
    result = json.loads((tmp_path / "out" / "case-1" / "prediction.json").read_text())
    own = next(r for r in result["fold_models"] if r["fold"] == int(held_out["fold"]))
    assert own["probability_raw"] == pytest.approx(held_out["probability"], abs=1e-6)
    assert result["in_sample"]["held_out_fold"] == int(held_out["fold"])

    code = cli.main(["predict", "--model", str(bundle), "--lesion-id", "case-2",
                     "--sagittal", str(series["sagittal"]), "--mask",
                     str(manifest.mask_path(held_out["lesion_id"]))])
    assert code == cli.EXIT_INPUT
    assert "no series given for view(s) coronal, axial" in capsys.readouterr().err


@study
def test_the_readme_one_notebook_commands(smoke_run, checkout):
    # last of the group: re-running 04 with an override leaves 05-07 out of date (no index)
    _, only, by_hand = readme_blocks()[0]
    done = checkout.run(only)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((smoke_run.reports / "run_manifest.json").read_text())
    assert [n["status"] for n in record["notebooks"]] == (
        ["skipped"] * 3 + ["executed", "not run", "not run", "not run"])
    assert record["overrides"] == {"radiomics_classifier": "random_forest"}
    assert not record["complete"]
    assert record["notebooks"][3]["sources"]["radiomics_classifier"] == "override"
    assert "[6/7] 06_figures: out of date, not selected" in done.stderr
    assert "[7/7] 07_external_validation: out of date, not selected" in done.stderr
    assert "the report is not published" in done.stdout
    assert not (smoke_run.reports / "index.html").exists()

    # the papermill command: the executed notebook's effective parameters are exactly
    # `magn config --profile smoke` plus the override given
    done = checkout.run(by_hand)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = json.loads(checkout.run("magn config --profile smoke").stdout)
    expected["radiomics_classifier"] = "random_forest"
    nb = nbformat.read(str(checkout.root / "reports" / "smoke" / "04_by_hand.ipynb"),
                       as_version=4)
    reported = reported_parameters(nb)
    assert reported["parameters"] == {k: expected[k] for k in reported["parameters"]}
    assert set(reported["parameters"]) == {
        "views", "seed", "n_folds", "cv_scheme", "radiomics_settings", "radiomics_classifier",
        "radiomics_top_k", "radiomics_keep", "n_bootstrap", "n_jobs"}
    assert reported["sources"] == {k: "override" if k == "radiomics_classifier" else "profile"
                                   for k in reported["parameters"]}
    assert "Passed unknown parameter" not in done.stderr


def test_the_readme_paper_command_runs_the_published_settings(checkout):
    # in a folder where nothing of the paper run exists: the notebook shows its parameters,
    # then stops and says which notebook to run first, and how
    command = readme_blocks()[1][1]
    (checkout.root / "reports" / "paper").mkdir(parents=True, exist_ok=True)
    done = checkout.run(command, timeout=600)
    assert done.returncode != 0
    assert "UpstreamError" in done.stderr and "Run notebook 01_cohort_statistics first" in \
        done.stderr and "magn study --profile paper --to 02" in done.stderr
    nb = nbformat.read(str(checkout.root / "reports" / "paper" / "03_magn_training.ipynb"),
                       as_version=4)
    reported = reported_parameters(nb)
    assert reported["profile"] == "paper"
    values = reported["parameters"]
    assert values["learning_rate"] == 1e-3 and values["weights"] == "imagenet"
    assert values["backbone"] == "resnet50" and values["epochs"] == 50
    assert set(reported["sources"].values()) == {"profile"}
    assert reported["run"]["run_dir"] == "reports/paper"


@pytest.mark.parametrize("name", [n for n, needs in STUDY_NEEDS.items() if needs])
def test_a_notebook_opened_alone_names_the_notebook_to_run_first(name, tmp_path):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run_dir, work_dir = tmp_path / "reports" / "run", tmp_path / "work" / "run"
    with pytest.raises(PapermillExecutionError) as failed:
        papermill.execute_notebook(
            str(project_root() / "notebooks" / f"{name}.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"profile": "smoke", "run_dir": str(run_dir), "work_dir": str(work_dir)},
            kernel_name="magn", cwd=str(project_root()), progress_bar=False)
    error = failed.value
    assert error.ename == "UpstreamError"
    first = STUDY_NEEDS[name][0]
    assert f"{name} reads the results of" in error.evalue
    assert f"Run notebook {first} first" in error.evalue
    last = STUDY_NEEDS[name][-1][:2]
    assert (f"magn study --profile smoke --out {run_dir} --work {work_dir} --to {last}"
            in error.evalue)
