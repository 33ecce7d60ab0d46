"""Study profiles: typed parameters for every notebook, loaded from ``configs/<profile>.yaml``.

A profile is one flat mapping of parameter name to value. Its defaults are the ``demo`` profile;
a profile file may set any subset. Unknown keys and values of the wrong type are errors that name
the key. The three shipped profiles are ``smoke`` (tests), ``demo`` (``make study`` on a laptop
CPU) and ``paper`` (the published settings, for one GPU); a path to a YAML file of one's own is
accepted wherever a profile name is.

Paths: everything relative is resolved against the project root (the folder holding
``pyproject.toml`` and ``magn_lib/``), so notebooks behave the same when run from JupyterLab
(whose working folder is ``notebooks/``) and from the study runner.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from magn_lib.errors import ConfigError
from magn_lib.layout import RunPaths, run_paths  # re-exported: they used to live here

__all__ = [
    "BACKBONES",
    "POOLINGS",
    "PROFILES",
    "VIEWS",
    "Profile",
    "RunPaths",
    "configs_dir",
    "load_profile",
    "profile_from_parameters",
    "project_root",
    "resolve_path",
    "run_paths",
]

VIEWS: tuple[str, ...] = ("sagittal", "coronal", "axial")
BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
POOLINGS: tuple[str, ...] = ("lse", "avg", "max")
PROFILES: tuple[str, ...] = ("smoke", "demo", "paper")
RADIOMICS_CLASSIFIERS: tuple[str, ...] = ("gradient_boosting", "random_forest")


@dataclass(frozen=True)
class Profile:
    """All parameters of one study run. Defaults are the ``demo`` profile.

    Units: ``crop_size`` in pixels of the source image (no resampling); ``learning_rate`` per
    Adam step; ``lr_step_epochs`` in epochs.
    """

    profile: str = "demo"
    seed: int = 2022
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
    learning_rate: float = 5e-4
    lr_step_epochs: int = 5
    lr_gamma: float = 0.9
    class_weighting: bool = False
    augment: bool = True
    device: str = "auto"
    num_workers: int = 0
    # validation
    n_folds: int = 5
    # radiomics baseline
    radiomics_settings: str = "configs/radiomics.yaml"
    radiomics_classifier: str = "gradient_boosting"
    radiomics_top_k: int = 30
    radiomics_keep: int = 15
    # statistics
    n_bootstrap: int = 2000
    # parallel workers for CPU-bound stages (-1 = one per core)
    n_jobs: int = -1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _field_types()[f.name])
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
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device: {self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        for name in ("n_patients", "crop_size", "epochs", "batch_size", "lr_step_epochs",
                     "radiomics_top_k", "radiomics_keep", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.n_folds < 2:
            raise ConfigError(f"n_folds: cross-validation needs >= 2 folds, got {self.n_folds}")
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


def profile_from_parameters(namespace: dict[str, Any]) -> Profile:
    """A notebook's parameters as a validated :class:`Profile`.

    Takes every profile parameter defined in ``namespace`` (a notebook passes ``globals()``:
    its ``parameters`` cell, possibly overridden by papermill) and the ``demo`` defaults for
    the rest. A notebook therefore declares, in its parameters cell, every profile parameter
    it uses.
    """
    known = {f.name for f in dataclasses.fields(Profile)}
    return Profile(**{k: _copy(v) for k, v in namespace.items() if k in known})


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


def load_profile(profile: str | Path = "demo", **overrides: Any) -> Profile:
    """Load a profile by name (``configs/<name>.yaml``) or from a YAML file path.

    Args:
        profile: ``"smoke"``, ``"demo"``, ``"paper"`` or a path to a YAML file.
        **overrides: parameters that replace the file's values (notebook parameters, CLI).

    Returns:
        The validated :class:`Profile`.

    Raises:
        ConfigError: unknown profile or key, wrong type or out-of-range value; names the key.
    """
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = configs_dir() / f"{profile}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"profile: {profile!r} is not a known profile ({', '.join(PROFILES)}) "
                "nor a YAML file"
            )
    else:
        path = resolve_path(path)
        if not path.is_file():
            raise ConfigError(f"profile: file {path} does not exist")
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"profile: {path.name} must hold a mapping of parameter: value")
    _check_known(values, source=path.name)
    _check_known(overrides, source="overrides")
    values.setdefault("profile", path.stem)
    values.update(overrides)
    return Profile(**values)
