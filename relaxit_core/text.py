r"""Docstrings as plain text for a terminal: reST markup removed, paragraphs wrapped.

Docstrings are written in reStructuredText for the Sphinx docs.  Whatever prints them to a
terminal (``relaxit list``, ``relaxit describe``, a third party's own tool) goes through
:func:`rst_to_text`, so that a reader sees ``hard=True``, not the double-backquoted
source, and lines that fit the terminal.

Inline markup: double-backquoted literals, roles (``:class:`~a.b.C``` gives ``C``,
``:math:`\tau``` gives ``\tau``, ``:doc:`title <target>``` gives ``title``), interpreted
text, ``**strong**`` and ``*emphasis*``, and backslash escapes.  Blocks: directives
(``.. math::`` and ``.. code-block::`` keep their content, indented; other directives and
comments are dropped), literal blocks after ``::``, doctest blocks, bullet and enumerated
lists and field lists; other paragraphs are re-wrapped to ``width``.
"""

from __future__ import annotations

import inspect
import re
import shutil
import textwrap

__all__ = ["maths_section", "rst_inline_to_text", "rst_to_text", "terminal_width"]

_ROLE = re.compile(r":[A-Za-z][\w:+.-]*:`((?:[^`\\]|\\.)+)`")
_LITERAL = re.compile(r"``(.+?)``")
_INTERPRETED = re.compile(r"(?<![`\w])`([^`]+)`_{0,2}(?![`\w])")
_STRONG = re.compile(r"(?<![\w*\\])\*\*(\S(?:.*?\S)?)\*\*(?![\w*])")
_EMPH = re.compile(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_TITLE_TARGET = re.compile(r"^(.*?)\s*<[^<>]+>$", re.S)
_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w:-]+)::\s*(.*)$")
_BULLET = re.compile(r"^(\s*)([-*+•]|\d+[.)]|#\.|:[^:`]+:)(\s+|$)")
_KEEP_DIRECTIVES = {"math", "code-block", "code", "sourcecode", "doctest", "testcode", "literalinclude"}


def terminal_width(default: int = 100) -> int:
    """Columns of the terminal (``COLUMNS`` wins; ``default`` when output is not a terminal)."""
    return max(40, shutil.get_terminal_size((default, 24)).columns)


def _role_text(content: str) -> str:
    content = content.replace("\\`", "`")
    m = _TITLE_TARGET.match(content)
    if m and m.group(1):
        return m.group(1)
    if content.startswith("~"):
        return content[1:].rsplit(".", 1)[-1]
    return content.lstrip("!")


def rst_inline_to_text(text: str) -> str:
    """Remove reST inline markup from one line or paragraph.

    >>> rst_inline_to_text("``hard=True`` forwards :math:`z`; see :class:`~relaxit_core.Capability`")
    'hard=True forwards z; see Capability'
    """
    literals: list[str] = []

    def stash(value: str) -> str:
        literals.append(value)
        return f"\x00{len(literals) - 1}\x00"

    text = _LITERAL.sub(lambda m: stash(m.group(1)), text)
    text = _ROLE.sub(lambda m: stash(_role_text(m.group(1))), text)
    text = _INTERPRETED.sub(lambda m: stash(_role_text(m.group(1))), text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    text = re.sub(r"\\(.)", r"\1", text)
    text = re.sub(r"\\$", "", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: literals[int(m.group(1))], text)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_to_text(text: str, width: int | None = None, indent: str = "") -> str:
    r"""A reST docstring (or part of one) as wrapped plain text.

    Args:
        text: the reST source (indentation is removed first, as ``inspect.cleandoc`` does).
        width: the line width; ``None``: :func:`terminal_width`.
        indent: prefixed to every line (counted in ``width``).

    Example:
        >>> print(rst_to_text('''Straight-through: ``hard=True`` forwards the one-hot
        ... vector (Jang et al. 2017, eq. 1)::
        ...
        ...     y = softmax((logits + g) / tau)
        ...
        ... .. math:: p(z) = \\prod_i p_i^{z_i}
        ... ''', width=40))
        Straight-through: hard=True forwards the
        one-hot vector (Jang et al. 2017, eq.
        1):
        <BLANKLINE>
            y = softmax((logits + g) / tau)
        <BLANKLINE>
            p(z) = \prod_i p_i^{z_i}
    """
    width = terminal_width() if width is None else width
    lines = inspect.cleandoc(str(text).expandtabs(4)).splitlines()
    out: list[str] = []
    i = 0

    def emit_block(block: list[str], extra: str) -> None:
        base = min((_indent_of(b) for b in block if b.strip()), default=0)
        for b in block:
            out.append((indent + extra + b[base:]).rstrip() if b.strip() else "")

    def wrap(par: str, first: str, rest: str) -> None:
        par = rst_inline_to_text(" ".join(p.strip() for p in par.splitlines()))
        body = max(20, width - len(indent) - len(first))
        wrapped = textwrap.wrap(par, body, break_on_hyphens=False, break_long_words=False) or [""]
        out.append(indent + first + wrapped[0])
        out.extend(indent + rest + w for w in wrapped[1:])

    literal_next = False
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            if out and out[-1] != "":
                out.append("")
            i += 1
            continue
        level = _indent_of(line)
        m = _DIRECTIVE.match(line)
        if m or line.strip() == ".." or (line.lstrip().startswith(".. ") and not m):
            # a directive or comment: its body is the following lines indented deeper
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _indent_of(lines[j]) > level):
                j += 1
            body = lines[i + 1: j]
            body = [b for b in body if not re.match(r"^\s*:[\w-]+:", b) or not b.strip()]
            name = m.group(1) if m else ""
            if name in _KEEP_DIRECTIVES:
                content = [m.group(2)] if m and m.group(2) and name == "math" else []
                content += body
                while content and not content[0].strip():
                    content.pop(0)
                while content and not content[-1].strip():
                    content.pop()
                if content:
                    if out and out[-1] != "":
                        out.append("")
                    if name == "math":  # TeX ignores line breaks between tokens: wrap it
                        base = min(_indent_of(c) for c in content if c.strip())
                        room = max(20, width - len(indent) - level - 4)
                        content = [w for c in content for w in (textwrap.wrap(
                            c[base:], room, subsequent_indent="  ", break_long_words=False,
                            break_on_hyphens=False) or [""])]
                    emit_block(content, " " * (level + 4))
                    out.append("")
            i = j
            continue
        if literal_next or line.lstrip().startswith(">>>"):
            # a literal block (after ``::``) or a doctest block: verbatim
            j = i + 1
            if literal_next:
                while j < len(lines) and (not lines[j].strip() or _indent_of(lines[j]) >= level):
                    j += 1
            else:
                while j < len(lines) and lines[j].strip():
                    j += 1
            block = lines[i:j]
            while block and not block[-1].strip():
                block.pop()
            emit_block(block, " " * (4 if literal_next else level))
            literal_next = False
            i = j
            continue
        # a paragraph (possibly a list item): lines until a blank line, a deeper or shallower
        # indented line, or the next list item
        b = _BULLET.match(line)
        j = i + 1
        cont = level + (len(b.group(0)) - len(b.group(1)) if b else 0)
        while j < len(lines) and lines[j].strip() and not _BULLET.match(lines[j]) and not _DIRECTIVE.match(lines[j]):
            if b is None and _indent_of(lines[j]) != level:
                break
            j += 1
        par = "\n".join(lines[i:j])
        stripped = par.rstrip()
        if stripped.endswith("::"):
            literal_next = True
            par = stripped[:-2].rstrip() + (":" if stripped[:-2].strip() and not stripped[:-2].endswith(" ") else "")
            if not par.strip():
                i = j
                continue
        if b:
            marker = b.group(2)
            if marker.startswith(":") and marker.endswith(":"):
                marker = marker[1:-1] + ":"
            elif marker in "-*+":
                marker = "-"
            first = " " * level + marker + " "
            text_part = par.split(b.group(0), 1)[1] if b.group(0) in par else par
            wrap(text_part, first, " " * len(first))
        else:
            wrap(par, " " * level, " " * level)
        del cont
        i = j
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out)


def maths_section(cls: type) -> str:
    """The body of the ``Maths:`` section of an estimator's class docstring, dedented ("" if
    none): the entries ``:Law:``, ``:Estimator:``, ``:Gradient:``, ``:Cost:`` in LaTeX (the
    convention of the plugins guide), read by the docs (typeset) and ``relaxit describe``."""
    lines = (inspect.getdoc(cls) or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == "Maths:")
    except StopIteration:
        return ""
    body = []
    for line in lines[start + 1:]:
        if line.strip() and not line[:1].isspace():
            break
        body.append(line)
    return textwrap.dedent("\n".join(body)).strip("\n")
