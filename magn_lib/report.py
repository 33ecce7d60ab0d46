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
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
from nbconvert import HTMLExporter

from magn_lib.layout import ReportPaths

__all__ = [
    "GLOSSARY",
    "IndexEntry",
    "atomic_write_text",
    "clinician_notebook",
    "front_page_html",
    "render_html",
    "plain_summary",
    "render_index",
    "save_table",
    "write_front_page",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
# cells carrying this tag are left out of the clinician view (e.g. a diagnostic table)
ANALYST_ONLY_TAG = "analyst-only"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_table(frame: Any, path: str | Path, *, index: bool = False) -> Path:
    """Write a table as CSV (atomically, folders created); return the path.

    Args:
        frame: a pandas DataFrame.
        path: the file, as the run's layout names it: ``paths.table(name)``,
            ``paths.oof(method)`` (:class:`magn_lib.layout.ReportPaths`).
        index: write the frame's index as the first column.
    """
    path = Path(path)
    atomic_write_text(path, frame.to_csv(index=index))
    return path


def clinician_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` for readers without code: stderr streams and analyst-only cells removed.

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
        cells.append(cell)
    nb.cells = cells
    return nb


def render_html(nb: nbformat.NotebookNode, *, with_code: bool, title: str | None = None) -> str:
    """Render an executed notebook to one self-contained HTML page.

    Args:
        nb: the executed notebook.
        with_code: ``False`` for the clinician view (no code cells, no prompts, no stderr).
        title: the page title (default: the notebook's first heading).
    """
    exporter = HTMLExporter(
        template_name="magn", extra_template_basedirs=[str(TEMPLATES)], embed_images=True
    )
    if not with_code:
        nb = clinician_notebook(nb)
        exporter.exclude_input = True
        exporter.exclude_input_prompt = True
        exporter.exclude_output_prompt = True
    resources = {"metadata": {"name": title or notebook_title(nb)}}
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
        pooled = (f"pooled over all lesions after ranking within each fold "
                  f"{r['auc_ranked']:.2f}, 95 % CI {r['auc_ranked_low']:.2f}–"
                  f"{r['auc_ranked_high']:.2f}, resampling patients")
        if not np.isfinite(r["auc_fold_mean"]):
            return f"{r['auc_ranked']:.2f} ({pooled})"
        sd = f" ± {r['auc_fold_sd']:.2f}" if np.isfinite(r["auc_fold_sd"]) else ""
        return f"{r['auc_fold_mean']:.2f}{sd} (mean ± SD over the folds; {pooled})"

    def acc(key: tuple[str, str]) -> str:
        r = rows.get(model_name(*key))
        return "not available" if r is None else f"{r['accuracy']:.0%}"

    paragraphs = [
        "Question: can a computer model tell spinal multiple myeloma from spinal metastasis of "
        "lung cancer on contrast-enhanced T1 MRI, and does it do better than a conventional "
        "radiomics model and than radiologists"
        f"{' (on this cohort: simulated readers)' if simulated_readers else ''}? This repeats "
        "the study of Chen et al. (Front. Oncol. 2022) step by step.",
        f"What was done: {n_lesions} lesions of {n_patients} patients ({n_mm} myeloma, "
        f"{n_lesions - n_mm} metastasis lesions) were analysed. Each lesion was outlined once "
        "on the sagittal images and the outline was carried over to the coronal and axial "
        f"images. The models were trained and tested by {n_folds}-fold cross-validation: every "
        "lesion was scored by a model that had never seen that patient.",
    ]
    primary_name, comparator_name = model_name(*primary), model_name(*comparator)
    result = (
        f"Result: the proposed network (MAGN, three views with attention guidance) reached an "
        f"area under the ROC curve (AUC) of {auc(primary)} and classified {acc(primary)} of "
        f"the lesions correctly; the multi-view radiomics model reached an AUC of "
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
            result += (f" On the same lesions the two AUCs show {verdict} (lesion-level DeLong "
                       f"test, which ignores that lesions of a patient are alike, p = "
                       f"{'<0.001' if p < 0.001 else f'{p:.3f}'}).")
    paragraphs.append(result)
    if embedded:
        paragraphs.append(
            "These numbers come from the embedded synthetic cohort, built to demonstrate the "
            "method: they say nothing about how the model would perform on patients."
        )
    return paragraphs


def _limitations(embedded: bool) -> list[str]:
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
        "Performance comes from cross-validation within one cohort; no external, prospective "
        "or multi-centre validation is included. Expect lower performance on other scanners "
        "and populations.",
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
        path = resolve_path(path) if not Path(path).is_absolute() else Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"front page item {path.name} does not exist")
        return path.resolve().relative_to(run_dir.resolve()).as_posix()

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

    frame = pd.read_csv(csv_path, keep_default_na=False)
    return frame.to_html(index=False, escape=True, border=0, na_rep="")


def _figure_html(png_path: Path, title: str, caption: str) -> str:
    data = base64.b64encode(png_path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)}</figcaption></figure>"
    )


def front_page_html(run_dir: str | Path, *, embedded: bool) -> str:
    """The clinician-facing part of ``index.html``: summary, tables, figures, limitations,
    model card and glossary. Without a recorded front page only the fixed sections appear."""
    run_dir = Path(run_dir)
    spec_path = ReportPaths(run_dir).front_page
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    esc = html.escape
    parts = []
    if spec.get("summary"):
        parts.append("<h2>Summary</h2>")
        parts += [f"<p>{esc(p)}</p>" for p in spec["summary"]]
    for table in spec.get("tables", []):
        parts.append(f"<h2>{esc(table['title'])}</h2>")
        parts.append(_table_html(run_dir / table["csv"]))
        if table.get("caption"):
            parts.append(f'<p class="small">{esc(table["caption"])}</p>')
    if spec.get("figures"):
        parts.append("<h2>Key figures</h2>")
        parts += [_figure_html(run_dir / f["png"], f["title"], f.get("caption", ""))
                  for f in spec["figures"]]
    parts.append("<h2>Limitations</h2><ul>")
    parts += [f"<li>{item}</li>" for item in _limitations(embedded)]
    parts.append("</ul><h2>Model card</h2><dl>")
    facts = [tuple(f) for f in spec.get("model_facts", [])]
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
<title>{esc(title)}</title><style>{_INDEX_CSS}</style></head>
<body>
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
