"""HTML views of executed notebooks and the run's ``index.html``.

Each executed notebook is rendered twice: a *clinician view* (``html/``) with no code cells,
no prompts and no stderr streams (progress bars, library chatter), and a *full view*
(``html-full/``) with code, for analysts. Images are embedded, so every page is a single file
that can be e-mailed. Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import copy
import html
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

__all__ = [
    "IndexEntry",
    "atomic_write_text",
    "clinician_notebook",
    "render_html",
    "render_index",
]

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
    exporter = HTMLExporter(template_name="lab", embed_images=True)
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
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;color:#1b1f23;line-height:1.5}
h1{font-size:1.6rem;margin-bottom:.2rem} .sub{color:#57606a;margin-top:0}
ol.nb li{margin:.6rem 0} .summary{color:#3d444d}
.warn{background:#fff4e5;border-left:4px solid #e8912d;padding:.5rem 1rem;margin:1rem 0}
table.prov{border-collapse:collapse;font-size:.9rem} table.prov td{padding:.15rem .8rem .15rem 0;
vertical-align:top} .small{font-size:.85rem;color:#57606a}
"""


def render_index(
    *,
    title: str,
    entries: Sequence[IndexEntry],
    provenance: Sequence[tuple[str, str]],
    warnings: Sequence[str] = (),
    intro_html: str = "",
) -> str:
    """The run's front page: notebooks in order with one line each, warnings, provenance.

    All text is HTML-escaped except ``intro_html``, which the caller builds.
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
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{_INDEX_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
{intro_html}
{warn}
<h2>Report, in reading order</h2>
<ol class="nb">
{items}
</ol>
<h2>About this run</h2>
<table class="prov">
{prov}
</table>
<p class="small">The full record (software versions, parameters, input checksums, timings) is in
<a href="run_manifest.json">run_manifest.json</a>.</p>
</body></html>
"""
