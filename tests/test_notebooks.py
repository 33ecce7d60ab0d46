"""The whole study end to end on the smoke profile: every notebook, the report, no leaks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from magn_lib.config import load_profile, project_root
from magn_lib.pipeline import discover_notebooks, embedded_cohort_dir, run_study
from magn_lib.synthetic import load_truth

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    mp = pytest.MonkeyPatch()
    mp.setenv("MAGN_EMBEDDED_DIR", str(root / "data"))
    try:
        result = run_study("smoke", run_dir=root / "reports" / "smoke",
                           work_dir=root / "work" / "smoke", progress=False)
        cohort = embedded_cohort_dir(load_profile("smoke"))
        yield result, root, cohort
    finally:
        mp.undo()


def test_every_notebook_runs_and_is_published(smoke_run):
    result, _, _ = smoke_run
    assert result.succeeded, result.error
    names = [p.stem for p in discover_notebooks()]
    assert [r.name for r in result.notebooks] == names
    paths = result.paths
    for name in names:
        assert (paths.executed_dir / f"{name}.ipynb").is_file()
        assert (paths.html_dir / f"{name}.html").is_file()
        assert (paths.full_html_dir / f"{name}.html").is_file()
    manifest = json.loads(paths.run_manifest.read_text())
    assert manifest["status"] == "succeeded" and manifest["run"]["embedded_cohort"]
    assert [n["status"] for n in manifest["notebooks"]] == ["executed"] * len(names)


# every table and figure the study writes (figures as PNG and SVG); `make study` on the demo
# profile writes the same set
STUDY_TABLES = {
    "attention_fidelity.csv",
    "attention_fidelity_summary.csv",
    "calibration.csv",
    "decision_curves.csv",
    "delong_pairwise.csv",
    "exclusions.csv",
    "fold_metrics_magn.csv",
    "fold_metrics_radiomics.csv",
    "folds.csv",
    "front_page.json",
    "inclusion_flow.csv",
    "learning_curves_magn.csv",
    "metrics_magn.csv",
    "metrics_radiomics.csv",
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


def test_artifacts_of_the_study(smoke_run):
    result, _, _ = smoke_run
    artifacts = {p.name for p in result.paths.artifacts_dir.iterdir()}
    expected = STUDY_TABLES | {f"{stem}.{ext}" for stem in STUDY_FIGURES for ext in ("png", "svg")}
    assert expected <= artifacts, sorted(expected - artifacts)
    for name in expected:
        assert (result.paths.artifacts_dir / name).stat().st_size > 0, name
    front = json.loads(result.paths.front_page.read_text())
    assert len(front["summary"]) >= 3 and len(front["tables"]) == 2 and len(front["figures"]) >= 4
    index = result.paths.index_html.read_text()
    assert "Table 2" in index and "Fig. 4" in index and "Model card" in index
    assert index.count("data:image/png;base64,") == len(front["figures"])


def test_no_identity_in_reports_or_work(smoke_run):
    _, root, cohort = smoke_run
    planted = {s for s in load_truth(cohort).planted_strings() if len(s) >= 4}
    assert len(planted) > 10
    for folder in (root / "reports", root / "work"):
        for path in folder.rglob("*"):
            rel = str(path.relative_to(root))
            assert not any(s in rel for s in planted), rel
            if path.is_file():
                content = path.read_bytes()
                leaked = [s for s in planted if s.encode() in content]
                assert not leaked, f"{leaked} in {rel}"


def test_clinician_pages_in_chromium(smoke_run, open_page, tmp_path):
    result, root, _ = smoke_run
    paths = result.paths
    machine_paths = [str(root), str(project_root()), str(Path.home()) + "/"]
    pages = [paths.index_html, *sorted(paths.html_dir.glob("*.html"))]
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


def test_second_run_skips_everything(smoke_run, monkeypatch):
    result, root, _ = smoke_run
    monkeypatch.setenv("MAGN_EMBEDDED_DIR", str(root / "data"))
    again = run_study("smoke", run_dir=result.paths.report_dir, work_dir=result.paths.work_dir,
                      progress=False)
    assert again.succeeded
    assert {r.status for r in again.notebooks} == {"skipped"}


def test_predict_reproduces_the_held_out_prediction(smoke_run, capsys):
    import pandas as pd

    from magn_lib import cli
    from magn_lib.manifest import load_manifest
    from magn_lib.predict import predict_lesion

    result, _, cohort = smoke_run
    manifest = load_manifest(cohort / "manifest")
    oof = pd.read_csv(result.paths.oof("magn"), dtype={"lesion_id": str})
    held_out = oof[oof["config"] == "multi-view+attention"].iloc[0]
    lesion = manifest.lesions.set_index("lesion_id").loc[held_out["lesion_id"]]
    series = {v: manifest.series_folder(lesion["patient_id"], v)
              for v in ("sagittal", "coronal", "axial")}
    table = predict_lesion(result.paths.report_dir, series=series,
                           mask=manifest.mask_path(held_out["lesion_id"]),
                           mask_label=int(lesion["mask_label"]))
    assert table["fold"].tolist()[-1] == "mean" and len(table) == 1 + oof["fold"].nunique()
    own = table[table["fold"] == str(held_out["fold"])]["probability"].iloc[0]
    assert own == pytest.approx(held_out["probability"], abs=1e-4)

    code = cli.main(["predict", "--run", str(result.paths.report_dir),
                     "--sagittal", str(series["sagittal"]), "--mask",
                     str(manifest.mask_path(held_out["lesion_id"]))])
    assert code == 2 and "no series given for view(s) coronal, axial" in capsys.readouterr().err
