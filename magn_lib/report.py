"""HTML views of executed notebooks and the run's ``index.html``.

Each executed notebook is rendered twice: a *clinician view* (``html/``) with no code cells,
no prompts and no stderr streams (progress bars, library chatter), and a *full view*
(``html-full/``) with code, for analysts. Images are embedded, so every page is a single file
that can be e-mailed. Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
from nbconvert import HTMLExporter

from magn_lib.display import clinician_table, format_interval, format_p
from magn_lib.files import write_csv, write_text
from magn_lib.layout import ReportPaths

__all__ = [
    "GLOSSARY",
    "IndexEntry",
    "atomic_write_text",
    "calibration_direction",
    "clinician_notebook",
    "external_breakdown",
    "external_comparison",
    "external_line",
    "external_recalibration",
    "external_result_line",
    "external_site_label",
    "external_warnings",
    "front_page_html",
    "render_html",
    "plain_summary",
    "render_index",
    "save_table",
    "write_external_front",
    "write_front_page",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
# cells carrying this tag are left out of the clinician view (e.g. a diagnostic table)
ANALYST_ONLY_TAG = "analyst-only"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`magn_lib.files.write_text`)."""
    write_text(path, text)


def save_table(frame: Any, path: str | Path, *, index: bool = False) -> Path:
    """Write a table as CSV (atomically, folders created); return the path.

    Args:
        frame: a pandas DataFrame.
        path: the file, as the run's layout names it: ``paths.table(name)``,
            ``paths.oof(method)`` (:class:`magn_lib.layout.ReportPaths`).
        index: write the frame's index as the first column.
    """
    return write_csv(frame, path, index=index)


def clinician_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` for readers without code: stderr streams, analyst-only cells and the
    run's folders (in the effective-parameters table) removed.

    Code inputs and prompts are dropped at rendering time (see :func:`render_html`); here we
    remove the outputs that only make sense next to code (tqdm bars and warnings on stderr).
    """
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        if ANALYST_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "code":
            cell.outputs = [
                out for out in cell.get("outputs", [])
                if not (out.get("output_type") == "stream" and out.get("name") == "stderr")
            ]
            for out in cell.outputs:
                _drop_run_folders(out)
        cells.append(cell)
    nb.cells = cells
    return nb


def _drop_run_folders(output: dict[str, Any]) -> None:
    """Leave the run's folders (report, work, manifest) out of the effective-parameters table
    of a clinician view: the work folder is private, and folders are the analyst's concern
    (the analyst view and ``run_manifest.json`` keep them)."""
    from magn_lib.config import PARAMETERS_MIMETYPE

    data = output.get("data", {})
    if PARAMETERS_MIMETYPE in data and "text/markdown" in data:
        lines = data["text/markdown"].splitlines()
        data["text/markdown"] = "\n".join(line for line in lines
                                          if not line.rstrip().endswith("| run |"))


def render_html(nb: nbformat.NotebookNode, *, with_code: bool, title: str | None = None,
                header_html: str = "") -> str:
    """Render an executed notebook to one self-contained HTML page.

    Args:
        nb: the executed notebook.
        with_code: ``False`` for the clinician view (no code cells, no prompts, no stderr).
        title: the page title (default: the notebook's first heading).
        header_html: shown above the notebook (the navigation, :func:`navigation_html`).
    """
    exporter = HTMLExporter(
        template_name="magn", extra_template_basedirs=[str(TEMPLATES)], embed_images=True
    )
    if not with_code:
        nb = clinician_notebook(nb)
        exporter.exclude_input = True
        exporter.exclude_input_prompt = True
        exporter.exclude_output_prompt = True
    resources = {"metadata": {"name": title or notebook_title(nb)},
                 "magn": {"css": _NAV_CSS + _PAGE_CSS, "header": header_html}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


def notebook_title(nb: nbformat.NotebookNode) -> str:
    """The first Markdown heading of the notebook, else ``"Notebook"``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return "Notebook"


@dataclass(frozen=True)
class IndexEntry:
    """One notebook as listed on the index page. Links are relative to ``index.html``."""

    title: str
    summary: str
    clinician_href: str
    full_href: str
    status: str


_INDEX_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:62rem;
margin:2rem auto;padding:0 1rem;color:#1b1f23;line-height:1.5}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
.sub{color:#57606a;margin-top:0} ol.nb li{margin:.6rem 0} .summary{color:#3d444d}
.warn{background:#fff4e5;border-left:4px solid #e8912d;padding:.5rem 1rem;margin:1rem 0}
.note{background:#eef6ff;border-left:4px solid #4a8fe7;padding:.5rem 1rem;margin:1rem 0}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}
th,td{padding:.2rem .6rem;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{background:#f6f8fa} figure{margin:1rem 0} figure img{max-width:100%;height:auto}
figcaption{font-size:.88rem;color:#3d444d} dt{font-weight:600} dd{margin:0 0 .5rem 1rem}
.small{font-size:.85rem;color:#57606a}
"""

GLOSSARY: tuple[tuple[str, str], ...] = (
    ("AUC", "Area under the ROC curve: the probability that a randomly chosen myeloma lesion "
     "gets a higher score than a randomly chosen metastasis. 0.5 is chance, 1.0 is perfect."),
    ("ACC (accuracy)", "Share of lesions classified correctly at the 0.5 threshold."),
    ("Sensitivity / specificity", "Share of myeloma lesions called myeloma / share of "
     "metastases called metastasis."),
    ("F1 score", "Harmonic mean of precision and sensitivity for the myeloma class; it rewards "
     "finding myeloma without many false alarms."),
    ("95 % CI", "Confidence interval: the range of values compatible with the data. Here from "
     "resampling patients (patient bootstrap: all lesions of a patient are drawn together, "
     "because lesions of one patient look alike); where a column says lesion-level DeLong, "
     "from DeLong's method, which treats every lesion as independent and is too narrow."),
    ("AUC folds (mean ± SD)", "The AUC of each cross-validation fold, averaged over the folds, "
     "with the spread between folds: the number the original paper reports."),
    ("Pooled AUC, ranked within folds", "One AUC over all lesions after each lesion's score is "
     "replaced by its rank within its own fold: the fold models are trained separately and "
     "their probabilities are not on one scale, so raw probabilities are not pooled."),
    ("Holm correction", "When several tests are read together, some small p-values arise by "
     "chance; Holm's method raises the p-values so that the chance of any false finding in "
     "the family stays at 5 %."),
    ("Simulated readers", "On the embedded synthetic cohort the 'radiologists' are simulated: "
     "their calls are drawn from the true diagnosis with a fixed sensitivity and specificity "
     "(those the paper's radiologists' accuracy and AUC imply); they never look at images. "
     "Comparisons with them are demonstrations, not findings."),
    ("DeLong test", "A test of whether two AUCs measured on the same lesions differ, taking "
     "into account that they share the lesions."),
    ("McNemar test", "A test of whether two sets of yes/no calls on the same lesions differ in "
     "the lesions they get wrong."),
    ("Cohen's kappa", "Agreement between two readers beyond what chance would give "
     "(0 = chance, 1 = perfect)."),
    ("Cross-validation", "The lesions are split into 5 folds (all lesions of a patient in one "
     "fold); each fold is predicted by a model trained on the other four, so every score comes "
     "from a model that never saw that patient."),
    ("CAM", "Class activation map: the network's own map of where in the image the evidence "
     "for its answer lies. Attention guidance trains this map to match the lesion mask."),
    ("Grad-CAM", "A map of the image regions that most change the network's output, computed "
     "from gradients; used to check what the network looks at."),
    ("Calibration", "Whether a predicted probability of 0.7 means myeloma 7 times in 10."),
    ("Decision curve / net benefit", "The benefit of acting on the model's calls at a given "
     "risk threshold, compared with treating all or none."),
    ("Radiomics", "Hand-crafted image features (intensity, texture, shape) computed inside the "
     "lesion mask and fed to a conventional classifier."),
)


def plain_summary(
    metrics: Any,
    pairwise: Any,
    *,
    n_patients: int,
    n_lesions: int,
    n_mm: int,
    embedded: bool,
    n_folds: int = 5,
    cv_scheme: str = "patient-kfold",
    primary: tuple[str, str] = ("magn", "multi-view+attention"),
    comparator: tuple[str, str] = ("radiomics", "multi-view"),
    difference: Mapping[str, Any] | None = None,
    simulated_readers: bool | None = None,
) -> list[str]:
    """The report's plain-language summary: question, what was done, the result.

    A model's AUC is given as the paper gives it, the mean ± SD over the folds, then pooled over
    all lesions after ranking within each fold with its patient-bootstrap 95 % CI.

    Args:
        metrics: :func:`magn_lib.stats.metrics_table` of every model (readers included).
        pairwise: :func:`magn_lib.stats.pairwise_delong` of the same models (used only when
            ``difference`` is not given: a lesion-level DeLong p-value, said so).
        n_patients, n_lesions, n_mm: the analysed cohort (``n_mm`` myeloma lesions).
        embedded: the cohort is the embedded synthetic one.
        n_folds: folds of the cross-validation.
        cv_scheme: the profile's ``cv_scheme`` ("patient-kfold" or "leave-one-site-out").
        primary, comparator: ``(method, config)`` of the proposed model and the radiomics
            model it is compared with.
        difference: :func:`magn_lib.stats.compare_models` of ``primary`` against
            ``comparator``: the AUC difference with its patient-bootstrap interval.
        simulated_readers: the readers are simulated (default: ``embedded``); the summary says
            so wherever it names them.

    Returns:
        Paragraphs of plain text (no HTML).
    """
    from magn_lib.stats import model_name

    if simulated_readers is None:
        simulated_readers = embedded
    rows = {model_name(m, c): r for m, c, (_, r) in
            zip(metrics["method"], metrics["config"], metrics.iterrows(), strict=True)}

    def auc(key: tuple[str, str]) -> str:
        r = rows.get(model_name(*key))
        if r is None or not np.isfinite(r["auc"]):
            return "not available"
        pooled = (f"pooled over all lesions after ranking within each fold, "
                  f"{format_interval(r['auc_ranked'], r['auc_ranked_low'], r['auc_ranked_high'])}"
                  " from resampling patients")
        if not np.isfinite(r["auc_fold_mean"]):
            return pooled
        sd = f" ± {r['auc_fold_sd']:.2f}" if np.isfinite(r["auc_fold_sd"]) else ""
        return f"{r['auc_fold_mean']:.2f}{sd} (mean ± SD over the folds); {pooled}"

    def acc(key: tuple[str, str]) -> str:
        r = rows.get(model_name(*key))
        return "not available" if r is None else f"{r['accuracy']:.0%}"

    validation = (
        f"The models were trained and tested leave-one-site-out over {n_folds} sites: every "
        "lesion was scored by a model trained on the other sites only, which had never seen "
        "that patient or any patient of its site."
        if cv_scheme == "leave-one-site-out" else
        f"The models were trained and tested by {n_folds}-fold cross-validation: every "
        "lesion was scored by a model that had never seen that patient.")
    paragraphs = [
        "Question: can a computer model tell spinal multiple myeloma from spinal metastasis of "
        "lung cancer on contrast-enhanced T1 MRI, and does it do better than a conventional "
        "radiomics model and than radiologists"
        f"{' (on this cohort: simulated readers)' if simulated_readers else ''}? This repeats "
        "the study of Chen et al. (Front. Oncol. 2022) step by step.",
        f"What was done: {n_lesions} lesions of {n_patients} patients ({n_mm} myeloma, "
        f"{n_lesions - n_mm} metastasis lesions) were analysed. Each lesion was outlined once "
        "on the sagittal images and the outline was carried over to the coronal and axial "
        f"images. {validation}",
    ]
    primary_name, comparator_name = model_name(*primary), model_name(*comparator)
    views = primary[1].removesuffix("+attention")
    network = ("three views" if views == "multi-view" else f"the {views} view only") + (
        " with attention guidance" if primary[1].endswith("+attention") else "")
    result = (
        f"Result: The proposed network (MAGN, {network}) reached an "
        f"area under the ROC curve (AUC) of {auc(primary)} and classified {acc(primary)} of "
        f"the lesions correctly; the {comparator[1]} radiomics model reached an AUC of "
        f"{auc(comparator)} ({acc(comparator)} correct)."
    )
    readers = metrics[metrics["method"] == "reader"]
    if len(readers):
        who = ("The simulated readers (not radiologists: their calls are drawn from the true "
               "diagnosis with the sensitivity and specificity the paper's radiologists' "
               "accuracy and AUC imply)" if simulated_readers else "The radiologists")
        result += f" {who} classified " + " and ".join(
            f"{r['accuracy']:.0%}" for _, r in readers.iterrows()) + " of the lesions correctly."
    if difference is not None:
        lo, hi = float(difference["ci_low"]), float(difference["ci_high"])
        verdict = ("a difference" if lo > 0 or hi < 0 else "no clear difference")
        what = "pooled after ranking within folds" if difference.get("ranked") else "pooled"
        result += (f" On the same lesions the two AUCs ({what}) differ by "
                   f"{float(difference['difference']):+.2f} (95 % CI {lo:+.2f} to {hi:+.2f}, "
                   f"resampling patients): {verdict}.")
    else:
        test = pairwise[((pairwise["model_a"] == primary_name)
                         & (pairwise["model_b"] == comparator_name))
                        | ((pairwise["model_a"] == comparator_name)
                           & (pairwise["model_b"] == primary_name))]
        if len(test):
            p = float(test["p_value"].iloc[0])
            verdict = "a difference" if p < 0.05 else "no clear difference"
            p_text = format_p(p)
            result += (f" On the same lesions the two AUCs show {verdict} (lesion-level DeLong "
                       "test, which ignores that lesions of a patient are alike, p "
                       f"{p_text if p_text.startswith('<') else '= ' + p_text}).")
    paragraphs.append(result)
    if embedded:
        paragraphs.append(
            "These numbers come from the embedded synthetic cohort, built to demonstrate the "
            "method: they say nothing about how the model would perform on patients."
        )
    return paragraphs


def calibration_direction(citl: float, low: float | None = None,
                          high: float | None = None) -> str:
    """How a model's probabilities miss on average, from its calibration-in-the-large.

    Calibration-in-the-large is the intercept ``a`` of ``logit P(MM) = a + logit(p)`` (the
    model's log-odds ``logit(p)`` as an offset): ``a > 0`` means myeloma is more frequent than
    the model says (its probabilities are **too low**), ``a < 0`` less frequent (**too high**).

    Returns:
        ``"too high"``, ``"too low"`` or ``"about right"`` (``a == 0``); with a confidence
        interval that includes 0 the caller should say the direction is not clear
        (:func:`external_result_line` does).
    """
    if not np.isfinite(citl):
        raise ValueError("calibration-in-the-large is not a finite number")
    return "too low" if citl > 0 else "too high" if citl < 0 else "about right"


def external_result_line(
    *,
    site: str,
    auc: float,
    auc_low: float | None,
    auc_high: float | None,
    internal_auc: float,
    internal_low: float | None,
    internal_high: float | None,
    citl: float,
    citl_low: float | None,
    citl_high: float | None,
    mean_predicted: float,
    observed: float,
    n_lesions: int,
    n_patients: int,
    model: str = "the model",
    described: str | None = None,
    intervals: str | None = None,
) -> str:
    """The front page's one plain-language line on the external validation.

    "On simulated site B the model's AUC was 0.71 (95 % CI 0.60–0.82) on 40 lesions of 24
    patients, against 0.86 (95 % CI 0.78–0.93) in the internal cross-validation; its probabilities
    were too high by 0.85 on the log-odds scale (95 % CI 0.40–1.30): on average 52% predicted
    against 30% of lesions being myeloma."

    Every number is the caller's measurement; the direction comes from the sign of the
    calibration-in-the-large ``citl`` (:func:`calibration_direction`), and an interval that
    includes 0 is said to show no clear miscalibration.

    Args:
        site: how the reader should know the site ("simulated site B" for the embedded one).
        auc, auc_low, auc_high: the external AUC and its 95 % CI.
        internal_auc, internal_low, internal_high: the internal cross-validation estimate.
        citl, citl_low, citl_high: calibration-in-the-large (log-odds) and its 95 % CI.
        mean_predicted, observed: the mean predicted probability of myeloma and the share of
            myeloma lesions at the external site (both in [0, 1]).
        n_lesions, n_patients: what the external numbers rest on.
        model: how to name the model.
        described: which model it is, in parentheses after the lesion count ("MAGN
            multi-view, frozen").
        intervals: how the AUC intervals were computed, in parentheses after the internal
            estimate ("both AUC intervals: patient bootstrap").
    """
    def finite(*values: float | None) -> bool:
        return all(v is not None and np.isfinite(v) for v in values)

    if not finite(citl):
        calibration = "its calibration could not be estimated (too few lesions of a class)"
    elif calibration_direction(citl) == "about right":
        calibration = "its probabilities were right on average"
    else:
        unclear = finite(citl_low, citl_high) and float(citl_low) <= 0 <= float(citl_high)
        if not finite(citl_low, citl_high):
            ci = ""
        elif unclear:  # the interval spans both directions: give it signed
            ci = (f" (95 % CI {float(citl_low):+.2f} to {float(citl_high):+.2f}, which "
                  "includes no miscalibration)")
        else:
            low, high = sorted((abs(float(citl_low)), abs(float(citl_high))))
            ci = f" (95 % CI {low:.2f}–{high:.2f})"
        calibration = (f"its probabilities were {'on average ' if unclear else ''}"
                       f"{calibration_direction(citl)} by {abs(float(citl)):.2f} on the "
                       f"log-odds scale{ci}")
    if finite(mean_predicted, observed):
        calibration += (f": on average {mean_predicted:.0%} predicted against {observed:.0%} "
                        "of lesions being myeloma")
    discrimination = (f"AUC was {format_interval(auc, auc_low, auc_high)}" if finite(auc)
                      else "AUC could not be estimated (it needs 2 lesions of each class)")
    internal = (format_interval(internal_auc, internal_low, internal_high)
                if finite(internal_auc) else "not available")
    which = f" ({described})" if described else ""
    how = f" ({intervals})" if intervals else ""
    return (f"On {site} {model}'s {discrimination} on {n_lesions} lesions of {n_patients} "
            f"patients{which}, against {internal} in the internal cross-validation{how}; "
            f"{calibration}.")


# the external validation's tables (notebook 07), from the metrics of
# :func:`magn_lib.external.validate_external` (``metrics.json``)

def external_site_label(centres: Sequence[str] = (), *, simulated: bool) -> str:
    """How the pages name the external site.

    Args:
        centres: the distinct values of the external manifest's ``centre`` column (the
            site's name; empty when the manifest has none).
        simulated: the external cohort is the embedded simulated site.

    Returns:
        ``"simulated site B"`` for the embedded one (its ``centre``, else ``B``); ``"site
        <name>"`` when the manifest names one centre; else ``"the external cohort"`` (never a
        folder name, which may name a hospital or a patient).
    """
    names = sorted({str(c) for c in centres if c is not None and str(c).strip()})
    name = names[0] if len(names) == 1 else None
    if simulated:
        return f"simulated site {name or 'B'}"
    return f"site {name}" if name else "the external cohort"


def external_model_label(method: str, metrics: Mapping[str, Any], *,
                         simulated_readers: bool) -> str:
    """A method of the external predictions as the pages name it: the frozen MAGN ensemble
    and radiomics pipeline with their configurations, readers by
    :func:`magn_lib.readers.reader_label`."""
    from magn_lib.readers import reader_label

    if method == "magn":
        return f"MAGN ({metrics.get('bundle', {}).get('config', 'frozen')}, frozen)"
    if method == "radiomics":
        return f"Radiomics ({metrics.get('radiomics', {}).get('config') or 'frozen'}, frozen)"
    return reader_label(method, simulated=simulated_readers)


def _interval(entry: Mapping[str, Any] | None, *, decimals: int = 2, signed: bool = False
              ) -> str:
    """``{"estimate", "ci_low", "ci_high"}`` (JSON: ``None`` where not estimable) as text."""
    from magn_lib.display import MISSING

    if not entry or entry.get("estimate") is None:
        return MISSING
    value, low, high = (entry.get(k) for k in ("estimate", "ci_low", "ci_high"))
    if signed or (low is not None and low < 0):  # "-1.2–3.4" would read as a range of dashes
        text = f"{value:+.{decimals}f}"
        return text if low is None or high is None else \
            f"{text} (95 % CI {low:+.{decimals}f} to {high:+.{decimals}f})"
    return format_interval(value, low if low is not None else float("nan"),
                           high if high is not None else float("nan"), decimals=decimals)


def external_comparison(metrics: Mapping[str, Any], *, simulated_readers: bool) -> Any:
    """The external validation beside the internal estimate, one row per method.

    Columns: ``Model``; ``Lesions (MM)``; the external AUC (DeLong, lesion level); the
    internal cross-validation AUC as the paper reports it (mean ± SD over the folds) and
    pooled after ranking within folds (patient bootstrap); ACC, F1, sensitivity, specificity
    at the bundle's operating point (patient bootstrap); calibration-in-the-large and slope
    (patient-clustered intervals); Brier score. Cells that cannot be estimated are ``–``.
    """
    import pandas as pd

    from magn_lib.display import MISSING

    rows = []
    for method, entry in metrics.get("methods", {}).items():
        internal = metrics.get("internal", {}).get(method)
        calibration = entry.get("calibration") or {}
        if internal:
            sd = internal.get("auc_fold_sd")
            folds = (MISSING if internal.get("auc_fold_mean") is None else
                     f"{internal['auc_fold_mean']:.2f}" + (f" ± {sd:.2f}" if sd is not None
                                                            else ""))
            ranked = _interval(internal.get("auc_ranked_within_folds"))
        else:
            folds = ranked = MISSING
        rows.append({
            "Model": external_model_label(method, metrics, simulated_readers=simulated_readers),
            "Lesions (MM)": f"{entry['n_lesions']} ({entry['n_mm']})",
            "External AUC (DeLong)": _interval(entry.get("auc")),
            "Internal AUC, folds (mean ± SD)": folds,
            "Internal AUC, pooled ranked within folds": ranked,
            **{name: _interval(entry.get(key)) for name, key in (
                ("ACC", "accuracy"), ("F1", "f1"), ("Sensitivity", "sensitivity"),
                ("Specificity", "specificity"))},
            "Calibration-in-the-large": _interval(
                calibration.get("calibration_in_the_large"), signed=True),
            "Calibration slope": _interval(calibration.get("calibration_slope")),
            "Brier score": MISSING if entry.get("brier") is None else f"{entry['brier']:.3f}",
        })
    return pd.DataFrame(rows)


def external_warnings(metrics: Mapping[str, Any]) -> Any:
    """The input checks that fired on the external cohort, counted by kind: ``Input check``,
    ``Checks``, ``Lesions`` (a lesion may fire several), then the unreadable lesions."""
    import pandas as pd

    counts = metrics.get("warnings", {})
    rows = [{"Input check": kind.replace("_", " "), "Checks": v["checks"],
             "Lesions": v["lesions"]} for kind, v in counts.get("by_kind", {}).items()]
    rows.append({"Input check": "unreadable (not scored)", "Checks": counts.get(
        "n_unreadable", 0), "Lesions": counts.get("n_unreadable", 0)})
    return pd.DataFrame(rows, columns=["Input check", "Checks", "Lesions"])


_BREAKDOWN_VARIABLES = {"vendor": "Scanner vendor", "field_strength_t": "Field strength (T)",
                        "slice_thickness_mm": "Sagittal slice thickness (mm)"}


def external_breakdown(table: Any, metrics: Mapping[str, Any], *,
                       simulated_readers: bool) -> Any:
    """The per-acquisition breakdown (:func:`magn_lib.external.breakdown` rows) for reading:
    ``Variable, Level, Model, Lesions (MM), AUC (DeLong), Accuracy, Mean predicted, Observed
    MM``. Empty when the cohort has one level of every variable."""
    import pandas as pd

    rows = [{
        "Variable": _BREAKDOWN_VARIABLES.get(r["variable"], r["variable"]),
        "Level": str(r["level"]),
        "Model": external_model_label(r["method"], metrics,
                                      simulated_readers=simulated_readers),
        "Lesions (MM)": f"{int(r['n_lesions'])} ({int(r['n_mm'])})",
        "AUC (DeLong)": format_interval(r["auc"], r["auc_ci_low"], r["auc_ci_high"]),
        "Accuracy": format_interval(r["accuracy"]),
        "Mean predicted": format_interval(r["mean_probability"]),
        "Observed MM": format_interval(r["observed_rate"]),
    } for _, r in table.iterrows()]
    return pd.DataFrame(rows, columns=["Variable", "Level", "Model", "Lesions (MM)",
                                       "AUC (DeLong)", "Accuracy", "Mean predicted",
                                       "Observed MM"])


def external_recalibration(metrics: Mapping[str, Any]) -> Any | None:
    """The optional recalibration, before and after, on the evaluation patients only (``None``
    when it was not requested): ``Model, Fitted on, Evaluated on, `` then calibration-in-the-
    large, slope, Brier score and accuracy before and after."""
    import pandas as pd

    result = metrics.get("recalibration") or {}
    if not result.get("requested"):
        return None
    rows = []
    for method, entry in result.get("methods", {}).items():
        row = {"Model": external_model_label(method, metrics, simulated_readers=False),
               "Fitted on (lesions)": entry.get("n_fit_lesions"),
               "Evaluated on (lesions)": entry.get("n_evaluation_lesions")}
        for when in ("before", "after"):
            part = entry.get(when) or {}
            row[f"Calibration-in-the-large, {when}"] = _interval(
                part.get("calibration_in_the_large"), signed=True)
            row[f"Calibration slope, {when}"] = _interval(part.get("calibration_slope"))
            row[f"Brier score, {when}"] = ("–" if part.get("brier") is None
                                           else f"{part['brier']:.3f}")
            row[f"Accuracy, {when}"] = ("–" if part.get("accuracy") is None
                                        else f"{part['accuracy']:.0%}")
        if entry.get("note"):
            row["Note"] = entry["note"]
        rows.append(row)
    return pd.DataFrame(rows)


def external_line(metrics: Mapping[str, Any], *, site: str, method: str = "magn") -> str:
    """:func:`external_result_line` from the validation's ``metrics.json``: the external AUC
    with its patient-bootstrap interval (lesions cluster in patients; the lesion-level DeLong
    interval only where the bootstrap could not be taken, and then so named), the internal AUC
    pooled after ranking within folds (patient bootstrap; the headline of Table 2),
    calibration-in-the-large and the mean predicted probability against the observed share of
    myeloma lesions."""
    entry = metrics["methods"][method]
    internal = metrics.get("internal", {}).get(method) or {}
    ranked = internal.get("auc_ranked_within_folds") or {}
    calibration = entry.get("calibration") or {}
    citl = calibration.get("calibration_in_the_large") or {}

    def number(value: Any) -> float:
        return float("nan") if value is None else float(value)

    auc = entry.get("auc") or {}
    if auc.get("bootstrap"):
        auc_low, auc_high = auc["bootstrap"]
        intervals = "both AUC intervals: patient bootstrap"
    else:
        auc_low, auc_high = auc.get("ci_low"), auc.get("ci_high")
        intervals = ("AUC intervals: external DeLong at lesion level, internal patient "
                     "bootstrap" if auc_low is not None else None)
    return external_result_line(
        site=site, auc=number(auc.get("estimate")), auc_low=auc_low,
        auc_high=auc_high, intervals=intervals, internal_auc=number(ranked.get("estimate")),
        internal_low=ranked.get("ci_low"), internal_high=ranked.get("ci_high"),
        citl=number(citl.get("estimate")), citl_low=citl.get("ci_low"),
        citl_high=citl.get("ci_high"), mean_predicted=number(calibration.get("mean_predicted")),
        observed=number(calibration.get("observed_rate")), n_lesions=int(entry["n_lesions"]),
        n_patients=int(entry["n_patients"]),
        model="the model" if method == "magn" else f"the {method} model",
        described=_described(method, metrics))


def _described(method: str, metrics: Mapping[str, Any]) -> str | None:
    """Which frozen model the line speaks of (the exported configuration)."""
    config = (metrics.get("bundle", {}) if method == "magn"
              else metrics.get("radiomics", {})).get("config")
    if not config:
        return None
    return f"{'MAGN' if method == 'magn' else 'radiomics'} {config}, frozen at site A"


def write_external_front(
    run_dir: str | Path,
    *,
    line: str,
    site: str,
    simulated: bool,
    n_patients: int,
    tables: Sequence[tuple[str, str | Path, str]] = (),
    figures: Sequence[tuple[str, str | Path, str]] = (),
) -> Path:
    """Record the external validation's part of ``index.html`` (notebook 07 calls this; the
    study runner shows it only while the study validates on an external cohort).

    Args:
        run_dir: the run's report folder.
        line: the plain-language line (:func:`external_result_line`), shown in the summary.
        site: the site's name as the line gives it ("simulated site B").
        simulated: the external cohort is simulated (the embedded site).
        n_patients: its number of patients (for the limitations).
        tables, figures: ``(title, path, caption)`` as for :func:`write_front_page`.

    Returns:
        The written record (:attr:`ReportPaths.front_page_external`).
    """
    from magn_lib.config import resolve_path

    run_dir = resolve_path(run_dir)
    spec = {"line": line, "site": site, "simulated": bool(simulated),
            "n_patients": int(n_patients),
            "tables": [{"title": t, "csv": _inside(run_dir, p), "caption": c}
                       for t, p, c in tables],
            "figures": [{"title": t, "png": _inside(run_dir, p), "caption": c}
                        for t, p, c in figures]}
    out = ReportPaths(run_dir).front_page_external
    atomic_write_text(out, json.dumps(spec, indent=2))
    return out


def _inside(run_dir: Path, path: str | Path) -> str:
    """``path`` (a file of the run) relative to the run's report folder."""
    from magn_lib.config import resolve_path

    path = resolve_path(path) if not Path(path).is_absolute() else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"front page item {path.name} does not exist")
    return path.resolve().relative_to(run_dir.resolve()).as_posix()


def _limitations(embedded: bool, external: Mapping[str, Any] | None = None) -> list[str]:
    items = []
    if embedded:
        items.append(
            "<b>Synthetic data — demonstrates the method, says nothing about patients.</b> "
            "The cohort is a generated phantom with known truth, built so that the task is "
            "learnable; its numbers must not be compared with clinical performance."
        )
        items.append(
            "<b>Simulated readers.</b> The two readers are simulated, not radiologists: their "
            "calls are drawn from the true diagnosis with the sensitivity and specificity that "
            "the paper's radiologists' accuracy and AUC imply, and they never see the images. "
            "Readers-versus-model comparisons on this cohort demonstrate the analysis only."
        )
    items += [
        "Lesions are classified from contrast-enhanced T1 images alone, as in the original "
        "study; no clinical, laboratory or other sequence information is used.",
        ("Performance comes from cross-validation within one cohort; no external, prospective "
         "or multi-centre validation is included. Expect lower performance on other scanners "
         "and populations." if external is None else
         f"Besides cross-validation within one cohort, the frozen model was validated on one "
         f"external {'simulated ' if external.get('simulated') else ''}site "
         f"({html.escape(str(external['site']))}, {int(external['n_patients'])} patients"
         + ("; a generated phantom, so this shows how the validation works, not how the model "
            "transfers to patients" if external.get("simulated") else "")
         + "); no prospective or broader multi-centre validation is included."),
        "Coronal and axial masks are transferred from the sagittal mask through the scanner's "
        "coordinates, not drawn; thick sagittal slices make their borders coarse.",
        "With a few dozen lesions per fold, fold-to-fold spread is large. Confidence intervals "
        "resample patients but treat the trained fold models as fixed: they do not include "
        "the variation from re-training the networks.",
    ]
    return items


def _model_card(facts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    card = [
        ("Model", "Multi-view attention-guided network (MAGN; Chen et al. 2022): one ResNet "
         "per MRI view, log-sum-exp pooling, features of the views joined by one linear layer, "
         "trained with a cross-entropy loss plus an attention term that pulls each view's "
         "class activation map towards the lesion mask."),
        ("Intended use", "Research on methods for telling spinal multiple myeloma from "
         "lung-cancer spinal metastasis on CE-T1 MRI. Not a medical device; not for diagnosis, "
         "treatment decisions or any clinical use."),
        ("Out of scope", "Other tumour types, other primary cancers, non-enhanced or other "
         "sequences, lesions without a sagittal mask, paediatric patients."),
    ]
    card += list(facts)
    card.append(
        ("Ethics and data", "Inputs are de-identified at ingest; the report carries "
         "pseudonymous study identifiers only.")
    )
    return card


def write_front_page(
    run_dir: str | Path,
    *,
    summary: Sequence[str],
    tables: Sequence[tuple[str, str | Path, str]] = (),
    figures: Sequence[tuple[str, str | Path, str]] = (),
    model_facts: Sequence[tuple[str, str]] = (),
) -> Path:
    """Record what the run's ``index.html`` shows above the notebook list.

    Notebooks call this (the figures notebook, last); the study runner renders it.

    Args:
        run_dir: the run's report folder.
        summary: plain-language paragraphs (question, what was done, the result).
        tables: ``(title, CSV path, caption)``; paths inside the run folder.
        figures: ``(title, PNG path, caption)``; embedded into the page as data URIs.
        model_facts: extra ``(field, text)`` rows of the model card (training data, metrics).

    Returns:
        The path of the written front page record (:attr:`ReportPaths.front_page`).
    """
    from magn_lib.config import resolve_path

    run_dir = resolve_path(run_dir)

    def rel(path: str | Path) -> str:
        return _inside(run_dir, path)

    spec = {
        "summary": list(summary),
        "tables": [{"title": t, "csv": rel(p), "caption": c} for t, p, c in tables],
        "figures": [{"title": t, "png": rel(p), "caption": c} for t, p, c in figures],
        "model_facts": [list(f) for f in model_facts],
    }
    out = ReportPaths(run_dir).front_page
    atomic_write_text(out, json.dumps(spec, indent=2))
    return out


def _table_html(csv_path: Path) -> str:
    import pandas as pd

    # as text: the table was written for reading (a number keeps the digits it was given)
    frame = pd.read_csv(csv_path, keep_default_na=False, dtype=str)
    return clinician_table(frame, index=False)._repr_html_()


def _figure_html(png_path: Path, title: str, caption: str) -> str:
    data = base64.b64encode(png_path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)}</figcaption></figure>"
    )


def front_page_html(run_dir: str | Path, *, embedded: bool, external: bool = False) -> str:
    """The clinician-facing part of ``index.html``: summary, tables, figures, limitations,
    model card and glossary. Without a recorded front page only the fixed sections appear.

    With ``external`` (the study validated on an external cohort), the external validation's
    record (:func:`write_external_front`) adds its line to the summary, its tables and figures
    under "External validation", and the limitations and the model card say so; a record left
    by an earlier run is not shown without ``external``."""
    run_dir = Path(run_dir)
    spec_path = ReportPaths(run_dir).front_page
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    outside_path = ReportPaths(run_dir).front_page_external
    outside = (json.loads(outside_path.read_text())
               if external and outside_path.is_file() else None)
    esc = html.escape
    parts = []
    if spec.get("summary") or outside:
        parts.append("<h2>Summary</h2>")
        parts += [f"<p>{esc(p)}</p>" for p in spec.get("summary", [])]
        if outside:
            parts.append(f'<p class="magn-external"><b>External validation.</b> '
                         f"{esc(outside['line'])}</p>")
    for table in spec.get("tables", []):
        parts.append(f"<h2>{esc(table['title'])}</h2>")
        parts.append(_table_html(run_dir / table["csv"]))
        if table.get("caption"):
            parts.append(f'<p class="small">{esc(table["caption"])}</p>')
    if spec.get("figures"):
        parts.append("<h2>Key figures</h2>")
        parts += [_figure_html(run_dir / f["png"], f["title"], f.get("caption", ""))
                  for f in spec["figures"]]
    if outside and (outside.get("tables") or outside.get("figures")):
        parts.append(f"<h2>External validation ({esc(outside['site'])})</h2>")
        for table in outside.get("tables", []):
            parts.append(f"<h3>{esc(table['title'])}</h3>")
            parts.append(_table_html(run_dir / table["csv"]))
            if table.get("caption"):
                parts.append(f'<p class="small">{esc(table["caption"])}</p>')
        parts += [_figure_html(run_dir / f["png"], f["title"], f.get("caption", ""))
                  for f in outside.get("figures", [])]
    parts.append("<h2>Limitations</h2><ul>")
    parts += [f"<li>{item}</li>" for item in _limitations(embedded, outside)]
    parts.append("</ul><h2>Model card</h2><dl>")
    facts = [tuple(f) for f in spec.get("model_facts", [])]
    if outside:
        facts.append(("External validation", outside["line"]))
    parts += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in _model_card(facts)]
    parts.append("</dl>")
    return "\n".join(parts)


def glossary_html() -> str:
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in GLOSSARY)
    return f"<h2>Glossary</h2><dl>{items}</dl>"


def render_index(
    *,
    title: str,
    entries: Sequence[IndexEntry],
    provenance: Sequence[tuple[str, str]],
    warnings: Sequence[str] = (),
    intro_html: str = "",
    body_html: str = "",
    record_href: str | None = None,
    header_html: str = "",
) -> str:
    """The run's front page.

    Order: title and intro, warnings, ``body_html`` (summary, tables, figures, limitations,
    model card — see :func:`front_page_html`), the notebooks in reading order with one line
    each, the glossary, provenance and, when ``record_href`` is given, a link to the run's full
    record (the run manifest, relative to the page). All text is HTML-escaped except
    ``intro_html`` and ``body_html``, which the caller builds from escaped parts.
    """
    esc = html.escape
    items = "\n".join(
        f'<li><a href="{esc(e.clinician_href)}"><b>{esc(e.title)}</b></a> '
        f'<span class="small">(<a href="{esc(e.full_href)}">with code</a>)</span><br>'
        f'<span class="summary">{esc(e.summary)}</span></li>'
        for e in entries
    )
    warn = "".join(f'<div class="warn"><b>Warning.</b> {esc(w)}</div>' for w in warnings)
    prov = "\n".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in provenance)
    record = "" if record_href is None else (
        '<p class="small">The full record (software versions, parameters, input checksums, '
        f'timings) is in\n<a href="{esc(record_href)}">{esc(Path(record_href).name)}</a>.</p>'
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{_INDEX_CSS}{_NAV_CSS}</style></head>
<body>
{header_html}
<h1>{esc(title)}</h1>
{intro_html}
{warn}
{body_html}
<h2>The full report, in reading order</h2>
<ol class="nb">
{items}
</ol>
{glossary_html()}
<h2>About this run</h2>
<table class="prov">
{prov}
</table>
{record}
</body></html>
"""


# --------------------------------------------------------------------------------------------
# navigation: every page says where it belongs and links on

STUDY_NAME = "MAGN study: spinal multiple myeloma vs lung-cancer metastasis on MRI"

_NAV_CSS = """
nav.magn-nav{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:.88rem;
background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:.45rem 1rem;margin:0 0 1rem 0;
display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;align-items:baseline;line-height:1.4}
nav.magn-nav .magn-study{font-weight:600} nav.magn-nav a{color:#0550ae;text-decoration:none}
nav.magn-nav a:hover{text-decoration:underline} nav.magn-nav .magn-here{color:#57606a}
@media print{nav.magn-nav{display:none}}
"""

# tables and figures of the notebook pages: fit a 1280 px window and an A4 page
_PAGE_CSS = """
table.magn-table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0;max-width:100%}
.jp-RenderedHTMLCommon table.magn-table th,.jp-RenderedHTMLCommon table.magn-table td,
table.magn-table th,table.magn-table td{padding:.2rem .55rem;border-bottom:1px solid #eaeef2;
text-align:left;vertical-align:top;overflow-wrap:break-word}
table.magn-table thead th{background:#f6f8fa} table.magn-table caption{caption-side:top;
text-align:left;font-size:.85rem;color:#57606a;padding:.2rem 0}
.jp-RenderedImage img,.jp-RenderedHTMLCommon img{max-width:100%;height:auto}
.jp-OutputArea-output pre{white-space:pre-wrap;overflow-wrap:anywhere}
figure.magn-figure,.jp-RenderedImage,table.magn-table{break-inside:avoid}
"""


@dataclass(frozen=True)
class PageLink:
    """A link in a page's navigation header; ``href`` relative to the page."""

    title: str
    href: str


def navigation_html(*, run: str, index: PageLink | None = None,
                    previous: PageLink | None = None, next: PageLink | None = None,
                    views: Sequence[PageLink] = (), here: str | None = None,
                    extra: Sequence[PageLink] = ()) -> str:
    """The header of every report page: study name, run, index, previous/next notebook and
    the other view of the same notebook (clinician view <-> analyst view).

    Args:
        run: the run's name (its report folder) and profile, as the reader should see it.
        index: the run's front page.
        previous, next: the neighbouring notebooks in reading order (same kind of view).
        views: the other views of this page (e.g. "Analyst view (with code)").
        here: what this page is ("Clinician view"), shown as plain text.
        extra: further links (the single-file report and its PDF on the front page).
    """
    esc = html.escape

    def link(item: PageLink, prefix: str = "", suffix: str = "") -> str:
        return f'<a href="{esc(item.href)}">{prefix}{esc(item.title)}{suffix}</a>'

    parts = [f'<span class="magn-study">{esc(STUDY_NAME)}</span>',
             f"<span>Run: <b>{esc(run)}</b></span>"]
    if index is not None:
        parts.append(link(index))
    if previous is not None:
        parts.append(link(previous, "← "))
    if next is not None:
        parts.append(link(next, "", " →"))
    if here:
        parts.append(f'<span class="magn-here">{esc(here)}</span>')
    parts += [link(v) for v in views]
    parts += [link(v) for v in extra]
    return f'<nav class="magn-nav" aria-label="Report navigation">{" ".join(parts)}</nav>'


# --------------------------------------------------------------------------------------------
# executed notebooks without machine traces

# a tqdm line: "<description>: 42%|####  | 5/12 [00:03<00:04, 1.9it/s]" (or "5/12 [00:03<")
_PROGRESS = re.compile(r"^(.*?)\s*(\d+%\||\d+/\d+ \[\d+:\d\d)")
_TEXT_MIMETYPES = ("text/", "application/json", "application/vnd.magn")


def _bar(line: str) -> str | None:
    """The description of the progress bar drawn on ``line``, ``None`` for other text."""
    match = _PROGRESS.search(line)
    return None if match is None else match.group(1)


def collapse_progress(text: str) -> str:
    """A stream as a terminal would end up showing it, progress bars at their final state.

    Each line keeps what follows its last carriage return (a bar redrawn in place), and a run
    of lines of one bar (same description) keeps only its last line.
    """
    out: list[str] = []
    for raw in text.split("\n"):
        line = raw.rsplit("\r", 1)[-1]
        name = _bar(line)
        if name is not None and out and _bar(out[-1]) == name:
            out[-1] = line
        else:
            out.append(line)
    return "\n".join(out)


def machine_paths(project: str | Path) -> list[tuple[str, str]]:
    """``(absolute prefix, replacement)`` pairs that hide where a run ran, longest first.

    The project folder becomes nothing (paths inside it read relative to it) or
    ``<project>``; the Python environment ``<env>``; the home folder ``<home>``; the
    temporary folder ``<tmp>``. Both the given and the resolved spelling of each are listed.
    """
    import sys
    import tempfile

    pairs: dict[str, str] = {}
    for folder, name in ((Path(project), "<project>"), (Path(sys.prefix), "<env>"),
                         (Path.home(), "<home>"), (Path(tempfile.gettempdir()), "<tmp>")):
        for spelling in {str(folder), str(folder.resolve())}:
            if len(spelling) > 1:
                pairs.setdefault(spelling + "/", "" if name == "<project>" else name + "/")
                pairs.setdefault(spelling, name)
    return sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True)


def scrub_text(text: str, replacements: Sequence[tuple[str, str]]) -> str:
    """``text`` with every machine path of :func:`machine_paths` replaced (whole path parts
    only: ``/tmp`` does not touch ``/tmpfoo``)."""
    if not text:
        return text
    for prefix, replacement in replacements:
        if prefix in text:
            end = "" if prefix.endswith("/") else r"(?![\w.+-])"
            text = re.sub(re.escape(prefix) + end, lambda _m, r=replacement: r, text)
    return text


def _scrub_value(value: Any, replacements: Sequence[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return scrub_text(value, replacements)
    if isinstance(value, list):
        return [_scrub_value(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, replacements) for k, v in value.items()}
    return value


def scrub_notebook(nb: nbformat.NotebookNode, *, project: str | Path) -> nbformat.NotebookNode:
    """A copy of an executed notebook without traces of the machine that ran it.

    Absolute paths (papermill's recorded input/output paths and parameters, the injected
    parameters cell, warnings and tracebacks, text outputs) are replaced as
    :func:`machine_paths` says; progress-bar streams are collapsed to their final line
    (:func:`collapse_progress`). Images are left untouched.
    """
    pairs = machine_paths(project)
    # in Markdown and HTML "<tmp>" would be read as a tag and vanish
    escaped = [(prefix, html.escape(name)) for prefix, name in pairs]
    nb = copy.deepcopy(nb)
    nb.metadata = nbformat.from_dict(_scrub_value(dict(nb.metadata), pairs))
    for cell in nb.cells:
        cell.source = scrub_text(cell.source, escaped if cell.cell_type == "markdown" else pairs)
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "stream":
                out["text"] = scrub_text(collapse_progress(out.get("text", "")), pairs)
            for key in ("evalue", "ename"):
                if key in out:
                    out[key] = scrub_text(out[key], pairs)
            if "traceback" in out:
                out["traceback"] = [scrub_text(line, pairs) for line in out["traceback"]]
            for mime, data in out.get("data", {}).items():
                if mime.startswith(_TEXT_MIMETYPES):
                    markup = mime in ("text/html", "text/markdown")
                    out["data"][mime] = _scrub_value(data, escaped if markup else pairs)
    return nb


# --------------------------------------------------------------------------------------------
# the report as one file: report.html, and report.pdf printed from it

_PRINT_CSS = """
body{max-width:72rem;margin:0 auto;padding:0 1rem}
.magn-toc ol{line-height:1.6} section.magn-part{margin-top:2rem}
section.magn-part>h2.magn-part-title{border-bottom:2px solid #d0d7de;font-size:1.5rem}
.magn-front figure img{max-width:100%;height:auto}
.magn-front table{border-collapse:collapse;font-size:.85rem}
.magn-front th,.magn-front td{padding:.2rem .55rem;border-bottom:1px solid #eaeef2;
text-align:left;vertical-align:top}
@page{size:A4;margin:16mm 14mm 18mm 14mm;
@bottom-center{content:"Page " counter(page) " of " counter(pages);font:9pt sans-serif;
color:#57606a}}
@media print{section.magn-part{break-before:page}
figure,img,table,.jp-RenderedImage,.jp-OutputArea-output{break-inside:avoid}
h1,h2,h3{break-after:avoid} a{color:inherit;text-decoration:none}}
"""

_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.S)
_MAIN = re.compile(r"<main>(.*)</main>", re.S)


@dataclass(frozen=True)
class ReportPart:
    """One notebook's clinician view as a chapter of ``report.html``."""

    anchor: str
    title: str
    summary: str
    page_html: str  # the notebook's clinician page, as :func:`render_html` writes it


def _prefixed_ids(body: str, prefix: str) -> str:
    """In-page anchors of one chapter made unique in the joined page."""
    body = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', body)
    return re.sub(r'\bhref="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', body)


def render_report(*, title: str, run: str, parts: Sequence[ReportPart], front_html: str = "",
                  provenance: Sequence[tuple[str, str]] = (), intro_html: str = "") -> str:
    """Every clinician view of a run in one self-contained page, in reading order.

    The page holds the front page (summary, tables, key figures, limitations, model card),
    a table of contents, each notebook as a chapter, the glossary and the provenance. Images
    stay embedded as data URIs and the page loads nothing from elsewhere, so it can be sent
    as one file; printed (:func:`print_pdf`) each chapter starts a page, figures and tables
    are not split and every page is numbered.

    Args:
        title, run: the report's title and the run's name.
        parts: the chapters, in reading order.
        front_html: the front page's body (:func:`front_page_html`).
        provenance: ``(field, value)`` rows (profile, data, code version, ...).
        intro_html: a line under the title (HTML, built by the caller from escaped parts).
    """
    esc = html.escape
    styles = _STYLE.findall(parts[0].page_html) if parts else []
    toc = ['<li><a href="#summary">Summary, key results, limitations and model card</a></li>']
    chapters = []
    for part in parts:
        toc.append(f'<li><a href="#{esc(part.anchor)}">{esc(part.title)}</a>'
                   + (f'<br><span class="small">{esc(part.summary)}</span>' if part.summary
                      else "") + "</li>")
        found = _MAIN.search(part.page_html)
        body = found.group(1) if found else part.page_html
        body = re.sub(r'<nav\b[^>]*\bmagn-nav\b[^>]*>.*?</nav>', "", body, flags=re.S)
        # the notebook's own first heading is the chapter's title
        chapters.append(f'<section class="magn-part" id="{esc(part.anchor)}">'
                        f"{_prefixed_ids(body, part.anchor)}</section>")
    toc.append('<li><a href="#glossary">Glossary</a></li>')
    toc.append('<li><a href="#provenance">About this run</a></li>')
    prov = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in provenance)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
{"".join(styles)}
<style>{_INDEX_CSS}{_PAGE_CSS}{_PRINT_CSS}</style></head>
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<main>
<h1>{esc(title)}</h1>
<p class="sub">{esc(STUDY_NAME)} · run <b>{esc(run)}</b></p>
{intro_html}
<nav class="magn-toc" aria-label="Contents"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>
<section class="magn-part magn-front" id="summary">
<h2 class="magn-part-title">Summary, key results, limitations and model card</h2>
{front_html}
</section>
{"".join(chapters)}
<section class="magn-part" id="glossary">{glossary_html()}</section>
<section class="magn-part" id="provenance"><h2>About this run</h2>
<table class="prov">{prov}</table></section>
</main></body></html>
"""


def find_chromium() -> str | None:
    """The system's Chromium (``$MAGN_CHROMIUM`` first), or ``None`` when there is none."""
    import os
    import shutil

    for candidate in (os.environ.get("MAGN_CHROMIUM"), "chromium", "chromium-browser",
                      "google-chrome", "google-chrome-stable"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def print_pdf(html_path: str | Path, pdf_path: str | Path, *, chromium: str | None = None,
              timeout_s: float = 300) -> str | None:
    """Print a page to PDF (A4, numbered pages) with a headless Chromium.

    Returns:
        ``None`` when ``pdf_path`` was written; otherwise why no PDF was produced (no Chromium
        on this machine, or it failed) — the caller says so in the report; nothing is raised
        and no partial file is left.
    """
    import os
    import subprocess
    import tempfile

    from magn_lib.files import atomic_path

    executable = chromium or find_chromium()
    if executable is None:
        return ("no Chromium was found on this machine (install the `chromium` package or set "
                "MAGN_CHROMIUM to a Chromium or Chrome executable)")
    html_path = Path(html_path).resolve()
    with tempfile.TemporaryDirectory(prefix="magn-chromium-") as profile:
        flags = ["--headless", "--disable-gpu", "--no-pdf-header-footer", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        try:
            with atomic_path(pdf_path) as tmp:
                done = subprocess.run([executable, *flags, f"--print-to-pdf={tmp}",
                                       html_path.as_uri()], capture_output=True, text=True,
                                      timeout=timeout_s, check=False)
                if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0 \
                        or not tmp.read_bytes().startswith(b"%PDF-"):
                    raise RuntimeError(f"Chromium exited with status {done.returncode}")
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"Chromium could not print the report ({exc})"
    return None
