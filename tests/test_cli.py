"""The `magn` command: generate, deid-key, config, doctor (study and predict: test_pipeline.py,
test_notebooks.py)."""

from __future__ import annotations

import json

from magn_lib import cli
from magn_lib.manifest import load_manifest


def test_generate_writes_a_loadable_cohort_and_refuses_other_parameters(tmp_path, capsys):
    out = tmp_path / "cohort"
    args = ["generate", "--profile", "smoke", "--out", str(out), "--n-patients", "2",
            "--seed", "5"]
    assert cli.main(args) == 0
    assert "2 patients, seed 5" in capsys.readouterr().out
    manifest = load_manifest(out / "manifest")
    assert len(manifest.patients) == 2 and (out / "truth").is_dir()
    # the same folder with other parameters is an error, not a silent overwrite
    assert cli.main([*args[:-1], "6"]) == 2
    assert "error" in capsys.readouterr().err


def test_deid_key_is_refused_inside_reports_and_written_elsewhere(tmp_path, capsys,
                                                                  monkeypatch, small_cohort):
    from magn_lib import config

    manifest = small_cohort / "manifest"
    monkeypatch.setattr(config, "project_root", lambda: tmp_path)
    inside = tmp_path / "reports" / "key.csv"
    assert cli.main(["deid-key", "--manifest", str(manifest), "--out", str(inside)]) == 3
    assert "must not be written inside reports/" in capsys.readouterr().err
    assert not inside.exists()
    private = tmp_path / "private" / "key.csv"
    assert cli.main(["deid-key", "--manifest", str(manifest), "--out", str(private)]) == 0
    assert private.is_file() and "PatientID" in private.read_text()


def test_config_prints_the_resolved_profile(capsys):
    assert cli.main(["config", "--profile", "paper"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["backbone"] == "resnet50" and values["crop_size"] == 256


def test_doctor_and_a_bad_profile(capsys):
    assert cli.main(["doctor"]) == 0
    assert "environment OK" in capsys.readouterr().out
    assert cli.main(["config", "--profile", "nonesuch"]) == 2
    assert "'nonesuch' is not a known profile" in capsys.readouterr().err


def _magn(*args, **kwargs):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "magn_lib.cli", *args], capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_version():
    from magn_lib import __version__

    done = _magn("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"magn {__version__}"


def test_closed_pipe_ends_quietly():
    import subprocess
    import sys

    # the reader is gone before magn writes: the write meets a closed pipe (EPIPE)
    proc = subprocess.Popen([sys.executable, "-m", "magn_lib.cli", "config", "--profile",
                             "smoke"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and stderr == ""
    # and as a user types it
    shell = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m magn_lib.cli config --profile "
                       "smoke | head -1"],
        capture_output=True, text=True, timeout=120)
    assert shell.returncode == 0 and shell.stdout == "{\n" and shell.stderr == ""


def test_exit_status_per_class(tmp_path, capsys):
    # 0 done
    assert cli.main(["config", "--profile", "smoke", "--set", "epochs=2"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    # 2 usage / configuration: argparse, a bad profile, a bad --set, a bad selection
    assert _magn("study", "--no-such-option").returncode == cli.EXIT_USAGE
    assert cli.main(["config", "--profile", "smoke", "--set", "epoch=2"]) == cli.EXIT_USAGE
    assert "did you mean 'epochs'" in capsys.readouterr().err
    assert cli.main(["study", "--profile", "smoke", "--only", "99", "--kernel", "magn",
                     "--out", str(tmp_path / "r")]) == cli.EXIT_USAGE
    assert "'99' is not a notebook of the study" in capsys.readouterr().err
    # 3 input data (a run folder that is none)
    code = cli.main(["predict", "--model", str(tmp_path), "--sagittal", str(tmp_path),
                     "--mask", str(tmp_path / "m.nii.gz"), "--lesion-id", "L1"])
    assert code == cli.EXIT_INPUT
    assert "input error" in capsys.readouterr().err
    assert cli.main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "m.magn")]) \
        == cli.EXIT_INPUT
    assert "not the report folder of a study run" in capsys.readouterr().err
    # 1 (a notebook failed) and 3 from a notebook: test_pipeline.py


def test_every_help_lists_its_choices():
    import argparse

    from magn_lib.cv import CONFIGS

    assert cli.GRID_CONFIGS == tuple(c.name for c in CONFIGS)
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"study", "generate", "deid-key", "export", "predict",
                                       "validate", "config", "doctor"}
    for name, sub in subparsers.choices.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            for choice in action.choices or ():
                assert str(choice) in text, f"magn {name} --help lacks {choice}"
        if any("--profile" in a.option_strings for a in sub._actions):
            assert "smoke, demo or paper" in text, name
        assert "exit status" in text, name
    study = " ".join(subparsers.choices["study"].format_help().split())
    for notebook in ("01_cohort_statistics", "03_magn_training", "06_figures"):
        assert notebook in study
    for key in ("epochs", "learning_rate", "n_bootstrap", "weights"):
        assert key in study
