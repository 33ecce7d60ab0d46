from __future__ import annotations

import dataclasses
import re
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
        ({"cv_scheme": "leave-one-out"}, "cv_scheme"),
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
    assert paths.work_dir.parent == project_root() / "work"
    assert re.fullmatch(r"demo-[0-9a-f]{8}", paths.work_dir.name)  # unique to reports/demo
    assert paths.html_dir.parent == paths.report_dir
    absolute = run_paths(Path("/tmp/x/run1"), "/tmp/y")
    assert absolute.report_dir == Path("/tmp/x/run1") and absolute.work_dir == Path("/tmp/y")


def test_profile_from_notebook_parameters():
    from magn_lib.config import profile_from_parameters

    namespace = {"profile": "smoke", "epochs": 2, "run_dir": "reports/x", "views": ["axial"],
                 "crop_size": None, "pd": object()}
    profile = profile_from_parameters(namespace)
    assert profile.profile == "smoke" and profile.epochs == 2 and profile.views == ["axial"]
    # None and absent parameters come from the profile named, not from the demo defaults
    assert profile.crop_size == load_profile("smoke").crop_size == 48
    assert profile.n_folds == 3
    namespace["views"].append("sagittal")
    assert profile.views == ["axial"]
    with pytest.raises(ConfigError, match="^epochs: expected int"):
        profile_from_parameters({"epochs": "2"})


def test_notebook_parameters_resolve_profile_then_overrides():
    from magn_lib.config import notebook_parameters

    # what a parameters cell holds when opened by hand: demo, unchanged
    by_hand = notebook_parameters({"profile": "demo", "run_dir": None, "work_dir": None,
                                   "epochs": None, "learning_rate": None})
    assert by_hand.profile == load_profile("demo")
    assert by_hand.overrides == {} and by_hand.sources == {"epochs": "profile",
                                                           "learning_rate": "profile"}
    assert (by_hand.run_dir, by_hand.manifest_dir) == ("reports/demo", None)
    assert re.fullmatch(r"work/demo-[0-9a-f]{8}", by_hand.work_dir)

    # papermill -p profile paper -p epochs 1: exactly one thing changes
    paper = notebook_parameters({"profile": "paper", "epochs": 1, "learning_rate": None,
                                 "weights": None, "run_dir": None, "work_dir": None})
    assert paper.profile == load_profile("paper", epochs=1)
    assert paper.profile.learning_rate == 1e-3 and paper.profile.weights == "imagenet"
    assert paper.values == {"epochs": 1, "learning_rate": 1e-3, "weights": "imagenet"}
    assert paper.sources == {"epochs": "override", "learning_rate": "profile",
                             "weights": "profile"}
    assert paper.run_dir == "reports/paper"
    assert re.fullmatch(r"work/paper-[0-9a-f]{8}", paper.work_dir)
    # a run folder given names the default work folder after it
    named = notebook_parameters({"profile": "smoke", "run_dir": "/tmp/runs/site_a"})
    assert re.fullmatch(r"work/site_a-[0-9a-f]{8}", named.work_dir)

    with pytest.raises(ConfigError, match="^epochs: expected int"):
        notebook_parameters({"profile": "paper", "epochs": "1"})
    with pytest.raises(ConfigError, match="'nonesuch' is not a known profile"):
        notebook_parameters({"profile": "nonesuch"})


def test_effective_parameters_are_shown_and_published():
    from magn_lib.config import PARAMETERS_MIMETYPE, resolve_parameters

    params = resolve_parameters("smoke", {"n_bootstrap": 500, "seed": None},
                                keys=["seed", "n_bootstrap", "views"])
    table = params.to_markdown()
    assert "profile `smoke` (`configs/smoke.yaml`), 1 override" in table
    assert "| `seed` | 7 | profile |" in table
    assert "| `n_bootstrap` | 500 | **override** |" in table
    assert "| `views` | sagittal, coronal, axial | profile |" in table
    bundle = params._repr_mimebundle_()
    record = bundle[PARAMETERS_MIMETYPE]
    assert record["parameters"] == {"seed": 7, "n_bootstrap": 500,
                                    "views": ["sagittal", "coronal", "axial"]}
    assert record["sources"]["n_bootstrap"] == "override" and record["profile"] == "smoke"
    assert bundle["text/markdown"] == table
    # an override of a parameter not declared is still shown (and validated)
    assert "epochs" in resolve_parameters("smoke", {"epochs": 2}, keys=["seed"]).keys


def test_parse_override_reads_yaml_values_and_names_bad_keys():
    from magn_lib.config import parse_override

    assert parse_override("epochs=2") == ("epochs", 2)
    assert parse_override("learning_rate=1e-3") == ("learning_rate", 1e-3)
    assert parse_override("weights=imagenet") == ("weights", "imagenet")
    assert parse_override("views=[sagittal, axial]") == ("views", ["sagittal", "axial"])
    assert parse_override("augment=false") == ("augment", False)
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        parse_override("epoch=2")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("epochs")
    with pytest.raises(ConfigError, match="weights: --set weights=null cannot"):
        parse_override("weights=null")


def test_tuning_statement_names_both_seeds_honestly():
    demo = load_profile("demo")
    assert "2022" in demo.tuning_statement()
    assert "not tuned" in demo.replace(tuning_seed=None).tuning_statement()
    held_apart = demo.replace(tuning_seed=11)
    text = held_apart.tuning_statement()
    assert "seed 11 (tuning seed)" in text and "seed 2022 (reporting seed)" in text
    assert "optimistic" in demo.replace(tuning_seed=2022).tuning_statement()
    two = demo.replace(tuning_seed=[11, 12])
    assert two.tuning_seeds == [11, 12]
    assert "seeds 11 and 12 (tuning seeds)" in two.tuning_statement()
    assert "optimistic" in demo.replace(tuning_seed=[11, 2022]).tuning_statement()
    with pytest.raises(ConfigError, match="tuning_seed"):
        demo.replace(tuning_seed="eleven")


def test_external_cohort_names_the_embedded_site_or_a_folder(tmp_path):
    from magn_lib.config import EXTERNAL_PRESETS, check_runnable

    smoke, demo, paper = (load_profile(p) for p in PROFILES)
    assert smoke.external_cohort == demo.external_cohort == "site_b" in EXTERNAL_PRESETS
    assert smoke.external_embedded and smoke.external_n_patients < demo.external_n_patients
    assert paper.external_cohort is None and not paper.external_embedded
    assert demo.external_seed != demo.seed  # site B shares no patient draw with site A
    folder = load_profile("demo", external_cohort=str(tmp_path))
    assert not folder.external_embedded
    check_runnable(folder)  # an existing folder is accepted
    with pytest.raises(ConfigError, match=r"^external_cohort: '.*missing' is neither an "
                                          r"embedded site \(site_b\) nor an existing"):
        check_runnable(load_profile("demo", external_cohort=str(tmp_path / "missing")))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"external_cohort": " "}, r"^external_cohort: empty"),
        ({"external_n_patients": 1}, r"^external_n_patients: .* at least 2"),
        ({"external_separability": -1.0}, r"^external_separability: must not be negative"),
        ({"external_recalibration_fraction": 1.0}, r"^external_recalibration_fraction: .*"
                                                   r"\(0, 1\)"),
        ({"external_recalibration_fraction": 0}, r"^external_recalibration_fraction:"),
    ],
)
def test_external_settings_out_of_range_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_profile("demo", **overrides)
    assert load_profile("demo", external_recalibration_fraction=0.5)  # a valid share


def test_cv_scheme_names_its_choices():
    assert Profile().cv_scheme == "patient-kfold"
    assert load_profile("demo", cv_scheme="leave-one-site-out").cv_scheme == "leave-one-site-out"
    with pytest.raises(ConfigError, match="patient-kfold.*leave-one-site-out"):
        load_profile("demo", cv_scheme="site")
