"""The documentation: every registered estimator is documented, the generated pages cover the
registry, the docs' snippets run, and the Sphinx build passes with ``-W`` (when Sphinx is
installed: ``pip install -e '.[docs]'``)."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import relaxit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
INFOS = relaxit.available()
YEAR = re.compile(r"\b(19|20)\d\d[a-z]?\b")


def _docgen():
    spec = importlib.util.spec_from_file_location("relaxit_docgen", DOCS / "_ext" / "relaxit_docgen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.name)
def test_estimator_has_docstring_with_paper_and_example(info):
    """The method page is rendered from these: a missing one is a failing test, not a thin page."""
    cls = info.cls
    doc = inspect.getdoc(cls) or ""
    module_doc = inspect.getdoc(sys.modules[cls.__module__]) or ""
    name = f"{cls.__module__}.{cls.__qualname__}"
    assert doc.strip(), f"{name} has no docstring"
    assert info.summary.strip(), f"{name}: the docstring's first line (the summary) is empty"
    assert YEAR.search(info.reference or ""), f"{name}.reference must cite the paper (authors, year, title): {info.reference!r}"
    assert YEAR.search(doc) or YEAR.search(module_doc), f"{name}: neither the class nor the module docstring cites a paper (no year)"
    assert ">>>" in doc, f"{name}'s docstring needs an 'Example:' doctest"


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.name)
def test_generated_page_and_example_run(info):
    """Each estimator's generated example runs (as it does during the docs build)."""
    gen = _docgen()
    code = gen.example_code(info)
    printed = gen.run_example(code)
    assert "samples:" in printed and "law:" in printed


def test_generated_pages_cover_the_registry():
    gen = _docgen()
    pages = gen.generate(run=False)
    index, matrix = pages["methods/index.rst"], pages["capabilities.rst"]
    for info in INFOS:
        page = pages[f"methods/{info.name}.rst"]
        assert f".. autoclass:: {info.cls.__module__}.{info.cls.__qualname__}" in page
        assert f":doc:`{info.name} <methods/{info.name}>`" in matrix, f"{info.name} has no row in the capability matrix"
        assert f"   {info.name}\n" in index
        assert f"api/plugins/{info.cls.__module__}.rst" in pages
        for field in info.config_schema.get("properties", {}):
            if field != "name":
                assert f"``{field}``" in page, f"config field {field!r} missing from {info.name}'s page"


def test_config_rows_render_bounds_and_enums():
    gen = _docgen()
    schema = relaxit.describe("reinforce").config_schema
    rows = {r[0]: r for r in gen.config_rows(schema)}
    assert rows["decay"][1:4] == ("number", "0.9", "> 0, < 1")
    assert rows["baseline"][1] == '"none" | "moving_average" | "leave_one_out" | "group_mean" | "group_normalized" | "learned"'


def test_snippet_config_building(capsys):
    pytest.importorskip("yaml")
    runpy.run_path(str(SNIPPETS / "config_building.py"))
    out = capsys.readouterr().out
    assert "gumbel_softmax.tau" in out and "temperature" in out


def test_snippet_hydra_equivalent():
    pytest.importorskip("omegaconf")
    ns = runpy.run_path(str(SNIPPETS / "hydra_equivalent.py"))
    assert ns["est"].config.baseline == "moving_average"


def test_snippet_pyro_svi():
    """The Pyro page's SVI example recovers the mixture assignments with both estimators."""
    ns = runpy.run_path(str(SNIPPETS / "pyro_svi.py"))
    for name, accuracy in ns["results"].items():
        assert accuracy > 0.9, f"{name}: accuracy {accuracy}"


def test_plugin_guide_includes_the_example_files():
    """The guide shows the example package's real files (literalinclude), so they agree."""
    guide = (DOCS / "guides" / "plugins.md").read_text()
    example = ROOT / "examples" / "third_party_plugin"
    for rel in ("pyproject.toml", "relaxit_example_plugin/plugin.py", "tests/test_plugin.py"):
        assert f"../../examples/third_party_plugin/{rel}" in guide
        assert (example / rel).exists()


def test_sphinx_build_with_warnings_as_errors(tmp_path):
    """``sphinx-build -W -b html docs <out>`` passes (nitpicky: every reference resolves)."""
    for mod in ("sphinx", "myst_parser", "furo", "matplotlib"):
        pytest.importorskip(mod)
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-10000:]}"
    assert (out / "index.html").exists()
    for info in INFOS:
        assert (out / "generated" / "methods" / f"{info.name}.html").exists()
