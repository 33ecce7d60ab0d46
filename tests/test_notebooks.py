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
from magn_lib.layout import RunPaths
from magn_lib.pipeline import (
    STUDY_NEEDS,
    discover_notebooks,
    embedded_cohort_dir,
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
    env["PYTHONPATH"] = str(root)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def run(command: str, *, timeout: float = 3000) -> subprocess.CompletedProcess:
        return subprocess.run(shlex.split(command), cwd=root, env=env, text=True,
                              capture_output=True, timeout=timeout)

    return SimpleNamespace(root=root, run=run)


@pytest.fixture(scope="module")
def smoke_run(checkout):
    command = readme_blocks()[0][0]
    done = checkout.run(command)
    root = checkout.root
    reports = root / "reports" / "smoke"
    return SimpleNamespace(
        done=done, root=root, reports=reports, work=root / "work" / "smoke",
        paths=RunPaths(reports, root / "work" / "smoke"),
        cohort=root / "data" / "embedded" / embedded_cohort_dir(load_profile("smoke")).name,
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
    assert re.fullmatch(r"magn study: done in \d+:\d\d \(6 executed\)\. "
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
    assert len(pages) == 13
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
    assert "Training in this run:</strong> Adam, learning rate 0.0005" in page
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
    "exclusions.csv",
    "fold_metrics_magn.csv",
    "fold_metrics_radiomics.csv",
    "folds.csv",
    "front_page.json",
    "inclusion_flow.csv",
    "learning_curves_magn.csv",
    "metrics_first_order.csv",
    "metrics_magn.csv",
    "metrics_radiomics.csv",
    "oof_first-order.csv",
    "oof_magn.csv",
    "oof_radiomics.csv",
    "oof_readers.csv",
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
    assert index.count("data:image/png;base64,") == len(front["figures"])
    assert "3-fold cross-validation" in index and "5-fold" not in index


@study
def test_no_identity_in_reports_or_work(smoke_run):
    planted = {s for s in load_truth(smoke_run.cohort).planted_strings() if len(s) >= 4}
    assert len(planted) > 10
    for folder in (smoke_run.root / "reports", smoke_run.root / "work"):
        for path in folder.rglob("*"):
            rel = str(path.relative_to(smoke_run.root))
            assert not any(s in rel for s in planted), rel
            if path.is_file():
                content = path.read_bytes()
                leaked = [s for s in planted if s.encode() in content]
                assert not leaked, f"{leaked} in {rel}"


@study
def test_clinician_pages_in_chromium(smoke_run, open_page, tmp_path):
    machine_paths = [str(smoke_run.root), str(project_root()), str(Path.home()) + "/"]
    pages = [smoke_run.paths.index_html, *sorted(smoke_run.paths.html_dir.glob("*.html"))]
    for page_path in pages:
        page, problems = open_page(page_path, tmp_path / f"{page_path.stem}.png")
        assert problems == [], f"{page_path.name}: {problems}"
        text = page.inner_text("body")
        html = page_path.read_text()
        assert "Traceback" not in text, page_path.name
        assert not re.search(r"\w+(Error|Exception|Warning): ", text), page_path.name
        assert not any(p in html for p in machine_paths), page_path.name
        assert page.query_selector_all(".jp-InputArea-editor, .jp-InputPrompt") == []
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert all(w > 0 for w in widths), f"{page_path.name}: a figure did not load"
        page.close()


@study
def test_second_run_skips_everything(smoke_run, checkout):
    again = checkout.run(readme_blocks()[0][0])
    assert again.returncode == 0, again.stderr[-2000:]
    assert [line for line in again.stderr.splitlines() if "skipped" in line] == [
        f"[{i}/6] {n['name']}: unchanged, skipped"
        for i, n in enumerate(smoke_run.manifest["notebooks"], 1)]
    assert again.stdout.strip().endswith("(6 skipped). Report: reports/smoke/index.html")


@study
def test_predict_reproduces_the_held_out_prediction(smoke_run, capsys, monkeypatch):
    import pandas as pd

    from magn_lib import cli, config
    from magn_lib.manifest import load_manifest
    from magn_lib.predict import predict_lesion

    # the run's record holds its folders relative to the checkout that ran it
    monkeypatch.setattr(config, "project_root", lambda: smoke_run.root)
    manifest = load_manifest(smoke_run.cohort / "manifest")
    oof = pd.read_csv(smoke_run.paths.oof("magn"), dtype={"lesion_id": str})
    held_out = oof[oof["config"] == "multi-view+attention"].iloc[0]
    lesion = manifest.lesions.set_index("lesion_id").loc[held_out["lesion_id"]]
    series = {v: manifest.series_folder(lesion["patient_id"], v)
              for v in ("sagittal", "coronal", "axial")}
    table = predict_lesion(smoke_run.reports, series=series,
                           mask=manifest.mask_path(held_out["lesion_id"]),
                           mask_label=int(lesion["mask_label"]))
    assert table["fold"].tolist()[-1] == "mean" and len(table) == 1 + oof["fold"].nunique()
    own = table[table["fold"] == str(held_out["fold"])]["probability"].iloc[0]
    assert own == pytest.approx(held_out["probability"], abs=1e-4)

    code = cli.main(["predict", "--run", str(smoke_run.reports),
                     "--sagittal", str(series["sagittal"]), "--mask",
                     str(manifest.mask_path(held_out["lesion_id"]))])
    assert code == cli.EXIT_INPUT
    assert "no series given for view(s) coronal, axial" in capsys.readouterr().err


@study
def test_the_readme_one_notebook_commands(smoke_run, checkout):
    # last of the group: re-running 04 with an override leaves 05-06 out of date (no index)
    _, only, by_hand = readme_blocks()[0]
    done = checkout.run(only)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((smoke_run.reports / "run_manifest.json").read_text())
    assert [n["status"] for n in record["notebooks"]] == (
        ["skipped"] * 3 + ["executed", "not run", "not run"])
    assert record["overrides"] == {"radiomics_classifier": "random_forest"}
    assert not record["complete"]
    assert record["notebooks"][3]["sources"]["radiomics_classifier"] == "override"
    assert "[6/6] 06_figures: out of date, not selected" in done.stderr
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
        "views", "seed", "n_folds", "radiomics_settings", "radiomics_classifier",
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
