"""The ``relaxit`` command: ``list``, ``describe NAME``, ``schema`` (and ``bench``, when installed).

Subcommands are small functions registered in :data:`COMMANDS`; each adds its own parser.
``relaxit --help`` and ``relaxit list`` import no torch: the parser is built without it, and
``list`` reads relaxit's own methods from the catalog shipped with the package
(``relaxit.catalog``), or imports every plugin when another one is installed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main", "COMMANDS"]

COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}


def command(func: Callable[[argparse._SubParsersAction], None]) -> Callable:
    COMMANDS[func.__name__.removeprefix("add_").replace("_", "-")] = func
    return func


@command
def add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered estimators with family and capabilities")
    p.add_argument("--family", help="only estimators serving this family")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    rows, families = _list_rows()
    if args.family:
        known = sorted(set(families) | {f for r in rows for f in r["families"]})
        if args.family not in known:
            raise UsageError(f"unknown family {args.family!r}{_did_you_mean(args.family, known)}; families: {', '.join(known)}")
    rows = [r for r in rows if not args.family or args.family in r["families"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from relaxit_core.text import rst_inline_to_text

    table = [(r["name"], ", ".join(r["families"]), ", ".join(r["capabilities"]), rst_inline_to_text(r["summary"]))
             for r in rows]
    _print_table(("name", "family", "capabilities", "summary"), table, max_widths=(None, 11, 26, None))
    return 0


def _list_rows() -> tuple[list[dict], Sequence[str]]:
    """The rows of ``relaxit list --json`` (sorted by name) and the known families.

    From the catalog shipped with relaxit (:mod:`relaxit.catalog`: no plugin imported, no
    torch) when it describes every enabled plugin and the registry is not loaded in this
    process yet; else from the registry (every plugin imported, a third party's included).
    """
    loaded = sys.modules.get("relaxit_core.registry")
    if loaded is None or not (loaded.registry._loaded or loaded.registry._classes):
        from relaxit.catalog import catalog_rows

        found = catalog_rows()
        if found is not None:
            return found
    import relaxit
    from relaxit_core import FAMILIES

    rows = [{k: v for k, v in i.to_dict().items() if k != "config_schema"} for i in relaxit.available()]
    return rows, FAMILIES


@command
def add_describe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="show one estimator: reference, params, config fields")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run_describe)


def _run_describe(args: argparse.Namespace) -> int:
    import relaxit

    info = relaxit.describe(args.name)
    advice = _advice(info.name)
    if args.json:
        print(json.dumps({**info.to_dict(), "advice": advice}, indent=2))
        return 0
    from relaxit_core.text import maths_section, rst_inline_to_text, rst_to_text, terminal_width

    width = terminal_width()

    def field(label: str, text: str, pad: int = 16) -> None:
        print(rst_to_text(text, width=width, indent=" " * pad).replace(" " * pad, f"  {label:<{pad - 2}}", 1))

    print(f"{info.name}  ({'/'.join(info.families)})")
    print(rst_to_text(info.summary, width=width, indent="  "))
    if advice:
        field("advice:", advice)
    field("reference:", info.reference)
    field("params:", ", ".join(info.params))
    field("capabilities:", ", ".join(sorted(c.value for c in info.capabilities)))
    field("provider:", info.provider)
    print("  config:")
    props = info.config_schema.get("properties", {})
    for name, spec in props.items():
        if name == "name":
            continue
        merged = dict(spec)
        for sub in spec.get("allOf", ()):
            merged.update(sub)
        bounds = ", ".join(f"{k} {merged[k]}" for k in ("exclusiveMinimum", "minimum", "exclusiveMaximum", "maximum") if k in merged)
        kind = merged.get("type") or "/".join(map(str, merged.get("enum", []))) or _union_kind(merged) or "any"
        default = f"default {merged.get('default')!r}" if "default" in merged else "required"
        head = f"{name} ({kind}; {default}{'; ' + bounds if bounds else ''}): "
        text = rst_to_text(head + rst_inline_to_text(merged.get("description", "")), width=width - 4, indent="      ")
        print("    " + text[6:])
    maths = maths_section(info.cls)
    if maths:
        print("  maths (TeX; typeset on the method's page of the docs):")
        print(rst_to_text(maths, width=width, indent="    "))
    return 0


def _advice(name: str) -> str | None:
    """One line from the bench's shipped gradient card (``relaxit.bench.advice``), if any."""
    try:
        from relaxit.bench.advice import advice
    except ImportError:  # pragma: no cover - the bench module is part of the package
        return None
    return advice(name)


@command
def add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="JSON schema of all estimator configs (for YAML/JSON editors)")
    p.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    p.set_defaults(func=_run_schema)


def _run_schema(args: argparse.Namespace) -> int:
    import relaxit

    if args.output:
        check_writable(args.output)  # before any work
    text = json.dumps(relaxit.schema(), indent=2)
    if args.output:
        try:
            args.output.write_text(text + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {str(args.output)!r}: {exc.strerror or exc}") from None
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


@command
def add_bench(sub: argparse._SubParsersAction) -> None:
    from relaxit.bench.cli import add_parser

    add_parser(sub)


class UsageError(Exception):
    """A user error of the command line: printed as one line, exit status 2."""


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def check_writable(path: Path) -> None:
    """Raise :class:`UsageError` unless ``path`` can be written (checked before any work)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    if (path.exists() and not os.access(path, os.W_OK)) or (not path.exists() and not os.access(parent, os.W_OK)):
        raise UsageError(f"cannot write {str(path)!r}: permission denied")


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"relaxit: warning: {_one_line(message) if isinstance(message, Warning) else message}", file=sys.stderr)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
                 max_widths: Sequence[int | None] | None = None, width: int | None = None) -> None:
    """Print an aligned table that fits the terminal: cells wrap inside their column (the
    last column takes the remaining width); on a terminal too narrow for that, one block
    per row."""
    import textwrap

    from relaxit_core.text import terminal_width

    width = terminal_width() if width is None else width
    n = len(header)
    caps = list(max_widths or [None] * n)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(n)]
    widths = [min(w, c) if c else w for w, c in zip(widths, caps)]
    rest = width - sum(widths[:-1]) - 2 * (n - 1)
    if rest < 24:  # too narrow for columns: one block per row
        for r in rows:
            print(r[0])
            for h, c in zip(header[1:], r[1:]):
                print(textwrap.fill(str(c), width, initial_indent=f"  {h}: ", subsequent_indent="    "))
        return
    widths[-1] = min(widths[-1], rest)
    for r in [header, ["-" * w for w in widths], *rows]:
        cells = [textwrap.wrap(str(c), w, break_on_hyphens=False) or [""] for c, w in zip(r, widths)]
        for k in range(max(map(len, cells))):
            line = "  ".join((c[k] if k < len(c) else "").ljust(w) for c, w in zip(cells, widths))
            print(line.rstrip())


class _Parser(argparse.ArgumentParser):
    """argparse with a did-you-mean for an unknown subcommand."""

    def error(self, message: str):  # noqa: ANN201 - argparse's signature
        import re

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            message += _did_you_mean(m.group(1), choices)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    from relaxit import __version__

    parser = _Parser(prog="relaxit", description="Gradient estimators for discrete random variables.")
    parser.add_argument("--version", action="version", version=f"relaxit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors print one line (``relaxit: error: ...``) and return 2,
    as argparse does, never a traceback."""
    from relaxit_core.errors import RelaxitError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one line per warning (plugin failures...)
        try:
            return int(args.func(args) or 0)
        except (RelaxitError, UsageError) as exc:
            print(f"relaxit: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # output piped into ``head`` and the like
            sys.stderr.close()
            return 0
        except KeyboardInterrupt:
            print("relaxit: interrupted", file=sys.stderr)
            return 130


def _union_kind(spec: dict) -> str:
    """``number | schedule`` for a temperature field, ``integer | null`` for an optional one..."""
    kinds = []
    for sub in spec.get("anyOf", ()):
        kind = sub.get("type") or ("schedule" if "discriminator" in sub or "$ref" in sub else None)
        if kind is None and "const" in sub:
            kind = repr(sub["const"])
        if kind and kind not in kinds:
            kinds.append(kind)
    return " | ".join(kinds)
