"""Clinician tables: labels, interval and p-value style, no index, the DeLong triangle."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from magn_lib import stats
from magn_lib.display import (
    LABELS,
    clinician_table,
    format_interval,
    format_p,
    label,
    lower_triangle,
)


def test_format_interval_is_one_style():
    assert format_interval(0.8271, 0.7424, 0.9069) == "0.83 (95 % CI 0.74–0.91)"
    assert format_interval(0.8271, 0.7424, 0.9069, decimals=3) == "0.827 (95 % CI 0.742–0.907)"
    assert format_interval(0.5, np.nan, np.nan) == "0.50"
    assert format_interval(np.nan, 0.1, 0.2) == "–"


@pytest.mark.parametrize("p, text", [(0.0004, "< 0.001"), (0.001, "0.001"), (0.04567, "0.046"),
                                     (1.0, "1.000"), (np.nan, "–"), (None, "–")])
def test_format_p(p, text):
    assert format_p(p) == text


def test_labels_read_as_words():
    assert label("patients_mm") == "Patients, myeloma"
    assert label(("volume_ratio", "50%")) == "Volume ratio · Median"
    assert all("_" not in text for text in LABELS.values())
    # the metric labels of the statistics module agree with the dictionary
    assert {k: LABELS[k] for k in stats.METRIC_LABELS} == {
        k: v[0].upper() + v[1:] for k, v in stats.METRIC_LABELS.items()}


def _headers(table) -> list[str]:
    return re.findall(r'<th scope="col">(.*?)</th>', table._repr_html_())


def test_clinician_table_has_no_index_and_labelled_headers():
    frame = pd.DataFrame({"step": ["listed", "analysed"], "patients_mm": [6, 5],
                          "p_value": [0.0002, 0.2346], "auc": [0.81234, np.nan]})
    table = clinician_table(frame)
    assert _headers(table) == ["Step", "Patients, myeloma", "p", "AUC"]
    assert table.rows == [["listed", "6", "< 0.001", "0.812"], ["analysed", "5", "0.235", "–"]]
    assert '<th scope="row">' not in table._repr_html_()  # no 0, 1 row numbers


def test_clinician_table_keeps_a_meaningful_index():
    wide = pd.DataFrame({"auc": [0.7, 0.8]}, index=pd.Index([1, 2], name="fold"))
    table = clinician_table(wide)
    assert _headers(table) == ["Fold", "AUC"] and table.rows[0] == ["1", "0.700"]
    described = pd.DataFrame({"view": ["axial", "axial", "coronal"], "dice": [0.8, 0.9, 0.7]}
                             ).groupby("view")[["dice"]].describe(percentiles=[0.5])
    assert _headers(clinician_table(described))[:3] == ["View", "Dice · Count", "Dice · Mean"]


def test_lower_triangle_drops_the_diagonal_and_fits():
    models = ["magn: sagittal", "magn: multi-view", "radiomics: multi-view"]
    mat = pd.DataFrame([[np.nan, 0.2, 0.0001], [0.2, np.nan, 1.0], [0.0001, 1.0, np.nan]],
                       index=models, columns=models)
    table = lower_triangle(mat)
    assert table.headers == ["Model", "1", "2"]
    assert table.rows == [["1 · magn: sagittal", "", ""], ["2 · magn: multi-view", "0.200", ""],
                          ["3 · radiomics: multi-view", "< 0.001", "1.000"]]
    assert "nan" not in table._repr_html_().lower()
    with pytest.raises(ValueError, match="square"):
        lower_triangle(mat.iloc[:, :2])
