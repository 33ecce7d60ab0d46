"""The study runner on small fixture notebooks: resume, --force, failure path, HTML, manifest."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from magn_lib import cli
from magn_lib.errors import ConfigError, UpstreamError
from magn_lib.pipeline import (
    NOTEBOOK_PATTERN,
    RUN_STAMP,
    discover_notebooks,
    notebook_problems,
    read_warnings,
    record_warning,
    reported_parameters,
    run_study,
)

PARAMS = '''\
from IPython.display import display
from magn_lib.config import notebook_parameters
params = notebook_parameters(globals())
run_dir = params.run_dir
display(params)
'''

FIRST = '''\
import sys
from magn_lib.config import resolve_path
from magn_lib.progress import tqdm
counter = resolve_path(run_dir) / "artifacts" / "count.txt"
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
for step in tqdm(range(3), desc="first loop", unit="step"):
    pass
print(f"first notebook ran, time {n}, epochs {params.profile.epochs}")
print("stderr-chatter", file=sys.stderr)
'''

SECOND = '''\
from magn_lib.errors import InputError
from magn_lib.pipeline import record_warning
record_warning(run_dir, "02_second", "pretrained weights unavailable: He-uniform used")
if params.profile.seed == 13:
    raise ValueError("planted failure for the test")
if params.profile.seed == 14:
    raise InputError("planted bad input", patient="P001", file="lesions.csv")
print("second notebook done")
'''


def _notebook(title: str, summary: str, parameters: str, body: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "magn", "display_name": "magn", "language": "python"}
    nb.metadata["magn"] = {"summary": summary}
    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {title}\n\nWhat this shows."), params,
                new_code_cell(PARAMS), new_code_cell(body)]
    return nb


@pytest.fixture
def study(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(
        _notebook("First step", "Counts its runs.",
                  'profile = "demo"\nrun_dir = None\nepochs = None\n', FIRST),
        notebooks / "01_first.ipynb",
    )
    nbformat.write(
        _notebook("Second step", "Fails on seed 13.",
                  'profile = "demo"\nrun_dir = None\nseed = None\n', SECOND),
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
    terminal = io.StringIO()
    result = run_study("smoke", **{**study, "progress": True}, stream=terminal)
    assert result.succeeded and result.complete
    assert [r.status for r in result.notebooks] == ["executed", "executed"]
    assert _count(run_dir) == 1

    # injected: the profile and the run's folders, no profile value (each notebook resolves
    # them); recorded: the effective values the notebook reported, with their source
    first, second = result.notebooks
    assert first.injected == {"profile": "smoke", "run_dir": str(run_dir)}
    assert first.parameters == {"epochs": 1} and first.sources == {"epochs": "profile"}
    assert second.parameters == {"seed": 7}
    executed = nbformat.read(str(run_dir / "executed" / "01_first.ipynb"), as_version=4)
    assert reported_parameters(executed)["parameters"] == {"epochs": 1}

    # progress: each notebook and each bar in the terminal, none of it in the notebooks
    lines = terminal.getvalue().splitlines()
    assert "[1/2] 01_first: running" in lines and "[2/2] 02_second: running" in lines
    assert any(re.fullmatch(r"\[1/2\] 01_first: done in \d+:\d\d", line) for line in lines)
    assert any(re.fullmatch(r"\s+first loop: 3/3 step \(\d+:\d\d elapsed\)", line)
               for line in lines), lines

    # HTML: a clinician view without code, prompts or stderr; a full view with code
    clinician = (run_dir / "html" / "01_first.html").read_text()
    full = (run_dir / "html-full" / "01_first.html").read_text()
    assert "first notebook ran, time 1" in clinician
    assert "resolve_path" not in clinician and "stderr-chatter" not in clinician
    assert "Effective parameters" in clinician and "| `epochs` |" not in clinician
    for page in (clinician, full):
        assert "first loop:" not in page and not re.search(r"\d+%\|", page)
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
    assert manifest["complete"] and manifest["overrides"] == {}
    assert manifest["profile_file"]["path"] == "configs/smoke.yaml"
    assert manifest["parameters"]["epochs"] == 1 and manifest["seeds"] == {"seed": 7}
    assert manifest["notebooks"][0]["parameters"] == {"epochs": 1}
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
        "--notebooks", str(study["notebooks_dir"]), "--quiet",
    ])
    assert code == cli.EXIT_NOTEBOOK_FAILED
    out, err = capsys.readouterr()
    assert "02_second failed" in err and "planted failure" in err
    assert out.splitlines()[-1].startswith("magn study: FAILED after ")
    assert "[1/2]" not in err  # --quiet: no progress

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


def test_bad_input_in_a_notebook_is_exit_status_3(study, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: smoke\nseed: 14\n")
    code = cli.main([
        "study", "--profile", str(bad), "--manifest", str(study["manifest_dir"]),
        "--out", str(study["run_dir"]), "--work", str(study["work_dir"]),
        "--notebooks", str(study["notebooks_dir"]), "--quiet",
    ])
    assert code == cli.EXIT_INPUT
    assert "InputError: patient P001, file lesions.csv: planted bad input" in \
        capsys.readouterr().err


def test_overrides_reach_only_the_notebooks_declaring_them(study):
    run_study("smoke", **study)
    result = run_study("smoke", overrides={"epochs": 2}, **study)
    first, second = result.notebooks
    assert [first.status, second.status] == ["executed", "executed"]  # 02 is downstream
    assert first.injected["epochs"] == 2 and "epochs" not in second.injected
    assert first.parameters == {"epochs": 2} and first.sources == {"epochs": "override"}
    manifest = json.loads((study["run_dir"] / "run_manifest.json").read_text())
    assert manifest["overrides"] == {"epochs": 2} and manifest["parameters"]["epochs"] == 2
    # the same override again: nothing to do; without it: back to the profile's value
    assert {r.status for r in run_study("smoke", overrides={"epochs": 2}, **study).notebooks} \
        == {"skipped"}
    assert run_study("smoke", **study).notebooks[0].status == "executed"
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        run_study("smoke", overrides={"epoch": 2}, **study)
    with pytest.raises(ConfigError, match="crop_size: no notebook of the study reads"):
        run_study("smoke", overrides={"crop_size": 64}, **study)
    # read by `magn export` from the run record, not by a notebook: accepted and recorded
    run_study("smoke", overrides={"target_sensitivity": 0.9}, **study)
    manifest = json.loads((study["run_dir"] / "run_manifest.json").read_text())
    assert manifest["parameters"]["target_sensitivity"] == 0.9


def test_one_notebook_or_a_range_behaves_as_a_whole_run(study):
    run_dir = study["run_dir"]
    # nothing has run: the notebook before the selection is missing, and the error says how
    with pytest.raises(UpstreamError) as caught:
        run_study("smoke", only="02", **study)
    assert caught.value.notebook == "01_first"
    assert "--to 01" in caught.value.command and "magn study --profile smoke" in \
        caught.value.command
    assert not (run_dir / "executed" / "02_second.ipynb").exists()

    # up to 01: run, but the report is not complete, so no index.html
    partial = run_study("smoke", stop="01", **study)
    assert [r.status for r in partial.notebooks] == ["executed", "not run"]
    assert partial.succeeded and not partial.complete
    assert not (run_dir / "index.html").exists()
    # from 02: 01 is up to date, so it is skipped as in a whole run; now the report exists
    rest = run_study("smoke", start="02", **study)
    assert [r.status for r in rest.notebooks] == ["skipped", "executed"] and rest.complete
    assert (run_dir / "index.html").is_file() and _count(run_dir) == 1
    # only 02 again, forced: 01 untouched
    again = run_study("smoke", only=["02"], force=True, **study)
    assert [r.status for r in again.notebooks] == ["skipped", "executed"]
    assert _count(run_dir) == 1
    # an override of 01's parameter makes 01 out of date for --only 02
    with pytest.raises(UpstreamError, match="01_first, which has not run with these settings"):
        run_study("smoke", only="02_second", overrides={"epochs": 3}, **study)
    with pytest.raises(ConfigError, match="'07' is not a notebook of the study"):
        run_study("smoke", only="07", **study)
    with pytest.raises(ConfigError, match="--from 02_second comes after --to 01_first"):
        run_study("smoke", start="02", stop="01", **study)


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


def test_require_upstream_names_the_first_missing_notebook(tmp_path):
    from magn_lib.config import resolve_parameters
    from magn_lib.pipeline import require_upstream, study_command

    run, work = tmp_path / "reports" / "a", tmp_path / "work" / "a"
    params = resolve_parameters("smoke", run_dir=run, work_dir=work)
    with pytest.raises(UpstreamError) as missing:
        require_upstream("03_magn_training", params)
    assert missing.value.notebook == "01_cohort_statistics"
    assert "notebooks 01_cohort_statistics to 02_annotation_transfer" in str(missing.value)
    assert missing.value.command == (
        f"magn study --profile smoke --out {run} --work {work} --to 02")
    # notebook 01's results there: notebook 02 is the one to run
    for path in (work / "ingest" / "lesions.csv", work / "transfer" / "lesions.csv",
                 run / "artifacts" / "table1.csv"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    with pytest.raises(UpstreamError, match=r"\(.*crops\.npz does not exist\)") as missing:
        require_upstream("03_magn_training", params)
    assert missing.value.notebook == "02_annotation_transfer"
    (work / "crops.npz").write_bytes(b"")
    require_upstream("03_magn_training", params)
    require_upstream("01_cohort_statistics", params)
    # the command leaves default folders out and repeats the overrides
    assert study_command(resolve_parameters("paper"), stop="02") == \
        "magn study --profile paper --to 02"
    assert study_command(resolve_parameters("smoke", {"epochs": 2, "views": ["axial"]}),
                         only=["03_magn_training"]) == \
        "magn study --profile smoke --set epochs=2 --set 'views=[axial]' --only 03"


def test_input_checksums_keyed_by_study_ids_not_folder_names(tmp_path):
    from magn_lib.pipeline import input_checksums

    manifest = tmp_path / "manifest"
    series = manifest / "dicom" / "WANG^XIUYING 0012345678" / "T1 SAG"
    series.mkdir(parents=True)
    (series / "IM1.dcm").write_bytes(b"one")
    (manifest / "masks").mkdir()
    (manifest / "masks" / "WANG_mask.nii.gz").write_bytes(b"mask")
    (manifest / "notes of WANG.txt").write_text("kept, not named")
    (manifest / "series.csv").write_text(
        "patient_id,view,folder\nP001,sagittal,dicom/WANG^XIUYING 0012345678/T1 SAG\n")
    (manifest / "lesions.csv").write_text(
        "lesion_id,patient_id,label,mask\nP001-L1,P001,1,masks/WANG_mask.nii.gz\n")
    sums = input_checksums(manifest)
    assert set(sums) == {"series.csv", "lesions.csv", "series/P001/sagittal", "mask/P001",
                         "other files (1)"}
    assert "WANG" not in json.dumps(sums)
    before = dict(sums)
    (series / "IM1.dcm").write_bytes(b"changed")
    after = input_checksums(manifest)
    assert [k for k in sums if before[k] != after[k]] == ["series/P001/sagittal"]


EXTERNAL = '''\
print(f"external cohort: {params.profile.external_cohort}")
'''


@pytest.fixture
def external_study(study):
    """The fixture study plus a notebook that declares ``external_cohort`` (as notebook 07)."""
    nbformat.write(
        _notebook("External step", "Validates on the external cohort.",
                  'profile = "demo"\nrun_dir = None\nexternal_cohort = None\n', EXTERNAL),
        study["notebooks_dir"] / "03_external.ipynb",
    )
    return study


def test_external_notebook_runs_only_when_the_profile_names_a_usable_cohort(
        external_study, tmp_path):
    study = external_study
    # smoke names the embedded simulated site, but this study runs on a user's manifest:
    # the external notebook is left out, and a selection naming it says why
    terminal = io.StringIO()
    result = run_study("smoke", **{**study, "progress": True}, stream=terminal)
    assert result.complete and [r.name for r in result.notebooks] == ["01_first", "02_second"]
    assert "03_external: not part of this study: external_cohort 'site_b' is the embedded " \
           "simulated site" in terminal.getvalue()
    record = json.loads((study["run_dir"] / "run_manifest.json").read_text())
    assert set(record["left_out"]) == {"03_external"}
    assert "external_manifest_dir" not in record["run"]
    with pytest.raises(ConfigError, match=r"^--only: 03_external is not part of this study"):
        run_study("smoke", only="03", **study)
    none = tmp_path / "none.yaml"
    none.write_text("profile: smoke\nexternal_cohort: null\n")
    with pytest.raises(ConfigError, match=r"--from: 03_external .*\(external_cohort: null\)"):
        run_study(none, start="03", **study)

    # a manifest folder as the external cohort: the notebook runs, its inputs are recorded and
    # enter its fingerprint only
    site = tmp_path / "site_b_manifest"
    site.mkdir()
    (site / "lesions.csv").write_text("lesion_id,label\nB001-L1,0\n")
    own = tmp_path / "own.yaml"
    own.write_text(f"profile: smoke\nexternal_cohort: {site}\n")
    result = run_study(own, **study)
    assert result.complete and [r.status for r in result.notebooks] == ["executed"] * 3
    record = json.loads((study["run_dir"] / "run_manifest.json").read_text())
    assert record["left_out"] == {} and record["run"]["external_embedded"] is False
    assert set(record["inputs"]["external_manifest_files_sha256"]) == {"lesions.csv"}
    (site / "lesions.csv").write_text("lesion_id,label\nB001-L1,1\n")
    again = run_study(own, **study)
    assert [r.status for r in again.notebooks] == ["skipped", "skipped", "executed"]


def test_a_running_study_exports_its_own_model(tmp_path):
    """Notebook 07 exports the run it belongs to while the run record still says "running":
    the bundle is the one `magn export` writes once the run has finished."""
    from magn_lib.bundle import export_bundle, load_bundle
    from magn_lib.config import resolve_parameters
    from magn_lib.errors import InputError
    from magn_lib.pipeline import export_run_bundle
    from tests.helpers import make_trained_run

    run = make_trained_run(tmp_path, class_counts={1: (2, 2), 0: (2, 2)},
                           shared_backbone=True)
    finished = load_bundle(export_bundle(run.report, tmp_path / "finished.magn"))
    record = json.loads(run.paths.run_manifest.read_text())
    run.paths.run_manifest.write_text(json.dumps({**record, "status": "running"}))
    with pytest.raises(InputError, match="did not succeed"):
        export_bundle(run.report, tmp_path / "refused.magn")
    overrides = {k: v for k, v in run.profile.to_dict().items() if k != "profile"}
    params = resolve_parameters("smoke", overrides, run_dir=run.report, work_dir=run.work)
    path = export_run_bundle(params)
    assert path == run.paths.study_bundle
    running = load_bundle(path)
    assert running.config == finished.config
    assert running.calibration.to_dict() == finished.calibration.to_dict()
    assert running.meta["training_patients"] == finished.meta["training_patients"]
    assert running.meta["run"]["embedded_cohort"] is True
    assert export_run_bundle(params) == path  # an earlier export is replaced


def test_a_generated_cohort_given_as_manifest_is_still_simulated(tmp_path):
    """The runner hands the embedded cohort's manifest folder to the notebooks, so a
    ``manifest_dir`` does not mean a user's own cohort: the phantom's truth decides."""
    import shutil

    from magn_lib.config import resolve_parameters
    from magn_lib.pipeline import is_simulated_cohort
    from magn_lib.synthetic import make_cohort

    generated = make_cohort(tmp_path / "cohort", n_patients=2, seed=3, progress=False,
                            n_jobs=1)
    own = shutil.copytree(generated, tmp_path / "hospital" / "manifest")  # no phantom truth
    for manifest, simulated in ((None, True), (generated, True), (own, False)):
        params = resolve_parameters("smoke", {}, run_dir=tmp_path / "run",
                                    manifest_dir=manifest)
        assert is_simulated_cohort(params) is simulated, manifest
