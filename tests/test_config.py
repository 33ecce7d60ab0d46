from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from magn_lib.config import PROFILES, Profile, configs_dir, load_profile, project_root, run_paths
from magn_lib.errors import ConfigError


@pytest.mark.parametrize("name", PROFILES)
def test_shipped_profiles_load(name):
    profile = load_profile(name)
    assert profile.profile == name


def test_demo_file_lists_every_parameter_with_the_defaults():
    # defaults = demo (DESIGN.md): the file and the dataclass must not drift apart
    with open(configs_dir() / "demo.yaml") as f:
        values = yaml.safe_load(f)
    assert set(values) == {f.name for f in dataclasses.fields(Profile)}
    assert load_profile("demo") == Profile()


def test_profile_table_of_the_design():
    smoke, demo, paper = (load_profile(p) for p in PROFILES)
    assert smoke.n_patients <= 15 and smoke.backbone == "resnet18" and smoke.n_folds == 3
    assert 48 <= smoke.crop_size <= 64 and smoke.epochs <= 2
    assert demo.n_patients == 60 and 96 <= demo.crop_size <= 128 and demo.n_folds == 5
    assert paper.n_patients == 217 and paper.crop_size == 256 and paper.backbone == "resnet50"
    assert paper.epochs >= 50 and paper.batch_size == 16 and paper.learning_rate == 1e-3
    assert paper.lr_step_epochs == 5 and paper.lr_gamma == 0.9 and paper.attention_weight == 0.5


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 3\nlearning_rat: 0.01\n")
    with pytest.raises(ConfigError, match=r"learning_rat: unknown parameter.*'learning_rate'"):
        load_profile(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("epochs: ten\n", "epochs"),
        ("epochs: 2.5\n", "epochs"),
        ("augment: 1\n", "augment"),
        ("learning_rate: fast\n", "learning_rate"),
        ("views: sagittal\n", "views"),
        ("views: [sagittal, 3]\n", r"views\[1\]"),
        ("batch_size: true\n", "batch_size"),
        ("weights: 5\n", "weights"),
    ],
)
def test_wrong_type_is_named(tmp_path, text, key):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{key}: expected"):
        load_profile(path)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"views": ["sagittal", "lateral"]}, "views"),
        ({"views": []}, "views"),
        ({"backbone": "vgg16"}, "backbone"),
        ({"pooling": "median"}, "pooling"),
        ({"n_folds": 1}, "n_folds"),
        ({"epochs": 0}, "epochs"),
        ({"radiomics_keep": 40}, "radiomics_keep"),
        ({"lr_gamma": 1.5}, "lr_gamma"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_out_of_range_values_are_named(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        load_profile("demo", **overrides)


def test_partial_profile_takes_demo_defaults_and_file_name(tmp_path):
    path = tmp_path / "site_a.yaml"
    path.write_text("epochs: 3\nlearning_rate: 3.0e-4\n")
    profile = load_profile(path)
    assert profile.profile == "site_a"
    assert profile.epochs == 3 and profile.learning_rate == 3e-4
    assert profile.crop_size == Profile().crop_size


def test_int_is_accepted_for_float_and_overrides_are_validated():
    assert load_profile("demo", learning_rate=1).learning_rate == 1
    with pytest.raises(ConfigError, match="^epochz: unknown"):
        load_profile("demo", epochz=3)
    with pytest.raises(ConfigError, match="^seed: expected int"):
        load_profile("demo").replace(seed="1")


def test_unknown_profile_name():
    with pytest.raises(ConfigError, match="'fast' is not a known profile"):
        load_profile("fast")


def test_to_dict_is_a_copy():
    profile = load_profile("demo")
    values = profile.to_dict()
    values["views"].append("extra")
    assert profile.views == ["sagittal", "coronal", "axial"]


def test_run_paths_resolve_against_project_root():
    paths = run_paths("reports/demo")
    assert paths.report_dir == project_root() / "reports" / "demo"
    assert paths.work_dir == project_root() / "work" / "demo"
    assert paths.html_dir.parent == paths.report_dir
    absolute = run_paths(Path("/tmp/x/run1"), "/tmp/y")
    assert absolute.report_dir == Path("/tmp/x/run1") and absolute.work_dir == Path("/tmp/y")


def test_profile_from_notebook_parameters():
    from magn_lib.config import profile_from_parameters

    namespace = {"profile": "smoke", "epochs": 2, "run_dir": "reports/x", "views": ["axial"],
                 "pd": object()}
    profile = profile_from_parameters(namespace)
    assert profile.profile == "smoke" and profile.epochs == 2 and profile.views == ["axial"]
    assert profile.crop_size == Profile().crop_size
    namespace["views"].append("sagittal")
    assert profile.views == ["axial"]
    with pytest.raises(ConfigError, match="^epochs: expected int"):
        profile_from_parameters({"epochs": "2"})
