"""Typed settings of the network, of training one fold and of the cross-validation grid.

Frozen dataclasses carry what :func:`magn_lib.cv.build_model`, :func:`magn_lib.train.fit_fold`
and :func:`magn_lib.cv.run_grid` need, each built from a study :class:`~magn_lib.config.Profile`
with ``from_profile``: a field takes the profile parameter of the same name, so a parameter
added to both the profile and a settings class flows through without any other change.

- :class:`NetworkSettings`: the MAGN network (backbone, pooling, initial weights, ...).
- :class:`TrainSettings`: the optimisation of one fold (epochs, batch size, Adam learning rate
  and its step decay, attention weight, class weighting, augmentation, seed) and where it runs
  (device, DataLoader workers).
- :class:`ExecutorSettings`: how the grid's trainings are run (sequentially or as Ray tasks,
  with which resources).
- :class:`GridSettings`: all three, plus what the grid does around training (track the
  held-out fold every epoch, which configurations keep their weights).

Fingerprints: :func:`settings_record` is ``dataclasses.asdict`` of a settings object without
the fields declared with ``metadata=NOT_FINGERPRINTED`` (where the work runs and what is kept,
which do not change a fold's result). The grid's fold fingerprint and the resume check of a
training checkpoint are computed from it, so a new setting is part of both unless it says
otherwise. Defaults are the profile's defaults (the ``demo`` profile), read from
:class:`~magn_lib.config.Profile` itself, so the two cannot disagree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Self

from magn_lib.config import Profile
from magn_lib.errors import ConfigError

__all__ = [
    "NOT_FINGERPRINTED",
    "ExecutorSettings",
    "GridSettings",
    "NetworkSettings",
    "TrainSettings",
    "settings_fingerprint",
    "settings_record",
]

# field metadata of a setting that does not change what is computed (where, how fast, what is
# kept); left out of fingerprints and checkpoint checks
NOT_FINGERPRINTED = MappingProxyType({"fingerprint": False})
DEFAULT_KEPT_WEIGHTS: tuple[str, ...] = tuple(Profile().keep_weights)


def _profile_default(name: str) -> Any:
    """The default of the profile parameter ``name`` (the demo profile's value)."""
    return Profile.__dataclass_fields__[name].default


class _FromProfile:
    """``from_profile`` and float coercion shared by the settings classes."""

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> Self:
        """The settings of ``profile``: every field takes the profile parameter of its name
        (fields the profile does not have keep their defaults); ``overrides`` replace them."""
        values = {f.name: getattr(profile, f.name) for f in dataclasses.fields(cls)
                  if f.init and hasattr(profile, f.name)}
        return cls(**{**values, **overrides})

    def __post_init__(self) -> None:
        # an int where a float is meant (``learning_rate: 1`` in YAML) must give the same
        # settings, and the same fingerprint, as the float
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hints.get(f.name) is float and isinstance(value, int) \
                    and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))


@dataclass(frozen=True)
class NetworkSettings(_FromProfile):
    """The MAGN network of every configuration (the configuration adds its views).

    ``weights``: ``None`` (He-uniform from scratch), ``"imagenet"`` or a checkpoint path as the
    profile gives it (relative paths are resolved against the project root when the model is
    built, so the fingerprint does not depend on where the project lies).
    """

    backbone: str = _profile_default("backbone")
    pooling: str = _profile_default("pooling")
    weights: str | None = _profile_default("weights")
    shared_backbone: bool = _profile_default("shared_backbone")
    lse_r: float = _profile_default("lse_r")


@dataclass(frozen=True)
class TrainSettings(_FromProfile):
    """Training of one fold (Chen et al. 2022: Adam 1e-3, ×0.9 every 5 epochs, batch 16,
    BCE + 0.5 · Σ_views attention MSE).

    ``learning_rate`` is Adam's initial rate, multiplied by ``lr_gamma`` every
    ``lr_step_epochs`` epochs; ``attention_weight`` is ``λ`` of the attention-guidance loss
    (0 trains without guidance); ``class_weighting`` weights the MM class by
    ``n_metastasis / n_MM`` in the BCE; ``augment`` is whether the training dataset augments
    (applied by the dataset factory; recorded here so that it is part of the fingerprint);
    ``seed`` seeds a fresh run. ``device`` and ``num_workers`` say where it runs and are not
    fingerprinted.
    """

    epochs: int = _profile_default("epochs")
    batch_size: int = _profile_default("batch_size")
    learning_rate: float = _profile_default("learning_rate")
    lr_step_epochs: int = _profile_default("lr_step_epochs")
    lr_gamma: float = _profile_default("lr_gamma")
    attention_weight: float = _profile_default("attention_weight")
    class_weighting: bool = _profile_default("class_weighting")
    augment: bool = _profile_default("augment")
    seed: int = _profile_default("seed")
    device: str = field(default=_profile_default("device"), metadata=NOT_FINGERPRINTED)
    num_workers: int = field(default=_profile_default("num_workers"),
                             metadata=NOT_FINGERPRINTED)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                f"epochs and batch_size must be at least 1, got {self.epochs}, {self.batch_size}"
            )

    def for_fold(self, fold: int, *, attention: bool) -> Self:
        """The settings fold ``fold`` of a configuration trains with: seed ``seed + fold``
        (every configuration sees the same draws in one fold) and attention weight 0 for a
        configuration without attention guidance."""
        return dataclasses.replace(
            self, seed=self.seed + int(fold),
            attention_weight=self.attention_weight if attention else 0.0,
        )


@dataclass(frozen=True)
class ExecutorSettings(_FromProfile):
    """How the grid's (configuration, fold) trainings are run (:mod:`magn_lib.executor`).

    ``executor``: ``"sequential"`` (one after the other in this process) or ``"ray"`` (each a
    Ray task). ``ray_address``: ``None`` starts a local Ray for the run (or uses the one this
    process already started), ``"auto"`` / ``"host:port"`` / ``"ray://host:port"`` joins an
    existing cluster. A GPU task asks for ``gpus_per_task`` GPUs (0.25: four share one) and
    ``cpus_per_task`` CPUs, a CPU task for ``cpus_per_task`` CPUs; each task trains with
    ``cpus_per_task`` torch threads. ``ray_log_to_driver``: also print the workers' output in
    this process (each task's log is kept in its fold folder either way). Where the work runs
    does not change what it computes: the whole value is left out of fingerprints.
    """

    executor: str = _profile_default("executor")
    ray_address: str | None = _profile_default("ray_address")
    gpus_per_task: float = _profile_default("gpus_per_task")
    cpus_per_task: int = _profile_default("cpus_per_task")
    ray_log_to_driver: bool = _profile_default("ray_log_to_driver")

    def __post_init__(self) -> None:
        super().__post_init__()
        # the same checks as a profile's (a value built by hand gets them too)
        Profile(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class GridSettings:
    """Everything :func:`magn_lib.cv.run_grid` trains and keeps by.

    ``track_test``: evaluate the held-out fold after every epoch for the learning curves
    (monitoring only, never model selection). ``keep_weights``: the configurations whose
    trained weights are saved (for :func:`magn_lib.cv.load_fold_model` and Grad-CAM); ``True``
    keeps all, ``False`` none.
    """

    network: NetworkSettings = field(default_factory=NetworkSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    track_test: bool = True
    keep_weights: bool | tuple[str, ...] = field(default=DEFAULT_KEPT_WEIGHTS,
                                                 metadata=NOT_FINGERPRINTED)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings,
                                       metadata=NOT_FINGERPRINTED)

    def __post_init__(self) -> None:
        if not isinstance(self.keep_weights, bool):
            if isinstance(self.keep_weights, str):
                raise ConfigError("keep_weights: give a list of configuration names, True or "
                                  f"False, not the string {self.keep_weights!r}")
            object.__setattr__(self, "keep_weights", tuple(self.keep_weights))

    @classmethod
    def from_profile(cls, profile: Profile, **options: Any) -> Self:
        """Network, training and execution settings and ``keep_weights`` of ``profile``;
        ``options`` set ``track_test`` or replace any of them. The proposed model of the run's
        views and its unguided twin (:func:`magn_lib.cv.proposed_configs`) always keep their
        weights: the figures and the attention fidelity explain them."""
        from magn_lib.cv import proposed_configs  # cv imports settings

        kept = tuple(profile.keep_weights)
        kept += tuple(c for c in proposed_configs(profile.views)[::-1] if c not in kept)
        values = {"network": NetworkSettings.from_profile(profile),
                  "train": TrainSettings.from_profile(profile),
                  "executor": ExecutorSettings.from_profile(profile),
                  "keep_weights": kept}
        return cls(**{**values, **options})

    def keeps_weights(self, config_name: str) -> bool:
        """Whether the configuration called ``config_name`` saves its trained weights."""
        if isinstance(self.keep_weights, bool):
            return self.keep_weights
        return config_name in self.keep_weights


def settings_record(settings: Any) -> dict[str, Any]:
    """``dataclasses.asdict(settings)`` without the fields marked :data:`NOT_FINGERPRINTED`
    (at any depth): what a fingerprint or a checkpoint check compares."""
    record = dataclasses.asdict(settings)
    _drop_unfingerprinted(settings, record)
    return record


def _drop_unfingerprinted(settings: Any, record: dict[str, Any]) -> None:
    for f in dataclasses.fields(settings):
        if not f.metadata.get("fingerprint", True):
            del record[f.name]
            continue
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _drop_unfingerprinted(value, record[f.name])


def settings_fingerprint(**parts: Any) -> str:
    """Hex SHA-256 of ``parts`` as canonical JSON; settings objects among them enter as their
    :func:`settings_record`."""
    canonical = {k: settings_record(v) if dataclasses.is_dataclass(v) and not isinstance(v, type)
                 else v for k, v in parts.items()}
    text = json.dumps(canonical, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
