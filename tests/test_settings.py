"""Typed settings: built from a profile, defaults of the profile, fingerprints that cannot
forget a setting."""

from __future__ import annotations

import dataclasses
import types
from dataclasses import replace

import pytest
import torch

from magn_lib.config import Profile, load_profile, project_root
from magn_lib.cv import build_model, fold_fingerprint
from magn_lib.errors import ConfigError, InputError
from magn_lib.model import MAGN
from magn_lib.repro import set_determinism
from magn_lib.settings import (
    GridSettings,
    NetworkSettings,
    TrainSettings,
    settings_fingerprint,
    settings_record,
)
from magn_lib.train import fit_fold

TRAIN_IDS, TEST_IDS = ["P001-L1", "P002-L1"], ["P003-L1"]


def _fingerprint(settings: GridSettings, config: str = "axial+attention", fold: int = 0) -> str:
    return fold_fingerprint(settings, config, fold, TRAIN_IDS, TEST_IDS, "crops-sha")


def test_defaults_are_the_profile_defaults():
    assert GridSettings() == GridSettings.from_profile(Profile())
    profile_fields = {f.name for f in dataclasses.fields(Profile)}
    for cls in (NetworkSettings, TrainSettings):
        # every setting is a profile parameter: none can silently keep a default of its own
        assert {f.name for f in dataclasses.fields(cls)} <= profile_fields, cls.__name__


def test_from_profile_takes_the_profile_values():
    paper = load_profile("paper")
    settings = GridSettings.from_profile(paper, track_test=False, keep_weights=["axial"])
    assert settings.network == NetworkSettings(backbone="resnet50", pooling="lse",
                                               weights="imagenet", shared_backbone=False,
                                               lse_r=10.0)
    assert settings.train.learning_rate == 1e-3 and settings.train.epochs == 50
    assert settings.train.num_workers == 4 and settings.train.seed == 2022
    assert settings.track_test is False and settings.keep_weights == ("axial",)
    assert settings.keeps_weights("axial") and not settings.keeps_weights("multi-view")
    assert GridSettings(keep_weights=True).keeps_weights("coronal")
    with pytest.raises(ConfigError, match="keep_weights"):
        GridSettings(keep_weights="multi-view")


def test_an_int_for_a_float_gives_the_same_settings():
    as_int = TrainSettings(learning_rate=1, lr_gamma=1)
    assert as_int == TrainSettings(learning_rate=1.0, lr_gamma=1.0)
    assert isinstance(as_int.learning_rate, float)
    assert settings_fingerprint(s=as_int) == settings_fingerprint(s=TrainSettings(
        learning_rate=1.0, lr_gamma=1.0))
    with pytest.raises(ConfigError, match="at least 1"):
        TrainSettings(epochs=0)


def test_record_leaves_out_where_the_work_runs_and_what_is_kept():
    record = settings_record(GridSettings())
    assert set(record) == {"network", "train", "track_test"}
    assert "device" not in record["train"] and "num_workers" not in record["train"]
    assert record["train"]["learning_rate"] == Profile().learning_rate


def test_fold_settings_and_fingerprint():
    settings = GridSettings()
    fold2 = settings.train.for_fold(2, attention=False)
    assert fold2.seed == settings.train.seed + 2 and fold2.attention_weight == 0.0
    assert settings.train.for_fold(2, attention=True).attention_weight == 0.5
    base = _fingerprint(settings)
    assert base == _fingerprint(replace(settings, keep_weights=False))
    assert base == _fingerprint(replace(settings, train=replace(settings.train, device="cpu",
                                                                 num_workers=3)))
    changed = [
        replace(settings, train=replace(settings.train,
                                        learning_rate=settings.train.learning_rate / 2)),
        replace(settings, train=replace(settings.train, augment=False)),
        replace(settings, network=replace(settings.network, pooling="avg")),
        replace(settings, track_test=False),
    ]
    assert len({base, *(_fingerprint(s) for s in changed)}) == 1 + len(changed)
    assert base != _fingerprint(settings, fold=1)
    assert base != fold_fingerprint(settings, "axial+attention", 0, TRAIN_IDS, TEST_IDS, "other")
    # unguided configurations do not train with the attention weight: it is not theirs
    weight = replace(settings, train=replace(settings.train, attention_weight=1.0))
    assert _fingerprint(weight, "axial") == _fingerprint(settings, "axial")
    assert _fingerprint(weight) != base


def _with_warmup() -> type[TrainSettings]:
    """A training setting added to the settings, as a future one would be: a field with a
    default, nothing else changed."""
    return dataclasses.make_dataclass("WarmTrainSettings", [("warmup_epochs", int, 0)],
                                      bases=(TrainSettings,), frozen=True)


def test_a_new_training_setting_changes_the_fold_fingerprint_without_touching_cv():
    warm = _with_warmup()
    # a profile that has the new parameter (any object with the profile's attributes)
    profile = types.SimpleNamespace(**Profile().to_dict(), warmup_epochs=3)
    with_key = GridSettings(train=warm.from_profile(profile))
    assert with_key.train.warmup_epochs == 3
    without = GridSettings(train=warm.from_profile(Profile()))
    assert without.train.warmup_epochs == 0
    assert _fingerprint(with_key) != _fingerprint(without)
    assert _fingerprint(replace(with_key, train=replace(with_key.train, warmup_epochs=0))) \
        == _fingerprint(without)
    # ... and for_fold keeps the new setting
    assert with_key.train.for_fold(1, attention=True).warmup_epochs == 3


def test_a_new_training_setting_is_part_of_the_checkpoint_check(tmp_path, toy_crops):
    warm = _with_warmup()
    ds = toy_crops(4, size=32, views=("axial",))
    settings = warm(epochs=1, batch_size=4, seed=0, device="cpu")
    set_determinism(0)
    model = MAGN(views=("axial",), backbone="resnet18")
    ckpt = tmp_path / "fold.pt"
    fit_fold(model, ds, settings, checkpoint_path=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["settings"]["warmup_epochs"] == 0
    with pytest.raises(ConfigError, match="other training parameters.*warmup_epochs"):
        fit_fold(model, ds, replace(settings, warmup_epochs=2), checkpoint_path=ckpt,
                 resume=True, progress=False)


def test_build_model_follows_the_network_settings():
    model = build_model("multi-view", NetworkSettings(pooling="max", lse_r=4.0,
                                                      shared_backbone=True))
    assert model.views == ("sagittal", "coronal", "axial") and model.pooling == "max"
    assert model.lse_r == 4.0 and model.shared_backbone
    with pytest.raises(InputError, match="does not exist") as info:
        build_model("axial", NetworkSettings(weights="no/such/weights.pth"))
    # relative to the project root, as every path of a profile
    assert info.value.file == str(project_root() / "no" / "such" / "weights.pth")


def test_keep_weights_per_profile_and_never_in_a_fingerprint():
    from magn_lib.config import GRID_CONFIG_NAMES
    from magn_lib.cv import CONFIGS

    assert GRID_CONFIG_NAMES == tuple(c.name for c in CONFIGS)
    paper, demo, smoke = (GridSettings.from_profile(load_profile(p))
                          for p in ("paper", "demo", "smoke"))
    assert all(paper.keeps_weights(c.name) for c in CONFIGS)
    pair = ("multi-view", "multi-view+attention")
    for settings in (demo, smoke):
        assert [c.name for c in CONFIGS if settings.keeps_weights(c.name)] == list(pair)
    assert GridSettings.from_profile(load_profile("smoke"), keep_weights=False).keep_weights \
        is False
    # the profile key changes what is kept, never what a fold computes
    only_axial = GridSettings.from_profile(Profile(keep_weights=["axial"]))
    assert only_axial.keep_weights == ("axial",)
    # a list naming no configuration the run's views train falls back to the proposed pair
    sagittal_only = GridSettings.from_profile(Profile(views=["sagittal"]))
    assert set(sagittal_only.keep_weights) == {"sagittal", "sagittal+attention"}
    assert _fingerprint(only_axial) == _fingerprint(GridSettings.from_profile(Profile()))
    assert _fingerprint(paper) == _fingerprint(replace(paper, keep_weights=("axial",)))
    with pytest.raises(ConfigError, match="keep_weights"):
        Profile(keep_weights=["multiview"])
    with pytest.raises(ConfigError, match="target_sensitivity"):
        Profile(target_sensitivity=1.0)
