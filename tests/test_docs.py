"""The documentation: every registered estimator is documented, the generated pages cover the
registry, the docs' snippets run, and the Sphinx build passes with ``-W`` (when Sphinx is
installed: ``pip install -e '.[docs]'``)."""

from __future__ import annotations

import doctest
import importlib.util
import inspect
import os
import re
import runpy
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """``sphinx-build -W -b html docs <out>`` (nitpicky: every reference resolves), once for
    the tests over the built HTML below."""
    for mod in ("sphinx", "myst_parser", "furo", "matplotlib"):
        pytest.importorskip(mod)
    tmp = tmp_path_factory.mktemp("docs")
    out = tmp / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp / "doctrees"), str(DOCS), str(out)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-10000:]}"
    return out


def test_sphinx_build_with_warnings_as_errors(built_docs):
    assert (built_docs / "index.html").exists()
    for info in INFOS:
        assert (built_docs / "generated" / "methods" / f"{info.name}.html").exists()


# ------------------------------------------------------------------ the built HTML, as read
class _Page(HTMLParser):
    """Text outside code, scripts and maths; the scripts and stylesheets a page loads; its
    maths elements (the ones MathJax typesets) and their TeX."""

    SKIP = {"script", "style", "pre", "code", "textarea", "svg"}
    VOID = {"br", "img", "meta", "link", "input", "hr", "source", "wbr", "col", "area", "base"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.assets: list[str] = []
        self.maths: list[str] = []
        self.sections: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "script" and a.get("src"):
            self.assets.append(a["src"])
        if tag == "link" and "stylesheet" in (a.get("rel") or "").split():
            self.assets.append(a.get("href") or "")
        if tag == "section" and a.get("id"):
            self.sections.add(a["id"])
        if tag in self.VOID:
            return
        # signatures ("sig": ``**kwargs`` is Python there, not markup) are skipped like code
        kind = "math" if "math" in classes else ("skip" if tag in self.SKIP or "sig" in classes else "")
        if kind == "math":
            self.maths.append("")
        self.stack.append(kind)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if "math" in self.stack:
            self.maths[-1] += data
        elif "skip" not in self.stack:
            self.text.append(data)


def _read(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _html_pages(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*.html")) if not {"_static", "_modules", "_sources"} & set(p.relative_to(root).parts)]


# reST that leaked into the text of a page: double backquotes, roles, directives, emphasis
# markers, and TeX delimiters outside the maths elements.
RAW_RST = re.compile(
    r"``|:(?:class|func|meth|mod|data|attr|doc|ref|math|obj|exc|term|py:\w+):`|"
    r"^\s*\.\. [\w-]+::|(?<![\w*])\*\*[^\s*]|\\\(|\\\)|\\\[|\\\]|\$\$",
    re.M,
)


BUILTINS = [i for i in INFOS if i.cls.__module__.startswith("relaxit_plugins.")]


@pytest.mark.parametrize("info", BUILTINS, ids=lambda i: i.name)
def test_method_page_typesets_its_maths(built_docs, info):
    """The page has a Maths section whose formulas are maths elements (typeset by MathJax),
    carries the four entries, and loads MathJax from inside the build."""
    path = built_docs / "generated" / "methods" / f"{info.name}.html"
    page = _read(path)
    assert "maths" in page.sections, f"{info.name}: no Maths section on its page"
    assert len(page.maths) >= 4, f"{info.name}: {len(page.maths)} maths elements"
    assert all(m.strip().startswith(("\\(", "\\[")) for m in page.maths), "maths elements hold delimited TeX"
    text = " ".join(page.text)
    for entry in ("Law", "Estimator", "Gradient", "Cost"):
        assert entry in text
    mathjax = [a for a in page.assets if "mathjax" in a.lower()]
    assert mathjax, f"{info.name}: no MathJax script"
    for src in mathjax:
        assert "://" not in src and not src.startswith("//"), src
        assert (path.parent / src.split("?")[0]).resolve().is_file(), src


def test_every_script_and_stylesheet_is_a_local_file(built_docs):
    """No page loads anything from the network: every script and stylesheet is a file of the
    build (so the docs, maths included, work offline)."""
    root = built_docs.resolve()
    for path in _html_pages(built_docs):
        for src in _read(path).assets:
            assert src and "://" not in src and not src.startswith("//"), f"{path.name} loads {src!r}"
            target = (path.parent / src.split("?")[0].split("#")[0]).resolve()
            assert target.is_file() and root in target.parents, f"{path.relative_to(root)}: {src!r} is not a file of the build"
    assert (root / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (root / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_no_raw_rst_markup_in_page_text(built_docs):
    """reST that was not rendered (e.g. ``code`` from an escaped docstring) shows as raw
    markup in the text of the page; TeX shows raw outside the maths elements."""
    leaks = []
    for path in _html_pages(built_docs):
        text = "".join(_read(path).text)
        leaks += [f"{path.relative_to(built_docs)}: ...{text[max(0, m.start() - 50):m.end() + 30]!r}"
                  for m in RAW_RST.finditer(text)]
    assert not leaks, "raw markup in the built pages:\n" + "\n".join(leaks[:20])


def test_index_has_install_and_quick_start(built_docs):
    html = (built_docs / "index.html").read_text(encoding="utf-8")
    page = _read(built_docs / "index.html")
    assert {"install", "quick-start"} <= page.sections, page.sections
    text = unescape(re.sub(r"<[^>]+>", "", html))  # highlighted code, as shown
    assert "pip install -e '.[docs]'" in text
    assert '>>> est = relaxit.get("gumbel_softmax", tau=0.5)' in text


def test_index_quick_start_runs_as_doctest():
    """The index page's install line and quick start, executed as a doctest."""
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    assert "pip install" in text
    test = doctest.DocTestParser().get_doctest(text, {}, "index.md", str(DOCS / "index.md"), 0)
    assert len(test.examples) >= 8
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        result = runner.run(test, out=lambda s: None)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of docs/index.md failed"


@pytest.mark.parametrize("info", BUILTINS, ids=lambda i: i.name)
def test_builtin_estimator_follows_the_maths_convention(info):
    """Law, estimator (citing the paper's equation), gradient and cost in LaTeX: see
    docs/guides/plugins.md, "The Maths: section"."""
    problems = _docgen().maths_problems(info.cls)
    assert not problems, f"{info.name}: " + "; ".join(problems) + " (see docs/guides/plugins.md)"


def test_chromium_typesets_the_maths_offline(built_docs):
    """In a real browser, with no network, MathJax typesets every formula of a method page
    and of the tutorial without an error (skipped without Chromium; docs/screenshots.py)."""
    spec = importlib.util.spec_from_file_location("docs_screenshots", DOCS / "screenshots.py")
    shots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shots)
    browser = shots.find_browser()
    if browser is None:
        pytest.skip("no Chromium (apt-get install -y chromium)")
    for rel in ("generated/methods/rebar.html", "tutorial/why_relax.html"):
        page = built_docs / rel
        n = len(_read(page).maths)
        status = shots.maths_status(shots.rendered_dom(browser, page))
        assert status["errors"] == 0 and status["raw"] == 0, (rel, status)
        assert status["typeset"] >= n > 0, (rel, status, n)


def test_capability_matrix_is_compact_and_explained():
    """One table per family with an estimator column and one short column per capability
    (8 columns: all visible at 1280 px, see docs/screenshots.py), every symbol in the legend,
    and an estimator of several families in each of their tables."""
    from relaxit_core import Capability

    gen = _docgen()
    matrix = gen.render_matrix(INFOS)
    tables = matrix.split(".. list-table::")[1:]
    families = {f for i in INFOS for f in i.families}
    assert len(tables) == len(families)
    for table in tables:
        header = table.split("   * - ", 2)[1]
        cells = [c.strip() for c in header.split("\n     - ")]
        assert cells[0] == "estimator" and len(cells) == 1 + len(Capability), cells
        assert all(len(c) <= 8 for c in cells[1:]), cells
    FAMILIES_OF = {i.name: i.families for i in INFOS}
    legend = matrix.split(".. list-table::")[0]
    for symbol in ("**✓**", "**(✓)**", "blank"):
        assert symbol in legend
    for cap in Capability:
        assert f"(``{cap.value}``)" in legend, f"column {cap.value} is not spelled out in the legend"
    sections = dict(re.findall(r"^(\w+) \(\d+\)\n-+\n(.*?)(?=^\w+ \(\d+\)\n-+\n|\Z)", matrix, re.S | re.M))
    assert set(sections) == families
    for info in INFOS:
        for fam in FAMILIES_OF[info.name]:
            assert f":doc:`{info.name} <methods/{info.name}>`" in sections[fam], (info.name, fam)
