"""Screenshots of the built docs in headless Chromium, to check them by eye.

Build the docs, then take the screenshots (Chromium from Debian: ``apt-get install -y
chromium``)::

    sphinx-build -W -b html docs docs/_build/html
    python docs/screenshots.py                      # -> docs/_build/screenshots/*.png

It shoots the index, one method page, the capability matrix and the estimator chooser of
the bench guide (when the build has one) at 1280 px wide, with the page's own scripts
run (MathJax typesets the maths) and no network: every file comes from the build folder.
For each page it also reads the DOM after the scripts ran and prints how many formulas
MathJax typeset and how many it could not (``merror``), so a page that shows raw TeX is
reported, not only seen.

Options: ``--build DIR`` (default ``docs/_build/html``), ``--out DIR``, ``--width PX``
(default 1280), ``--height PX`` (the window height, i.e. how much of the page one
screenshot shows; default 2400), ``--page REL`` (repeatable; relative to the build).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PAGES = (
    "index.html",
    "generated/methods/gumbel_topk.html",
    "generated/capabilities.html",
)
CHOOSER_PATTERNS = ("**/*chooser*.html", "**/*choose*.html", "**/choosing*.html")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    """The first Chromium-like executable on ``PATH`` (``None`` if there is none)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def chooser_pages(build: Path) -> list[str]:
    """The bench's chooser page(s) in the build, if any (they come from another part of the docs)."""
    found: list[str] = []
    candidates = [p for pattern in CHOOSER_PATTERNS for p in sorted(build.glob(pattern))]
    # or a page whose title says it helps choose an estimator
    for path in sorted(build.rglob("*.html")):
        title = re.search(r"<title>(.*?)</title>", path.read_text(encoding="utf-8", errors="replace"), re.S)
        if title and re.search(r"\bchoos|\bchooser\b|which estimator", title.group(1), re.I):
            candidates.append(path)
    for path in candidates:
        rel = path.relative_to(build).as_posix()
        if not rel.startswith(("_", "generated/api")) and rel not in found:
            found.append(rel)
    return found[:1]


def _chromium(browser: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", "--allow-file-access-from-files",
            f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def rendered_dom(browser: str, page: Path, width: int = 1280) -> str:
    """The page's DOM after its scripts ran (MathJax included)."""
    proc = _chromium(browser, f"--window-size={width},1200", "--dump-dom", page.as_uri())
    return proc.stdout


def maths_status(dom: str) -> dict[str, int]:
    """Typeset formulas (``mjx-container``), MathJax errors, and TeX left raw in math elements."""
    typeset = len(re.findall(r"<mjx-container\b", dom))
    errors = len(re.findall(r"<mjx-merror\b", dom))
    raw = len(re.findall(r'class="math[^"]*"[^>]*>\s*(\\\(|\\\[|\$)', dom))
    return {"typeset": typeset, "errors": errors, "raw": raw}


def screenshot(browser: str, page: Path, out: Path, *, width: int, height: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = _chromium(browser, f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri())
    if not out.exists():
        raise RuntimeError(f"no screenshot of {page}: {proc.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=HERE / "_build" / "html")
    parser.add_argument("--out", type=Path, default=HERE / "_build" / "screenshots")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    parser.add_argument("--page", action="append", help="a page relative to the build (repeatable)")
    args = parser.parse_args(argv)

    browser = find_browser()
    if browser is None:
        print("screenshots: no Chromium on PATH (apt-get install -y chromium)", file=sys.stderr)
        return 2
    if not (args.build / "index.html").exists():
        print(f"screenshots: no build at {args.build} (sphinx-build -b html docs {args.build})", file=sys.stderr)
        return 2
    pages = list(args.page or DEFAULT_PAGES)
    if not args.page:
        chooser = chooser_pages(args.build)
        pages += chooser
        if not chooser:
            print("screenshots: no chooser page in this build (skipped)")
    failed = 0
    for rel in pages:
        page = args.build / rel
        if not page.exists():
            print(f"{rel}: missing from the build")
            failed += 1
            continue
        name = rel.removesuffix(".html").replace("/", "__") + f"-{args.width}.png"
        shot = screenshot(browser, page, args.out / name, width=args.width, height=args.height)
        status = maths_status(rendered_dom(browser, page, args.width))
        bad = status["errors"] or status["raw"]
        failed += bool(bad)
        print(f"{rel}: {shot}  maths typeset={status['typeset']} errors={status['errors']} raw={status['raw']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
