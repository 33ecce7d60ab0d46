"""The grid under the Ray executor: the same results as the sequential grid, resumable across
executors, honest failures, logs and progress per task; and Ray stays out of the sequential path.

The Ray tests share one local Ray of 2 CPUs (1 CPU and 1 torch thread per task), started once
for the module; the toy grid is 2 configurations x 2 folds of 32 px crops, 1 epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magn_lib.config import load_profile, project_root
from magn_lib.cv import fold_fingerprint, make_folds, run_grid
from magn_lib.errors import ConfigError
from magn_lib.layout import GridPaths
from magn_lib.progress import PROGRESS_ENV
from magn_lib.settings import ExecutorSettings, GridSettings, settings_record
from tests.helpers import ToyCrops

CONFIGS = ["axial", "multi-view+attention"]
# generous: Ray's start-up takes tens of seconds on a 2-core machine, minutes when other work
# loads it; the first Ray test also starts the module's Ray (up to RAY_START_S)
RAY_START_S = 600.0
RAY_TEST_TIMEOUT_S = 1500


def toy_grid(blocked: str | None = None):
    """``(factory, folds, settings)`` of the toy grid (sequential settings, CPU). The factory
    raises for the test lesions of fold 1 (in every configuration) when ``blocked == "fail"``;
    with ``blocked`` a file path, it waits there until that file exists, then raises (a
    training that does not end)."""
    lesions = pd.DataFrame({
        "lesion_id": [f"P{p:02d}-L{k}" for p in range(8) for k in (1, 2) if k == 1 or p % 3],
        "patient_id": [f"P{p:02d}" for p in range(8) for k in (1, 2) if k == 1 or p % 3],
    })
    lesions["label"] = [int(pid[-1]) % 2 for pid in lesions["patient_id"]]
    folds = make_folds(lesions, n_splits=2, seed=0)
    cohort = ToyCrops(lesions, size=32, seed=3)
    held_out_1 = sorted(folds.loc[folds["fold"] == 1, "lesion_id"])

    def factory(lesion_ids, *, train):
        if blocked is not None and not train and sorted(lesion_ids) == held_out_1:
            if blocked == "fail":
                raise ValueError("simulated unreadable crops of fold 1")
            release = Path(blocked)
            while not release.exists():
                time.sleep(0.2)
            raise RuntimeError("released")
        return cohort.subset(lesion_ids)

    settings = GridSettings.from_profile(load_profile("smoke", epochs=1, batch_size=8,
                                                      device="cpu"))
    return factory, folds, settings


def _on_ray(settings: GridSettings, **options) -> GridSettings:
    return replace(settings, executor=ExecutorSettings(executor="ray", cpus_per_task=1,
                                                       **options))


def _tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    """``{relative path: (sha256, mtime_ns)}`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                              p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sequential_reference(tmp_path_factory):
    """The toy grid run sequentially with one torch thread (the session's): its predictions."""
    import torch

    assert torch.get_num_threads() == 1
    factory, folds, settings = toy_grid()
    out = tmp_path_factory.mktemp("sequential") / "cv"
    return run_grid(factory, folds, CONFIGS, settings, out, progress=False)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for the module; fails (not skips, not hangs) when it cannot start."""
    import ray

    from magn_lib.executor import start_local_ray

    if ray.is_initialized():
        ray.shutdown()
    try:  # retried for up to RAY_START_S: the start can be slow on a loaded machine
        start_local_ray(num_cpus=2, num_gpus=0, timeout_s=RAY_START_S)
    except ConfigError as exc:
        pytest.fail(str(exc))
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------- settings, no Ray

def test_execution_keys_are_validated_and_not_fingerprinted():
    for bad, match in ((dict(executor="dask"), "executor"),
                       (dict(gpus_per_task=1.5), "gpus_per_task"),
                       (dict(gpus_per_task=0), "gpus_per_task"),
                       (dict(cpus_per_task=0), "cpus_per_task"),
                       (dict(ray_address="headnode"), "ray_address"),
                       (dict(executor="ray", device="cuda:1"), "device")):
        with pytest.raises(ConfigError, match=match):
            load_profile("smoke", **bad)
    with pytest.raises(ConfigError, match="gpus_per_task"):
        ExecutorSettings(executor="ray", gpus_per_task=-1)
    assert load_profile("paper").executor == "sequential"  # the default stays sequential

    _, folds, settings = toy_grid()
    ray_settings = _on_ray(settings, ray_address="auto", gpus_per_task=0.25)
    assert "executor" not in settings_record(ray_settings)
    train = folds.loc[folds["fold"] == 0, "lesion_id"]
    test = folds.loc[folds["fold"] == 1, "lesion_id"]
    assert fold_fingerprint(settings, "axial", 1, train, test) \
        == fold_fingerprint(ray_settings, "axial", 1, train, test)
    from_profile = GridSettings.from_profile(load_profile("smoke", executor="ray",
                                                          gpus_per_task=0.5))
    assert from_profile.executor == ExecutorSettings(executor="ray", gpus_per_task=0.5)


def test_cli_execution_flags(capsys):
    from magn_lib.cli import EXIT_USAGE, main

    assert main(["config", "--profile", "smoke", "--executor", "ray", "--ray-address", "auto",
                 "--gpus-per-task", "0.25", "--cpus-per-task", "2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["executor"], shown["ray_address"], shown["gpus_per_task"],
            shown["cpus_per_task"]) == ("ray", "auto", 0.25, 2)
    assert main(["config", "--profile", "smoke", "--executor", "ray",
                 "--set", "executor=sequential"]) == EXIT_USAGE
    assert "given both" in capsys.readouterr().err
    assert main(["config", "--profile", "smoke", "--gpus-per-task", "1.5"]) == EXIT_USAGE


def test_task_resources():
    from magn_lib.executor import task_resources

    settings = ExecutorSettings(executor="ray", gpus_per_task=0.25, cpus_per_task=2)
    assert task_resources(settings, use_gpu=True) == {"num_cpus": 2.0, "num_gpus": 0.25}
    assert task_resources(settings, use_gpu=False) == {"num_cpus": 2.0, "num_gpus": 0.0}


def test_import_and_sequential_grid_do_not_import_ray(tmp_path):
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        import magn_lib
        assert "ray" not in sys.modules, "import magn_lib imported ray"
        for module in pkgutil.walk_packages(magn_lib.__path__, "magn_lib."):
            importlib.import_module(module.name)
        from magn_lib.cli import main
        assert main(["config", "--profile", "smoke"]) == 0
        from magn_lib.cv import run_grid
        from tests.test_executor import CONFIGS, toy_grid
        factory, folds, settings = toy_grid()
        run_grid(factory, folds, CONFIGS[:1], settings, {str(tmp_path / "cv")!r},
                 progress=False)
        leaked = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
        assert not leaked, f"the sequential path imported {{leaked[:5]}}"
        print("no ray")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(project_root()), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], cwd=project_root(), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("no ray")


# ------------------------------------------------------------------------------- under Ray

@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_ray_grid_equals_sequential_with_logs_and_progress(local_ray, sequential_reference,
                                                          tmp_path, monkeypatch):
    channel = tmp_path / "progress.jsonl"
    monkeypatch.setenv(PROGRESS_ENV, str(channel))
    factory, folds, settings = toy_grid()
    out = tmp_path / "cv"
    result = run_grid(factory, folds, CONFIGS, _on_ray(settings), out)
    # bitwise: every task seeds itself and trains with one torch thread, as the reference did
    pd.testing.assert_frame_equal(result.predictions, sequential_reference.predictions,
                                  check_exact=True)
    timing = ["train_seconds"]
    pd.testing.assert_frame_equal(result.metrics.drop(columns=timing),
                                  sequential_reference.metrics.drop(columns=timing),
                                  check_exact=True)
    events = [json.loads(line) for line in channel.read_text().splitlines()]
    closed = {e["desc"] for e in events if e["event"] == "close"}
    for config in CONFIGS:
        for fold in (0, 1):
            files = GridPaths(out).fold(config, fold)
            log = files.log.read_text()
            assert log.count("--- attempt started") == 1 and "attempt finished" in log
            assert f"{config} fold {fold}" in closed  # the worker's epoch bar, relayed
    assert {"MAGN grid"} <= closed

    # nothing to do a second time: no task is submitted, no file is touched
    before = _tree_digest(out)
    run_grid(factory, folds, CONFIGS, _on_ray(settings), out, progress=False)
    assert _tree_digest(out) == before


@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_failed_task_is_retried_once_then_reported(local_ray, tmp_path):
    from magn_lib.executor import TaskError

    factory, folds, settings = toy_grid(blocked="fail")
    out = tmp_path / "cv"
    with pytest.raises(TaskError, match=r"axial fold 1: ValueError: simulated unreadable") as err:
        run_grid(factory, folds, ["axial"], _on_ray(settings), out, progress=False)
    assert [f.label for f in err.value.failures] == ["axial fold 1"]
    failed = GridPaths(out).fold("axial", 1)
    assert failed.log.read_text().count("--- attempt started") == 2  # tried, retried once
    assert "simulated unreadable crops" in failed.log.read_text()
    assert not failed.done.exists() and not failed.predictions.exists()
    assert GridPaths(out).fold("axial", 0).done.is_file()  # the other task finished


@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_killed_ray_grid_resumes_sequentially(local_ray, sequential_reference, tmp_path):
    """A driver on the module's cluster (an existing cluster, ``ray_address``) is killed while
    the trainings of fold 1 hang; the sequential rerun reuses the two finished folds (fold 0)
    untouched and trains the other two."""
    out, release = tmp_path / "cv", tmp_path / "release"
    address = local_ray.get_runtime_context().gcs_address
    script = textwrap.dedent(f"""
        from dataclasses import replace
        from magn_lib.cv import run_grid
        from magn_lib.settings import ExecutorSettings
        from tests.test_executor import CONFIGS, toy_grid
        factory, folds, settings = toy_grid(blocked={str(release)!r})
        settings = replace(settings, executor=ExecutorSettings(
            executor="ray", ray_address={address!r}, cpus_per_task=1))
        run_grid(factory, folds, CONFIGS, settings, {str(out)!r}, progress=False)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(project_root()), os.environ.get("PYTHONPATH", "")])}
    env.pop(PROGRESS_ENV, None)
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=project_root(), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finished = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            finished = sorted(p.parent for p in out.glob("*/fold*/done.json"))
            if len(finished) == 2:
                break
            time.sleep(0.5)
        assert driver.poll() is None, f"the driver ended early:\n{driver.stdout.read()[-3000:]}"
        assert len(finished) == 2, "the two trainings of fold 0 did not finish in time"
        assert {p.name for p in finished} == {"fold0"}
    finally:
        driver.kill()  # SIGKILL: no clean-up of its own
        driver.wait(timeout=60)
        release.touch()  # a hanging task that outlived its driver ends without writing
    blocked = [GridPaths(out).fold(config, 1) for config in CONFIGS]
    assert all(b.started.is_file() and not b.done.exists() for b in blocked)
    # the job's tasks die with their driver: both CPUs come back
    deadline = time.monotonic() + 120
    while local_ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert local_ray.available_resources().get("CPU", 0) == 2

    kept = {folder: _tree_digest(folder) for folder in finished}
    factory, folds, settings = toy_grid()
    result = run_grid(factory, folds, CONFIGS, settings, out, progress=False)
    for folder, digest in kept.items():
        assert _tree_digest(folder) == digest, f"{folder.name} was redone"
    assert all(b.done.is_file() for b in blocked)
    pd.testing.assert_frame_equal(result.predictions, sequential_reference.predictions,
                                  check_exact=True)
    assert np.array_equal(result.predictions["probability"].to_numpy(),
                          sequential_reference.predictions["probability"].to_numpy())
