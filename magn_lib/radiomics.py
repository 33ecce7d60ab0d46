"""Radiomics baseline: pyradiomics features per view, in-fold selection and classifiers.

The comparison method of Chen et al. 2022 (Front. Oncol. 12:981769, "Differential diagnosis
using MAGN and radiomics"): PyRadiomics features (van Griethuysen et al. 2017, Cancer Res
77:e104) per view, a random-forest importance ranking to the top 30 features, the top half of
those (15), and a gradient-boosting classifier (Methods) or a random forest (Results).

Three layers:

- :func:`extract_features` - one image/mask pair through
  ``radiomics.featureextractor.RadiomicsFeatureExtractor``; the values are pyradiomics' own.
- :func:`extract_crop_features` (2D, on the middle slice of the crops the network sees, the
  default) and :func:`extract_volume_features` (3D, image/mask file pairs) - many lesions in
  parallel (joblib) with a progress bar and an on-disk cache; lesions pyradiomics refuses are
  listed with the reason in a separate table, their feature rows are NaN.
- :func:`make_radiomics_pipeline` and :func:`cross_validate_radiomics` - a scikit-learn
  ``Pipeline`` (clean -> impute -> :class:`RandomForestSelector` -> classifier) fitted inside
  each training fold only, so no information from a test fold reaches selection or fitting.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import pickle
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_selection import SelectorMixin, VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from magn_lib.config import VIEWS, resolve_path
from magn_lib.errors import ConfigError, InputError
from magn_lib.files import atomic_open
from magn_lib.layout import feature_cache
from magn_lib.progress import tqdm

__all__ = [
    "CLASSIFIERS",
    "MULTI_VIEW",
    "RandomForestSelector",
    "RegionRefused",
    "combine_views",
    "cross_validate_radiomics",
    "extract_crop_features",
    "extract_features",
    "extract_volume_features",
    "feature_names",
    "load_settings",
    "make_radiomics_pipeline",
    "most_selected_features",
    "settings_3d",
]

CLASSIFIERS: tuple[str, ...] = ("gradient_boosting", "random_forest")
MULTI_VIEW = "multi-view"
_PARAM_SECTIONS = ("imageType", "featureClass", "setting", "voxelSetting")
_FAILURE_COLUMNS = ["lesion_id", "view", "reason"]
_OOF_COLUMNS = ["method", "config", "fold", "lesion_id", "patient_id", "label", "probability"]
_SELECTED_COLUMNS = ["config", "fold", "rank", "feature", "importance", "kept"]

Settings = Mapping[str, Any] | str | PathLike[str]
ImageLike = sitk.Image | str | PathLike[str]


# --------------------------------------------------------------------------- settings


def load_settings(settings: Settings) -> dict[str, Any]:
    """A pyradiomics parameter dictionary (``imageType``, ``featureClass``, ``setting``).

    Args:
        settings: a pyradiomics parameter file (YAML or JSON; relative paths are taken from the
            project root), a parameter dictionary with the sections of such a file, or a flat
            dictionary of settings (``{"binWidth": 25, "label": 1, ...}``), which is read as
            ``{"setting": settings}`` with pyradiomics' defaults for the rest (image type
            ``Original``, every feature class).

    Returns:
        A new dictionary, validated against pyradiomics' parameter schema.

    Raises:
        ConfigError: missing file, or a parameter pyradiomics' schema rejects.
    """
    if isinstance(settings, str | PathLike):
        path = resolve_path(settings)
        if not path.is_file():
            raise ConfigError(f"radiomics settings: parameter file {path} does not exist")
        with open(path) as f:
            params = yaml.safe_load(f) or {}  # YAML is a superset of JSON
        if not isinstance(params, dict):
            raise ConfigError(f"radiomics settings: {path.name} must hold a mapping")
        source = path.name
    elif isinstance(settings, Mapping):
        params = copy.deepcopy(dict(settings))
        source = "settings dictionary"
    else:
        raise ConfigError(
            f"radiomics settings: expected a parameter-file path or a dict, got "
            f"{type(settings).__name__}"
        )
    sections = [k for k in params if k in _PARAM_SECTIONS]
    if not sections:
        params = {"setting": params}
    elif len(sections) != len(params):
        stray = sorted(set(params) - set(_PARAM_SECTIONS))
        raise ConfigError(
            f"radiomics settings ({source}): keys {stray} are neither sections of a pyradiomics "
            f"parameter file {_PARAM_SECTIONS} nor may they be mixed with them"
        )
    try:
        _extractor(_canonical(params))
    except Exception as exc:  # pykwalify's SchemaError and friends: a bad parameter
        raise ConfigError(
            f"radiomics settings ({source}): pyradiomics rejected them: {exc}"
        ) from exc
    return params


def settings_3d(settings: Settings) -> dict[str, Any]:
    """The same parameters for 3D extraction: ``force2D`` off, ``shape2D`` replaced by ``shape``.

    Args:
        settings: as for :func:`load_settings` (typically ``configs/radiomics.yaml``).

    Returns:
        A new parameter dictionary.
    """
    params = load_settings(settings)
    params.setdefault("setting", {})
    params["setting"] = dict(params["setting"] or {}, force2D=False)
    classes = params.get("featureClass")
    if classes and "shape2D" in classes:
        classes = {("shape" if k == "shape2D" else k): v for k, v in classes.items()}
        # shape2D feature names differ from shape's; all of shape is the faithful 3D counterpart
        classes["shape"] = None
        params["featureClass"] = classes
    return params


def _canonical(params: Mapping[str, Any]) -> str:
    """The JSON text of a parameter dictionary (cache keys, extractor cache key).

    Key order is kept: pyradiomics computes (and names) the feature classes in that order.
    """
    return json.dumps(params, default=str)


@functools.lru_cache(maxsize=16)
def _extractor(canonical_params: str):
    """One ``RadiomicsFeatureExtractor`` per parameter set and process (schema check is slow)."""
    from radiomics import featureextractor

    return featureextractor.RadiomicsFeatureExtractor(json.loads(canonical_params))


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """One SimpleITK and one BLAS thread inside the block; the previous limits are restored.

    Parallelism is over lesions instead. Values then do not depend on the core count (ITK's
    threaded reductions differ in the last bits), and BLAS threads (pyradiomics' GLCM MCC
    runs eigvals on Ng x Ng matrices) neither fight the lesion workers nor each other.
    """
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


# --------------------------------------------------------------------------- one lesion


class RegionRefused(InputError):
    """Pyradiomics refused a region of interest; ``reason`` holds pyradiomics' own message."""

    def __init__(self, reason: str, *, file: str | PathLike[str] | None = None) -> None:
        self.reason = reason
        super().__init__(
            f"pyradiomics refused the region of interest: {reason}",
            file=file,
            hint="check the mask (label value, size, geometry)",
        )


def _read(item: ImageLike, what: str) -> sitk.Image:
    if isinstance(item, sitk.Image):
        return item
    path = Path(item)
    if not path.is_file():
        raise InputError(f"{what} file does not exist", file=path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"SimpleITK cannot read the {what}: {exc}", file=path) from exc


def extract_features(
    image: ImageLike,
    mask: ImageLike,
    *,
    settings: Settings,
    label: int | None = None,
    include_diagnostics: bool = False,
) -> dict[str, float]:
    """PyRadiomics features of one image and its mask.

    Args:
        image: a SimpleITK image or the path of an image file SimpleITK reads (NRRD, NIfTI).
        mask: a SimpleITK label image or its file path, on the image's grid (or correctable to
            it with the ``correctMask`` setting).
        settings: a pyradiomics parameter file or dictionary (see :func:`load_settings`).
        label: the mask value of the region; default the ``label`` setting (1).
        include_diagnostics: also return pyradiomics' ``diagnostics_*`` entries (versions,
            settings, image and mask summaries), whose values are strings, tuples or numbers
            as pyradiomics gives them.

    Returns:
        ``{feature name: value}`` with pyradiomics' names (``original_firstorder_Mean``,
        ``wavelet-LH_glcm_Contrast``, ...) and pyradiomics' values as Python floats, in
        pyradiomics' order.

    Raises:
        RegionRefused: (an InputError) a region pyradiomics refuses - label not in the mask,
            a single voxel, too few dimensions, image/mask geometry mismatch - with
            pyradiomics' reason.
        InputError: a missing or unreadable file.
        ConfigError: settings pyradiomics rejects.
    """
    params = load_settings(settings)
    return _extract(params, image, mask, label=label, include_diagnostics=include_diagnostics)


def _extract(
    params: Mapping[str, Any],
    image: ImageLike,
    mask: ImageLike,
    *,
    label: int | None = None,
    include_diagnostics: bool = False,
) -> dict[str, float]:
    extractor = _extractor(_canonical(params))
    image_ = _read(image, "image")
    mask_ = _read(mask, "mask")
    mask_file = None if isinstance(mask, sitk.Image) else mask
    try:
        with _single_threaded():
            result = extractor.execute(image_, mask_, label=label)
    except ValueError as exc:  # pyradiomics' way of refusing a region of interest
        raise RegionRefused(str(exc), file=mask_file) from exc
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key.startswith("diagnostics_"):
            if include_diagnostics:
                out[key] = value
        else:
            out[key] = float(value)
    return out


def feature_names(settings: Settings, *, size: int = 48) -> list[str]:
    """The feature names ``settings`` produce for one view of a crop (2D, as in the crop cache).

    Computed by running the extraction on a small synthetic disc (``size`` x ``size`` px), so
    the count is pyradiomics' own for these settings (the paper reports 768 per view).
    """
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 4) ** 2).astype(np.uint8)
    image = np.clip(rng.normal(0.4, 0.1, (size, size)) + 0.3 * mask, 0, 1).astype(np.float32)
    params = load_settings(settings)
    return list(_extract(params, _slice_image(image, None), _slice_image(mask, None)))


# --------------------------------------------------------------------------- many lesions


def _slice_image(array: np.ndarray, spacing: Sequence[float] | None) -> sitk.Image:
    """A 2D crop [H, W] as a one-slice 3D SimpleITK image (z, y, x) = (1, H, W).

    One slice in 3D (rather than a 2D image) so that ``force2D`` with ``force2Ddimension: 0``
    applies as pyradiomics documents it: texture and wavelets in the crop's plane.
    ``spacing`` is (row, column) in mm; without it pixels are 1 x 1 (shape features in px).
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(array)[None])
    if spacing is not None:
        image.SetSpacing((float(spacing[1]), float(spacing[0]), 1.0))
    return image


def _crop_task(
    canonical_params: str,
    lesion_id: str,
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float] | None,
) -> tuple[str, dict[str, float] | None, str | None]:
    """One lesion's features or pyradiomics' reason for refusing it (runs in a worker)."""
    params = json.loads(canonical_params)
    try:
        values = _extract(
            params, _slice_image(image, spacing), _slice_image(mask, spacing)
        )
    except RegionRefused as exc:
        return lesion_id, None, exc.reason
    return lesion_id, values, None


def _volume_task(
    canonical_params: str, lesion_id: str, image: str, mask: str
) -> tuple[str, dict[str, float] | None, str | None]:
    params = json.loads(canonical_params)
    try:
        values = _extract(params, image, mask)
    except RegionRefused as exc:  # a missing or unreadable file still raises
        return lesion_id, None, exc.reason
    return lesion_id, values, None


def _run_tasks(
    fn: Any, tasks: list[tuple], *, n_jobs: int, progress: bool, desc: str
) -> list[tuple[str, dict[str, float] | None, str | None]]:
    if not tasks:
        return []
    # One lesion is ~0.1-1 s of work, so batching by joblib's auto-tuning keeps the
    # inter-process overhead small; the generator feeds the progress bar as results arrive.
    parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator", batch_size="auto")
    results = parallel(joblib.delayed(fn)(*task) for task in tasks)
    return list(tqdm(results, total=len(tasks), desc=desc, unit="lesion", disable=not progress,
                     leave=False))


def _assemble(
    lesion_ids: Sequence[str],
    results: list[tuple[str, dict[str, float] | None, str | None]],
    skipped: dict[str, str],
    view: str | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Feature table (one row per input lesion, NaN where refused) and the failure table."""
    by_id = {lid: values for lid, values, _ in results if values is not None}
    reasons = dict(skipped)
    reasons.update({lid: reason for lid, values, reason in results if values is None})
    columns: list[str] = []
    seen: set[str] = set()
    for lid in lesion_ids:  # pyradiomics' order, first seen first
        for name in by_id.get(lid, {}):
            if name not in seen:
                seen.add(name)
                columns.append(name)
    rows = [[by_id.get(lid, {}).get(c, np.nan) for c in columns] for lid in lesion_ids]
    index = pd.Index(list(lesion_ids), name="lesion_id")
    features = pd.DataFrame(rows, index=index, columns=columns, dtype=np.float64)
    failures = pd.DataFrame(
        [(lid, view, reasons[lid]) for lid in lesion_ids if lid in reasons],
        columns=_FAILURE_COLUMNS,
    )
    return features, failures


def _cached(cache_dir: str | PathLike[str] | None, source: str, view: str | None, key: str,
            compute: Any):
    """Load ``(features, failures)`` from their cache file in ``cache_dir``
    (:func:`magn_lib.layout.feature_cache`) or compute and store them."""
    if cache_dir is None:
        return compute()
    folder = resolve_path(cache_dir)
    path = feature_cache(folder, source=source, view=view, key=key)
    if path.is_file():
        with open(path, "rb") as f:
            stored = pickle.load(f)
        if stored.get("key") == key:
            return stored["features"].copy(), stored["failures"].copy()
    features, failures = compute()
    # write-then-rename: a reader never sees half a file, even if this process dies
    with atomic_open(path, "wb") as stream:
        pickle.dump({"key": key, "features": features, "failures": failures}, stream)
    return features, failures


def _hash(*parts: Any) -> str:
    import radiomics

    h = hashlib.sha256()
    h.update(f"pyradiomics {radiomics.__version__}".encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _check_ids(lesion_ids: Sequence[str], n: int, what: str) -> list[str]:
    ids = [str(x) for x in lesion_ids]
    if len(ids) != n:
        raise InputError(f"{what}: {n} images but {len(ids)} lesion ids")
    dup = sorted(x for x, count in Counter(ids).items() if count > 1)
    if dup:
        raise InputError(f"{what}: duplicate lesion ids {dup[:5]}", hint="ids must be unique")
    return ids


def extract_crop_features(
    images: np.ndarray,
    masks: np.ndarray,
    lesion_ids: Sequence[str],
    *,
    settings: Settings,
    present: np.ndarray | Sequence[bool] | None = None,
    spacing: np.ndarray | None = None,
    view: str | None = None,
    channel: int = 1,
    n_jobs: int = -1,
    cache_dir: str | PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """2D pyradiomics features of one view of the crop cache, in parallel over lesions.

    The features come from the crop's middle channel (the lesion's largest-mask slice) with its
    mask - the same pixels and mask the network sees (DESIGN.md, "Radiomics: 2D features on the
    same crops and masks").

    Args:
        images: float [N, 3, S, S] crops (channels = slice below, largest-mask slice, slice
            above; values in [0, 1]) or float [N, S, S] single slices.
        masks: uint8 [N, S, S], 1 = lesion, 0 = background, for the middle slice.
        lesion_ids: N lesion ids (strings, unique).
        settings: pyradiomics parameters (``configs/radiomics.yaml``; see :func:`load_settings`).
        present: N booleans; False = the view is missing for that lesion (the row is NaN and the
            lesion is listed in the failure table). Default: all present.
        spacing: optional float [N, 2] in-plane pixel spacing (row, column) in mm; without it
            shape features are in pixels.
        view: the view's name, recorded in the failure table.
        channel: which channel of a 4D ``images`` array to use (1 = the largest-mask slice).
        n_jobs: joblib workers (-1 = one per core; 1 = in this process).
        cache_dir: folder for the cached result, keyed by a hash of the pixel data, masks,
            ids, presence, spacing, view, resolved settings and the pyradiomics version;
            None = no cache.
        progress: show a tqdm progress bar.

    Returns:
        ``(features, failures)``: features is a float64 DataFrame indexed by ``lesion_id``
        (input order, one row per input lesion; NaN for lesions not extracted) with
        pyradiomics' feature names as columns; failures has columns ``lesion_id, view, reason``
        (pyradiomics' reason, e.g. a single-pixel or empty mask, or an absent view).

    Raises:
        InputError: inconsistent array shapes, duplicate ids, non-finite pixel values or mask
            values other than 0/1 (naming the lesion).
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    if images.ndim == 4:
        if not 0 <= channel < images.shape[1]:
            raise InputError(f"crop images have {images.shape[1]} channels; channel {channel}")
        images = images[:, channel]
    if images.ndim != 3 or masks.shape != images.shape:
        raise InputError(
            f"crops: images {images.shape} and masks {masks.shape} must be [N, S, S] "
            "(or images [N, C, S, S]) on the same grid"
        )
    n = images.shape[0]
    ids = _check_ids(lesion_ids, n, "crops")
    present_ = np.ones(n, bool) if present is None else np.asarray(present, bool)
    if present_.shape != (n,):
        raise InputError(f"crops: 'present' has shape {present_.shape}, expected ({n},)")
    if spacing is not None:
        spacing = np.asarray(spacing, np.float64)
        if spacing.shape != (n, 2) or not np.all(spacing > 0):
            raise InputError(f"crops: spacing must be positive [N, 2] mm, got {spacing.shape}")
    problems = []
    for i in np.flatnonzero(present_):
        where = f"lesion {ids[i]}" + (f" ({view})" if view else "")
        if not np.all(np.isfinite(images[i])):
            problems.append(InputError(f"{where}: crop holds NaN or infinite values"))
        if not np.isin(masks[i], (0, 1)).all():
            problems.append(InputError(f"{where}: mask holds values other than 0 and 1"))
    if problems:
        raise InputError.combine(problems)

    params = load_settings(settings)
    canonical = _canonical(params)
    key = _hash("crops-2d", canonical, images, masks, ids, present_,
                spacing if spacing is not None else "px", view, channel)

    def compute() -> tuple[pd.DataFrame, pd.DataFrame]:
        skipped = {ids[i]: "view not present in the crop cache" for i in np.flatnonzero(~present_)}
        tasks = [
            (canonical, ids[i], images[i].astype(np.float32, copy=False),
             masks[i].astype(np.uint8, copy=False), None if spacing is None else spacing[i])
            for i in np.flatnonzero(present_)
        ]
        desc = f"radiomics {view}" if view else "radiomics"
        results = _run_tasks(_crop_task, tasks, n_jobs=n_jobs, progress=progress, desc=desc)
        return _assemble(ids, results, skipped, view)

    return _cached(cache_dir, "crops", view, key, compute)


def extract_volume_features(
    images: Sequence[str | PathLike[str]],
    masks: Sequence[str | PathLike[str]],
    lesion_ids: Sequence[str],
    *,
    settings: Settings,
    three_d: bool = True,
    view: str | None = None,
    n_jobs: int = -1,
    cache_dir: str | PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pyradiomics features of whole volumes (image/mask file pairs), in parallel over lesions.

    The 3D option of the radiomics baseline (the paper segmented the whole tumour in 3D).

    Args:
        images, masks: N image and mask file paths (NIfTI, NRRD, ...), mask on the image grid.
        lesion_ids: N unique lesion ids.
        settings: pyradiomics parameters; with ``three_d`` (default) they pass through
            :func:`settings_3d` (``force2D`` off, ``shape`` instead of ``shape2D``), so the
            project's 2D file serves both.
        three_d: convert the settings to 3D; False = use them as they are.
        view, n_jobs, cache_dir, progress: as for :func:`extract_crop_features`; the cache key
            hashes the files' bytes.

    Returns:
        ``(features, failures)`` as for :func:`extract_crop_features`.

    Raises:
        InputError: mismatched lengths, duplicate ids, missing or unreadable files (every
            missing file at once).
    """
    images = [Path(p) for p in images]
    masks = [Path(p) for p in masks]
    ids = _check_ids(lesion_ids, len(images), "volumes")
    if len(masks) != len(images):
        raise InputError(f"volumes: {len(images)} images but {len(masks)} masks")
    missing = [
        InputError(f"lesion {lid}: {what} file does not exist", file=p)
        for lid, im, mk in zip(ids, images, masks, strict=True)
        for what, p in (("image", im), ("mask", mk))
        if not p.is_file()
    ]
    if missing:
        raise InputError.combine(missing)
    params = settings_3d(settings) if three_d else load_settings(settings)
    canonical = _canonical(params)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in [*images, *masks]]
    key = _hash("volumes", canonical, digests, ids, view)

    def compute() -> tuple[pd.DataFrame, pd.DataFrame]:
        tasks = [(canonical, lid, str(im), str(mk))
                 for lid, im, mk in zip(ids, images, masks, strict=True)]
        desc = f"radiomics 3D {view}" if view else "radiomics 3D"
        results = _run_tasks(_volume_task, tasks, n_jobs=n_jobs, progress=progress, desc=desc)
        return _assemble(ids, results, {}, view)

    return _cached(cache_dir, "volumes", view, key, compute)


# --------------------------------------------------------------------------- model


class RandomForestSelector(SelectorMixin, BaseEstimator):
    """Keep the features a random forest ranks highest (Chen et al. 2022, Results).

    The paper ranks the radiomics features by random-forest importance, keeps 30, and uses
    "the first half" of the ranking (15) for classification. Here a forest is fitted on all
    features and the ``top_k`` with the highest impurity importance (ties broken by column
    order) are kept; with ``rerank`` a second forest is fitted on those ``top_k`` and ranks
    them again (the importances of a feature among its peers, without the hundreds of weak
    ones competing for splits), and the first ``keep`` of that ranking are selected. Without
    ``rerank`` the selection is simply the first ``keep`` of the first ranking.

    Args:
        top_k: how many features the ranking keeps (30 in the paper).
        keep: how many of those the classifier gets (15 in the paper).
        n_estimators: trees per ranking forest.
        rerank: re-rank the ``top_k`` with a second forest before keeping ``keep``.
        random_state: seed of the forests.
        n_jobs: threads per forest (scikit-learn's meaning).

    Attributes (after ``fit``):
        importances_: float [n_features_in_] first-forest impurity importances.
        ranking_: int [top_k'] column indices of the ranked features, best first.
        ranking_importances_: float [top_k'] importances of those (second forest with rerank).
        support_: bool [n_features_in_] the selected ``keep`` columns.
        ranked_features_, selected_features_: their names, best first (``feature_names_in_``
            when fitted on a DataFrame, else ``x<i>``).
    """

    def __init__(
        self,
        top_k: int = 30,
        keep: int = 15,
        *,
        n_estimators: int = 500,
        rerank: bool = True,
        random_state: int | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.top_k = top_k
        self.keep = keep
        self.n_estimators = n_estimators
        self.rerank = rerank
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _forest(self) -> RandomForestClassifier:
        return RandomForestClassifier(
            n_estimators=self.n_estimators, random_state=self.random_state, n_jobs=self.n_jobs
        )

    @staticmethod
    def _order(importances: np.ndarray) -> np.ndarray:
        # lexsort sorts by the last key first: descending importance, then column index
        return np.lexsort((np.arange(importances.size), -importances))

    def fit(self, X: Any, y: Any) -> RandomForestSelector:
        """Rank the columns of X [n_samples, n_features] (finite) by importance for y (0/1)."""
        X, y = validate_data(self, X, y)
        if not 1 <= self.keep <= self.top_k:
            raise ValueError(f"need 1 <= keep <= top_k, got keep={self.keep}, top_k={self.top_k}")
        n_features = X.shape[1]
        top_k = min(self.top_k, n_features)
        keep = min(self.keep, top_k)
        self.importances_ = self._forest().fit(X, y).feature_importances_
        top = self._order(self.importances_)[:top_k]
        if self.rerank:
            second = self._forest().fit(X[:, top], y).feature_importances_
            order = self._order(second)
            self.ranking_ = top[order]
            self.ranking_importances_ = second[order]
        else:
            self.ranking_ = top
            self.ranking_importances_ = self.importances_[top]
        self.support_ = np.zeros(n_features, bool)
        self.support_[self.ranking_[:keep]] = True
        names = getattr(self, "feature_names_in_", None)
        names = np.asarray(names if names is not None else [f"x{i}" for i in range(n_features)])
        self.ranked_features_ = [str(v) for v in names[self.ranking_]]
        self.selected_features_ = self.ranked_features_[:keep]
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


def _finite_or_nan(X: Any) -> Any:
    """±inf -> NaN (pyradiomics gives inf for some degenerate regions); a new object."""
    if isinstance(X, pd.DataFrame):
        return X.astype(np.float64).replace([np.inf, -np.inf], np.nan)
    X = np.array(X, dtype=np.float64)
    X[np.isinf(X)] = np.nan
    return X


def make_radiomics_pipeline(
    *,
    classifier: str = "gradient_boosting",
    top_k: int = 30,
    keep: int = 15,
    seed: int = 0,
    n_estimators: int = 500,
    n_jobs: int | None = None,
) -> Pipeline:
    """The radiomics model as one scikit-learn ``Pipeline`` (fit it on training folds only).

    Steps: ``finite`` (inf -> NaN) -> ``impute`` (NaN -> training-fold median; a column with
    no value in the training fold becomes 0) -> ``constant`` (drops the columns that are
    constant in the training fold, so also those all-NaN ones) -> ``select``
    (:class:`RandomForestSelector`, top ``top_k`` then ``keep``) -> ``classify``
    (``GradientBoostingClassifier``, the paper's Methods, or ``RandomForestClassifier``, its
    Results; scikit-learn defaults, ``random_state=seed``).

    Args:
        classifier: ``"gradient_boosting"`` or ``"random_forest"``.
        top_k, keep: the selection sizes (30 and 15 in the paper).
        seed: ``random_state`` of every random step.
        n_estimators: trees per ranking forest (and of the random-forest classifier).
        n_jobs: threads for the forests.

    Returns:
        An unfitted ``Pipeline`` that outputs pandas between steps, so selected feature names
        are kept (``pipeline["select"].selected_features_``).
    """
    if classifier == "gradient_boosting":
        clf = GradientBoostingClassifier(random_state=seed)
    elif classifier == "random_forest":
        clf = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
    else:
        raise ConfigError(f"radiomics classifier: {classifier!r} is not one of {CLASSIFIERS}")
    selector = RandomForestSelector(
        top_k, keep, n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs
    )
    pipe = Pipeline([
        ("finite", FunctionTransformer(_finite_or_nan, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("constant", VarianceThreshold(0.0)),
        ("select", selector),
        ("classify", clf),
    ])
    return pipe.set_output(transform="pandas")


def _as_table(features: pd.DataFrame, view: str) -> pd.DataFrame:
    if "lesion_id" in features.columns:
        features = features.set_index("lesion_id")
    features = features.copy()
    features.index = features.index.astype(str)
    if features.index.has_duplicates:
        dup = sorted(set(features.index[features.index.duplicated()]))[:5]
        raise InputError(f"{view} radiomics table: duplicate lesion ids {dup}")
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise InputError(
            f"{view} radiomics table: non-numeric columns {bad[:5]}",
            hint="pass the feature table from extract_crop_features (features only)",
        )
    return features.astype(np.float64)


def combine_views(features_by_view: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One table of all views' features, columns prefixed ``<view>_`` (outer join on lesion)."""
    tables = [
        _as_table(features_by_view[v], v).add_prefix(f"{v}_")
        for v in _ordered_views(features_by_view)
    ]
    return pd.concat(tables, axis=1, join="outer")


def _ordered_views(features_by_view: Mapping[str, Any]) -> list[str]:
    unknown = [v for v in features_by_view if v not in VIEWS]
    if unknown:
        raise InputError(f"radiomics: unknown views {unknown}; expected some of {VIEWS}")
    return [v for v in VIEWS if v in features_by_view]


def _check_folds(folds: pd.DataFrame) -> pd.DataFrame:
    need = ["lesion_id", "patient_id", "label", "fold"]
    missing = [c for c in need if c not in folds.columns]
    if missing:
        raise InputError(f"fold table lacks columns {missing}", hint="use magn_lib.cv.make_folds")
    folds = folds[need].copy()
    folds["lesion_id"] = folds["lesion_id"].astype(str)
    folds["patient_id"] = folds["patient_id"].astype(str)
    if folds["lesion_id"].duplicated().any():
        raise InputError("fold table: duplicate lesion ids")
    if not folds["label"].isin([0, 1]).all():
        raise InputError("fold table: labels must be 0 (metastasis) or 1 (multiple myeloma)")
    folds["label"] = folds["label"].astype(int)
    folds["fold"] = folds["fold"].astype(int)
    for fold in sorted(folds["fold"].unique()):
        train = folds.loc[folds["fold"] != fold, "label"]
        if train.nunique() < 2:
            raise InputError(f"fold {fold}: its training folds hold one class only")
    return folds


def _fit_fold(
    pipeline: Pipeline, X: pd.DataFrame, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, list[str], np.ndarray, int]:
    model = clone(pipeline).fit(X.iloc[train], y[train])
    probability = model.predict_proba(X.iloc[test])[:, list(model.classes_).index(1)]
    selector = model["select"]
    keep = int(selector.support_.sum())
    return probability, selector.ranked_features_, selector.ranking_importances_, keep


def cross_validate_radiomics(
    features_by_view: Mapping[str, pd.DataFrame],
    folds: pd.DataFrame,
    *,
    classifier: str = "gradient_boosting",
    top_k: int = 30,
    keep: int = 15,
    seed: int = 0,
    n_jobs: int = 1,
    n_estimators: int = 500,
    multi_view: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold radiomics predictions per view and multi-view on the shared folds.

    For every configuration (each view given, and ``"multi-view"``: selection over the
    concatenated features of all views given, columns prefixed with the view name) and every
    fold, a fresh :func:`make_radiomics_pipeline` is fitted on the other folds' lesions and
    scores the fold's lesions. Nothing of a test fold (labels or feature values) reaches the
    imputation, the selection or the classifier fitted for it.

    Args:
        features_by_view: ``{view: features}``; each a feature table from
            :func:`extract_crop_features` (indexed by ``lesion_id`` or with that column).
            Every lesion of ``folds`` must have a row; all-NaN rows (lesions pyradiomics
            refused) are imputed with training-fold medians.
        folds: the shared fold table (``magn_lib.cv.make_folds``): ``lesion_id, patient_id,
            label, fold``.
        classifier: ``"gradient_boosting"`` (default, paper's Methods) or ``"random_forest"``.
        top_k, keep: selection sizes (30, 15).
        seed: ``random_state`` of every fitted step.
        n_jobs: joblib workers over (configuration, fold) fits (-1 = one per core).
        n_estimators: trees per ranking forest.
        multi_view: add the multi-view configuration (when more than one view is given).

    Returns:
        ``(oof, selected)``. ``oof``: the shared out-of-fold format, columns ``method``
        ("radiomics"), ``config`` (view name or "multi-view"), ``fold``, ``lesion_id``,
        ``patient_id``, ``label``, ``probability`` (of multiple myeloma). ``selected``: per
        configuration and fold the ``top_k`` ranked features, columns ``config, fold, rank``
        (1 = best), ``feature``, ``importance`` (in the ranking forest), ``kept`` (among the
        ``keep`` given to the classifier).

    Raises:
        InputError: malformed fold table, unknown views, or lesions without a feature row.
    """
    folds = _check_folds(folds)
    views = _ordered_views(features_by_view)
    if not views:
        raise InputError("radiomics: no feature table given")
    ids = folds["lesion_id"].tolist()
    tables: dict[str, pd.DataFrame] = {}
    problems = []
    for view in views:
        table = _as_table(features_by_view[view], view)
        absent = [lid for lid in ids if lid not in table.index]
        if absent:
            problems.append(InputError(
                f"{view} radiomics table has no row for {len(absent)} lesions of the fold table "
                f"({', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''})",
                hint="extract features for every lesion (refused ones are kept as NaN rows)",
            ))
        if table.shape[1] == 0:
            problems.append(InputError(f"{view} radiomics table has no feature columns"))
        tables[view] = table
    if problems:
        raise InputError.combine(problems)
    configs = {v: tables[v].loc[ids] for v in views}
    if multi_view and len(views) > 1:
        configs[MULTI_VIEW] = combine_views({v: tables[v] for v in views}).loc[ids]

    pipeline = make_radiomics_pipeline(
        classifier=classifier, top_k=top_k, keep=keep, seed=seed, n_estimators=n_estimators,
        n_jobs=1,
    )
    y = folds["label"].to_numpy()
    fold_ids = folds["fold"].to_numpy()
    jobs = [(config, fold) for config in configs for fold in sorted(np.unique(fold_ids))]
    fitted = joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(_fit_fold)(
            pipeline, configs[config], y,
            np.flatnonzero(fold_ids != fold), np.flatnonzero(fold_ids == fold),
        )
        for config, fold in jobs
    )
    oof_parts, selected_rows = [], []
    for (config, fold), (probability, ranked, importances, n_kept) in zip(
        jobs, fitted, strict=True
    ):
        part = folds.loc[fold_ids == fold, ["lesion_id", "patient_id", "label"]].copy()
        part.insert(0, "fold", int(fold))
        part.insert(0, "config", config)
        part.insert(0, "method", "radiomics")
        part["probability"] = probability
        oof_parts.append(part)
        selected_rows += [
            (config, int(fold), r + 1, name, float(imp), r < n_kept)
            for r, (name, imp) in enumerate(zip(ranked, importances, strict=True))
        ]
    oof = pd.concat(oof_parts, ignore_index=True)[_OOF_COLUMNS]
    selected = pd.DataFrame(selected_rows, columns=_SELECTED_COLUMNS)
    return oof, selected


def most_selected_features(
    selected: pd.DataFrame, *, config: str | None = None, kept_only: bool = False
) -> pd.DataFrame:
    """How often each feature was ranked across folds (the paper's Table S2, per config).

    Args:
        selected: the second table of :func:`cross_validate_radiomics`.
        config: one configuration (e.g. ``"sagittal"``); None = every configuration.
        kept_only: count only the features given to the classifier (``keep``), not all
            ``top_k`` ranked ones.

    Returns:
        Columns ``config, feature, n_folds`` (folds in which it was ranked/kept),
        ``fraction`` (of the configuration's folds), ``mean_rank`` (over those folds);
        sorted by configuration, most frequent first, then by mean rank and name.
    """
    table = selected if config is None else selected[selected["config"] == config]
    if kept_only:
        table = table[table["kept"]]
    n_folds = selected.groupby("config")["fold"].nunique()
    out = (
        table.groupby(["config", "feature"], sort=False)
        .agg(n_folds=("fold", "nunique"), mean_rank=("rank", "mean"))
        .reset_index()
    )
    out["fraction"] = out["n_folds"] / out["config"].map(n_folds)
    out = out.sort_values(
        ["config", "n_folds", "mean_rank", "feature"], ascending=[True, False, True, True]
    )
    return out[["config", "feature", "n_folds", "fraction", "mean_rank"]].reset_index(drop=True)
