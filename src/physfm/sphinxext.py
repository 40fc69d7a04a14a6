"""The book's Sphinx extension: how exercise cells render, and one fix to the pages' scripts.

Exercise cells (the convention of :mod:`physfm.student`): in the book, a code cell tagged
``exercise`` shows its solution and a cell tagged ``check`` its tests, without nbgrader's marker
lines (``### BEGIN SOLUTION`` ...). In the student edition (``physfm_student_edition = True``,
what ``make student`` sets, together with sphinx-exercise's ``hide_solutions``) an exercise cell
shows the stub the student notebook has, a check cell its visible tests, and neither shows
outputs (they came from running the solution).

Network: matplotlib's HTML animations (``FuncAnimation.to_jshtml``, behind ``physfm.viz.animate``)
link Font Awesome 4 from a CDN for their buttons. The book must read offline, and its theme
already serves Font Awesome, whose script draws those icons, so the link is dropped from the
notebook outputs of the pages (notebooks themselves keep it: Jupyter needs it).

Widgets: a notebook run by Jupyter stores the state of its ipywidgets (nbclient's
``store_widget_state``), and myst-nb embeds it in the page with the scripts of its
``nb_ipywidgets_js`` setting, by default require.js and ipywidgets' widget manager from CDNs.
The book serves the manager itself instead: the vendored bundle in ``physfm/_static/ipywidgets``
(``@jupyter-widgets/html-manager``'s ``embed.js``, with the fonts it loads and their licences) is
copied to ``_static/ipywidgets/`` of the HTML build, and ``_config.yml`` sets
``nb_ipywidgets_js`` to load it from there, after the folder's ``widget-compat.js``, which keeps
the theme's Font Awesome script from replacing the widgets' icons (the Play widget throws when
its ``<i>`` has become an ``<svg>``) and gives MathJax 3 the ``MathJax.Hub.Queue`` of MathJax 2
that the manager typesets widget labels with (each label threw without it). Explorers built from ``widgets.jslink``-ed controls
(:func:`physfm.viz.explore`) then work in the static page.

Alt text: myst-nb gives the images of a cell the alt text of its metadata
(``"mystnb": {"image": {"alt": ...}}``), but not the ``<img>`` of an HTML output such as that
animation player; those get it here.

Scripts: Sphinx 7.4 emits an inline script that an extension adds once the builder exists
(sphinx-thebe's and sphinx-togglebutton's configuration) twice on every page, because the
builder's copy is keyed ``None`` and the registry's ``""``. sphinx-thebe's script declares
``const`` names, so its second copy throws a SyntaxError in every reader's console. The
duplicates are dropped here, page by page.

Enable it with ``sphinx: extra_extensions: [physfm.sphinxext]`` in ``_config.yml``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.util.fileutil import copy_asset

from physfm import student

__all__ = ["setup", "render_exercise_cells", "drop_cdn_links", "html_alt_text", "dedupe_scripts", "WIDGETS_JS"]

# the widget manager served with the book, and where it goes in the HTML build (under _static)
WIDGETS_JS = Path(__file__).parent / "_static" / "ipywidgets"
WIDGETS_JS_TARGET = "ipywidgets"

# the stylesheet link of matplotlib's animation player (matplotlib/_animation_data.py)
CDN_LINK = re.compile(r'<link rel="stylesheet"\s+href="https://maxcdn\.bootstrapcdn\.com/font-awesome/[^"]*"\s*/?>')


def _code_cells(doctree: nodes.document):
    for node in doctree.findall(nodes.container):
        if node.get("nb_element") == "cell_code":
            yield node


def _set_text(node: nodes.TextElement, text: str) -> None:
    node.children = []
    node += nodes.Text(text)
    node.rawsource = text


def render_exercise_cells(doctree: nodes.document, student_edition: bool) -> int:
    """Rewrite the exercise and check cells of a notebook page; returns how many were rewritten."""
    count = 0
    for cell in _code_cells(doctree):
        kind = student.role({"cell_type": "code", "metadata": cell.get("cell_metadata", {})})
        if kind is None:
            continue
        for part in list(cell.children):
            element = part.get("nb_element")
            if element == "cell_code_output" and student_edition:
                cell.remove(part)
            elif element == "cell_code_source":
                for block in part.findall(nodes.literal_block):
                    text = block.astext()
                    if student_edition:
                        text = student.clear_solution(text) if kind == "exercise" else student.clear_hidden_tests(text)
                    _set_text(block, student.strip_markers(text))
        count += 1
    return count


def drop_cdn_links(doctree: nodes.document) -> int:
    """Remove matplotlib's Font Awesome CDN link from the HTML outputs of a page; returns how many."""
    count = 0
    for raw in list(doctree.findall(nodes.raw)):
        if "html" in raw.get("format", "").split() and CDN_LINK.search(raw.astext()):
            text, n = CDN_LINK.subn("", raw.astext())
            _set_text(raw, text)
            count += n
    return count


_IMG_WITHOUT_ALT = re.compile(r"<img(?![^>]*\balt=)")


def html_alt_text(doctree: nodes.document) -> int:
    """Give the ``<img>`` tags of HTML outputs their cell's alt text (``mystnb.image.alt``); returns how many."""
    count = 0
    for cell in _code_cells(doctree):
        alt = cell.get("cell_metadata", {}).get("mystnb", {}).get("image", {}).get("alt")
        if not alt:
            continue
        for raw in cell.findall(nodes.raw):
            if "html" in raw.get("format", "").split():
                text, n = _IMG_WITHOUT_ALT.subn(f'<img alt="{html.escape(str(alt), quote=True)}"', raw.astext())
                if n:
                    _set_text(raw, text)
                    count += n
    return count


def _on_doctree_read(app, doctree: nodes.document) -> None:
    render_exercise_cells(doctree, bool(app.config.physfm_student_edition))
    drop_cdn_links(doctree)
    html_alt_text(doctree)


def dedupe_scripts(scripts: list) -> list:
    """``scripts`` without repeats: two script tags are the same when file, body and attributes are."""
    seen, kept = set(), []
    for js in scripts:
        key = (getattr(js, "filename", None) or "", tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    return kept


def _on_html_page_context(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = dedupe_scripts(context["script_files"])


def _copy_widgets_js(app, exc) -> None:
    if exc is None and app.builder is not None and app.builder.format == "html":
        copy_asset(str(WIDGETS_JS), str(Path(app.outdir) / "_static" / WIDGETS_JS_TARGET), excluded=lambda p: p.endswith(".md"))


def setup(app) -> dict[str, Any]:
    app.add_config_value("physfm_student_edition", False, "env", [bool])
    app.connect("doctree-read", _on_doctree_read)
    app.connect("html-page-context", _on_html_page_context)
    app.connect("build-finished", _copy_widgets_js)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
