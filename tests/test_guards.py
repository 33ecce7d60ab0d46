"""Where the study may write (never into the cohort's data) and where the identity key may go
(never into any run's folders), on resolved paths with symlinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from magn_lib import cli
from magn_lib.config import resolve_parameters
from magn_lib.errors import ConfigError, InputError
from magn_lib.guards import (
    check_key_location,
    check_run_folders,
    data_folders,
    mark_run_folders,
    run_folder_holding,
)
from magn_lib.layout import RunPaths
from magn_lib.pipeline import require_upstream, tree_sha256


def _snapshot(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Checksums of every file (hidden ones too) and the list of every entry under ``folder``."""
    entries = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    sums = {rel: sha for rel, sha in tree_sha256(folder).items()}
    hidden = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob(".*")}
    return {**sums, **{k: str(v) for k, v in hidden.items()}}, entries


def _manifest(root: Path, *, series: str, mask: str) -> Path:
    """A manifest folder whose tables point to ``series`` and ``mask`` (CSV only)."""
    root.mkdir(parents=True)
    (root / "series.csv").write_text(f"\ufeffpatient_id,view,folder\r\nP001,sagittal,{series}"
                                     "\r\n\r\n,,\r\n")
    (root / "lesions.csv").write_text(f"lesion_id,patient_id,label,mask\nP001-L1,P001,1,{mask}\n")
    return root


def test_a_study_with_out_inside_the_manifest_folder_is_refused_before_writing(
        small_cohort, capsys):
    manifest = small_cohort / "manifest"
    before = _snapshot(small_cohort)
    for option, where in (("--out", manifest / "reports"), ("--work", manifest / "work"),
                          ("--out", manifest / "dicom" / "P001"), ("--out", small_cohort)):
        args = ["study", "--profile", "smoke", "--manifest", str(manifest), "--quiet",
                option, str(where)]
        assert cli.main(args) == cli.EXIT_USAGE, option
        err = capsys.readouterr().err
        assert ("the study never writes into the cohort's data" in err
                or "choose one that holds no patient data" in err), err
        assert "Traceback" not in err
    assert _snapshot(small_cohort) == before  # not one file or folder added or changed


def test_every_folder_the_manifest_points_to_is_protected(tmp_path):
    series = tmp_path / "pacs" / "P001" / "sag"
    masks = tmp_path / "annotations"
    manifest = _manifest(tmp_path / "site" / "manifest", series=str(series),
                         mask=f"{masks}/P001-L1.nii.gz")
    found = {d.path: d.what for d in data_folders(manifest)}
    assert found == {manifest.resolve(): "the manifest folder",
                     series.resolve(): "series folder of series.csv line 2",
                     masks.resolve(): "mask folder of lesions.csv line 2"}
    ok = RunPaths(report_dir=tmp_path / "reports" / "a", work_dir=tmp_path / "work" / "a")
    check_run_folders(ok, data_folders(manifest))
    for report, work, match in (
        (series / "out", tmp_path / "w", r"run_dir \(--out\): .* lies inside .*series folder"),
        (tmp_path / "r", masks / "work", r"work_dir \(--work\): .* lies inside .*mask folder"),
        (tmp_path / "pacs", tmp_path / "w", r"the report folder .* would hold .*series folder"),
        (tmp_path / "site" / "manifest", tmp_path / "w", "the manifest folder"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_run_folders(RunPaths(report_dir=report, work_dir=work), data_folders(manifest))
    assert not (series / "out").exists() and not (masks / "work").exists()


def test_symlinks_do_not_open_a_way_into_the_data(tmp_path):
    manifest = _manifest(tmp_path / "data" / "manifest", series="../dicom/P001",
                         mask="P001-L1.nii.gz")
    link = tmp_path / "looks-elsewhere"
    link.symlink_to(tmp_path / "data" / "dicom")
    paths = RunPaths(report_dir=link / "P001" / "run", work_dir=tmp_path / "work")
    with pytest.raises(ConfigError, match="series folder of series.csv line 2"):
        check_run_folders(paths, data_folders(manifest))
    # and a manifest reached through a symlink protects the folder it resolves to
    via = tmp_path / "via"
    via.symlink_to(tmp_path / "data")
    paths = RunPaths(report_dir=tmp_path / "data" / "manifest" / "r", work_dir=tmp_path / "w")
    with pytest.raises(ConfigError, match="the manifest folder"):
        check_run_folders(paths, data_folders(via / "manifest"))


def test_a_notebook_run_by_hand_checks_its_folders_too(tmp_path):
    manifest = _manifest(tmp_path / "manifest", series="dicom/sag", mask="m.nii.gz")
    params = resolve_parameters("smoke", run_dir=str(manifest / "run"), manifest_dir=manifest)
    with pytest.raises(ConfigError, match="lies inside"):
        require_upstream("01_cohort_statistics", params)
    assert not (manifest / "run").exists()
    elsewhere = resolve_parameters("smoke", run_dir=str(tmp_path / "run"),
                                  work_dir=str(tmp_path / "w"), manifest_dir=manifest)
    require_upstream("01_cohort_statistics", elsewhere)  # 01 needs nothing earlier
    assert run_folder_holding(tmp_path / "run" / "artifacts" / "x.csv") == tmp_path / "run"
    assert run_folder_holding(tmp_path / "w" / "nifti") == tmp_path / "w"


def test_the_identity_key_is_refused_inside_any_run_folder_wherever_it_lives(
        tmp_path, small_cohort, capsys):
    run = RunPaths(report_dir=tmp_path / "elsewhere" / "site_a",
                   work_dir=tmp_path / "scratch" / "site_a-0123abcd")
    mark_run_folders(run)
    link = tmp_path / "shortcut"
    link.symlink_to(run.report_dir)
    refused = [run.artifacts_dir / "deid_key.csv", run.report_dir / "deid_key.csv",
               run.work_dir / "nifti" / "P001" / "key.csv", link / "artifacts" / "key.csv"]
    for path in refused:
        with pytest.raises(InputError, match="must not be written inside .*a folder of a "
                                             "study run"):
            check_key_location(path)
    with pytest.raises(InputError, match="inside reports/"):
        check_key_location(tmp_path / "reports" / "k.csv", forbidden=[tmp_path / "reports"])
    # a key file that is itself a symlink into a run folder
    (tmp_path / "private").mkdir()
    sneaky = tmp_path / "private" / "key.csv"
    sneaky.symlink_to(run.report_dir / "key.csv")
    with pytest.raises(InputError):
        check_key_location(sneaky)

    manifest = small_cohort / "manifest"
    args = ["deid-key", "--manifest", str(manifest), "--out"]
    assert cli.main([*args, str(refused[0])]) == cli.EXIT_INPUT
    assert "a folder of a study run" in capsys.readouterr().err
    assert not refused[0].exists() and not (run.report_dir / "key.csv").exists()
    beside = tmp_path / "elsewhere" / "site_a_key.csv"  # next to the run, not inside it
    assert cli.main([*args, str(beside)]) == cli.EXIT_OK
    assert beside.is_file() and oct(beside.stat().st_mode & 0o777) == "0o600"


def test_markers_are_written_once_and_only_in_run_folders(tmp_path):
    run = RunPaths(report_dir=tmp_path / "r", work_dir=tmp_path / "w")
    mark_run_folders(run)
    stamp = run.report_marker.stat().st_mtime_ns
    mark_run_folders(run)
    assert run.report_marker.stat().st_mtime_ns == stamp
    assert run_folder_holding(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "w"]
