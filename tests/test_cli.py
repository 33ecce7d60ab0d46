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
    assert cli.main(["deid-key", "--manifest", str(manifest), "--out", str(inside)]) == 2
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
