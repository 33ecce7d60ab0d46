"""Study profiles: typed parameters for every notebook, loaded from ``configs/<profile>.yaml``.

A profile is one flat mapping of parameter name to value. Its defaults are the ``demo`` profile;
a profile file may set any subset. Unknown keys and values of the wrong type are errors that name
the key. The three shipped profiles are ``smoke`` (tests), ``demo`` (``make study`` on a laptop
CPU) and ``paper`` (the published settings, for one GPU); a path to a YAML file of one's own is
accepted wherever a profile name is.

The profile is the one source of a notebook's parameters. A notebook's ``parameters`` cell holds
``profile = "demo"`` and every other parameter ``= None`` ("take it from the profile");
:func:`notebook_parameters` resolves profile file → the parameters that are not ``None``
(overrides: papermill's ``-p``, ``magn study --set``) → validation, and returns the effective
values with, for each, whether it came from the profile or an override.

Paths: everything relative is resolved against the project root (the folder holding
``pyproject.toml`` and ``magn_lib/``), so notebooks behave the same when run from JupyterLab
(whose working folder is ``notebooks/``) and from the study runner.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from magn_lib.errors import ConfigError
from magn_lib.layout import (  # re-exported: they used to live here
    RunPaths,
    default_report_folder,
    default_work_folder,
    run_paths,
)

__all__ = [
    "BACKBONES",
    "CV_SCHEMES",
    "EXECUTORS",
    "EXTERNAL_PRESETS",
    "GRID_CONFIG_NAMES",
    "PARAMETERS_MIMETYPE",
    "NETWORK_STRIDE",
    "POOLINGS",
    "PROFILES",
    "RUN_FOLDERS",
    "VIEWS",
    "EffectiveParameters",
    "Profile",
    "RunPaths",
    "configs_dir",
    "load_profile",
    "notebook_parameters",
    "check_runnable",
    "parse_override",
    "profile_file",
    "profile_from_parameters",
    "project_root",
    "read_yaml",
    "resolve_parameters",
    "resolve_path",
    "run_paths",
]

VIEWS: tuple[str, ...] = ("sagittal", "coronal", "axial")
BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
POOLINGS: tuple[str, ...] = ("lse", "avg", "max")
PROFILES: tuple[str, ...] = ("smoke", "demo", "paper")
RADIOMICS_CLASSIFIERS: tuple[str, ...] = ("gradient_boosting", "random_forest")
# the names of the MAGN grid's configurations (magn_lib.cv.CONFIGS; spelt here so that a
# profile can be checked without importing torch — a test keeps the two in step)
GRID_CONFIG_NAMES: tuple[str, ...] = (
    "sagittal", "sagittal+attention", "axial", "axial+attention", "coronal",
    "coronal+attention", "multi-view", "multi-view+attention",
)
# the embedded second sites a profile's `external_cohort` may name (magn_lib.synthetic presets);
# any other value of `external_cohort` is the manifest folder of an external cohort
EXTERNAL_PRESETS: tuple[str, ...] = ("site_b",)
# how the cross-validation's folds are made (magn_lib.cv.make_folds): patient-grouped
# stratified k-fold, or one fold per site of the manifest's `centre` column
CV_SCHEMES: tuple[str, ...] = ("patient-kfold", "leave-one-site-out")
# how the grid's (configuration, fold) trainings are run (magn_lib.executor)
EXECUTORS: tuple[str, ...] = ("sequential", "ray")
# a notebook's parameters besides the profile's: where the run reads and writes
RUN_FOLDERS: tuple[str, ...] = ("run_dir", "work_dir", "manifest_dir")
# the MIME type under which a notebook publishes its effective parameters (machine-readable;
# JupyterLab and the HTML views show the Markdown table beside it instead)
PARAMETERS_MIMETYPE = "application/vnd.magn.parameters+json"
#: the ResNet backbones' total stride: a crop of S px gives CAMs of ceil(S / 32) cells a side,
#: so a crop smaller than this leaves one cell (no attention map to guide) and is refused
NETWORK_STRIDE = 32
# a profile's name names its report folder (reports/<profile>): one plain folder name
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Profile:
    """All parameters of one study run. Defaults are the ``demo`` profile.

    Units: ``crop_size`` in pixels of the source image (no resampling); ``learning_rate`` per
    Adam step; ``lr_step_epochs`` in epochs.
    """

    profile: str = "demo"
    seed: int = 2022
    # the seed(s) of the embedded cohort(s) on which the profile's hyper-parameters were
    # chosen (None: they were not chosen on a cohort held apart from the reported one)
    tuning_seed: int | list[int] | None = field(default_factory=lambda: [11, 12])
    # embedded cohort (ignored when a user's manifest is given)
    n_patients: int = 60
    separability: float = 1.0
    # inputs
    views: list[str] = field(default_factory=lambda: list(VIEWS))
    crop_size: int = 96
    # network (Chen et al. 2022, "Multi-view attention guided network")
    backbone: str = "resnet18"
    pooling: str = "lse"
    weights: str | None = None
    shared_backbone: bool = False
    lse_r: float = 10.0
    attention_weight: float = 0.5
    # training
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-3
    lr_step_epochs: int = 5
    lr_gamma: float = 0.9
    class_weighting: bool = False
    augment: bool = True
    device: str = "auto"
    num_workers: int = 0
    # the configurations whose trained fold models are kept (for Grad-CAM and `magn export`);
    # not part of any fold's fingerprint: keeping a model does not change what it computes
    keep_weights: list[str] = field(default_factory=lambda: ["multi-view",
                                                             "multi-view+attention"])
    # validation: "patient-kfold" (n_folds folds, stratified by label, grouped by patient) or
    # "leave-one-site-out" (one fold per centre of the manifest; n_folds is not used)
    cv_scheme: str = "patient-kfold"
    n_folds: int = 5
    # operating point of an exported model (magn export): None = Youden's J on the out-of-fold
    # predictions; a number = the highest threshold whose out-of-fold sensitivity reaches it
    target_sensitivity: float | None = None
    # radiomics baseline
    radiomics_settings: str = "configs/radiomics.yaml"
    radiomics_classifier: str = "gradient_boosting"
    radiomics_top_k: int = 30
    radiomics_keep: int = 15
    # statistics
    n_bootstrap: int = 2000
    # external validation (notebook 07): null = none (the study has no notebook 07); an
    # embedded site's preset name (EXTERNAL_PRESETS: generated like the embedded cohort, from
    # the external_* keys below); or the manifest folder of an external cohort
    external_cohort: str | None = "site_b"
    external_n_patients: int = 24
    external_seed: int = 2023
    external_separability: float = 1.0
    # share of the external patients (grouped by patient) on which a logistic recalibration is
    # fitted, evaluated on the other patients only; null = no recalibration
    external_recalibration_fraction: float | None = None
    # parallel workers for CPU-bound stages (-1 = one per core)
    n_jobs: int = -1
    # execution of the grid (magn_lib.executor): where and how many trainings run at once;
    # none of these changes a result, so none enters a fold's fingerprint
    executor: str = "sequential"
    ray_address: str | None = None
    gpus_per_task: float = 1.0
    cpus_per_task: int = 1
    ray_log_to_driver: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _field_types()[f.name])
        if not _PROFILE_NAME.match(self.profile) or ".." in self.profile:
            raise ConfigError(
                f"profile: {self.profile!r} must be a plain name (letters, digits, '_', '-', "
                "'.'; no '..' and no path separator): it names the report folder "
                "reports/<profile>; choose another folder with --out"
            )
        bad_views = [v for v in self.views if v not in VIEWS]
        if bad_views or not self.views or len(set(self.views)) != len(self.views):
            raise ConfigError(
                f"views: {self.views!r} must be a non-empty list of distinct views from {VIEWS}"
            )
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone: {self.backbone!r} is not one of {BACKBONES}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling: {self.pooling!r} is not one of {POOLINGS}")
        if self.radiomics_classifier not in RADIOMICS_CLASSIFIERS:
            raise ConfigError(
                f"radiomics_classifier: {self.radiomics_classifier!r} is not one of "
                f"{RADIOMICS_CLASSIFIERS}"
            )
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device: {self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        for name in ("n_patients", "crop_size", "epochs", "batch_size", "lr_step_epochs",
                     "radiomics_top_k", "radiomics_keep", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.crop_size < NETWORK_STRIDE:
            raise ConfigError(
                f"crop_size: {self.crop_size} px is smaller than the network's stride "
                f"({NETWORK_STRIDE} px): the attention maps would have a single cell; use at "
                f"least {NETWORK_STRIDE}"
            )
        if self.batch_size == 1 and -(-self.crop_size // NETWORK_STRIDE) == 1:
            raise ConfigError(
                f"batch_size: 1 with {self.crop_size} px crops leaves BatchNorm one value per "
                "channel in the last block (1 x 1 maps), which it cannot train on; use a batch "
                f"of 2 or more, or crops larger than {NETWORK_STRIDE} px"
            )
        if self.n_jobs == 0 or self.num_workers < 0:
            raise ConfigError(
                "n_jobs: 0 runs nothing; use a number of workers >= 1, or -1 for one per core"
                if self.n_jobs == 0 else
                f"num_workers: must be 0 (load in the main process) or more, got "
                f"{self.num_workers}"
            )
        unknown = [c for c in self.keep_weights if c not in GRID_CONFIG_NAMES]
        if unknown or len(set(self.keep_weights)) != len(self.keep_weights):
            raise ConfigError(f"keep_weights: {self.keep_weights!r} must list distinct "
                              f"configurations from {GRID_CONFIG_NAMES}")
        if self.target_sensitivity is not None and not 0 < self.target_sensitivity < 1:
            raise ConfigError("target_sensitivity: must be null or in (0, 1), got "
                              f"{self.target_sensitivity}")
        if self.n_folds < 2:
            raise ConfigError(f"n_folds: cross-validation needs >= 2 folds, got {self.n_folds}")
        if self.cv_scheme not in CV_SCHEMES:
            raise ConfigError(f"cv_scheme: {self.cv_scheme!r} is not one of {CV_SCHEMES}")
        if self.radiomics_keep > self.radiomics_top_k:
            raise ConfigError(
                f"radiomics_keep: {self.radiomics_keep} exceeds radiomics_top_k "
                f"{self.radiomics_top_k}"
            )
        for name in ("learning_rate", "lse_r"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"lr_gamma: must be in (0, 1], got {self.lr_gamma}")
        if self.attention_weight < 0 or self.separability < 0:
            raise ConfigError("attention_weight and separability must not be negative")
        self._check_external()
        self._check_execution()

    def _check_external(self) -> None:
        if self.external_cohort is not None and not self.external_cohort.strip():
            raise ConfigError(
                "external_cohort: empty; use null (no external validation), an embedded site "
                f"({', '.join(EXTERNAL_PRESETS)}) or the manifest folder of an external cohort"
            )
        if self.external_n_patients < 2:
            raise ConfigError("external_n_patients: the external site needs at least 2 "
                              f"patients (one of each class), got {self.external_n_patients}")
        if self.external_separability < 0:
            raise ConfigError("external_separability: must not be negative, got "
                              f"{self.external_separability}")
        fraction = self.external_recalibration_fraction
        if fraction is not None and not 0 < fraction < 1:
            raise ConfigError(
                f"external_recalibration_fraction: must be null or in (0, 1), got {fraction} "
                "(the recalibration is fitted on that share of the external patients and "
                "evaluated on the others)"
            )

    @property
    def external_embedded(self) -> bool:
        """``external_cohort`` names an embedded (simulated) site, not a manifest folder."""
        return self.external_cohort in EXTERNAL_PRESETS

    def _check_execution(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor: {self.executor!r} is not one of {EXECUTORS}")
        address = self.ray_address
        if address is not None and address != "auto" and ":" not in address:
            raise ConfigError(
                f"ray_address: {address!r} must be 'auto' (the cluster this machine belongs "
                "to), 'host:port' of a head started with `ray start --head`, "
                "'ray://host:port', or null (a local Ray started for the run)"
            )
        gpus = self.gpus_per_task
        fraction_or_whole = 0 < gpus <= 1 or (gpus > 1 and gpus == int(gpus))
        if not fraction_or_whole:
            raise ConfigError(
                f"gpus_per_task: {gpus!r} must be a fraction in (0, 1] (0.25: four trainings "
                "share one GPU) or a whole number of GPUs"
            )
        if self.cpus_per_task < 1:
            raise ConfigError(f"cpus_per_task: must be at least 1, got {self.cpus_per_task}")
        if self.executor == "ray" and self.device.startswith("cuda:"):
            raise ConfigError(
                f"device: {self.device!r} names one GPU, but under executor 'ray' Ray assigns "
                "each task its GPU: use device 'cuda' or 'auto'"
            )

    def tuning_statement(self) -> str:
        """One sentence for the report: on which cohort the hyper-parameters were chosen and on
        which the results are reported."""
        if self.tuning_seed is None:
            return (f"Reporting seed {self.seed}. Hyper-parameters were not tuned on a cohort "
                    "held apart from the reported one (no tuning seed): they are the paper's, "
                    "or departures from it stated with the profile.")
        seeds = self.tuning_seeds
        if self.seed in seeds:
            return (f"Hyper-parameters were chosen on the reported cohort itself (tuning seed "
                    f"= reporting seed = {self.seed}): the results are optimistic.")
        if len(seeds) == 1:
            cohorts = f"the embedded cohort of seed {seeds[0]} (tuning seed)"
        else:
            listed = ", ".join(str(s) for s in seeds[:-1]) + f" and {seeds[-1]}"
            cohorts = f"the embedded cohorts of seeds {listed} (tuning seeds)"
        return (f"Hyper-parameters were chosen on {cohorts}; the results are reported on seed "
                f"{self.seed} (reporting seed), which was not used to choose them.")

    @property
    def tuning_seeds(self) -> list[int]:
        """The tuning seed(s) as a list (empty when there is none)."""
        if self.tuning_seed is None:
            return []
        return list(self.tuning_seed) if isinstance(self.tuning_seed, list) else [self.tuning_seed]

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{name: value}`` (lists copied), as injected into notebooks."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **overrides: Any) -> Profile:
        """A copy with some parameters changed (validated like a profile file)."""
        _check_known(overrides, source="overrides")
        return dataclasses.replace(self, **overrides)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Profile)


def _type_name(expected: Any) -> str:
    if isinstance(expected, type):
        return expected.__name__
    return str(expected).replace("typing.", "")


def _check_type(key: str, value: Any, expected: Any) -> None:
    """Raise ConfigError naming ``key`` unless ``value`` matches the annotation ``expected``."""
    origin = typing.get_origin(expected)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(expected):
            try:
                _check_type(key, value, option)
                return
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(expected)}, got {value!r}")
    if expected is type(None):
        ok = value is None
    elif origin is list:
        (item_type,) = typing.get_args(expected)
        ok = isinstance(value, list)
        if ok:
            for i, item in enumerate(value):
                _check_type(f"{key}[{i}]", item, item_type)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ConfigError(
            f"{key}: expected {_type_name(expected)}, got {value!r} ({type(value).__name__})"
        )


def _check_known(mapping: dict[str, Any], *, source: str) -> None:
    known = [f.name for f in dataclasses.fields(Profile)]
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key}: unknown parameter in {source}{hint}")


def profile_from_parameters(namespace: Mapping[str, Any]) -> Profile:
    """A notebook's parameters as a validated :class:`Profile`: ``notebook_parameters(...)``'s
    effective profile (see :func:`notebook_parameters`)."""
    return notebook_parameters(namespace).profile


def project_root() -> Path:
    """The folder holding ``pyproject.toml`` and ``magn_lib/`` (the checkout), else the cwd."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "configs").is_dir():
        return here
    return Path.cwd()


def configs_dir() -> Path:
    return project_root() / "configs"


def resolve_path(path: str | Path) -> Path:
    """An absolute path; relative ones are taken from the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def check_runnable(profile: Profile) -> None:
    """Check what a profile needs from this machine, before anything runs: the files it names
    exist (``radiomics_settings``, a ``weights`` checkpoint, an ``external_cohort`` manifest
    folder) and the settings file is valid YAML, the ``device`` is present, ``n_jobs`` does
    not ask for more workers than cores.

    :class:`Profile` itself checks what holds on every machine (types, ranges the network and
    the data impose); this checks the rest, so that ``magn config`` still shows a GPU profile
    on a laptop while ``magn study`` and every notebook refuse it there at once.

    Raises:
        ConfigError: naming the key and what to change.
    """
    settings = resolve_path(profile.radiomics_settings)
    if not settings.is_file():
        raise ConfigError(
            f"radiomics_settings: file {profile.radiomics_settings} does not exist (relative "
            "paths are taken from the project root; the shipped one is configs/radiomics.yaml)"
        )
    if not isinstance(read_yaml(settings, what="radiomics_settings"), dict | None):
        raise ConfigError(f"radiomics_settings: {settings.name} must hold a mapping")
    if profile.weights not in (None, "imagenet") and not resolve_path(profile.weights).is_file():
        raise ConfigError(
            f"weights: checkpoint {profile.weights} does not exist; give an existing .pth file, "
            "'imagenet' or null (train from scratch)"
        )
    external = profile.external_cohort
    if external is not None and not profile.external_embedded \
            and not resolve_path(external).is_dir():
        raise ConfigError(
            f"external_cohort: {external!r} is neither an embedded site "
            f"({', '.join(EXTERNAL_PRESETS)}) nor an existing manifest folder (relative paths "
            "are taken from the project root); use null for no external validation"
        )
    if profile.device.startswith("cuda"):
        import torch

        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(profile.device.partition(":")[2] or 0)
        if index >= available:
            found = f"{available} CUDA device(s)" if available else "no CUDA GPU"
            raise ConfigError(
                f"device: {profile.device!r} but PyTorch finds {found} on this machine; use "
                "device: auto (the GPU when there is one, else the CPU) or cpu"
            )
    cores = os.cpu_count() or 1
    if profile.n_jobs < -cores:
        raise ConfigError(
            f"n_jobs: {profile.n_jobs} leaves no worker on this machine's {cores} cores (-k "
            f"means all but k-1 cores); use 1..{cores}, or -1 for one per core"
        )


def profile_file(profile: str | Path = "demo") -> Path:
    """The YAML file of a profile: ``configs/<name>.yaml`` for a name, else the path itself.

    Raises:
        ConfigError: unknown profile name, or a YAML path that does not exist.
    """
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = configs_dir() / f"{profile}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"profile: {str(profile)!r} is not a known profile ({', '.join(PROFILES)}) "
                "nor a YAML file"
            )
        return path
    path = resolve_path(path)
    if not path.is_file():
        raise ConfigError(f"profile: file {path} does not exist")
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a key given twice in one mapping (PyYAML keeps the last
    silently: ``epochs: 1`` ... ``epochs: 50`` would train 50 epochs without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _UniqueKeyLoader.construct_mapping)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


def read_yaml(path: str | Path, *, what: str = "profile") -> Any:
    """The YAML document of ``path``, read with the safe loader, a key given twice refused.

    Raises:
        ConfigError: one line naming the file, the line number and what is wrong (a syntax
            error, a duplicate key, a file that cannot be read as UTF-8 text).
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{what}: {path.name} line {exc.line}: key {exc.key!r} is given twice (first on "
            f"line {exc.first}); keep one"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise ConfigError(f"{what}: {path.name}{where}: not valid YAML ({problem})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{what}: {path.name}: not valid YAML ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: {path.name}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path.name} ({exc.strerror})") from None


def _profile_values(path: Path) -> dict[str, Any]:
    values = read_yaml(path) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"profile: {path.name} must hold a mapping of parameter: value")
    _check_known(values, source=path.name)
    values.setdefault("profile", path.stem)
    return values


def load_profile(profile: str | Path = "demo", **overrides: Any) -> Profile:
    """Load a profile by name (``configs/<name>.yaml``) or from a YAML file path.

    Args:
        profile: ``"smoke"``, ``"demo"``, ``"paper"`` or a path to a YAML file.
        **overrides: parameters that replace the file's values (CLI); every value given
            counts, ``None`` included (:func:`resolve_parameters` skips ``None`` instead).

    Returns:
        The validated :class:`Profile`.

    Raises:
        ConfigError: unknown profile or key, wrong type or out-of-range value; names the key.
    """
    values = _profile_values(profile_file(profile))
    _check_known(overrides, source="overrides")
    values.update(overrides)
    return Profile(**values)


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` (``magn study --set``) as ``(key, value)``; the value is read as a YAML
    scalar or flow list: ``epochs=2`` → 2, ``learning_rate=1e-3`` → 0.001,
    ``weights=imagenet`` → "imagenet", ``views=[sagittal,axial]`` → a list.

    Raises:
        ConfigError: no ``=``, an unknown key (named, with the closest known one), or a value
            that is not YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set epochs=2")
    _check_known({key: None}, source="--set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"{key}: cannot read the value {raw!r} of --set") from None
    if value is None:
        raise ConfigError(
            f"{key}: --set {key}=null cannot be passed on to the notebooks, where None means "
            f"'from the profile'; use a profile file of your own that sets {key}: null"
        )
    if isinstance(value, str) and float in typing.get_args(_field_types()[key]) + (
            _field_types()[key],):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string; the parameter is a number
            value = float(value)
        except ValueError:
            pass
    return key, value


@dataclass(frozen=True)
class EffectiveParameters:
    """A notebook's parameters after resolution (profile file → overrides → validation).

    Attributes:
        profile: every parameter of the run, validated.
        reference: the profile as named (``"smoke"`` or a YAML path).
        file: the profile's YAML file.
        keys: the parameters shown (those the notebook declares, plus any override).
        overrides: the parameters that replaced the profile's values.
        run_dir, work_dir: the run's report and work folders (given, else
            ``reports/<profile>`` and ``work/<name of run_dir>-<8 hex>``), as strings.
        manifest_dir: the manifest folder, ``None`` for the embedded cohort.
    """

    profile: Profile
    reference: str
    file: Path
    keys: tuple[str, ...]
    overrides: dict[str, Any]
    run_dir: str
    work_dir: str
    manifest_dir: str | None = None

    @property
    def values(self) -> dict[str, Any]:
        """``{key: effective value}`` of :attr:`keys`."""
        return {key: _copy(getattr(self.profile, key)) for key in self.keys}

    @property
    def sources(self) -> dict[str, str]:
        """``{key: "override" | "profile"}`` of :attr:`keys`."""
        return {key: "override" if key in self.overrides else "profile" for key in self.keys}

    def to_record(self) -> dict[str, Any]:
        """The JSON record a notebook publishes (and ``run_manifest.json`` keeps)."""
        return {
            "profile": self.profile.profile,
            "profile_file": _display(self.file),
            "parameters": self.values,
            "sources": self.sources,
            "run": {"run_dir": self.run_dir, "work_dir": self.work_dir,
                    "manifest_dir": self.manifest_dir},
        }

    def to_markdown(self) -> str:
        """The table of effective parameters shown near the top of each notebook."""
        n = len(self.overrides)
        lines = [
            f"**Effective parameters** of this run: profile `{self.profile.profile}` "
            f"(`{_display(self.file)}`), "
            + (f"{n} override{'s' if n > 1 else ''}." if n else "no override."),
            "",
            "| parameter | value | from |",
            "|---|---|---|",
        ]
        for key, value in self.values.items():
            source = "**override**" if key in self.overrides else "profile"
            lines.append(f"| `{key}` | {_format_value(value)} | {source} |")
        manifest = self.manifest_dir or "embedded synthetic cohort"
        for key, value in (("run_dir", self.run_dir), ("work_dir", self.work_dir),
                           ("manifest_dir", manifest)):
            lines.append(f"| `{key}` | {_format_value(value)} | run |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {
            "text/markdown": self.to_markdown(),
            "text/plain": json.dumps(self.to_record(), indent=1, default=str),
            PARAMETERS_MIMETYPE: json.loads(json.dumps(self.to_record(), default=str)),
        }


def _format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


def resolve_parameters(
    profile: str | Path | None = "demo",
    overrides: Mapping[str, Any] | None = None,
    *,
    keys: Sequence[str] = (),
    run_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    manifest_dir: str | Path | None = None,
) -> EffectiveParameters:
    """Resolve parameters: profile file → the overrides that are not ``None`` → validation.

    Args:
        profile: profile name or YAML path; ``None`` means ``"demo"``.
        overrides: ``{parameter: value}``; ``None`` values mean "from the profile" and are
            dropped (to run without pretrained weights where a profile has them, use a
            profile file that sets ``weights: null``).
        keys: the parameters to show first (a notebook's declared ones); overridden keys are
            always shown.
        run_dir, work_dir, manifest_dir: the run's folders (``None``: the defaults).

    Raises:
        ConfigError: unknown profile or key, wrong type or out-of-range value; names the key.
    """
    reference = "demo" if profile is None else str(profile)
    given = {k: _copy(v) for k, v in (overrides or {}).items() if v is not None}
    _check_known(given, source="overrides")
    file = profile_file(reference)
    values = _profile_values(file)
    values.update(given)
    effective = Profile(**values)
    shown = tuple(dict.fromkeys([*(k for k in keys if k != "profile"), *given]))
    run = str(run_dir) if run_dir else default_report_folder(effective.profile)
    work = str(work_dir) if work_dir else default_work_folder(run)
    return EffectiveParameters(
        profile=effective, reference=reference, file=file, keys=shown, overrides=given,
        run_dir=run, work_dir=work, manifest_dir=str(manifest_dir) if manifest_dir else None,
    )


def notebook_parameters(namespace: Mapping[str, Any]) -> EffectiveParameters:
    """A notebook's effective parameters, from its namespace (``globals()``).

    ``namespace["profile"]`` names the profile (default ``demo``); every profile parameter in
    the namespace whose value is not ``None`` overrides the profile's value (that is what
    papermill's ``-p`` and ``magn study --set`` give); ``run_dir``, ``work_dir`` and
    ``manifest_dir`` are the run's folders. A notebook opened by hand, with its ``None``
    defaults, therefore runs the ``demo`` profile unchanged. What the profile needs from this
    machine is checked too (:func:`check_runnable`), before the notebook computes anything.
    """
    fields = [f.name for f in dataclasses.fields(Profile) if f.name != "profile"]
    declared = [name for name in fields if name in namespace]
    params = resolve_parameters(
        namespace.get("profile"),
        {name: namespace[name] for name in declared},
        keys=declared,
        run_dir=namespace.get("run_dir"),
        work_dir=namespace.get("work_dir"),
        manifest_dir=namespace.get("manifest_dir"),
    )
    check_runnable(params.profile)
    return params

