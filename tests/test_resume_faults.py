"""Resume that cannot be fooled and run folders that faults leave consistent: ingest stamps
keyed on content and written atomically, unique and locked work folders, caches keyed on what
they depend on, and a full disk."""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import os
import shutil
from pathlib import Path

import nbformat
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from papermill.exceptions import PapermillExecutionError

from magn_lib import cli, ingest, pipeline
from magn_lib.config import project_root
from magn_lib.cv import ensure_folds, load_folds, make_folds
from magn_lib.errors import OutOfSpaceError
from magn_lib.ingest import ingest_cohort
from magn_lib.layout import WorkPaths, default_work_folder, run_paths
from magn_lib.manifest import load_manifest
from magn_lib.pipeline import run_study
from magn_lib.stages import build_crop_cache, transfer_cohort


@pytest.fixture
def cohort(tmp_path, small_cohort) -> Path:
    """A private copy of the small cohort's manifest folder (the test changes its files)."""
    shutil.copytree(small_cohort / "manifest", tmp_path / "manifest")
    return tmp_path / "manifest"


def _rewrite_keeping_size_and_time(path: Path, change) -> None:
    """Replace the bytes of ``path`` by ``change(bytes)`` (same length), then restore its
    modification time: what ``cp -p`` or rsync of a re-exported file leaves."""
    st = path.stat()
    data = path.read_bytes()
    new = change(data)
    assert len(new) == len(data) and new != data
    path.write_bytes(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def _flip_tail(data: bytes, n: int = 4096) -> bytes:
    """Other pixel values: the last ``n`` bytes of a DICOM file are its pixel data."""
    return data[:-n] + bytes(b ^ 0x5A for b in data[-n:])


# ------------------------------------------------------------------ item 9: content-keyed resume

def test_a_reexport_with_the_same_size_and_time_is_ingested_again(cohort, tmp_path):
    manifest = load_manifest(cohort)
    work = WorkPaths(tmp_path / "work")
    first = ingest_cohort(manifest, work.work_dir, n_jobs=1, progress=False)
    assert first.n_read == len(manifest.patients)
    patient = manifest.patients["patient_id"].iloc[1]
    before = np.asanyarray(nib.load(work.volume(patient, "axial")).dataobj).copy()
    files = sorted(p for p in manifest.series_folder(patient, "axial").iterdir() if p.is_file())
    _rewrite_keeping_size_and_time(files[len(files) // 2], _flip_tail)

    again = ingest_cohort(manifest, work.work_dir, n_jobs=1, progress=False)
    assert (again.n_read, again.n_skipped) == (1, len(manifest.patients) - 1)
    after = np.asanyarray(nib.load(work.volume(patient, "axial")).dataobj)
    assert not np.array_equal(before, after)  # the new pixels, not the old NIfTI


def test_a_stamp_that_does_not_parse_means_redo(cohort, tmp_path):
    manifest = load_manifest(cohort)
    work = WorkPaths(tmp_path / "work")
    ingest_cohort(manifest, work.work_dir, n_jobs=1, progress=False)
    ids = manifest.patients["patient_id"].tolist()
    half = work.ingest_stamp(ids[0])
    half.write_text(half.read_text()[: len(half.read_text()) // 2])  # killed while writing
    work.ingest_stamp(ids[1]).write_text("[]")  # parses, but is no stamp
    work.ingest_stamp(ids[2]).write_bytes(b"\xff\xfe\x00")  # not even text
    work.volume(ids[3], "coronal").unlink()  # a stamp whose outputs are gone
    again = ingest_cohort(manifest, work.work_dir, n_jobs=1, progress=False)
    assert (again.n_read, again.n_skipped) == (4, len(ids) - 4)
    for pid in ids:
        assert json.loads(work.ingest_stamp(pid).read_text())["signature"]["format"] == 2
    assert not list(work.nifti_dir.rglob("*.tmp"))


def test_a_stamp_exists_only_for_a_finished_ingest(cohort, tmp_path, monkeypatch):
    manifest = load_manifest(cohort)
    work = WorkPaths(tmp_path / "work")
    ingest_cohort(manifest, work.work_dir, n_jobs=1, progress=False)
    patient = manifest.patients["patient_id"].iloc[0]
    folder = manifest.series_folder(patient, "coronal")
    _rewrite_keeping_size_and_time(sorted(folder.iterdir())[0], _flip_tail)
    real = ingest.read_series

    def killed_at_coronal(path, **kwargs):
        if Path(path) == folder:
            raise KeyboardInterrupt("killed while reading the coronal series")
        return real(path, **kwargs)

    monkeypatch.setattr(ingest, "read_series", killed_at_coronal)
    with pytest.raises(KeyboardInterrupt):
        ingest_cohort(manifest, work.work_dir, n_jobs=1, progress=False)
    assert not work.ingest_stamp(patient).exists()  # the old stamp no longer vouches
    monkeypatch.setattr(ingest, "read_series", real)
    again = ingest_cohort(manifest, work.work_dir, n_jobs=1, progress=False)
    assert again.n_read == 1 and work.ingest_stamp(patient).is_file()


# ------------------------------------------- item 10: unique, locked work folders; keyed caches

def test_default_work_folders_are_unique_per_report_folder(tmp_path):
    a, b = run_paths(tmp_path / "site_a" / "out"), run_paths(tmp_path / "site_b" / "out")
    assert a.work_dir != b.work_dir
    assert a.work_dir.parent == b.work_dir.parent == project_root() / "work"
    assert a.work_dir.name.startswith("out-") and len(a.work_dir.name) == len("out-") + 8
    assert run_paths(tmp_path / "site_a" / "out").work_dir == a.work_dir  # stable
    (tmp_path / "site_a" / "out").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "site_a" / "out")
    assert run_paths(tmp_path / "link").work_dir == a.work_dir  # resolved: one run, one folder
    assert default_work_folder("reports/demo") == default_work_folder(
        project_root() / "reports" / "demo")
    assert run_paths(tmp_path / "r", tmp_path / "mine").work_dir == tmp_path / "mine"


ONE = '''\
from magn_lib.config import notebook_parameters
from magn_lib.pipeline import require_upstream
params = notebook_parameters(globals())
require_upstream("01_only", params)
print("ran", params.profile.seed)
'''


@pytest.fixture
def one_notebook_study(tmp_path):
    """A study of one quick notebook (the runner's behaviour, not the study's)."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "magn", "display_name": "magn", "language": "python"}
    nb.metadata["magn"] = {"summary": "Prints its seed."}
    params = new_code_cell('profile = "smoke"\nrun_dir = None\nwork_dir = None\nseed = None\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# Only\n\nOne step."), params, new_code_cell(ONE)]
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "01_only.ipynb")
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "lesions.csv").write_text("lesion_id,label\nP001-L1,1\n")
    return {"profile": "smoke", "notebooks_dir": tmp_path / "notebooks",
            "manifest_dir": manifest, "run_dir": tmp_path / "out",
            "work_dir": tmp_path / "work", "progress": False}


def test_a_second_run_on_the_same_work_folder_is_refused(one_notebook_study, tmp_path):
    paths = run_paths(one_notebook_study["run_dir"], one_notebook_study["work_dir"])
    paths.work_dir.mkdir(parents=True)
    with open(paths.work_lock, "w") as held:  # a run of another report folder holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match=r"another `magn study` is using .*work; wait "
                                               r"for it or choose another --work"):
            run_study(**one_notebook_study)
    assert not paths.executed("01_only").exists()


def _lesions(n_patients: int = 20) -> pd.DataFrame:
    return pd.DataFrame({"lesion_id": [f"P{i:03d}-L1" for i in range(n_patients)],
                         "patient_id": [f"P{i:03d}" for i in range(n_patients)],
                         "label": [i % 2 for i in range(n_patients)]})


def test_the_folds_are_keyed_on_the_seed_and_the_scheme(tmp_path):
    lesions, path = _lesions(), tmp_path / "folds.csv"
    first = ensure_folds(lesions, path, n_splits=5, seed=1)
    written = path.stat().st_mtime_ns
    pd.testing.assert_frame_equal(ensure_folds(lesions, path, n_splits=5, seed=1), first)
    assert path.stat().st_mtime_ns == written  # the same folds: reused, not rewritten
    for n_splits, seed in ((5, 2), (4, 2)):
        new = ensure_folds(lesions, path, n_splits=n_splits, seed=seed)
        pd.testing.assert_frame_equal(new, make_folds(lesions, n_splits=n_splits, seed=seed))
        pd.testing.assert_frame_equal(load_folds(path), new)
    assert not first["fold"].equals(ensure_folds(lesions, path, n_splits=5, seed=2)["fold"])
    relabelled = lesions.assign(label=1 - lesions["label"])  # another cohort, same ids
    assert (ensure_folds(relabelled, path, n_splits=5, seed=2)["label"]
            == relabelled["label"]).all()
    path.write_text("lesion_id,patient_id,la")  # half-written
    pd.testing.assert_frame_equal(ensure_folds(lesions, path, n_splits=5, seed=2),
                                  make_folds(lesions, n_splits=5, seed=2))


def _same_size_other_volume(path: Path) -> None:
    """Overwrite a ``.nii.gz`` volume with other voxel values, the same file size and time
    (gzip ignores trailing zero bytes): another cohort's file left in the work folder."""
    img = nib.load(path)
    data = np.asanyarray(img.dataobj).copy()
    data[: data.shape[0] // 2] = 0  # compresses smaller than the original
    st = path.stat()
    tmp = path.with_name("other.nii.gz")
    nib.save(nib.Nifti1Image(data, img.affine, img.header), tmp)
    raw = tmp.read_bytes()
    tmp.unlink()
    assert len(raw) < st.st_size
    path.write_bytes(raw + b"\0" * (st.st_size - len(raw)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with gzip.open(path) as f:  # still a valid volume
        f.read()


def test_the_crop_cache_is_keyed_on_the_content_of_what_it_reads(cohort, tmp_path):
    manifest = load_manifest(cohort)
    done = ingest_cohort(manifest, tmp_path / "work", n_jobs=1, progress=False)
    transfer = transfer_cohort(done, progress=False)
    views, path = ("sagittal", "axial"), tmp_path / "work" / "crops.npz"
    cache = build_crop_cache(done, transfer, path, views=views, crop_size=32, progress=False)
    lesion = transfer.lesions.iloc[0]
    volume = done.paths.volume(lesion["patient_id"], "axial")
    _same_size_other_volume(volume)
    rebuilt = build_crop_cache(done, transfer, path, views=views, crop_size=32, progress=False)
    row = list(cache.lesion_id).index(lesion["lesion_id"])
    assert not np.array_equal(rebuilt.image["axial"][row], cache.image["axial"][row])
    np.testing.assert_array_equal(rebuilt.image["sagittal"], cache.image["sagittal"])


# -------------------------------------------------------------------- item 8: a full disk

def _disk_full_for(real, target: Path):
    def write(path, text):
        if Path(path) == target:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)
    return write


def test_a_full_disk_leaves_no_claim_of_success_and_keeps_finished_steps(
        one_notebook_study, monkeypatch, capsys):
    first = run_study(**one_notebook_study)
    paths = first.paths
    assert first.complete and paths.index_html.is_file()
    real = pipeline.atomic_write_text

    # a --force re-run whose run record cannot be written
    monkeypatch.setattr(pipeline, "atomic_write_text", _disk_full_for(real, paths.run_manifest))
    with pytest.raises(OutOfSpaceError) as caught:
        run_study(**one_notebook_study, force=True)
    message = str(caught.value)
    assert message.startswith(f"out of disk space writing the run record in {paths.report_dir}")
    assert " needed, " in message and " free on that disk" in message
    assert caught.value.errno == errno.ENOSPC
    assert not any(p.exists() for p in (paths.index_html, paths.report_html,
                                        paths.report_pdf, paths.run_manifest))
    assert not list(paths.report_dir.rglob("*.tmp"))
    monkeypatch.setattr(pipeline, "atomic_write_text", real)
    resumed = run_study(**one_notebook_study)  # the notebook finished: its stamp is kept
    assert [r.status for r in resumed.notebooks] == ["skipped"]
    assert resumed.complete and paths.index_html.is_file()
    assert json.loads(paths.run_manifest.read_text())["status"] == "succeeded"

    # the disk fills when the executed notebook is stamped: no stamp, no HTML, no index
    executed = paths.executed("01_only")
    monkeypatch.setattr(pipeline, "atomic_write_text", _disk_full_for(real, executed))
    args = ["study", "--profile", "smoke", "--notebooks", str(one_notebook_study["notebooks_dir"]),
            "--manifest", str(one_notebook_study["manifest_dir"]), "--out",
            str(paths.report_dir), "--work", str(paths.work_dir), "--force", "--quiet"]
    assert cli.main(args) == cli.EXIT_NOTEBOOK_FAILED
    err = [line for line in capsys.readouterr().err.splitlines() if "warning:" not in line]
    assert len(err) == 1 and "out of disk space writing the executed notebook in" in err[0]
    assert not any(p.exists() for p in (paths.index_html, paths.report_html,
                                        paths.report_pdf, paths.run_manifest))
    assert not paths.html("01_only").exists()
    monkeypatch.setattr(pipeline, "atomic_write_text", real)
    again = run_study(**one_notebook_study)
    assert [r.status for r in again.notebooks] == ["executed"]  # not stamped: ran again


def test_a_notebook_stopped_by_a_full_disk_says_so(tmp_path):
    exc = PapermillExecutionError(
        cell_index=3, exec_count=4, source="ingest_cohort(...)", ename="OSError",
        evalue="[Errno 28] No space left on device", traceback=[])
    message, kind = pipeline._failure(exc, "01_cohort_statistics", tmp_path / "x.ipynb")
    assert kind == "disk"
    assert "cell 4: OSError: [Errno 28] No space left on device" in message
    assert "The disk is full (" in message and "MB free where the report is" in message
    direct = OSError(errno.ENOSPC, "No space left on device")
    assert pipeline._failure(direct, "01_cohort_statistics", tmp_path / "x.ipynb")[1] == "disk"


def _writers() -> dict[str, tuple[str, object]]:
    """Every writer of a stage output, stamp or report file: ``{name: (file name, write)}``."""
    from magn_lib import cv, train
    from magn_lib.guards import mark_run_folders
    from magn_lib.layout import RunPaths
    from magn_lib.report import atomic_write_text, save_table

    frame = pd.DataFrame({"lesion_id": ["P000-L1"], "value": [1.0]})
    image = nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4))
    folds = make_folds(_lesions(10), n_splits=2, seed=0)
    return {
        "report text": ("index.html", lambda p: atomic_write_text(p, "new")),
        "report table": ("table1.csv", lambda p: save_table(frame, p)),
        "stage table": ("lesions.csv", lambda p: ingest._write_csv(frame, p)),
        "ingest stamp": (".ingest.json", lambda p: ingest._write_stamp(p, {"series": []})),
        "volume": ("axial.nii.gz", lambda p: ingest.save_nifti(image, p)),
        "folds": ("folds.csv", lambda p: cv.save_folds(folds, p)),
        "fold stamp": ("done.json", lambda p: cv._write_json({"fingerprint": "x"}, p)),
        "checkpoint": ("checkpoint.pt", lambda p: train._save_atomic({"epoch": 1}, p)),
        "run marker": (".magn-run.json",
                       lambda p: mark_run_folders(RunPaths(p.parent, p.parent))),
    }


@pytest.mark.parametrize("writer", sorted(_writers()))
def test_a_full_disk_never_leaves_half_a_file(tmp_path, monkeypatch, writer):
    name, write = _writers()[writer]
    target = tmp_path / name
    target.write_bytes(b"the previous, complete version")

    def disk_full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError) as caught:
        write(target)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"the previous, complete version"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left
