"""Profile faults: broken YAML, duplicate keys, every key checked before anything runs, and a
diverging training that stops its fold naming the learning rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from magn_lib import cli
from magn_lib.config import (
    NETWORK_STRIDE,
    check_runnable,
    load_profile,
    notebook_parameters,
    read_yaml,
    resolve_parameters,
)
from magn_lib.errors import ConfigError
from magn_lib.model import MAGN
from magn_lib.repro import set_determinism
from magn_lib.settings import TrainSettings
from magn_lib.train import TrainingDiverged, fit_fold


def _profile(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line_config_error(capsys, argv: list[str]) -> str:
    """Run ``magn`` with ``argv``; it must exit 2 with one line on stderr and no traceback."""
    assert cli.main(argv) == cli.EXIT_USAGE
    lines = [line for line in capsys.readouterr().err.splitlines()
             if not line.startswith(f"magn {argv[0]}: warning:")]  # another checkout's venv
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith(f"magn {argv[0]}: error: ")
    return lines[0]


@pytest.mark.parametrize(("text", "line", "what"), [
    ("epochs: 2\nviews: [sagittal, axial\nseed: 1\n", 3, "not valid YAML"),
    ("epochs: 2\n  seed: 1\n", 2, "not valid YAML"),
    ("epochs: 2\nlearning_rate: \"1e-3\n", 3, "not valid YAML"),
    ("\tepochs: 2\n", 1, "not valid YAML"),
])
def test_a_yaml_syntax_error_is_one_line_with_its_line_number(tmp_path, capsys, text, line,
                                                              what):
    path = _profile(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^profile: mine.yaml line {line}, column \d+: {what}"):
        load_profile(path)
    err = _one_line_config_error(capsys, ["config", "--profile", str(path)])
    assert f"line {line}" in err


def test_a_duplicate_key_is_refused_with_both_lines(tmp_path, capsys):
    path = _profile(tmp_path, "epochs: 1\nseed: 3\nepochs: 50\n")
    with pytest.raises(ConfigError, match=r"^profile: mine.yaml line 3: key 'epochs' is given "
                                          r"twice \(first on line 1\)"):
        load_profile(path)
    _one_line_config_error(capsys, ["config", "--profile", str(path)])
    # the same rule for any YAML the study reads (nested mappings included)
    settings = _profile(tmp_path, "setting:\n  binWidth: 25\n  binWidth: 5\n", "rad.yaml")
    with pytest.raises(ConfigError, match="radiomics settings: rad.yaml line 3: key 'binWidth'"):
        read_yaml(settings, what="radiomics settings")


@pytest.mark.parametrize(("line", "match"), [
    (f"crop_size: {NETWORK_STRIDE // 4}", r"^crop_size: 8 px is smaller than the network's "
                                           r"stride \(32 px\)"),
    ("n_jobs: 0", r"^n_jobs: 0 runs nothing"),
    ("crop_size: 32\nbatch_size: 1", r"^batch_size: 1 with 32 px crops"),
    ("num_workers: -1", r"^num_workers: must be 0"),
    ("profile: ../escape", r"^profile: '../escape' must be a plain name"),
    ("profile: site/a", r"^profile: 'site/a' must be a plain name"),
    ("profile: ..", r"^profile: '..' must be a plain name"),
    ("device: cuda:x", r"^device: 'cuda:x' must be"),
    ("device: gpu", r"^device: 'gpu' must be"),
])
def test_every_key_is_checked_when_the_profile_loads(tmp_path, capsys, line, match):
    path = _profile(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=match):
        load_profile(path)
    _one_line_config_error(capsys, ["config", "--profile", str(path)])


@pytest.mark.parametrize(("line", "match"), [
    ("radiomics_settings: configs/nonesuch.yaml",
     r"^radiomics_settings: file configs/nonesuch.yaml does not exist"),
    ("weights: nowhere/resnet50.pth", r"^weights: checkpoint nowhere/resnet50.pth does not "),
    ("device: cuda", r"^device: 'cuda' but PyTorch finds no CUDA GPU"),
    ("device: cuda:3", r"^device: 'cuda:3' but PyTorch finds"),
    ("n_jobs: -100000", r"^n_jobs: -100000 leaves no worker"),
])
def test_what_a_profile_needs_from_the_machine_is_checked_before_anything_runs(
        tmp_path, monkeypatch, capsys, line, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = _profile(tmp_path, line + "\n")
    profile = load_profile(path)  # valid on some machine: `magn config` shows it
    with pytest.raises(ConfigError, match=match):
        check_runnable(profile)
    with pytest.raises(ConfigError, match=match):  # every notebook's first computing cell
        notebook_parameters({"profile": str(path)})
    run_dir = tmp_path / "never-written"
    err = _one_line_config_error(capsys, ["study", "--profile", str(path), "--out",
                                          str(run_dir), "--manifest", str(tmp_path)])
    assert match.lstrip("^").split(":")[0] in err
    assert not run_dir.exists()  # refused before anything was written


def test_a_broken_radiomics_settings_file_is_refused_at_the_start(tmp_path):
    settings = _profile(tmp_path, "setting:\n  binWidth: [25\n", "rad.yaml")
    path = _profile(tmp_path, f"radiomics_settings: {settings}\n")
    with pytest.raises(ConfigError, match=r"^radiomics_settings: rad.yaml line 3, column \d+: "
                                          "not valid YAML"):
        check_runnable(load_profile(path))


def test_the_shipped_profiles_pass_every_check():
    for name in ("smoke", "demo", "paper"):
        check_runnable(resolve_parameters(name).profile)


def test_a_diverging_loss_stops_the_fold_naming_the_learning_rate(tmp_path, toy_crops):
    ds = toy_crops(8, size=32, views=("axial",), seed=5)
    set_determinism(0)
    model = MAGN(views=("axial",), backbone="resnet18")
    ds.items[5]["images"]["axial"][0, 0, 0] = float("nan")  # the loss of its batch is NaN
    settings = TrainSettings(learning_rate=0.03, device="cpu", epochs=3, batch_size=4, seed=0)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingDiverged, match=r"the loss is nan in epoch 1, batch \d, at "
                                               r"learning rate 0.03; lower learning_rate"
                       ) as caught:
        fit_fold(model, ds, settings, checkpoint_path=checkpoint, progress=False,
                 desc="axial fold 0")
    assert caught.value.learning_rate == pytest.approx(0.03)
    assert str(caught.value).startswith("axial fold 0: ")
    assert not checkpoint.exists()  # no checkpoint of a diverged state
    # no optimiser step was taken with the NaN loss (BatchNorm's running statistics aside)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_learning_rate_far_too_high_stops_the_fold_at_once(toy_crops):
    ds = toy_crops(8, size=32, views=("axial",), seed=5)
    set_determinism(0)
    model = MAGN(views=("axial",), backbone="resnet18")
    settings = TrainSettings(learning_rate=1e20, device="cpu", epochs=4, batch_size=4, seed=0)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch \d, at learning rate 1e\+20; "
                                               r"lower learning_rate in the profile \(e\.g\. "
                                               r"--set learning_rate=1e\+19\)"):
        fit_fold(model, ds, settings, progress=False)
