"""Where MAGN looks: Grad-CAM heatmaps per view and attention-fidelity numbers.

Grad-CAM (Selvaraju et al. 2017), as the paper uses it for its Figure 5, comes from the
``grad-cam`` package (``pytorch_grad_cam.GradCAM``). That library feeds one input tensor to a
model with one output per class; MAGN takes a dict of views and returns one MM logit, so a thin
wrapper stacks the views along the channel axis (``Tensor[B, 3·V, H, W]``) and returns the
logit as ``Tensor[B, 1]``. The target is the package's ``BinaryClassifierOutputTarget``: the
logit for MM (class 1) and its negation for metastasis (class 0). The target layer is the view's
backbone ``layer4``. Heatmaps are ReLU'd, min-max scaled per image to [0, 1] and resized to the
input by the library.

Fidelity: for every lesion and view, the fraction of heatmap energy inside the lesion mask
(``energy_inside``; a uniform map scores the mask's area fraction, reported as ``mask_fraction``)
and the pointing game (Zhang et al. 2018: is the heatmap's maximum inside the mask, optionally
within a tolerance in pixels). Both are computed from the model's own class activation maps
(normalised as the attention loss sees them, upsampled bilinearly) and from Grad-CAM, so a
guided and an unguided model can be compared per view (:func:`compare_guidance`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from scipy import ndimage
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from magn_lib.losses import normalized_class_cam
from magn_lib.settings import NetworkSettings

__all__ = [
    "FIDELITY_METHODS",
    "attention_fidelity",
    "class_cams",
    "compare_guidance",
    "energy_inside",
    "gradcam",
    "grid_fidelity",
    "held_out_maps",
    "pointing_game",
    "summarize_fidelity",
]

FIDELITY_METHODS: tuple[str, ...] = ("cam", "grad-cam")


class _StackedViews(nn.Module):
    """MAGN seen as a one-input, one-output model: ``Tensor[B, 3·V, H, W] -> Tensor[B, 1]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        images = dict(zip(self.model.views, x.split(3, dim=1), strict=True))
        return self.model(images)[0].unsqueeze(1)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _resolve_targets(model: nn.Module, images: Mapping[str, Tensor],
                     targets: Sequence[int] | Tensor | None) -> list[int]:
    if targets is None:
        with torch.no_grad():
            logits = model({v: images[v].to(_device(model)) for v in model.views})[0]
        return [int(t) for t in (logits >= 0).tolist()]
    return [int(t) for t in torch.as_tensor(targets).view(-1).tolist()]


def gradcam(
    model: nn.Module,
    images: Mapping[str, Tensor],
    *,
    targets: Sequence[int] | Tensor | None = None,
    views: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Grad-CAM heatmap of each view for a trained MAGN (``pytorch_grad_cam.GradCAM``).

    Args:
        model: a :class:`~magn_lib.model.MAGN`; its mode, parameters' ``requires_grad`` flags
            and ``.grad`` are left as they were.
        images: ``{view: Tensor[B, 3, H, W]}`` in [0, 1].
        targets: per sample the class explained, 1 = MM (the logit), 0 = metastasis (its
            negation); ``None`` = the predicted class.
        views: the views to explain (default: all of the model's).

    Returns:
        ``{view: ndarray[B, H, W]}`` float32 in [0, 1] at input resolution.
    """
    views = tuple(model.views if views is None else views)
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    wrapper = _StackedViews(model)
    out: dict[str, np.ndarray] = {}
    try:
        model.eval()
        # gradients flow from the input instead of the parameters: no .grad is touched
        for p in model.parameters():
            p.requires_grad_(False)
        x = torch.cat([images[v] for v in model.views], dim=1).to(_device(model)).float()
        labels = _resolve_targets(model, images, targets)
        cam_targets = [BinaryClassifierOutputTarget(t) for t in labels]
        batch = x.shape[0]
        todo = ("shared",) if model.shared_backbone else views
        for key in todo:
            layer = model.feature_layer(views[0] if key == "shared" else key)
            cam = GradCAM(model=wrapper, target_layers=[layer])
            try:
                maps = cam(input_tensor=x.detach().clone().requires_grad_(True),
                           targets=cam_targets)
            finally:
                cam.activations_and_grads.release()
            if key == "shared":
                # the shared backbone ran once over all views stacked along the batch
                maps = maps.reshape(len(model.views), batch, *maps.shape[1:])
                out.update({v: maps[model.views.index(v)] for v in views})
            else:
                out[key] = maps
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return out


@torch.no_grad()
def class_cams(
    model: nn.Module,
    images: Mapping[str, Tensor],
    *,
    targets: Sequence[int] | Tensor | None = None,
) -> dict[str, np.ndarray]:
    """The model's own class activation maps of the explained class, at input resolution.

    The same maps the attention loss trains (``s_y · CAM``, min-max normalised per sample;
    :func:`magn_lib.losses.normalized_class_cam`), upsampled bilinearly to ``H × W``.

    Args:
        model: a :class:`~magn_lib.model.MAGN` (mode restored).
        images: ``{view: Tensor[B, 3, H, W]}``.
        targets: per sample 1 = MM, 0 = metastasis; ``None`` = the predicted class.

    Returns:
        ``{view: ndarray[B, H, W]}`` float32 in [0, 1].
    """
    was_training = model.training
    model.eval()
    try:
        dev = _device(model)
        logits, cams = model({v: images[v].to(dev) for v in model.views})
        labels = ([int(t) for t in (logits >= 0).tolist()] if targets is None
                  else [int(t) for t in torch.as_tensor(targets).view(-1).tolist()])
        y = torch.tensor(labels, device=dev)
        out = {}
        for v, cam in cams.items():
            size = tuple(images[v].shape[-2:])
            a = normalized_class_cam(cam, y).unsqueeze(1)
            up = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            out[v] = up.squeeze(1).clamp(0, 1).cpu().numpy().astype(np.float32)
        return out
    finally:
        model.train(was_training)


def energy_inside(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fraction of each heatmap's (non-negative) energy inside the mask.

    Args:
        heatmaps: ``[B, H, W]`` non-negative (negative values are clipped to 0).
        masks: ``[B, H, W]`` lesion masks (≥ 0.5 is inside).

    Returns:
        ``float64[B]`` in [0, 1]; NaN where a heatmap is all zero or a mask empty.
    """
    h = np.clip(np.asarray(heatmaps, dtype=float), 0, None)
    m = np.asarray(masks) >= 0.5
    total = h.sum(axis=(1, 2))
    inside = (h * m).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = inside / total
    frac[(total <= 0) | ~m.any(axis=(1, 2))] = np.nan
    return frac


def pointing_game(heatmaps: np.ndarray, masks: np.ndarray, *,
                  tolerance_px: float = 0.0) -> np.ndarray:
    """Pointing game: 1 when the heatmap's maximum lies in the mask (or within
    ``tolerance_px`` pixels of it, Euclidean), else 0.

    Ties take the first maximum in row-major order; a flat heatmap (no maximum) is a miss; an
    empty mask gives NaN.

    Returns:
        ``float64[B]`` of 0/1/NaN.
    """
    h = np.asarray(heatmaps, dtype=float)
    m = np.asarray(masks) >= 0.5
    hits = np.full(len(h), np.nan)
    for i in range(len(h)):
        if not m[i].any():
            continue
        if h[i].max() <= h[i].min():
            hits[i] = 0.0
            continue
        r, c = np.unravel_index(np.argmax(h[i]), h[i].shape)
        if tolerance_px > 0:
            dist = ndimage.distance_transform_edt(~m[i])
            hits[i] = float(dist[r, c] <= tolerance_px)
        else:
            hits[i] = float(m[i, r, c])
    return hits


def attention_fidelity(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 16,
    methods: Sequence[str] = FIDELITY_METHODS,
    use_labels: bool = True,
    tolerance_px: float = 0.0,
) -> pd.DataFrame:
    """Attention fidelity of one model on a dataset, per lesion, view and heatmap method.

    Args:
        model: a trained :class:`~magn_lib.model.MAGN` (mode and gradients left as found).
        dataset: items ``{"images", "masks", "label", "lesion_id", "patient_id"}``.
        batch_size: items per pass.
        methods: ``"cam"`` (the model's own CAM) and/or ``"grad-cam"``.
        use_labels: explain the true class (as the attention loss does); else the predicted.
        tolerance_px: pointing-game tolerance in pixels.

    Returns:
        Tidy DataFrame: ``lesion_id``, ``patient_id``, ``label``, ``view``, ``method``,
        ``energy_inside``, ``pointing_hit``, ``mask_fraction`` (the lesion's share of the
        image: what a uniform heatmap would score on ``energy_inside``).
    """
    unknown = [m for m in methods if m not in FIDELITY_METHODS]
    if unknown:
        raise ValueError(f"methods {unknown} not among {FIDELITY_METHODS}")
    rows = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images = batch["images"]
        targets = batch["label"].view(-1).round().long() if use_labels else None
        maps: dict[str, dict[str, np.ndarray]] = {}
        if "cam" in methods:
            maps["cam"] = class_cams(model, images, targets=targets)
        if "grad-cam" in methods:
            maps["grad-cam"] = gradcam(model, images, targets=targets)
        for method, per_view in maps.items():
            for view, heat in per_view.items():
                mask = batch["masks"][view].numpy()
                energy = energy_inside(heat, mask)
                hit = pointing_game(heat, mask, tolerance_px=tolerance_px)
                area = (mask >= 0.5).mean(axis=(1, 2))
                for i in range(len(heat)):
                    rows.append({
                        "lesion_id": str(batch["lesion_id"][i]),
                        "patient_id": str(batch["patient_id"][i]),
                        "label": int(round(float(batch["label"][i]))),
                        "view": view, "method": method,
                        "energy_inside": float(energy[i]), "pointing_hit": float(hit[i]),
                        "mask_fraction": float(area[i]),
                    })
    return pd.DataFrame(rows)


def compare_guidance(
    guided: nn.Module,
    unguided: nn.Module,
    dataset: Dataset,
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`attention_fidelity` of an attention-guided and an unguided model on the same
    lesions, stacked with a ``guidance`` column ("guided" / "unguided"). ``kwargs`` go to
    :func:`attention_fidelity`."""
    parts = []
    for name, model in (("guided", guided), ("unguided", unguided)):
        table = attention_fidelity(model, dataset, **kwargs)
        table.insert(0, "guidance", name)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def summarize_fidelity(table: pd.DataFrame,
                       by: Sequence[str] = ("guidance", "view", "method")) -> pd.DataFrame:
    """Mean energy inside the mask, pointing-game hit rate and mean mask fraction per group
    (NaNs, i.e. empty masks or flat maps, excluded), with the number of lesions ``n``."""
    by = [c for c in by if c in table.columns]
    return (table.groupby(by, sort=False)
            .agg(energy_inside=("energy_inside", "mean"),
                 pointing_hit_rate=("pointing_hit", "mean"),
                 mask_fraction=("mask_fraction", "mean"),
                 n=("lesion_id", "count"))
            .reset_index())


def grid_fidelity(
    out_dir: str | Path,
    folds: pd.DataFrame,
    dataset_factory: Any,
    network: NetworkSettings,
    *,
    guided: str = "multi-view+attention",
    unguided: str = "multi-view",
    **kwargs: Any,
) -> pd.DataFrame:
    """Guided vs unguided fidelity over a finished grid, each lesion scored by the models of
    the fold that held it out (so no model is judged on lesions it trained on).

    Args:
        out_dir: the ``run_grid`` output folder (both configurations kept their weights).
        folds: the run's fold table.
        dataset_factory: as for :func:`magn_lib.cv.run_grid` (called with ``train=False``).
        network: the network settings the grid ran with (``NetworkSettings.from_profile``).
        guided, unguided: configuration names compared.
        **kwargs: passed to :func:`attention_fidelity`.

    Returns:
        :func:`compare_guidance`'s table with a ``fold`` column.
    """
    from magn_lib.cv import load_fold_model  # cv imports train/model only; keep explain leaf

    parts = []
    for fold in sorted(folds["fold"].unique().tolist()):
        ids = folds.loc[folds["fold"] == fold, "lesion_id"].astype(str).tolist()
        ds = dataset_factory(ids, train=False)
        table = compare_guidance(load_fold_model(out_dir, guided, fold, network),
                                 load_fold_model(out_dir, unguided, fold, network), ds, **kwargs)
        table.insert(1, "fold", fold)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def held_out_maps(
    out_dir: str | Path,
    folds: pd.DataFrame,
    dataset_factory: Any,
    network: NetworkSettings,
    lesion_ids: Sequence[str],
    *,
    models: Mapping[str, str] = MappingProxyType(
        {"with guidance": "multi-view+attention", "without guidance": "multi-view"}),
) -> list[dict[str, Any]]:
    """Grad-CAM of chosen lesions by each named model of the fold that held them out (the
    paper's Fig. 5: the same lesions with and without attention guidance). ``network``: the
    network settings the grid ran with.

    Returns:
        One dict per lesion: ``lesion_id``, ``label``, ``fold``, ``images`` ({view: float32
        [3, H, W]}), ``masks`` ({view: [H, W]}), ``cams`` ({model title: {view: [H, W]}}),
        ``probability`` ({model title: MM probability}).
    """
    from magn_lib.cv import load_fold_model

    fold_of = dict(zip(folds["lesion_id"].astype(str), folds["fold"].astype(int), strict=True))
    out = []
    for lesion_id in lesion_ids:
        fold = fold_of[str(lesion_id)]
        item = dataset_factory([str(lesion_id)], train=False)[0]
        images = {v: t[None] for v, t in item["images"].items()}
        target = [int(round(float(item["label"])))]
        cams, probability = {}, {}
        for title, config in models.items():
            model = load_fold_model(out_dir, config, fold, network)
            sub = {v: images[v] for v in model.views}
            cams[title] = {v: m[0] for v, m in gradcam(model, sub, targets=target).items()}
            with torch.no_grad():
                probability[title] = float(torch.sigmoid(model(sub)[0])[0])
        out.append({
            "lesion_id": str(lesion_id), "label": target[0], "fold": fold,
            "images": {v: t.numpy() for v, t in item["images"].items()},
            "masks": {v: t.numpy() for v, t in item["masks"].items()},
            "cams": cams, "probability": probability,
        })
    return out
