"""Sphinx extension: typeset maths offline, with a MathJax copy shipped inside the build.

``sphinx.ext.mathjax`` loads MathJax from a CDN by default, so a page opened without a
network shows raw ``\\(...\\)``.  This extension takes MathJax 3 from the
``sphinx-mathjax-offline`` package (a PyPI package that vendors it; installed by the
``docs`` extra: ``pip install -e '.[docs]'``), points ``mathjax_path`` at
``_static/mathjax/tex-chtml.js`` and copies the files MathJax loads (the TeX input with its
extensions, the CommonHTML output with its fonts, the menu and accessibility modules) into
the build.  Every page then typesets its maths with no network at all.

A missing package fails the build with the command that installs it (no silent fallback to
the CDN).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

MATHJAX_PACKAGE = "sphinx-mathjax-offline"
MATHJAX_ENTRY = "mathjax/tex-chtml.js"

# Combined components other than the one we load, and the SVG output: not needed.
_SKIP_PREFIXES = (
    "tex-svg", "tex-mml", "mml-", "tex-chtml-full", "node-main", "output/svg", "latest.js",
)


def mathjax_dir() -> Path:
    """The folder that holds MathJax's ``tex-chtml.js`` (from the ``sphinx-mathjax-offline`` package)."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec else []
    for loc in locations:
        path = Path(loc) / "static" / "mathjax"
        if (path / "tex-chtml.js").is_file():
            return path
    raise FileNotFoundError(
        f"relaxit_math: MathJax is not installed (the {MATHJAX_PACKAGE!r} package ships it for "
        "offline docs): pip install -e '.[docs]'"
    )


def mathjax_files(root: Path) -> list[Path]:
    """The MathJax files copied into the build, relative to ``root``."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(_SKIP_PREFIXES):
            out.append(Path(rel))
    return out


def _on_config_inited(app: Any, config: Any) -> None:
    from sphinx.errors import ExtensionError

    try:
        mathjax_dir()
    except FileNotFoundError as exc:
        raise ExtensionError(str(exc)) from exc
    # relative to the build's _static/ folder: Sphinx writes a page-relative <script src>
    config.mathjax_path = MATHJAX_ENTRY


def _on_build_finished(app: Any, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    import shutil

    src = mathjax_dir()
    dst = Path(app.outdir) / "_static" / "mathjax"
    for rel in mathjax_files(src):
        target = dst / rel
        if not target.exists() or target.stat().st_size != (src / rel).stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target)


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", _on_config_inited, priority=900)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
