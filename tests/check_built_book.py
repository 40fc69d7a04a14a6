"""Check a built book: every chapter page that draws a figure shows it.

A chapter draws a figure where a code cell calls ``plt.show()``, ``viz.`` plotting or
``plt.subplots``; its HTML page must then contain images. (A Jupyter kernel started with
``MPLBACKEND=Agg`` keeps no figures: the page would render without them, silently.)

    python tests/check_built_book.py _build/html
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRAWS = re.compile(r"plt\.show\(\)|plt\.subplots|viz\.(show_fields|spectra|volume|band_bars|band_map)")


def draws_figures(notebook: Path) -> bool:
    cells = json.loads(notebook.read_text())["cells"]
    return any(c["cell_type"] == "code" and DRAWS.search("".join(c["source"])) for c in cells)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    html = Path(argv[0])
    missing = []
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        page = html / "book" / f"{nb.stem}.html"
        if not page.exists():
            missing.append(f"{page}: page not built")
        elif draws_figures(nb) and "<img" not in page.read_text():
            missing.append(f"{page}: the chapter draws figures but the page shows none")
    for m in missing:
        print(m)
    print(f"check_built_book: {'FAILED' if missing else 'ok'} ({html})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
