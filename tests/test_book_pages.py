"""The book's pages as a reader sees them, checked on a small fixture book (tests/fixtures/book).

The fixture is built with the book's own ``_config.yml`` (extensions, MathJax served offline,
citation and linkify settings), once as the book and once as the student edition, and loaded in
headless Chromium by ``tests/check_built_book.py``. Good pages must pass every check; each
``bad-*`` page has one defect the check must report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from check_built_book import Browser, check_pages, console_errors, pages_of
from physfm.student import student_config

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "book"
PAGES = [
    "formulas",
    "captioned",
    "bad-uncaptioned",
    "bad-math-error",
    "bad-raw-formula",
    "bad-missing-image",
    "bad-console-error",
    "widgets",
    "bad-widget-without-state",
]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")


def build_fixture(dest: Path, cache: Path, student: bool = False) -> Path:
    """Build the fixture pages with the book's configuration into ``dest``; returns the HTML folder."""
    shutil.copytree(FIXTURE, dest / "book")
    shutil.copy(ROOT / "book" / "references.bib", dest / "book" / "references.bib")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = "Fixture book"
    config["execute"]["cache"] = str(cache)
    if student:
        config = student_config(config)
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    toc = {"format": "jb-book", "root": "book/intro", "chapters": [{"file": f"book/{p}"} for p in PAGES]}
    (dest / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    # the kernels must draw: under MPLBACKEND=Agg (as the unit tests run) plt.show() shows nothing
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    run = subprocess.run(
        [str(JUPYTER_BOOK), "build", "--all", "-W", "-n", "--keep-going", str(dest)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, f"the fixture book failed to build:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return dest / "_build" / "html"


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixture-book")
    return build_fixture(root / "book", root / "cache")


@pytest.fixture(scope="module")
def student_book(tmp_path_factory, book):
    root = tmp_path_factory.mktemp("fixture-student")
    return build_fixture(root / "book", book.parents[2] / "cache", student=True)


@pytest.fixture(scope="module")
def reports(book):
    return {
        r.page.removeprefix("book/"): r
        for r in check_pages(book, [f"book/{p}" for p in PAGES], captions_pending=[], known_problems={})
    }


def test_mathjax_is_served_with_the_book(book):
    html = (book / "book" / "formulas.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html)
    assert scripts and all(s.startswith("../_static/mathjax/") for s in scripts), scripts
    assert (book / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "cdn.jsdelivr" not in html


def test_good_pages_pass_every_check(reports):
    for page in ("formulas", "captioned"):
        assert reports[page].problems == [], (page, reports[page].problems)
    # inline, Mamba's decay, display, the align environment, the solution's, the caption's
    assert reports["formulas"].typeset >= 6, reports["formulas"]
    assert reports["captioned"].figures == 2  # the plot, and the animation player's frame
    assert reports["widgets"].problems == [], reports["widgets"].problems
    assert reports["widgets"].widgets == reports["widgets"].widgets_rendered == 1, reports["widgets"]
    assert reports["widgets"].figures == 1  # the explorer shows one frame at a time
    assert reports["widgets"].typeset >= 2  # MathJax 3 runs beside the widget manager


@pytest.mark.parametrize(
    "page, problem",
    [
        ("bad-uncaptioned", "figure without a caption"),
        ("bad-uncaptioned", "image without alt text"),
        ("bad-math-error", 'MathJax error "Missing open brace for subscript" in: A = -e^{A_\\log}'),
        ("bad-raw-formula", "formula left untypeset"),
        ("bad-missing-image", "image does not load: no-such-picture.png"),
        ("bad-console-error", "console error: fixture: a deliberate console error"),
        ("bad-widget-without-state", "1 widget outputs but no widget state in the page"),
        ("bad-widget-without-state", "widget not rendered: model 0123456789abcdef"),
    ],
)
def test_each_defect_is_found(reports, page, problem):
    assert any(problem in p for p in reports[page].problems), (problem, reports[page].problems)


def test_caption_check_is_off_only_for_pending_pages(book):
    (report,) = check_pages(book, ["book/bad-uncaptioned"], captions_pending=["book/bad-uncaptioned"], known_problems={})
    assert not report.captions_checked and report.problems == [] and report.figures == 1


def test_known_problems_are_waived_and_their_fixes_noticed(book):
    error = 'MathJax error "Missing open brace for subscript" in: A = -e^{A_\\log}'
    (report,) = check_pages(book, ["book/bad-math-error"], known_problems={"book/bad-math-error": [error]})
    assert report.problems == [] and report.known == [error] and report.fixed == []
    (report,) = check_pages(book, ["book/formulas"], known_problems={"book/formulas": [error]})
    assert report.problems == [] and report.fixed == [error]


def test_a_cell_caption_renders_as_a_figure(book):
    html = (book / "book" / "captioned.html").read_text()
    figure = re.search(r'<figure[^>]*id="fig-fixture-squares"[^>]*>(.*?)</figure>', html, re.S)
    assert figure, "the captioned output is not a <figure> with the cell's name"
    assert 'alt="A line through the points (0, 0), (1, 1) and (2, 4)"' in figure.group(1)
    assert re.search(r"<figcaption>.*Fig\. \d+.*The squares of 0, 1 and 2", figure.group(1), re.S)
    assert 'href="#fig-fixture-squares"' in html  # {numref} resolves to it


def test_html_animations_need_no_network_and_have_alt_text(book):
    html = (book / "book" / "captioned.html").read_text()
    assert "maxcdn.bootstrapcdn.com" not in html  # matplotlib's Font Awesome link is dropped
    player = re.search(r'<figure[^>]*id="fig-fixture-animation"[^>]*>(.*?)</figure>', html, re.S)
    assert player and 'alt="A line that tilts from flat to rising"' in player.group(1)


def test_widgets_are_served_with_the_book(book):
    html = (book / "book" / "widgets.html").read_text()
    assert 'type="application/vnd.jupyter.widget-state+json"' in html  # stored when the notebook ran
    assert 'type="application/vnd.jupyter.widget-view+json"' in html
    scripts = re.findall(r'<script[^>]*src="([^"]*)"', html)
    ours = [s for s in scripts if "/ipywidgets/" in s]
    assert ours == ["../_static/ipywidgets/widget-compat.js", "../_static/ipywidgets/embed.js"], scripts
    assert not any("require" in s or "html-manager" in s or s.startswith("http") for s in scripts), scripts
    static = book / "_static" / "ipywidgets"
    assert (static / "embed.js").exists() and (static / "LICENSE").exists() and list(static.glob("*.woff2"))
    # pages without widgets do not load the manager
    assert "ipywidgets/embed.js" not in (book / "book" / "captioned.html").read_text()


# press the explorer's play button; the alt text of the frame shown, before and 1.5 s after
PLAY_JS = r"""
(async () => {
  const shown = () => [...document.querySelectorAll(".widget-subarea img")].map((img) => img.alt).join(" | ");
  const before = shown();
  document.querySelector(".widget-play button").click();
  await new Promise((resolve) => setTimeout(resolve, 1500));
  return JSON.stringify([before, shown()]);
})()
"""


def test_the_explorer_plays_in_the_static_page(book):
    """The explorer's links run in the browser: from the stored widget state alone, without a
    kernel, the play button moves the frame slider, which moves the frame shown (and the theme's
    Font Awesome, which would have replaced the button's icon, does not break it)."""
    with Browser() as browser:
        found = browser.check((book / "book" / "widgets.html").as_uri(), True)
        assert found["widgets_rendered"] == 1 and found["problems"] == [], found
        browser.events.clear()
        result = browser.call(
            "Runtime.evaluate", session=browser.session, expression=PLAY_JS, awaitPromise=True, returnByValue=True
        )
        assert console_errors(browser.events) == []
    before, after = json.loads(result["result"]["value"])
    assert before == "fixture wave a, sample 0, frame 0 of 2", before
    assert after.startswith("fixture wave a, sample 0, frame ") and after != before, after


def test_a_widget_page_fails_without_the_widget_javascript(book, tmp_path):
    broken = tmp_path / "html"
    shutil.copytree(book, broken, ignore=shutil.ignore_patterns("mathjax"))
    (broken / "_static" / "ipywidgets" / "embed.js").unlink()
    (report,) = check_pages(broken, ["book/widgets"], captions_pending=[], known_problems={})
    assert "the page has widgets but the widget manager's JavaScript did not run" in report.problems, report.problems
    assert any(p.startswith("widget not rendered: model ") for p in report.problems), report.problems
    assert report.widgets == 1 and report.widgets_rendered == 0


def test_names_are_not_links_but_addresses_are(book):
    html = (book / "book" / "intro.html").read_text()
    assert "mamba.py" in html and not re.search(r"<a [^>]*>mamba\.py</a>", html)
    assert re.search(r'<a class="reference external" href="https://example.org"', html)


def test_inline_scripts_appear_once(book):
    html = (book / "book" / "formulas.html").read_text()
    assert html.count("const THEBE_JS_URL") == 1
    assert html.count("var togglebuttonSelector") == 1


def test_citations_are_footnotes_listed_on_the_page(book):
    html = (book / "book" / "formulas.html").read_text()
    assert html.count('class="footnote-reference brackets"') == 2
    assert "Mamba: Linear-Time Sequence Modeling" in html or "Mamba: linear-time sequence modeling" in html


def test_book_shows_solutions_without_markers(book):
    html = (book / "book" / "captioned.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert "return x * x" in text and "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert "square(0.5)" in text and "HIDDEN TESTS" not in text
    assert "square: checks passed for 9" in text  # the check ran on the solution
    assert "the written solution of the fixture" in (book / "book" / "formulas.html").read_text()


def test_student_edition_hides_solutions(student_book):
    captioned = re.sub(r"<[^>]+>", "", (student_book / "book" / "captioned.html").read_text())
    assert "raise NotImplementedError()" in captioned and "# YOUR CODE HERE" in captioned
    assert "return x * x" not in captioned
    assert '"""x squared."""' in captioned.replace("&quot;", '"')  # what lies outside the markers stays
    assert "assert square(3) == 9" in captioned and "square(0.5)" not in captioned  # hidden tests hidden
    assert "checks passed for 9" not in captioned  # outputs of the solution are not shown
    assert "Fig. 1" in captioned  # other outputs are
    formulas = (student_book / "book" / "formulas.html").read_text()
    assert "What is" in formulas and "the written solution of the fixture" not in formulas
    assert "(student edition)" in (student_book / "book" / "intro.html").read_text()


def test_student_pages_pass_the_browser_check(student_book):
    for r in check_pages(student_book, ["book/formulas", "book/captioned"], captions_pending=[], known_problems={}):
        assert r.problems == [], (r.page, r.problems)


def test_every_page_is_found(book):
    assert set(pages_of(book)) >= {f"book/{p}" for p in PAGES} | {"book/intro", "genindex"}
