"""Check a built book as a reader sees it: every page loaded in headless Chromium.

    python tests/check_built_book.py _build/html            # every page of a build
    python tests/check_built_book.py _build/html book/scan  # some pages only
    python tests/check_built_book.py --browser-if-found _build/html  # skip 2. without Chromium

Two checks:

1. Without a browser: every chapter page whose notebook draws a figure (a code cell calls
   ``plt.show()``, ``plt.subplots`` or a ``viz.`` plot) contains images. A Jupyter kernel started
   with ``MPLBACKEND=Agg`` keeps no figures: the page would render without them, silently.
2. In the browser (Debian's ``chromium``, driven through the DevTools protocol over a pipe, no
   network), once MathJax has typeset the page, each page fails on

   - a formula left untypeset: TeX delimiters ``\\(``, ``\\[``, ``$$``, ``\\begin{`` in the text a
     reader sees (outside code), as happens when MathJax does not load;
   - a MathJax error (``mjx-merror``), reported with the formula's TeX;
   - an image that does not load;
   - an error in the console: ``console.error``, an uncaught exception, a resource that
     fails to load;
   - a figure without a caption or an image without alt text, on every page except those listed
     in ``CAPTIONS_PENDING`` below;
   - an ipywidgets output that does not render: each widget view of the page (a
     ``<script type="application/vnd.jupyter.widget-view+json">`` that myst-nb writes) must
     have been replaced by the widget manager with the widget's elements within 20 s, which
     needs the page's stored widget state (``application/vnd.jupyter.widget-state+json``) and
     the manager's JavaScript served with the book (``_static/ipywidgets``).

Captions: a notebook figure gets a caption and alt text from its code cell's metadata,
``"mystnb": {"figure": {"caption": "...", "name": "fig-..."}, "image": {"alt": "..."}}``: myst-nb
then renders the output as ``<figure>`` with ``<figcaption>`` (numbered "Fig. N", referable
with ``{numref}`fig-...```). A figure in a markdown cell uses the ``{figure}`` directive with
``:alt:`` and a caption.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRAWS = re.compile(r"plt\.show\(\)|plt\.subplots|viz\.(show_fields|spectra|volume|band_bars|band_map)")

# Pages (paths in the build, without ".html") whose figures do not all have captions and alt text
# yet: the browser check skips its caption check on these pages only, and says so. Delete a
# page from this list once its figures are captioned; an empty list checks captions everywhere.
CAPTIONS_PENDING: list[str] = []

# Problems the check finds in chapters today, each waiting for an edit of its notebook: shown as
# "known", they do not fail the check. Delete an entry once the chapter is fixed (the check says
# when a known problem is no longer found); add none without a plan to fix it.
KNOWN_PROBLEMS: dict[str, list[str]] = {}

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--window-size=1280,900",
    "--remote-debugging-pipe",
]

# Runs in the page once it has loaded; resolves to a JSON string.
PAGE_JS = r"""
(async (captions) => {
  const timeout = (ms) => new Promise((resolve) => setTimeout(() => resolve("timeout"), ms));
  const out = {typeset: 0, mathjax: false, problems: [], figures: 0, widgets: 0, widgets_rendered: 0};
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    out.mathjax = true;
    if (await Promise.race([MathJax.startup.promise.then(() => "done"), timeout(20000)]) === "timeout")
      out.problems.push("MathJax did not finish typesetting within 20 s");
  }
  // ipywidgets: the widget manager (embed.js, run on the load event) puts each widget's elements
  // in a .widget-subarea just before its view script; without its JavaScript none appears
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  out.widgets = views.length;
  if (views.length) {
    const modelId = (v) => { try { return JSON.parse(v.textContent).model_id; } catch (e) { return "?"; } };
    const rendered = (v) => {
      const area = v.previousElementSibling;
      return !!(area && area.classList.contains("widget-subarea") && area.querySelector(".jupyter-widgets"));
    };
    if (!document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]'))
      out.problems.push(`${views.length} widget outputs but no widget state in the page: nothing can render them`);
    else if (!window._jupyter_widget_embedder)
      out.problems.push("the page has widgets but the widget manager's JavaScript did not run");
    else {
      const start = Date.now();
      while (views.some((v) => !rendered(v)) && Date.now() - start < 20000) await timeout(100);
    }
    for (const v of views)
      if (!rendered(v)) out.problems.push(`widget not rendered: model ${modelId(v)}`);
    out.widgets_rendered = views.filter(rendered).length;
  }
  out.typeset = document.querySelectorAll("mjx-container").length;
  if (out.mathjax) {
    for (const item of MathJax.startup.document.math) {
      const err = item.typesetRoot && item.typesetRoot.querySelector("mjx-merror");
      if (err) out.problems.push(`MathJax error "${err.getAttribute("data-mjx-error") || err.textContent}" in: ${item.math}`);
    }
  }
  // TeX a reader would see raw: delimiters in text outside code and outside typeset math
  const skip = "script, style, pre, code, textarea, .highlight, mjx-container, .MathJax";
  const raw = /\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (raw.test(node.data) && !(node.parentElement && node.parentElement.closest(skip)))
      out.problems.push(`formula left untypeset: "${node.data.trim().slice(0, 80)}"`);
  }
  // images: every one loads
  const images = [...document.images];
  images.forEach((img) => { img.loading = "eager"; });
  await Promise.race([Promise.all(images.map((img) => img.decode().catch(() => null))), timeout(10000)]);
  for (const img of images)
    if (!img.complete || img.naturalWidth === 0) out.problems.push(`image does not load: ${img.getAttribute("src")}`);
  // figures in the page's content: a caption, and alt text that is not the file name
  const content = document.querySelector("article") || document.body;
  const inContent = images.filter((img) => content.contains(img));
  out.figures = inContent.length;
  if (captions) {
    for (const img of inContent) {
      const src = img.getAttribute("src") || "";
      const figure = img.closest("figure");
      const caption = figure && figure.querySelector("figcaption .caption-text, figcaption");
      if (!caption || !caption.textContent.trim()) out.problems.push(`figure without a caption: ${src}`);
      const alt = (img.getAttribute("alt") || "").trim();
      if (!alt || alt === src || /\.(png|jpe?g|svg|gif|webp)$/i.test(alt)) out.problems.push(`image without alt text: ${src}`);
    }
  }
  return JSON.stringify(out);
})
"""


@dataclass
class PageReport:
    page: str
    typeset: int = 0
    figures: int = 0
    widgets: int = 0  # widget outputs of the page, and how many of them rendered
    widgets_rendered: int = 0
    captions_checked: bool = True
    problems: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # problems listed in KNOWN_PROBLEMS
    fixed: list[str] = field(default_factory=list)  # entries of KNOWN_PROBLEMS no longer found


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise RuntimeError(
        "headless Chromium not found: install Debian's chromium (apt-get install -y chromium; "
        ".ci/run does it) or set CHROMIUM to the browser's path"
    )


class Browser:
    """Headless Chromium driven through the DevTools protocol over ``--remote-debugging-pipe``.

    Messages are JSON, each ended by a NUL byte: the browser reads file descriptor 3 and writes 4.
    """

    def __init__(self, binary: str | None = None, timeout: float = 60.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds():  # in the child, before exec: the pipe ends at 3 and 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self._proc = subprocess.Popen(
            [binary or find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=self.session)

    def _send(self, method: str, params: dict, session: str | None) -> int:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._id

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no answer from Chromium within {self.timeout:.0f} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it crash?)")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        wanted, deadline = self._send(method, params, session), time.monotonic() + self.timeout
        while True:
            message = self._next(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, message in enumerate(self.events):
            if message["method"] == event:
                return self.events.pop(i)
        while True:
            message = self._next(deadline)
            if message.get("method") == event:
                return message
            if "method" in message:
                self.events.append(message)

    def close(self) -> None:
        try:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self, url: str, captions: bool) -> dict:
        """Load ``url``, wait for its load event and MathJax, return the page's findings and console errors."""
        self.events.clear()
        self.call("Page.navigate", session=self.session, url=url)
        self.wait_for("Page.loadEventFired")
        result = self.call(
            "Runtime.evaluate",
            session=self.session,
            expression=f"({PAGE_JS})({json.dumps(captions)})",
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{url}: the check's script failed: {result['exceptionDetails']}")
        found = json.loads(result["result"]["value"])
        found["problems"] += console_errors(self.events)
        return found


def console_errors(events: list[dict]) -> list[str]:
    """What a reader's console would show as errors, from the DevTools events of one page load."""
    errors = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            errors.append(f"console error: {text[:200]}")
        elif e["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            errors.append(
                f"uncaught exception: {text.splitlines()[0][:200] if text else '?'} ({d.get('url', '')}:{d.get('lineNumber', '?')})"
            )
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            errors.append(f"console error: {entry.get('text', '')[:200]} {entry.get('url', '')}".rstrip())
    return errors


def pages_of(html: Path) -> list[str]:
    """Every page of a build (paths without ".html"), except redirects and Sphinx's own search page."""
    pages = []
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html)
        if rel.parts[0].startswith("_") or rel.as_posix() == "search.html":
            continue
        if 'http-equiv="Refresh"' in path.read_text(errors="replace")[:2000]:
            continue
        pages.append(rel.with_suffix("").as_posix())
    return pages


def check_pages(
    html: str | Path, pages: list[str] | None = None, captions_pending=CAPTIONS_PENDING, known_problems=KNOWN_PROBLEMS
) -> list[PageReport]:
    """Load each page of the build ``html`` in headless Chromium and report what a reader would see wrong."""
    html = Path(html).resolve()
    reports = []
    with Browser() as browser:
        for page in pages if pages is not None else pages_of(html):
            path = html / f"{page}.html"
            report = PageReport(page, captions_checked=page not in captions_pending)
            if not path.exists():
                report.problems.append("page not built")
            else:
                found = browser.check(path.as_uri(), report.captions_checked)
                report.typeset, report.figures = found["typeset"], found["figures"]
                report.widgets, report.widgets_rendered = found["widgets"], found["widgets_rendered"]
                known = known_problems.get(page, [])
                report.problems = [p for p in found["problems"] if p not in known]
                report.known = [p for p in found["problems"] if p in known]
                report.fixed = [p for p in known if p not in found["problems"]]
            reports.append(report)
    return reports


def draws_figures(notebook: Path) -> bool:
    cells = json.loads(notebook.read_text())["cells"]
    return any(c["cell_type"] == "code" and DRAWS.search("".join(c["source"])) for c in cells)


def static_problems(html: Path) -> list[str]:
    """Chapter pages that are missing, or show no image although their notebook draws figures."""
    missing = []
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        page = html / "book" / f"{nb.stem}.html"
        if not page.exists():
            missing.append(f"{page}: page not built")
        elif draws_figures(nb) and "<img" not in page.read_text():
            missing.append(f"{page}: the chapter draws figures but the page shows none")
    return missing


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    optional = argv[0] == "--browser-if-found"
    html, pages = Path(argv[int(optional)]), argv[int(optional) + 1 :] or None
    t0 = time.monotonic()
    failed = static_problems(html) if pages is None else []
    for problem in failed:
        print(problem)
    try:
        find_chromium()
    except RuntimeError as missing:
        if not optional:
            raise
        print(f"check_built_book: {'FAILED' if failed else 'ok'} without the browser check ({missing})")
        return 1 if failed else 0
    reports = check_pages(html, pages)
    for r in reports:
        note = "" if r.captions_checked else " (captions not checked: listed in CAPTIONS_PENDING)"
        status = "FAILED" if r.problems else "ok"
        widgets = f", {r.widgets_rendered} of {r.widgets} widgets rendered" if r.widgets else ""
        print(f"{status:6} {r.page}: {r.typeset} formulas typeset, {r.figures} images{widgets}{note}")
        for problem in r.problems:
            print(f"         {problem}")
        for problem in r.known:
            print(f"         known, waiting for a fix (KNOWN_PROBLEMS): {problem}")
        for problem in r.fixed:
            print(f"         no longer found, delete it from KNOWN_PROBLEMS: {problem}")
    failed += [p for r in reports for p in r.problems]
    print(
        f"check_built_book: {'FAILED' if failed else 'ok'}: {len(reports)} pages in headless Chromium, "
        f"{sum(r.typeset for r in reports)} formulas typeset, {time.monotonic() - t0:.1f} s ({html})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
