"""How a clinician reads the study's tables: one label dictionary, one number style.

Data tables (CSV under ``artifacts/``) keep their machine names (``patients_mm``,
``p_value``); what a page shows goes through :func:`clinician_table`, which drops the DataFrame
index, replaces every column name by its entry in :data:`LABELS` and writes intervals and
p-values one way everywhere: ``0.83 (95 % CI 0.74–0.91)`` (:func:`format_interval`) and
``< 0.001`` or three decimals (:func:`format_p`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "LABELS",
    "ClinicianTable",
    "clinician_table",
    "format_interval",
    "format_p",
    "label",
    "lower_triangle",
]

MISSING = "–"

# column and index names as data tables spell them -> what a reader of the report sees
LABELS: Mapping[str, str] = MappingProxyType({
    # identifiers and grouping
    "patient_id": "Patient", "lesion_id": "Lesion", "label": "Class", "fold": "Fold",
    "method": "Method", "config": "Configuration", "model": "Model", "view": "View",
    "reader": "Reader", "vendor": "Scanner vendor", "scanner": "Scanner", "class": "Class",
    "section": "Section", "guidance": "Attention guidance", "stage": "Stage",
    "reason": "Reason", "variable": "Variable", "level": "Level", "test": "Test",
    "rule": "Rule", "step": "Step", "feature": "Feature", "features": "Features",
    "feature_class": "Feature class", "source": "Source", "check": "Check",
    # counts
    "n": "n", "n_lesions": "Lesions", "n_patients": "Patients", "lesions": "Lesions",
    "patients": "Patients", "patients_mm": "Patients, myeloma",
    "patients_metastasis": "Patients, metastasis", "patients_met": "Patients, metastasis",
    "lesions_met": "Lesions, metastasis", "lesions_mm": "Lesions, myeloma",
    "lesions_metastasis": "Lesions, metastasis", "n_train": "Training lesions",
    "n_test": "Test lesions", "count": "Count", "selected": "Times selected",
    "times_selected": "Times selected", "kept": "Times kept", "rank": "Rank",
    "mean_rank": "Mean rank", "importance": "Importance",
    "mean_importance": "Mean importance", "share": "Share of folds",
    "All": "All", "all": "All", "MM": "Myeloma", "Metastasis": "Metastasis",
    "metastasis": "Metastasis",
    # metrics (the paper's abbreviations)
    "accuracy": "ACC", "auc": "AUC", "f1": "F1", "sensitivity": "Sensitivity",
    "specificity": "Specificity", "auc_call": "AUC (call)",
    "auc_ordinal": "AUC (call + confidence)", "auc_reader": "AUC, reader",
    "auc_model": "AUC, model", "accuracy_reader": "ACC, reader",
    "accuracy_model": "ACC, model", "reader_only_correct": "Correct by reader only",
    "model_only_correct": "Correct by model only", "auc_fold_mean": "AUC, mean over folds",
    "auc_fold_sd": "AUC, SD over folds", "auc_a": "AUC, first", "auc_b": "AUC, second",
    "model_a": "First model", "model_b": "Second model", "kappa": "Cohen's kappa",
    "reader_a": "First reader", "reader_b": "Second reader", "agreement": "Agreement",
    # tests
    "p": "p", "p_value": "p", "p_text": "p", "p_adjusted": "p (Holm-adjusted)",
    "delong_p": "p (DeLong)", "mcnemar_p": "p (McNemar)", "statistic": "Statistic",
    "z": "z",
    # transfer and attention quality
    "volume_ratio": "Volume ratio", "centroid_shift_mm": "Centroid shift (mm)",
    "dice": "Dice", "assd_mm": "Mean surface distance (mm)",
    "hd95_mm": "95th-percentile Hausdorff distance (mm)", "flagged": "Flagged",
    "energy_inside": "Map energy inside the lesion",
    "pointing_hit_rate": "Peak inside the lesion (share)",
    "mask_fraction": "Lesion share of the crop", "sagittal_volume_mm3": "Sagittal volume (mm³)",
    "volume_mm3": "Volume (mm³)", "n_voxels": "Voxels", "missing": "Missing",
    "n_folds": "Folds that selected it", "fraction": "Share of folds",
    "kappa_low": "Kappa, lower 95 % limit", "kappa_high": "Kappa, upper 95 % limit",
    "kappa_se": "Kappa, standard error", "kappa_ordinal": "Weighted kappa (with confidence)",
    # descriptive statistics (DataFrame.describe)
    "mean": "Mean", "std": "SD", "min": "Min", "max": "Max", "50%": "Median",
    # Table 1 variables
    "age": "Age (years)", "sex": "Sex", "site": "Anatomic site",
    "tumour_size_cm": "Tumour size (cm)",
    # calibration and decision curves
    "threshold": "Threshold probability", "net_benefit": "Net benefit",
    "predicted": "Mean predicted probability", "observed": "Observed frequency",
})


def label(name: Any) -> str:
    """The reader-facing label of a column or index name (the name itself when unlisted)."""
    if isinstance(name, tuple):
        return " · ".join(label(part) for part in name if str(part) != "")
    if isinstance(name, int | np.integer):
        return str(name)
    return LABELS.get(str(name), str(name))


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def format_interval(value: float, low: float | None = None, high: float | None = None, *,
                    decimals: int = 2, level: int = 95) -> str:
    """``0.83 (95 % CI 0.74–0.91)``; the value alone when the interval is missing; ``–`` when
    the value is.

    Args:
        value, low, high: the estimate and its confidence limits (any units).
        decimals: digits after the point, the same for all three.
        level: the interval's coverage in percent.
    """
    if not _finite(value):
        return MISSING
    text = f"{float(value):.{decimals}f}"
    if _finite(low) and _finite(high):
        text += f" ({level} % CI {float(low):.{decimals}f}–{float(high):.{decimals}f})"
    return text


def format_p(p: float) -> str:
    """A p-value as a report writes it: ``< 0.001`` below 0.001, else three decimals."""
    if not _finite(p):
        return MISSING
    return "< 0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def _cell(value: Any, decimals: int) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return MISSING
        return f"{value:.{decimals}f}"
    if value is None or (isinstance(value, str) and value == ""):
        return ""
    return str(value)


class ClinicianTable:
    """A table as a page shows it: no index, labelled headers, text cells.

    Displayed in a notebook through ``_repr_html_``; ``headers`` and ``rows`` hold what is
    shown, ``frame`` the shown text as a DataFrame.
    """

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[str]], *,
                 caption: str | None = None, row_headers: bool = False) -> None:
        self.headers = list(headers)
        self.rows = [list(r) for r in rows]
        self.caption = caption
        self.row_headers = row_headers

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.headers)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f'<th scope="col">{esc(h)}</th>' for h in self.headers)
        body = []
        for row in self.rows:
            cells = [f'<th scope="row">{esc(row[0])}</th>' if self.row_headers else
                     f"<td>{esc(row[0])}</td>"] if row else []
            cells += [f"<td>{esc(c)}</td>" for c in row[1:]]
            body.append("<tr>" + "".join(cells) + "</tr>")
        caption = f"<caption>{esc(self.caption)}</caption>" if self.caption else ""
        return (f'<table class="magn-table">{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table>")

    def _repr_markdown_(self) -> None:  # the HTML form is the one to show
        return None

    def __repr__(self) -> str:
        return self.frame.to_string(index=False)


def clinician_table(frame: pd.DataFrame | pd.Series, *, index: bool | None = None,
                    decimals: int = 3, p_columns: Sequence[str] = (),
                    label_values: Sequence[str] = (),
                    caption: str | None = None) -> ClinicianTable:
    """The clinician's view of ``frame``: headers from :data:`LABELS`, no row numbers.

    Args:
        frame: any DataFrame (or Series); MultiIndex columns are joined with " · ".
        index: show the index as the first column (its name labelled like a column). Default:
            only when it is not a plain 0..n-1 range (a pivot or crosstab, say).
        decimals: digits for floating-point cells.
        p_columns: columns holding p-values, written by :func:`format_p`; columns whose
            name is ``p_value``, ``p_adjusted`` or ends in ``_p`` are included.
        label_values: columns whose cells are names to label too (Table 1's ``variable``).
        caption: a line above the table.
    """
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    plain_range = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 \
        and frame.index.step == 1
    show_index = (not plain_range) if index is None else index
    p_like = {c for c in frame.columns
              if isinstance(c, str) and (c in ("p_value", "p_adjusted") or c.endswith("_p"))}
    p_like |= set(p_columns)
    headers = [label(c) for c in frame.columns]
    rows = []
    for key, (_, row) in zip(frame.index, frame.iterrows(), strict=True):
        cells = [format_p(v) if c in p_like else label(v) if c in label_values
                 else _cell(v, decimals) for c, v in zip(frame.columns, row, strict=True)]
        if show_index:
            cells.insert(0, label(key) if isinstance(key, tuple | str) else _cell(key, decimals))
        rows.append(cells)
    if show_index:
        names = [n for n in frame.index.names if n is not None]
        headers.insert(0, " · ".join(label(n) for n in names))
    return ClinicianTable(headers, rows, caption=caption, row_headers=show_index)


def lower_triangle(matrix: pd.DataFrame, *, formatter=format_p,
                   caption: str | None = None) -> ClinicianTable:
    """A symmetric model x model matrix as its lower triangle, narrow enough for a page.

    Row ``i`` names model ``i`` in full ("3 · magn: sagittal"); columns carry the numbers only,
    so the table is as wide as the number of models, not their names. The diagonal and the
    upper triangle are left out (they repeat or say nothing).

    Args:
        matrix: square, the same labels on rows and columns (e.g.
            :func:`magn_lib.stats.delong_matrix`).
        formatter: writes one cell (p-values by default).
    """
    names = list(matrix.index)
    if list(matrix.columns) != names:
        raise ValueError("lower_triangle needs a square matrix with the same rows and columns")
    headers = ["Model", *(str(j + 1) for j in range(len(names) - 1))]
    rows = []
    for i, name in enumerate(names):
        cells = [f"{i + 1} · {name}"]
        for j in range(len(names) - 1):
            cells.append(formatter(matrix.iloc[i, j]) if j < i else "")
        rows.append(cells)
    return ClinicianTable(headers, rows, caption=caption, row_headers=True)
