"""Docstrings printed to a terminal: ``relaxit_core.text.rst_to_text`` and the CLI that uses
it (``relaxit list`` / ``relaxit describe``): no raw reST, lines that fit the terminal."""

from __future__ import annotations

import re

import pytest

import relaxit
from relaxit.cli import main
from relaxit_core.text import rst_inline_to_text, rst_to_text

# markup that must not reach a terminal
RAW = re.compile(r"``|:(?:class|func|meth|mod|data|attr|doc|ref|math|obj|exc):`|^\s*\.\. [\w-]+::|\*\*\w", re.M)


@pytest.mark.parametrize(
    ("source", "plain"),
    [
        ("``hard=True``", "hard=True"),
        (":class:`~relaxit_core.Capability`", "Capability"),
        (":doc:`the guide </guides/pyro>`", "the guide"),
        (":math:`\\tau \\to 0`", "\\tau \\to 0"),
        ("**Unbiased**: *always*", "Unbiased: always"),
        ("a\\*b and 2*3*4", "a*b and 2*3*4"),
        ("``a`` and ``b``", "a and b"),
        ("`interpreted`", "interpreted"),
    ],
)
def test_inline_markup_is_removed(source, plain):
    assert rst_inline_to_text(source) == plain


def test_blocks_wrap_and_keep_literals():
    text = rst_to_text(
        """Summary with ``code`` that is long enough to be wrapped at the given width, twice over.

        - a bullet with :math:`x` that also wraps because it is long, long, long
        - another

        Maths:
            :Law: :math:`z \\sim q`.

        .. math::
            \\hat g = f(z)

        Example::

            >>> 1 + 1
        """,
        width=40,
    )
    lines = text.splitlines()
    assert max(map(len, lines)) <= 40
    assert lines[0].startswith("Summary with code that is long")
    assert "- a bullet with x that also wraps" in text
    assert "    \\hat g = f(z)" in text  # display maths kept, indented
    assert ">>> 1 + 1" in text
    assert not RAW.search(text)


@pytest.mark.parametrize("width", [80, 120])
def test_list_fits_the_terminal_without_markup(width, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= width
    assert not RAW.search(out), RAW.search(out)
    for info in relaxit.available():
        assert info.name in out


@pytest.mark.parametrize("name", ["gumbel_softmax", "rebar", "reinforce"])
def test_describe_fits_the_terminal_without_markup(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    assert main(["describe", name]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 90
    assert not RAW.search(out), RAW.search(out)
    assert "maths (TeX" in out and "Law:" in out  # the docstring's Maths section, as TeX
    info = relaxit.describe(name)
    for field in info.config_schema["properties"]:
        if field != "name":
            assert f"    {field} (" in out
