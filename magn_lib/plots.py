"""Every figure of the study, and the Table 2 builder.

Figures are built on ``matplotlib.figure.Figure`` objects directly (no pyplot state): each
function returns its Figure, never shows it and closes nothing; a Figure that is no longer
referenced is simply garbage-collected. Jupyter displays a returned Figure inline.
``save_figure`` writes PNG and SVG atomically.

Figures follow Chen et al. 2022 (Front. Oncol. 12:981769): Fig. 4 (ROC per fold and pooled,
radiomics curve, readers as points) and Fig. 5 (CAMs with and without attention guidance in
three views), plus ROC comparison, calibration and decision curves beyond the paper.

Configuration names: MAGN and radiomics configs are ``"<view>"`` or ``"<view>+attention"``
with view in ``sagittal, axial, coronal, multi-view``; readers are method ``"reader"`` with
config ``"reader1"``, ``"reader2"``. ``PAPER_TABLE2`` is matched to these names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from magn_lib import stats
from magn_lib.config import VIEWS
from magn_lib.display import format_interval
from magn_lib.files import atomic_open

__all__ = [
    "CAPTIONS",
    "PALETTE",
    "PAPER_TABLE2",
    "Captioned",
    "captioned",
    "curve_styles",
    "format_table2",
    "paper_table2",
    "plot_calibration",
    "plot_cam_grid",
    "plot_crops_grid",
    "plot_decision_curve",
    "plot_learning_curves",
    "plot_roc_comparison",
    "plot_roc_folds",
    "plot_transfer_example",
    "plot_transfer_quality",
    "save_figure",
    "table2",
]

# Reference values, copied from Chen et al. 2022, Front. Oncol. 12:981769, Table 2 ("The
# Comparison of Classification Performance among Different Methods and Configurations on 5-fold
# Cross-validation"): ACC, AUC as mean ± SD over the 5 folds (readers: one value), F1-score.
# Columns: method, view, attention, accuracy, auc, auc_sd, f1. For orientation only: another
# cohort.
PAPER_TABLE2: tuple[tuple[str, str, bool, float, float, float, float], ...] = (
    ("magn", "sagittal", False, 0.7692, 0.7546, 0.1011, 0.6696),
    ("magn", "sagittal", True, 0.8061, 0.7492, 0.0671, 0.6893),
    ("magn", "axial", False, 0.7419, 0.7020, 0.0268, 0.5760),
    ("magn", "axial", True, 0.7739, 0.7196, 0.0441, 0.6096),
    ("magn", "coronal", False, 0.7466, 0.6642, 0.0808, 0.5552),
    ("magn", "coronal", True, 0.7834, 0.7322, 0.1112, 0.6694),
    ("magn", "multi-view", False, 0.7876, 0.7661, 0.0841, 0.6685),
    ("magn", "multi-view", True, 0.8108, 0.7847, 0.1030, 0.7120),
    ("radiomics", "sagittal", False, 0.6035, 0.6438, 0.0445, 0.3474),
    ("radiomics", "axial", False, 0.6221, 0.6417, 0.0651, 0.3992),
    ("radiomics", "coronal", False, 0.6682, 0.6587, 0.0514, 0.4616),
    ("radiomics", "multi-view", False, 0.7098, 0.7616, 0.0386, 0.5363),
    ("reader", "reader1", False, 0.6544, 0.6417, float("nan"), 0.5562),
    ("reader", "reader2", False, 0.6912, 0.7085, float("nan"), 0.6455),
)
# Okabe & Ito's colour-blind-safe palette (Color Universal Design, 2008), strongest first
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9",
                            "#000000", "#F0E442")
_LINE_STYLES: tuple[str, ...] = ("-", "--", "-.", ":")

# what each figure shows and what to look at (under the figure in the notebook and on the
# front page)
CAPTIONS: Mapping[str, str] = {
    "transfer_quality": "Each point is one transferred mask compared with the phantom's true "
    "mask; diamonds are medians with their interquartile range. Look for Dice near 1 and "
    "surface distances below one voxel on every scanner: a scanner that lags points to its "
    "geometry.",
    "transfer_example": "Green: the lesion outline, drawn on the sagittal images and carried "
    "over to the coronal and axial images; yellow: the crop the models see. Check that the "
    "outline sits on the lesion in every view.",
    "crops": "The crops the network and the radiomics model see, by class; green: the lesion "
    "outline. Look for lesions centred and inside their crop: an outline cut by the border "
    "means the crop is smaller than the lesion.",
    "learning_curves": "Mean over folds, band: range over folds; solid lines: with attention "
    "guidance. Look for a training loss that falls: a flat or rising loss means the network "
    "did not learn with these settings.",
    "fig4_roc": "Thin lines: each fold; thick black line: all folds pooled after ranking within "
    "each fold; dashed: the radiomics model and the trivial first-order baseline, pooled the "
    "same way; points: the readers' calls "
    "(on the embedded cohort simulated readers, not radiologists). Curves nearer the top-left "
    "corner separate the classes better; the spread of the fold curves shows how much the "
    "result depends on the split.",
    "roc_all_models": "The ROC curve of every model, pooled after ranking within folds; colour "
    "and line style together identify a model (legend). Look for curves that stay above the "
    "others over the whole range, not at one point only.",
    "fig5_gradcam": "Where the network looks (Grad-CAM), without and with attention "
    "guidance; green: the lesion outline. Look whether the bright area falls on the lesion: "
    "guidance should move it there.",
    "calibration": "Predicted probability of myeloma against the observed share; the dotted "
    "diagonal is perfect calibration. Points below it mean the model overstates the chance "
    "of myeloma, points above it understate it.",
    "decision_curves": "Net benefit of acting on the model's call at each threshold "
    "probability, against treating all or none. A model helps only where its curve lies "
    "above both grey reference lines.",
    "external_calibration": "The frozen models' predicted probability of myeloma at the "
    "external site against the observed share, lesions grouped by predicted probability; the "
    "dotted diagonal is perfect calibration. Points below it: the model overstates the chance "
    "of myeloma there; above it: understates it. With few lesions each point is uncertain.",
    "external_decision_curves": "Net benefit at the external site of acting on the frozen "
    "models' probabilities at each threshold, against treating all or none. A model helps "
    "there only where its curve lies above both grey reference lines.",
}
_SECTIONS = {"magn": "Attention guided network", "radiomics": "Radiomics model",
             "first-order": "Trivial baseline (first-order lesion intensity statistics)",
             "reader": "Radiologist assessment"}
_SIMULATED_READERS_SECTION = "Simulated readers (not radiologists)"
_VIEW_ALIASES = {"multi-view": "multi-view", "multiview": "multi-view", "multi_view": "multi-view",
                 "all": "multi-view", "sagittal": "sagittal", "axial": "axial",
                 "coronal": "coronal"}


def paper_table2() -> pd.DataFrame:
    """``PAPER_TABLE2`` as a DataFrame (columns method, view, attention, accuracy, auc, auc_sd,
    f1)."""
    return pd.DataFrame(PAPER_TABLE2, columns=["method", "view", "attention", "accuracy", "auc",
                                               "auc_sd", "f1"])


def _parse_config(method: str, config: str) -> tuple[str, bool]:
    """(view, attention) of a config name like ``"coronal+attention"``; readers: (name, False)."""
    if method == "reader":
        return str(config), False
    parts = [p.strip().lower() for p in str(config).split("+")]
    view = _VIEW_ALIASES.get(parts[0], parts[0])
    return view, "attention" in parts[1:]


# --------------------------------------------------------------------------------------------
# saving


def save_figure(fig: Figure, path_without_suffix: str | os.PathLike[str], *,
                dpi: int = 150) -> tuple[Path, Path]:
    """Write ``<path>.png`` and ``<path>.svg``, each via a temporary file and an atomic rename.

    Parent folders are created. The SVG carries no date, so identical figures give identical
    files.

    Returns:
        (png_path, svg_path).
    """
    base = Path(path_without_suffix)
    written = []
    for fmt, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
        target = base.with_name(base.name + f".{fmt}")
        with atomic_open(target, "wb") as stream:
            fig.savefig(stream, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
        written.append(target)
    return written[0], written[1]


# --------------------------------------------------------------------------------------------
# ROC


def curve_styles(n: int) -> list[dict[str, str]]:
    """``n`` distinct ``{"color", "linestyle"}`` pairs for lines on one axes.

    Colours cycle through :data:`PALETTE` (8) and the line style moves on with every round,
    so no two of the first 32 lines look alike, in colour or in grey print.
    """
    return [{"color": PALETTE[i % len(PALETTE)],
             "linestyle": _LINE_STYLES[(i + i // len(PALETTE)) % len(_LINE_STYLES)]}
            for i in range(n)]


class Captioned:
    """A Figure with the caption to show under it (displayed as ``<figure>`` with a
    ``<figcaption>``, the image embedded as PNG)."""

    def __init__(self, fig: Figure, caption: str, *, dpi: int = 100) -> None:
        self.fig, self.caption, self.dpi = fig, caption, dpi

    def _png(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.fig.savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight",
                         metadata={"Software": None})
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        import base64
        import html

        data = base64.b64encode(self._png()).decode("ascii")
        return (f'<figure class="magn-figure"><img alt="{html.escape(self.caption)}" '
                f'src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(self.caption)}</figcaption></figure>")

    def __repr__(self) -> str:
        return f"Figure: {self.caption}"


def captioned(fig: Figure, caption: str) -> Captioned:
    """Show ``fig`` with ``caption`` under it: what the figure shows and what to look at."""
    if not caption.strip():
        raise ValueError("a figure needs a caption that says what to look at")
    return Captioned(fig, caption)


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (5.5, 5.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _roc_axes(ax: Axes) -> None:
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, gid="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")


def _roc_curve(sub: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.metrics import roc_curve

    y = sub["label"].to_numpy()
    p = sub["probability"].to_numpy()
    fpr, tpr, _ = roc_curve(y, p)
    return fpr, tpr, stats.binary_metrics(y, p)["auc"]


def _operating_point(sub: pd.DataFrame, threshold: float = 0.5) -> tuple[float, float]:
    m = stats.binary_metrics(sub["label"], sub["probability"], threshold=threshold)
    return 1.0 - m["specificity"], m["sensitivity"]


def _reader_points(ax: Axes, readers: pd.DataFrame, *, simulated: bool) -> None:
    from magn_lib.readers import reader_label

    markers = ["o", "s", "^", "D", "v", "P"]
    for i, (name, sub) in enumerate(readers.groupby("config", sort=True)):
        x, y = _operating_point(sub)
        ax.scatter([x], [y], marker=markers[i % len(markers)], s=60, zorder=5,
                   edgecolor="black", label=f"{reader_label(name, simulated=simulated)} (call)",
                   gid=f"reader:{name}")


def plot_roc_folds(
    oof: pd.DataFrame,
    *,
    method: str = "magn",
    config: str = "multi-view+attention",
    compare: Sequence[tuple[str, str]] = (("radiomics", "multi-view"),),
    readers: pd.DataFrame | None = None,
    simulated_readers: bool = False,
    ranked: bool = True,
    ax: Axes | None = None,
) -> Figure:
    """ROC of one configuration per fold and pooled, other models' pooled curves, readers as
    points (the paper's Fig. 4).

    Lines: one per fold (thin, label ``fold k``), the pooled out-of-fold curve (thick,
    ``pooled``; the paper's "overall performance"), one dashed pooled curve per ``compare``
    model present in ``oof``, and the chance diagonal (gid ``"chance"``). Readers (method
    ``"reader"`` rows of ``readers``, or of ``oof`` when ``readers`` is None) are scatter points
    at their call's (1 - specificity, sensitivity). A fold holding one class has no ROC curve
    and is not drawn.

    Args:
        oof: out-of-fold predictions.
        method, config: the model drawn per fold.
        compare: (method, config) of models drawn pooled only.
        readers: reader predictions in the same format (``readers.reader_predictions``).
        simulated_readers: the readers are simulated (the embedded cohort): their legend
            entries say so (``readers.reader_label``).
        ranked: pool the folds after ranking within each fold (``stats.rank_within_folds``;
            the fold models' probabilities are not on one scale), labelled so; ``False`` pools
            the raw probabilities. Per-fold curves are the same either way.
        ax: draw into these axes instead of a new Figure.

    Returns:
        The Figure.
    """
    data = stats.check_oof(oof)
    pooled_data = stats.rank_within_folds(data) if ranked else data
    pooled_name = "pooled, ranked within folds" if ranked else "pooled"
    sub = data[(data["method"] == method) & (data["config"] == config)]
    if sub.empty:
        raise ValueError(f"no predictions for {stats.model_name(method, config)}")
    fig, ax = _new_axes(ax)
    _roc_axes(ax)
    folds = list(sub.groupby("fold", sort=True))
    for (fold, part), style in zip(folds, curve_styles(len(folds)), strict=True):
        if part["label"].nunique() < 2:
            continue
        fpr, tpr, auc = _roc_curve(part)
        ax.plot(fpr, tpr, linewidth=1, alpha=0.8, color=style["color"],
                linestyle="-", label=f"fold {fold} (AUC {auc:.2f})")
    pooled = pooled_data[(pooled_data["method"] == method) & (pooled_data["config"] == config)]
    fpr, tpr, auc = _roc_curve(pooled)
    ax.plot(fpr, tpr, color="black", linewidth=2.5, label=f"{pooled_name} (AUC {auc:.2f})")
    others = curve_styles(len(folds) + len(compare))[len(folds):]
    for (cm, cc), style in zip(compare, others, strict=True):
        other = pooled_data[(pooled_data["method"] == cm) & (pooled_data["config"] == cc)]
        if other.empty:
            continue
        fpr, tpr, auc = _roc_curve(other)
        ax.plot(fpr, tpr, linestyle="--", linewidth=2, color=style["color"],
                label=f"{stats.model_name(cm, cc)} (AUC {auc:.2f})")
    rd = data[data["method"] == "reader"] if readers is None else stats.check_oof(readers)
    if len(rd):
        _reader_points(ax, rd, simulated=simulated_readers)
    ax.set_title(f"ROC: {stats.model_name(method, config)}")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_roc_comparison(
    oof: pd.DataFrame,
    *,
    models: Sequence[tuple[str, str]] | None = None,
    simulated_readers: bool = False,
    ranked: bool = True,
    ax: Axes | None = None,
) -> Figure:
    """Pooled out-of-fold ROC curve per model; readers (method ``"reader"``) as points.

    Args:
        oof: out-of-fold predictions of any number of models.
        models: (method, config) pairs to draw; default all, in table order.
        simulated_readers: label the reader points as simulated readers.
        ranked: pool after ranking within each fold (``stats.rank_within_folds``), as the
            title says; ``False`` pools the raw probabilities.

    Returns:
        The Figure (one line per non-reader model plus the chance diagonal).
    """
    data = stats.check_oof(oof)
    # curves from the (ranked) scores; reader points from their calls, never ranked
    scores = stats.rank_within_folds(data) if ranked else data
    if models is None:
        models = list(dict.fromkeys(zip(data["method"], data["config"], strict=True)))
    fig, ax = _new_axes(ax)
    _roc_axes(ax)
    reader_rows = []
    curves = [m for m in models if m[0] != "reader"]
    styles = dict(zip(curves, curve_styles(len(curves)), strict=True))
    for method, config in models:
        if method == "reader":
            reader_rows.append(data[(data["method"] == method) & (data["config"] == config)])
            continue
        sub = scores[(scores["method"] == method) & (scores["config"] == config)]
        fpr, tpr, auc = _roc_curve(sub)
        ax.plot(fpr, tpr, linewidth=1.8, **styles[(method, config)],
                label=f"{stats.model_name(method, config)} (AUC {auc:.2f})")
    if reader_rows:
        _reader_points(ax, pd.concat(reader_rows), simulated=simulated_readers)
    ax.set_title("ROC, pooled out-of-fold predictions"
                 + (", ranked within folds" if ranked else ""))
    ax.legend(loc="lower right", fontsize="x-small")
    return fig


# --------------------------------------------------------------------------------------------
# calibration and decision curves


def plot_calibration(curves: pd.DataFrame, *, ax: Axes | None = None,
                     names: Mapping[str, str] | None = None,
                     title: str = "Calibration (pooled out-of-fold)") -> Figure:
    """Reliability diagram from ``stats.calibration_table`` (one line per model + diagonal).

    Args:
        curves: the table; a model is ``(method, config)``, or ``method`` alone when the table
            has no ``config`` column (the external validation's, one frozen model per method).
        names: display names of the models (by ``model_name(method, config)`` or method).
        title: the axes' title.

    Returns:
        The Figure; each model's line is labelled with its Brier score.
    """
    fig, ax = _new_axes(ax)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, gid="perfect")
    by = [c for c in ("method", "config") if c in curves.columns]
    groups = list(curves.groupby(by, sort=False))
    for (key, sub), style in zip(groups, curve_styles(len(groups)), strict=True):
        key = key if isinstance(key, tuple) else (key,)
        name = stats.model_name(*key) if len(key) == 2 else str(key[0])
        name = (names or {}).get(name, name)
        ax.plot(sub["mean_predicted"], sub["fraction_positive"], marker="o", **style,
                label=f"{name} (Brier {sub['brier'].iloc[0]:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability of MM")
    ax.set_ylabel("observed fraction MM")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="x-small")
    return fig


def plot_decision_curve(curves: pd.DataFrame, *, ax: Axes | None = None,
                        y_min: float = -0.05, names: Mapping[str, str] | None = None,
                        title: str = "Decision curves (pooled out-of-fold)") -> Figure:
    """Net benefit against threshold probability from ``stats.decision_curve``.

    "Treat all" and "treat none" are grey reference lines; one line per model (``names``:
    display names by the table's ``model``).

    Returns:
        The Figure.
    """
    fig, ax = _new_axes(ax, figsize=(6.5, 4.5))
    styles = {"all": {"color": "0.4", "linestyle": "--"}, "none": {"color": "0.2",
                                                                   "linestyle": ":"}}
    groups = list(curves.groupby("model", sort=False))
    models = [m for m, _ in groups if m not in styles]
    styles = {**dict(zip(models, curve_styles(len(models)), strict=True)), **styles}
    for model, sub in groups:
        label = {"all": "treat all as MM", "none": "treat none"}.get(
            model, (names or {}).get(model, model))
        ax.plot(sub["threshold"], sub["net_benefit"], label=label, linewidth=1.6,
                **styles[model])
    top = float(np.nanmax(curves["net_benefit"])) if len(curves) else 1.0
    ax.set_ylim(y_min, max(top * 1.1, 0.05))
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold probability of MM")
    ax.set_ylabel("net benefit")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="x-small")
    return fig


# --------------------------------------------------------------------------------------------
# Table 2


def table2(
    oof: pd.DataFrame | None = None,
    *,
    metrics: pd.DataFrame | None = None,
    threshold: float = 0.5,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The paper's Table 2 from our predictions, with the paper's values beside ours.

    Every model in ``oof`` (MAGN configs, radiomics configs, readers), ordered as in the paper.
    AUC as mean ± SD over folds (how the paper reports it; the primary number), pooled after
    ranking within each fold with a patient-bootstrap CI (``auc_ranked*``), and the raw pooled
    AUC with the patient-bootstrap (``auc_low/high``) and the lesion-level DeLong CI
    (``auc_delong_low/high``, secondary); ACC and F1 pooled over folds with patient-bootstrap
    CIs. All numbers are those of ``stats.metrics_table`` (pass its output as ``metrics`` to
    avoid computing it twice).

    Returns:
        DataFrame with columns ``section, method, config, view, attention, n_lesions,
        accuracy, accuracy_low, accuracy_high, auc_fold_mean, auc_fold_sd, auc_ranked,
        auc_ranked_low, auc_ranked_high, auc, auc_low, auc_high, auc_delong_low,
        auc_delong_high, f1, f1_low, f1_high, paper_accuracy, paper_auc, paper_auc_sd,
        paper_f1`` (paper columns NaN where the paper has no such row).
    """
    if metrics is None:
        if oof is None:
            raise ValueError("give oof or metrics")
        metrics = stats.metrics_table(oof, threshold=threshold, level=level,
                                      n_resamples=n_resamples, seed=seed)
    paper = paper_table2()
    paper_order = {(m, v, a): i for i, (m, v, a) in
                   enumerate(zip(paper["method"], paper["view"], paper["attention"], strict=True))}
    method_order = {"magn": 0, "radiomics": 1, "first-order": 2, "reader": 3}
    rows = []
    for i, r in enumerate(metrics.itertuples(index=False)):
        view, attention = _parse_config(r.method, r.config)
        key = (r.method, view, attention)
        match = paper[(paper["method"] == r.method) & (paper["view"] == view)
                      & (paper["attention"] == attention)]
        ref = match.iloc[0] if len(match) else None
        rows.append({
            "_sort": (method_order.get(r.method, 4), paper_order.get(key, 100 + i)),
            "section": _SECTIONS.get(r.method, str(r.method)), "method": r.method,
            "config": r.config, "view": view, "attention": attention,
            "n_lesions": r.n_lesions,
            "accuracy": r.accuracy, "accuracy_low": r.accuracy_low,
            "accuracy_high": r.accuracy_high,
            "auc_fold_mean": r.auc_fold_mean, "auc_fold_sd": r.auc_fold_sd,
            "auc_ranked": r.auc_ranked, "auc_ranked_low": r.auc_ranked_low,
            "auc_ranked_high": r.auc_ranked_high,
            "auc": r.auc, "auc_low": r.auc_low, "auc_high": r.auc_high,
            "auc_delong_low": r.auc_delong_low, "auc_delong_high": r.auc_delong_high,
            "f1": r.f1, "f1_low": r.f1_low, "f1_high": r.f1_high,
            "paper_accuracy": np.nan if ref is None else ref["accuracy"],
            "paper_auc": np.nan if ref is None else ref["auc"],
            "paper_auc_sd": np.nan if ref is None else ref["auc_sd"],
            "paper_f1": np.nan if ref is None else ref["f1"],
        })
    out = pd.DataFrame(rows).sort_values("_sort", kind="stable").drop(columns="_sort")
    return out.reset_index(drop=True)


def format_table2(t2: pd.DataFrame, *, decimals: int = 2,
                  simulated_readers: bool = False) -> pd.DataFrame:
    """Display version of ``table2``: the per-fold AUC first, as the paper reports it.

    Columns: ``Section, Configuration, Attention``, ``AUC folds (mean ± SD)``, ``AUC pooled,
    ranked within folds`` (patient bootstrap), ``ACC``, ``F1`` (patient bootstrap), ``AUC
    pooled, lesion-level DeLong`` (secondary: it treats the lesions of a patient as
    independent), then the paper's ACC, AUC, F1. Intervals as "0.83 (95 % CI 0.74–0.91)" (the
    report's one interval style, :func:`magn_lib.display.format_interval`). With
    ``simulated_readers`` the readers' section and names say "simulated"
    (``readers.reader_label``).
    """
    from magn_lib.readers import reader_label

    def f(x: float) -> str:
        return "–" if not np.isfinite(x) else f"{x:.{decimals}f}"

    def ci(x: float, lo: float, hi: float) -> str:
        return format_interval(x, lo, hi, decimals=decimals)

    def pm(m: float, s: float) -> str:
        return f"{f(m)} ± {f(s)}" if np.isfinite(m) and np.isfinite(s) else f(m)

    section = t2["section"].where(
        ~((t2["method"] == "reader") & simulated_readers), _SIMULATED_READERS_SECTION)
    acc, auc, f1 = (stats.METRIC_LABELS[m] for m in ("accuracy", "auc", "f1"))
    return pd.DataFrame({
        "Section": section,
        "Configuration": [v.capitalize() if m != "reader"
                          else reader_label(c, simulated=simulated_readers)
                          for m, v, c in zip(t2["method"], t2["view"], t2["config"], strict=True)],
        "Attention": np.where(t2["attention"], "✓", "–"),
        f"{auc} folds (mean ± SD)": [pm(*v) for v in zip(t2["auc_fold_mean"], t2["auc_fold_sd"],
                                                         strict=True)],
        f"{auc} pooled, ranked within folds": [
            ci(*v) for v in zip(t2["auc_ranked"], t2["auc_ranked_low"], t2["auc_ranked_high"],
                                strict=True)],
        acc: [ci(*v) for v in zip(t2["accuracy"], t2["accuracy_low"], t2["accuracy_high"],
                                  strict=True)],
        f1: [ci(*v) for v in zip(t2["f1"], t2["f1_low"], t2["f1_high"],
                                               strict=True)],
        f"{auc} pooled, lesion-level DeLong": [
            ci(*v) for v in zip(t2["auc"], t2["auc_delong_low"], t2["auc_delong_high"],
                                strict=True)],
        f"Paper {acc}": [f(v) for v in t2["paper_accuracy"]],
        f"Paper {auc}": [pm(*v) for v in zip(t2["paper_auc"], t2["paper_auc_sd"], strict=True)],
        f"Paper {f1}": [f(v) for v in t2["paper_f1"]],
    })


# --------------------------------------------------------------------------------------------
# images


def _gray(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3:
        # (3, H, W) 2.5D crop: the middle channel is the slice itself
        a = a[a.shape[0] // 2] if a.shape[0] in (1, 3) else a[..., a.shape[-1] // 2]
    if a.ndim != 2:
        raise ValueError(f"expected a 2D image or (3, H, W) crop, got shape {a.shape}")
    return a


def _label_panel(ax: Axes, *, row: int, col: int, title: str, view: str) -> None:
    """An image panel of a views x columns grid: no ticks, column title on the first row,
    view name on the first column."""
    ax.set_xticks([])
    ax.set_yticks([])
    if row == 0:
        ax.set_title(title, fontsize="small")
    if col == 0:
        ax.set_ylabel(view)


def plot_cam_grid(
    images: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    cams: Mapping[str, Mapping[str, np.ndarray]],
    *,
    views: Sequence[str] = VIEWS,
    alpha: float = 0.45,
    cmap: str = "jet",
    title: str | None = None,
) -> Figure:
    """Class-activation maps over the image with the lesion contour (the paper's Fig. 5).

    Rows are views; columns are the image, the image with the lesion mask contour, then one
    column per entry of ``cams`` (e.g. ``{"with guidance": ..., "without guidance": ...}``):
    the image in grey, the CAM as a translucent heat map stretched over the image extent
    (a CAM on a coarser grid is interpolated bilinearly for display only), the mask contour.

    Args:
        images: view -> (H, W) image or (3, H, W) 2.5D crop (middle channel shown).
        masks: view -> (H, W) 0/1 lesion mask on the image grid.
        cams: column title -> (view -> (h, w) CAM, any range; min-max normalised per map).
        views: the rows, in order.

    Returns:
        The Figure, ``len(views)`` x ``2 + len(cams)`` axes.
    """
    ncol = 2 + len(cams)
    fig = Figure(figsize=(2.2 * ncol, 2.2 * len(views)), layout="constrained")
    axes = fig.subplots(len(views), ncol, squeeze=False)
    for r, view in enumerate(views):
        img = _gray(images[view])
        mask = np.asarray(masks[view], dtype=np.float64)
        h, w = img.shape
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        panels = [("image", None, False), ("lesion", None, True)]
        panels += [(name, maps[view], True) for name, maps in cams.items()]
        for c, (name, cam, contour) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", extent=extent, interpolation="nearest")
            if cam is not None:
                cam = np.asarray(cam, dtype=np.float64)
                span = np.ptp(cam)
                cam = (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)
                ax.imshow(cam, cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=extent,
                          interpolation="bilinear")
            if contour and mask.any():
                ax.contour(mask, levels=[0.5], colors="lime", linewidths=1.2)
            _label_panel(ax, row=r, col=c, title=name, view=view)
    if title:
        fig.suptitle(title)
    return fig


def plot_crops_grid(
    crops: Sequence[np.ndarray],
    labels: Sequence[int],
    *,
    per_class: int = 4,
    masks: Sequence[np.ndarray] | None = None,
    titles: Sequence[str] | None = None,
    class_names: Mapping[int, str] | None = None,
) -> Figure:
    """Example crops per class: one row per class (MM first), up to ``per_class`` columns.

    Args:
        crops: (H, W) images or (3, H, W) 2.5D crops (middle channel shown).
        labels: the class of each crop (1 = MM, 0 = metastasis).
        masks: optional (H, W) lesion masks, drawn as contours.
        titles: optional caption per crop (e.g. lesion id).

    Returns:
        The Figure, (number of classes) x ``per_class`` axes; unused cells are blank.
    """
    names = dict(class_names or stats.DEFAULT_GROUP_NAMES)
    labels = [int(v) for v in labels]
    classes = sorted(set(labels), reverse=True)
    fig = Figure(figsize=(2.0 * per_class, 2.1 * max(len(classes), 1)), layout="constrained")
    axes = fig.subplots(max(len(classes), 1), per_class, squeeze=False)
    for r, cls in enumerate(classes):
        idx = [i for i, v in enumerate(labels) if v == cls][:per_class]
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(idx):
                ax.set_axis_off()
                continue
            i = idx[c]
            ax.imshow(_gray(crops[i]), cmap="gray", interpolation="nearest")
            if masks is not None and np.asarray(masks[i]).any():
                ax.contour(np.asarray(masks[i], dtype=float), levels=[0.5], colors="lime",
                           linewidths=1)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize="x-small")
            if c == 0:
                ax.set_ylabel(names.get(cls, str(cls)))
    return fig


def plot_transfer_example(
    example: Mapping[str, Mapping[str, np.ndarray]], *, title: str | None = None
) -> Figure:
    """The paper's Fig. 2 for one lesion: per view, the raw slice, the slice with the lesion
    mask (drawn on sagittal, transferred to coronal and axial) and the crop box, and the crop.

    Args:
        example: ``{view: {"slice", "mask", "crop", "crop_mask", "box"}}`` as returned by
            :func:`magn_lib.stages.transfer_example`.

    Returns:
        The Figure, ``len(example)`` x 3 axes.
    """
    from matplotlib.patches import Rectangle

    views = list(example)
    fig = Figure(figsize=(7.5, 2.5 * len(views)), layout="constrained")
    axes = fig.subplots(len(views), 3, squeeze=False)
    for r, view in enumerate(views):
        item = example[view]
        top, left, bottom, right = (int(v) for v in item["box"])
        panels = (
            ("(a) image", item["slice"], None, False),
            ("(b) lesion mask", item["slice"], item["mask"], True),
            ("(c) crop", item["crop"], item["crop_mask"], False),
        )
        for c, (name, img, mask, box) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", interpolation="nearest")
            if mask is not None and np.asarray(mask).any():
                ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors="lime",
                           linewidths=1)
            if box:
                ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                       fill=False, edgecolor="yellow", linewidth=1))
            _label_panel(ax, row=r, col=c, title=name, view=view)
    if title:
        fig.suptitle(title)
    return fig


def plot_transfer_quality(scored: pd.DataFrame) -> Figure:
    """Dice and average surface distance of transferred vs true masks, by scanner and view.

    Args:
        scored: the transfer QC with truth scores (``view``, ``vendor``, ``dice``,
            ``assd_mm``), as returned by :func:`magn_lib.stages.compare_with_truth`.

    Returns:
        The Figure: two panels (Dice; ASSD in mm); per vendor and view the lesions as points
        and the median with its interquartile range.
    """
    import seaborn as sns

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    data = scored.copy()
    data["vendor"] = data["vendor"].fillna("unknown")
    for ax, column, label in ((axes[0], "dice", "Dice"),
                              (axes[1], "assd_mm", "avg. surface distance (mm)")):
        finite = data[np.isfinite(data[column].astype(float))]
        sns.stripplot(data=finite, x="vendor", y=column, hue="view", dodge=True, ax=ax,
                      size=3, alpha=0.6, legend=False)
        # median and interquartile range per scanner and view
        sns.pointplot(data=finite, x="vendor", y=column, hue="view", dodge=0.4, ax=ax,
                      estimator="median", errorbar=("pi", 50), linestyle="none",
                      marker="D", markersize=5)
        ax.set_xlabel("scanner")
        ax.set_ylabel(label)
    axes[0].set_ylim(0, 1.02)
    return fig


def plot_learning_curves(curves: pd.DataFrame) -> Figure:
    """Training loss and held-out AUC per epoch for every configuration (mean over folds,
    band = min–max over folds).

    Args:
        curves: the grid's learning curves (``config``, ``fold``, ``epoch``, ``train_loss`` and,
            when the held-out fold was tracked, ``val_auc``).

    Returns:
        The Figure: loss on the left, held-out AUC on the right (if tracked).
    """
    panels = [("train_loss", "training loss")]
    if "val_auc" in curves and curves["val_auc"].notna().any():
        panels.append(("val_auc", "held-out fold AUC (monitoring only)"))
    fig = Figure(figsize=(5.2 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (column, label) in zip(axes, panels, strict=True):
        configs = list(curves.groupby("config", sort=False))
        for (config, part), style in zip(configs, curve_styles(len(configs)), strict=True):
            by_epoch = part.groupby("epoch")[column]
            mean = by_epoch.mean()
            line = ax.plot(mean.index, mean.to_numpy(), label=config, color=style["color"],
                           linestyle="-" if "attention" in config else "--")[0]
            ax.fill_between(mean.index, by_epoch.min().to_numpy(), by_epoch.max().to_numpy(),
                            color=line.get_color(), alpha=0.12, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[-1].legend(fontsize="x-small", loc="best")
    return fig
