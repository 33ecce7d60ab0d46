"""Patient-grouped stratified folds and the MAGN ablation grid (Chen et al. 2022, Table 2).

Folds: ``make_folds`` assigns every lesion to one of ``n_splits`` test folds with scikit-learn's
``StratifiedGroupKFold`` (shuffled, seeded): stratified by label, grouped by patient, so no
patient is in the training and test part of a fold at once (``scheme="patient-kfold"``, the
paper's). With ``scheme="leave-one-site-out"`` the folds are the sites (the manifest's
``centre``): every fold tests one site with models trained on the others. The folds are
written once per run (``save_folds`` / ``ensure_folds``) and read by every method (MAGN
configurations, radiomics, the trivial baselines).

Grid: views ∈ {sagittal, axial, coronal, all three ("multi-view")} × attention guidance
∈ {off, on} = the 8 ``CONFIGS``. ``run_grid`` trains every configuration on every fold and
collects out-of-fold predictions in the project's shared format (``method`` = "magn"), per-fold
metrics at threshold 0.5, and learning curves, with the settings of a
:class:`~magn_lib.settings.GridSettings`. Each (configuration, fold) lives in its own folder
under ``out_dir`` and is skipped when it finished before with the same fingerprint
(:func:`fold_fingerprint`: settings, lesions, data); a fold killed mid-training resumes from its
last epoch checkpoint. The trainings run one after the other, or as Ray tasks
(``executor: ray``, :mod:`magn_lib.executor`) into the same folders.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Dataset

from magn_lib import stats
from magn_lib.config import CV_SCHEMES, VIEWS, resolve_path
from magn_lib.errors import ConfigError, InputError
from magn_lib.files import save, write_csv, write_json
from magn_lib.layout import GridPaths
from magn_lib.model import MAGN
from magn_lib.progress import tqdm
from magn_lib.repro import set_determinism
from magn_lib.settings import GridSettings, NetworkSettings, settings_fingerprint
from magn_lib.train import fit_fold, predict

__all__ = [
    "CONFIGS",
    "CV_SCHEMES",
    "PREDICTION_COLUMNS",
    "GridConfig",
    "GridResult",
    "binary_metrics",
    "build_model",
    "config_by_name",
    "configs_for",
    "ensure_folds",
    "fold_dir",
    "folds_scheme",
    "fold_fingerprint",
    "initialisation_warnings",
    "load_fold_model",
    "load_folds",
    "make_folds",
    "patient_centres",
    "proposed_configs",
    "radiomics_comparator",
    "pooled_metrics",
    "run_grid",
    "save_folds",
    "scheme_text",
]

PREDICTION_COLUMNS: tuple[str, ...] = (
    "method", "config", "fold", "lesion_id", "patient_id", "label", "probability"
)
FOLD_COLUMNS: tuple[str, ...] = ("lesion_id", "patient_id", "label", "fold")
# a fold's checkpoint (weights, optimiser, RNG states: hundreds of MB for three ResNets) is
# written at most this often, so a killed fold loses at most about this much training time
CHECKPOINT_SECONDS = 120.0


@dataclass(frozen=True)
class GridConfig:
    """One ablation configuration: the views MAGN reads and whether attention guides it."""

    name: str
    views: tuple[str, ...]
    attention: bool


def _make_configs() -> tuple[GridConfig, ...]:
    view_sets = [("sagittal", ("sagittal",)), ("axial", ("axial",)),
                 ("coronal", ("coronal",)), ("multi-view", VIEWS)]
    return tuple(
        GridConfig(f"{name}+attention" if attention else name, views, attention)
        for name, views in view_sets
        for attention in (False, True)
    )


CONFIGS: tuple[GridConfig, ...] = _make_configs()


def config_by_name(name: str | GridConfig) -> GridConfig:
    """The :class:`GridConfig` called ``name`` (e.g. ``"multi-view+attention"``)."""
    if isinstance(name, GridConfig):
        return name
    for config in CONFIGS:
        if config.name == name:
            return config
    raise ConfigError(f"config: {name!r} is not one of {[c.name for c in CONFIGS]}")


def configs_for(views: Sequence[str]) -> list[GridConfig]:
    """The configurations of the grid that only read ``views`` (all 8 for the three views)."""
    return [c for c in CONFIGS if set(c.views) <= set(views)]


def proposed_configs(views: Sequence[str]) -> tuple[str, str]:
    """The proposed model's configuration and its unguided twin for a run's ``views``:
    ``("multi-view+attention", "multi-view")`` when all three views are used (the paper's
    MAGN), else those of the first view used, in the grid's order (``views: [sagittal]`` gives
    ``("sagittal+attention", "sagittal")``)."""
    if set(VIEWS) <= set(views):
        return "multi-view+attention", "multi-view"
    view = next(c.views[0] for c in CONFIGS if len(c.views) == 1 and c.views[0] in views)
    return f"{view}+attention", view


def radiomics_comparator(views: Sequence[str]) -> str:
    """The radiomics configuration MAGN is compared with: ``"multi-view"`` when the run uses
    more than one view, else that view's."""
    return "multi-view" if len(set(views)) > 1 else str(views[0])


# ---------------------------------------------------------------------------------------- folds

def _check_lesions(lesions: pd.DataFrame, *, source: str = "lesion table") -> pd.DataFrame:
    missing = [c for c in ("lesion_id", "patient_id", "label") if c not in lesions.columns]
    if missing:
        raise InputError(f"{source} lacks column(s) {missing}",
                         hint="it needs lesion_id, patient_id and label (1 = MM, 0 = metastasis)")
    table = lesions[["lesion_id", "patient_id", "label"]].copy()
    table["lesion_id"] = table["lesion_id"].astype(str)
    table["patient_id"] = table["patient_id"].astype(str)
    dup = table["lesion_id"][table["lesion_id"].duplicated()].unique().tolist()
    if dup:
        raise InputError(f"{source}: lesion_id(s) {dup[:5]} occur more than once")
    bad = table[~table["label"].isin([0, 1])]
    if len(bad):
        first = bad.iloc[0]
        raise InputError(f"{source}: label {first['label']!r} of lesion {first['lesion_id']} is "
                         "not 0 or 1", patient=first["patient_id"],
                         hint="use 1 for multiple myeloma and 0 for metastasis")
    table["label"] = table["label"].astype(int)
    return table


def patient_centres(patients: pd.DataFrame) -> pd.Series | None:
    """``patient_id -> centre`` from a patients table (the manifest's, or the ingest stage's
    copy of it), or ``None`` when it has no ``centre`` column."""
    if "centre" not in patients:
        return None
    return pd.Series(patients["centre"].to_numpy(), index=patients["patient_id"].astype(str),
                     name="centre")


def folds_scheme(folds: pd.DataFrame) -> str:
    """The ``cv_scheme`` a fold table was made with (:func:`make_folds`): its ``centre``
    column marks leave-one-site-out folds."""
    return "leave-one-site-out" if "centre" in folds else "patient-kfold"


def scheme_text(scheme: str, n_folds: int) -> str:
    """The cross-validation in words, for notebooks and reports: ``"5-fold cross-validation"``
    or ``"leave-one-site-out cross-validation (one fold per site)"``."""
    if scheme == "leave-one-site-out":
        return "leave-one-site-out cross-validation (one fold per site)"
    return f"{n_folds}-fold cross-validation"


def _site_folds(table: pd.DataFrame, centres: Mapping[str, Any] | pd.Series | None,
                source: str) -> pd.DataFrame:
    """Fold ``k`` = the ``k``-th centre in sorted order; adds a ``centre`` column."""
    hint = ("add a centre column to patients.csv (the site of each patient; "
            "magn_lib.manifest.combine_manifests writes one for several manifests), or use "
            "cv_scheme: patient-kfold")
    if centres is None:
        raise InputError(f"cv_scheme 'leave-one-site-out' needs each patient's centre, but "
                         f"{source} has no centre column", hint=hint)
    by_patient = pd.Series(centres) if not isinstance(centres, pd.Series) else centres
    by_patient = by_patient.copy()
    by_patient.index = by_patient.index.astype(str)
    centre = table["patient_id"].map(by_patient)
    blank = centre.isna() | (centre.astype(str).str.strip() == "")
    if blank.any():
        missing = sorted(table.loc[blank, "patient_id"].unique())
        raise InputError(f"cv_scheme 'leave-one-site-out': {len(missing)} patient(s) without a "
                         f"centre in {source}: {missing[:10]}", patient=missing[0], hint=hint)
    centre = centre.astype(str)
    names = sorted(centre.unique())
    if len(names) < 2:
        raise InputError(f"cv_scheme 'leave-one-site-out' needs patients of at least two "
                         f"centres, but {source} names one only ({names[0]!r})",
                         hint="add the other site's patients to the manifest "
                              "(magn_lib.manifest.combine_manifests), or use cv_scheme: "
                              "patient-kfold")
    table["fold"] = centre.map({name: k for k, name in enumerate(names)}).astype(int)
    table["centre"] = centre
    return table


def make_folds(lesions: pd.DataFrame, *, n_splits: int = 5, seed: int = 0,
               scheme: str = "patient-kfold",
               centres: Mapping[str, Any] | pd.Series | None = None,
               source: str = "the manifest's patients.csv") -> pd.DataFrame:
    """Assign each lesion a test fold: stratified by label and grouped by patient, or one fold
    per site.

    ``scheme="patient-kfold"`` (default, the paper's) uses
    ``sklearn.model_selection.StratifiedGroupKFold(n_splits, shuffle=True,
    random_state=seed)`` with the patient as group, so all lesions of a patient share one fold.
    ``scheme="leave-one-site-out"`` makes one fold per centre (fold ``k`` holds the patients of
    the ``k``-th centre in sorted order; ``n_splits`` and ``seed`` are not used), so that every
    model is tested on a site it was not trained on; a patient is in one centre, so the folds
    are grouped by patient too. Not stratified: each site keeps its own prevalence.

    Args:
        lesions: one row per lesion with ``lesion_id``, ``patient_id`` and ``label``
            (1 = MM, 0 = metastasis), and for leave-one-site-out ``centre`` when ``centres``
            is not given; other columns are ignored; not modified.
        n_splits: number of folds (≥ 2) of the patient k-fold.
        seed: shuffling seed of the patient k-fold.
        scheme: one of ``CV_SCHEMES`` (the profile's ``cv_scheme``).
        centres: ``patient_id -> centre`` (:func:`patient_centres` of the manifest's or the
            ingest stage's patients table); default: the lesions' ``centre`` column.
        source: what the centres come from, for error messages.

    Returns:
        DataFrame ``lesion_id`` (str), ``patient_id`` (str), ``label`` (int), ``fold``
        (int in ``0 .. n_folds-1``), in the input's row order; leave-one-site-out adds
        ``centre`` (str), the site each fold holds.

    Raises:
        ConfigError: an unknown scheme (naming ``cv_scheme`` and the choices), fewer than 2
            folds.
        InputError: missing columns, duplicate lesion ids, labels other than 0/1, or a class
            with fewer patients than folds (some fold could not hold it); for
            leave-one-site-out, no centres, a patient without one, or a single centre (naming
            ``source``).
    """
    if scheme not in CV_SCHEMES:
        raise ConfigError(f"cv_scheme: {scheme!r} is not one of {CV_SCHEMES}")
    if scheme == "leave-one-site-out":
        table = _check_lesions(lesions).reset_index(drop=True)
        if centres is None and "centre" in lesions:
            centres = dict(zip(lesions["patient_id"].astype(str), lesions["centre"],
                               strict=True))
        table = _site_folds(table, centres, source)
        _warn_one_class_folds(table)
        return table
    if n_splits < 2:
        raise ConfigError(f"n_splits: cross-validation needs at least 2 folds, got {n_splits}")
    table = _check_lesions(lesions).reset_index(drop=True)
    for label, name in ((1, "multiple myeloma"), (0, "metastasis")):
        n_pat = table.loc[table["label"] == label, "patient_id"].nunique()
        if n_pat < n_splits:
            raise InputError(
                f"{n_pat} patient(s) with {name} (label {label}) is fewer than the {n_splits} "
                "folds, so some test fold would hold no such lesion",
                hint="lower n_folds in the profile or add patients of that class",
            )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.full(len(table), -1, dtype=int)
    for k, (_, test) in enumerate(
        splitter.split(np.zeros(len(table)), table["label"], groups=table["patient_id"])
    ):
        fold[test] = k
    table["fold"] = fold
    _warn_one_class_folds(table)
    return table


def _warn_one_class_folds(table: pd.DataFrame) -> None:
    lacking = [int(k) for k in sorted(table["fold"].unique())
               if table.loc[table["fold"] == k, "label"].nunique() < 2]
    if lacking:
        warnings.warn(f"fold(s) {lacking} hold lesions of one class only; their AUC is undefined",
                      RuntimeWarning, stacklevel=3)


def save_folds(folds: pd.DataFrame, path: str | Path) -> Path:
    """Write the fold table as CSV (atomically; with its ``centre`` column when it has one);
    returns the path."""
    columns = [*FOLD_COLUMNS, *(["centre"] if "centre" in folds else [])]
    return write_csv(folds[columns], path)


def load_folds(path: str | Path) -> pd.DataFrame:
    """Read a fold table written by :func:`save_folds` (ids as str, label and fold as int;
    ``centre`` as str when the folds are sites)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("fold table does not exist", file=path,
                         hint="run notebook 03_magn_training first (it writes the folds; "
                              "magn study --to 03)")
    table = pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str, "centre": str},
                        keep_default_na=False)
    missing = [c for c in FOLD_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"fold table lacks column(s) {missing}", file=path)
    columns = [*FOLD_COLUMNS, *(["centre"] if "centre" in table else [])]
    return table[columns].astype({"label": int, "fold": int})


def ensure_folds(lesions: pd.DataFrame, path: str | Path, *, n_splits: int = 5,
                 seed: int = 0, scheme: str = "patient-kfold",
                 centres: Mapping[str, Any] | pd.Series | None = None,
                 source: str = "the manifest's patients.csv") -> pd.DataFrame:
    """The run's folds, written once to ``path`` and read by every method.

    The folds are a function of everything they depend on — the lesions, their patients and
    labels, the scheme (``scheme``: patient k-fold with ``n_splits``, stratified and grouped,
    or leave-one-site-out over ``centres``) and the ``seed`` — so they are made with
    :func:`make_folds` (which documents the arguments) and compared with the saved table: the
    saved one is kept when it is the same assignment, else replaced (a re-run with another
    seed, scheme or number of folds, or another cohort in the same run folder, never keeps the
    old folds).
    """
    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folds = make_folds(lesions, n_splits=n_splits, seed=seed, scheme=scheme,
                           centres=centres, source=source)
    if path.is_file():
        try:
            saved = load_folds(path)
        except (InputError, ValueError, pd.errors.ParserError):
            saved = None  # unreadable (a half-written file, say): written again below
        key = [*FOLD_COLUMNS, *(["centre"] if "centre" in folds else [])]
        if saved is not None and list(saved.columns) == key \
                and saved[key].sort_values("lesion_id").reset_index(drop=True) \
                .equals(folds[key].sort_values("lesion_id").reset_index(drop=True)):
            return saved  # (its warnings were given when it was made)
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    save_folds(folds, path)
    return folds


# -------------------------------------------------------------------------------------- metrics

def binary_metrics(y_true: Sequence[int] | np.ndarray, probability: Sequence[float] | np.ndarray,
                   *, threshold: float = 0.5) -> dict[str, float]:
    """:func:`magn_lib.stats.binary_metrics` with the counts of lesions and of MM lesions.

    Args:
        y_true: labels, 1 = MM, 0 = metastasis.
        probability: MM scores in [0, 1].
        threshold: a score ≥ threshold calls MM.

    Returns:
        ``{"n", "n_mm", "accuracy", "auc", "f1", "sensitivity", "specificity"}``; AUC (and the
        rate of an absent class) is NaN when only one class is present.
    """
    y = np.asarray(y_true, dtype=int)
    m = stats.binary_metrics(y, np.asarray(probability, dtype=float), threshold=threshold)
    return {"n": int(len(y)), "n_mm": int(y.sum()), **m}


def pooled_metrics(predictions: pd.DataFrame, *, threshold: float = 0.5) -> pd.DataFrame:
    """:func:`binary_metrics` of all out-of-fold predictions pooled, per (method, config)."""
    rows = []
    for (method, config), g in predictions.groupby(["method", "config"], sort=False):
        rows.append({"method": method, "config": config,
                     **binary_metrics(g["label"], g["probability"], threshold=threshold)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ the grid

class GridResult(NamedTuple):
    """What :func:`run_grid` returns (unpacks as a 3-tuple)."""

    predictions: pd.DataFrame  # PREDICTION_COLUMNS, method "magn"
    metrics: pd.DataFrame  # config, fold, n_train, n, n_mm, stats.METRICS, epochs, ...
    curves: pd.DataFrame  # config, fold + fit_fold's history columns


def build_model(config: str | GridConfig, network: NetworkSettings) -> MAGN:
    """A fresh :class:`MAGN` for ``config`` (its views) with the network of ``network``.

    ``network.weights`` is loaded as :class:`MAGN` documents; a relative checkpoint path is
    taken from the project root, as every path of a profile. Draws its initial weights from
    torch's global generator: seed before calling it.
    """
    config = config_by_name(config)
    weights = network.weights
    if weights is not None and weights != "imagenet":
        weights = resolve_path(weights)
    return MAGN(
        views=config.views,
        backbone=network.backbone,
        pooling=network.pooling,
        weights=weights,
        lse_r=network.lse_r,
        shared_backbone=network.shared_backbone,
    )


def fold_dir(out_dir: str | Path, config: str | GridConfig, fold: int) -> Path:
    """The folder of one (configuration, fold) under ``out_dir`` (named by
    :class:`~magn_lib.layout.GridPaths`)."""
    return GridPaths(Path(out_dir)).fold_dir(config_by_name(config).name, fold)


def load_fold_model(out_dir: str | Path, config: str | GridConfig, fold: int,
                    network: NetworkSettings, *,
                    map_location: str | torch.device = "cpu") -> MAGN:
    """The trained model of one (configuration, fold) saved by :func:`run_grid`, in eval mode.

    ``network`` is the grid's (its ``weights`` are not loaded: the saved state replaces them).
    """
    path = GridPaths(Path(out_dir)).fold(config_by_name(config).name, fold).model
    if not path.is_file():
        raise InputError("no saved model for this configuration and fold", file=path,
                         hint="list the configuration in the grid's keep_weights and run it")
    saved = torch.load(path, map_location=map_location, weights_only=True)
    model = build_model(config, replace(network, weights=None))
    model.normalize = bool(saved["normalize"])
    model.init_report = dict(saved["init_report"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def _fold_settings(settings: GridSettings, config: GridConfig, fold: int) -> GridSettings:
    """``settings`` as fold ``fold`` of ``config`` trains with (seed + fold; no attention
    weight without guidance)."""
    return replace(settings, train=settings.train.for_fold(fold, attention=config.attention))


def fold_fingerprint(settings: GridSettings, config: str | GridConfig, fold: int,
                     train_ids: Iterable[str], test_ids: Iterable[str],
                     data_fingerprint: str | None = None) -> str:
    """Hex SHA-256 of everything one (configuration, fold) result depends on: the settings the
    fold trains with (every field of :class:`~magn_lib.settings.GridSettings` at any depth but
    those marked not fingerprinted, via ``dataclasses.asdict``), the configuration, the fold,
    its training and test lesions and the data fingerprint. A finished fold is reused only when
    it matches."""
    config = config_by_name(config)
    return settings_fingerprint(
        config=[config.name, list(config.views), config.attention],
        fold=int(fold),
        settings=_fold_settings(settings, config, fold),
        train=sorted(train_ids),
        test=sorted(test_ids),
        data=data_fingerprint,
    )


def _write_json(obj: Any, path: Path) -> None:
    write_json(path, obj, default=str)


def _prepare_fold(config: GridConfig, fold: int, folds: pd.DataFrame, settings: GridSettings,
                  out_dir: Path, data_fingerprint: str | None) -> str | None:
    """``None`` when the fold finished before with the same fingerprint; otherwise its
    fingerprint, after making its folder ready (a stale one — other parameters or lesions —
    removed, ``started.json`` written)."""
    train_ids = folds.loc[folds["fold"] != fold, "lesion_id"].tolist()
    test_ids = folds.loc[folds["fold"] == fold, "lesion_id"].tolist()
    keep = settings.keeps_weights(config.name)
    files = GridPaths(out_dir).fold(config.name, fold)
    where, done = files.folder, files.done
    fingerprint = fold_fingerprint(settings, config, fold, train_ids, test_ids, data_fingerprint)
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint \
            and files.predictions.is_file() and files.history.is_file() \
            and (not keep or files.model.is_file()):
        return None
    if where.exists():
        started = files.started
        if not started.is_file() or json.loads(started.read_text()).get("fingerprint") \
                != fingerprint:
            shutil.rmtree(where)  # stale: other parameters or lesions
    where.mkdir(parents=True, exist_ok=True)
    _write_json({"fingerprint": fingerprint}, files.started)
    return fingerprint


def _run_one(config: GridConfig, fold: int, dataset_factory: Callable[..., Dataset],
             folds: pd.DataFrame, settings: GridSettings, out_dir: Path, *, progress: bool,
             data_fingerprint: str | None) -> None:
    """Train and evaluate one (configuration, fold) into its folder, unless it finished
    before (also the body of a Ray task: everything it needs comes as arguments)."""
    config = config_by_name(config)
    out_dir = Path(out_dir)
    fingerprint = _prepare_fold(config, fold, folds, settings, out_dir, data_fingerprint)
    if fingerprint is None:
        return
    train_ids = folds.loc[folds["fold"] != fold, "lesion_id"].tolist()
    test_ids = folds.loc[folds["fold"] == fold, "lesion_id"].tolist()
    keep = settings.keeps_weights(config.name)
    files = GridPaths(out_dir).fold(config.name, fold)
    done = files.done

    train = _fold_settings(settings, config, fold).train
    set_determinism(train.seed)
    model = build_model(config, settings.network)
    train_ds = dataset_factory(train_ids, train=True)
    test_ds = dataset_factory(test_ids, train=False)
    t0 = time.perf_counter()
    history = fit_fold(
        model, train_ds, train,
        val_ds=test_ds if settings.track_test else None,
        checkpoint_path=files.checkpoint,
        checkpoint_seconds=CHECKPOINT_SECONDS,
        resume=True,
        progress=progress,
        desc=f"{config.name} fold {fold}",
    )
    seconds = time.perf_counter() - t0
    pred = predict(model, test_ds, batch_size=train.batch_size)
    if sorted(pred["lesion_id"]) != sorted(test_ids):
        raise InputError(
            f"the test dataset of fold {fold} yields lesions {sorted(pred['lesion_id'])[:5]}... "
            f"instead of the fold's {sorted(test_ids)[:5]}...",
            hint="dataset_factory(lesion_ids, train=...) must return exactly those lesions",
        )
    pred.insert(0, "fold", fold)
    pred.insert(0, "config", config.name)
    pred.insert(0, "method", "magn")
    pred = pred[list(PREDICTION_COLUMNS)]
    write_csv(pred, files.predictions)
    write_csv(history, files.history)
    if keep:
        state = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "normalize": model.normalize, "init_report": model.init_report,
                 "config": config.name, "fold": fold}
        save(files.model, lambda stream: torch.save(state, stream))
    files.checkpoint.unlink(missing_ok=True)  # optimiser state is not needed any more
    metrics = {"config": config.name, "fold": fold, "n_train": len(train_ids),
               **binary_metrics(pred["label"], pred["probability"]),
               "epochs": len(history), "train_seconds": seconds,
               "weights_requested": model.init_report["requested"],
               "weights_used": model.init_report["used"],
               "init_message": model.init_report["message"]}
    _write_json({"fingerprint": fingerprint, "metrics": metrics}, done)


def _run_on_ray(tasks: Sequence[tuple[GridConfig, int]], dataset_factory: Callable[..., Dataset],
                folds: pd.DataFrame, settings: GridSettings, out_dir: Path, *, progress: bool,
                data_fingerprint: str | None) -> None:
    """The unfinished (configuration, fold) of ``tasks`` as Ray tasks
    (:func:`magn_lib.executor.run_on_ray`), each running :func:`_run_one` into its folder,
    its log and progress events beside its results."""
    from magn_lib.executor import Task, run_on_ray  # imports Ray only when it is used

    todo = [(c, k) for c, k in tasks
            if _prepare_fold(c, k, folds, settings, out_dir, data_fingerprint) is not None]
    device = settings.train.device
    # Ray gives a GPU task its GPU(s) as the only visible ones; a CPU task sees none
    # (magn_lib.executor hides them); "auto" asks for GPUs where the cluster has some
    use_gpu = None if device == "auto" else device != "cpu"
    work: list[Task] = []
    for config, fold in todo:
        files = GridPaths(out_dir).fold(config.name, fold)
        work.append(Task(label=f"{config.name} fold {fold}", log=files.log,
                         progress=files.progress,
                         kwargs={"config": config, "fold": fold}))
    run_on_ray(_run_one, work, settings.executor, use_gpu=use_gpu, progress=progress,
               desc="MAGN grid", unit="fold", done_before=len(tasks) - len(todo),
               shared={"dataset_factory": dataset_factory, "folds": folds,
                       "settings": settings, "out_dir": out_dir, "progress": progress,
                       "data_fingerprint": data_fingerprint})


def run_grid(
    dataset_factory: Callable[..., Dataset],
    folds: pd.DataFrame,
    configs: Sequence[str | GridConfig] = CONFIGS,
    settings: GridSettings | None = None,
    out_dir: str | Path = GridPaths.DEFAULT_NAME,
    *,
    progress: bool = True,
    data_fingerprint: str | None = None,
) -> GridResult:
    """Train and evaluate every configuration on every fold; resumable.

    Args:
        dataset_factory: ``dataset_factory(lesion_ids: list[str], *, train: bool) -> Dataset``
            with exactly those lesions (items as in :mod:`magn_lib.train`; ``train=True`` may
            augment). Items may carry more views than a configuration reads.
        folds: table from :func:`make_folds` / :func:`load_folds`.
        configs: configurations (names or :class:`GridConfig`), default all 8.
        settings: :class:`~magn_lib.settings.GridSettings` (``GridSettings.from_profile``):
            the network, the training (fold ``k`` trains with ``seed + k`` in every
            configuration; ``attention_weight`` is used by "+attention" configurations, 0
            otherwise), ``track_test`` (evaluate the held-out fold after every epoch for the
            learning curves, ``val_*`` columns, never used for model selection) and
            ``keep_weights`` (configurations whose trained weights are kept for
            :func:`load_fold_model` and Grad-CAM).
        out_dir: folder of the per-(config, fold) outputs (a run's
            :attr:`~magn_lib.layout.WorkPaths.grid_dir`; files named by
            :class:`~magn_lib.layout.FoldPaths`: predictions, history, done, kept model,
            transient checkpoint).
        progress: progress bars.
        data_fingerprint: a string that changes when the crops change (e.g. the cache's
            hash); a changed one retrains.

    With ``settings.executor.executor == "ray"`` the unfinished (configuration, fold) run as
    Ray tasks (:mod:`magn_lib.executor`), into the same folders, so a grid interrupted under
    one executor resumes under the other; each task's log is kept in its fold folder
    (``task.log``). A task that fails twice fails the grid with
    :class:`magn_lib.executor.TaskError` (naming configuration, fold and error) once the
    others have finished; nothing is returned then.

    Returns:
        :class:`GridResult` ``(predictions, metrics, curves)``: out-of-fold predictions in the
        shared format (``method`` = "magn"), one metrics row per (config, fold) with the
        metrics of :func:`magn_lib.stats.binary_metrics` at threshold 0.5 and the
        initialisation used, and the per-epoch learning curves.
    """
    if not isinstance(settings, GridSettings):
        raise ConfigError("run_grid needs settings: GridSettings.from_profile(profile), got "
                          f"{type(settings).__name__}")
    configs = [config_by_name(c) for c in configs]
    folds = folds.astype({"lesion_id": str, "patient_id": str, "fold": int, "label": int})
    out_dir = Path(out_dir)
    fold_ids = sorted(folds["fold"].unique().tolist())
    tasks = [(c, k) for c in configs for k in fold_ids]
    if settings.executor.executor == "ray":
        _run_on_ray(tasks, dataset_factory, folds, settings, out_dir, progress=progress,
                    data_fingerprint=data_fingerprint)
    else:
        for config, fold in tqdm(tasks, desc="MAGN grid", unit="fold", disable=not progress):
            _run_one(config, fold, dataset_factory, folds, settings, out_dir, progress=progress,
                     data_fingerprint=data_fingerprint)
    predictions, metrics, curves = [], [], []
    for config, fold in tasks:
        files = GridPaths(out_dir).fold(config.name, fold)
        predictions.append(pd.read_csv(files.predictions,
                                       dtype={"lesion_id": str, "patient_id": str}))
        metrics.append(json.loads(files.done.read_text())["metrics"])
        curve = pd.read_csv(files.history)
        curve.insert(0, "fold", fold)
        curve.insert(0, "config", config.name)
        curves.append(curve)
    return GridResult(pd.concat(predictions, ignore_index=True), pd.DataFrame(metrics),
                      pd.concat(curves, ignore_index=True))


def initialisation_warnings(metrics: pd.DataFrame) -> list[str]:
    """One message per distinct weights fall-back in a grid's metrics table (empty when every
    fold used the weights it asked for). The study report shows these on its front page."""
    if metrics.empty or "weights_requested" not in metrics:
        return []
    asked_for = metrics["weights_requested"].notna() & (metrics["weights_requested"] != "")
    fell_back = metrics[asked_for & (metrics["weights_requested"].astype(str)
                                     != metrics["weights_used"].astype(str))]
    messages = []
    for (asked, got), group in fell_back.groupby(["weights_requested", "weights_used"]):
        reasons = group["init_message"].dropna().astype(str)
        reason = reasons.iloc[0] if len(reasons) else ""
        messages.append(
            f"pretrained weights {asked!r} were requested but {got!r} was used in "
            f"{len(group)} of {len(metrics)} trained models"
            + (f": {reason}" if reason else "")
        )
    return messages
