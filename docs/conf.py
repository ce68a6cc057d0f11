"""Sphinx configuration of relaxit's documentation.

Build (warnings are errors, every cross-reference must resolve)::

    pip install -e '.[docs]'
    sphinx-build -W -b html docs docs/_build/html

The method pages and the capability matrix are generated from the registry at build time
by ``_ext/relaxit_docgen.py``; the intersphinx inventories are local stubs compiled by
``_ext/relaxit_xref.py`` (set ``RELAXIT_DOCS_INTERSPHINX=remote`` to fetch the real ones).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import relaxit  # noqa: E402
from relaxit_xref import compile_inventories  # noqa: E402

project = "relaxit"
author = "the relaxit authors"
copyright = "2024-2026, the relaxit authors"  # noqa: A001
release = relaxit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "relaxit_math",  # MathJax 3 shipped inside the build (offline), see _ext/relaxit_math.py
    "sphinx.ext.viewcode",
    "myst_parser",
    "matplotlib.sphinxext.plot_directive",
    "relaxit_xref",
    "relaxit_docgen",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories", "snippets", "results", "Thumbs.db", ".DS_Store"]

nitpicky = True
# Names that have no documentation page anywhere (private typing constructs).
nitpick_ignore = [
    ("py:class", "argparse._SubParsersAction"),
    # the bench's run config is documented as a file format (guides/bench), not as a class
    ("py:class", "relaxit.bench.config.BenchConfig"),
    # how autodoc spells relaxit_core.schedules.Temperature in config-field annotations
    ("py:class", "pydantic.functional_validators.WrapValidator"),
    ("py:class", "relaxit_core.schedules._validate_temperature"),
    ("py:class", "pydantic.types.Strict"),  # strict scalars inside Temperature, gst's gap...
    # how autodoc spells relaxit_plugins._solvers.SolverName (imle, aimle, perturbed configs)
    ("py:class", "pydantic.functional_validators.AfterValidator"),
    ("py:class", "relaxit_plugins._solvers.validate_solver_name"),
]
nitpick_ignore_regex = [
    (r"py:.*", r"pluggy\..*"),  # pluggy's markers: documented by pluggy, not in our inventories
]

# -- autodoc / napoleon --------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
# Overrides without a docstring of their own are not documented with torch's docstring
# (which refers to torch internals that no inventory lists).
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
# The "Maths:" section of an estimator's docstring (law, estimator, gradient, cost; see
# guides/plugins): rendered as a rubric followed by its reST.
napoleon_custom_sections = ["Maths"]

# -- MyST ----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- intersphinx: local stubs by default (offline, reproducible) ----------------
_INV = compile_inventories(HERE / "_inventories", HERE / "_build" / "inventories")
_URLS = {
    "python": "https://docs.python.org/3/",
    "torch": "https://pytorch.org/docs/stable/",
    "pyro": "https://docs.pyro.ai/en/stable/",
    "pydantic": "https://docs.pydantic.dev/latest/",
}
_REMOTE = os.environ.get("RELAXIT_DOCS_INTERSPHINX", "local") == "remote"
intersphinx_mapping = {
    key: (url, (None, str(_INV[key])) if _REMOTE else str(_INV[key])) for key, url in _URLS.items()
}
intersphinx_timeout = 5

# -- matplotlib plot directive (figures made during the build) ----------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.autolayout": True}
plot_pre_code = "import numpy as np\nimport torch\nimport matplotlib.pyplot as plt\ntorch.manual_seed(0)\n"

# -- HTML ----------------------------------------------------------------------
html_theme = "furo"
html_title = f"relaxit {release}"
html_static_path = ["_static"]
html_css_files = ["relaxit.css"]
