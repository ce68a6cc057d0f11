"""The ``relaxit`` command: ``list``, ``describe NAME``, ``schema`` (and ``bench``, when installed).

Subcommands are small functions registered in :data:`COMMANDS`; each adds its own parser.
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
    import relaxit
    from relaxit_core import FAMILIES

    available = relaxit.available()
    if args.family:
        known = sorted(set(FAMILIES) | {f for i in available for f in i.families})
        if args.family not in known:
            raise UsageError(f"unknown family {args.family!r}{_did_you_mean(args.family, known)}; families: {', '.join(known)}")
    infos = [i for i in available if not args.family or args.family in i.families]
    if args.json:
        print(json.dumps([{k: v for k, v in i.to_dict().items() if k != "config_schema"} for i in infos], indent=2))
        return 0
    rows = [(i.name, "/".join(i.families), ", ".join(sorted(c.value for c in i.capabilities)), i.summary) for i in infos]
    _print_table(("name", "family", "capabilities", "summary"), rows)
    return 0


@command
def add_describe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="show one estimator: reference, params, config fields")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run_describe)


def _run_describe(args: argparse.Namespace) -> int:
    import relaxit

    info = relaxit.describe(args.name)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(f"{info.name}  ({'/'.join(info.families)})")
    print(f"  {info.summary}")
    print(f"  reference:    {info.reference}")
    print(f"  params:       {', '.join(info.params)}")
    print(f"  capabilities: {', '.join(sorted(c.value for c in info.capabilities))}")
    print(f"  provider:     {info.provider}")
    print("  config:")
    props = info.config_schema.get("properties", {})
    for field, spec in props.items():
        if field == "name":
            continue
        bounds = ", ".join(f"{k} {spec[k]}" for k in ("exclusiveMinimum", "minimum", "exclusiveMaximum", "maximum") if k in spec)
        kind = spec.get("type") or "/".join(map(str, spec.get("enum", [])))
        print(f"    {field} ({kind}; default {spec.get('default')!r}{'; ' + bounds if bounds else ''}): {spec.get('description', '')}")
    return 0


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


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    widths[-1] = 0
    for r in [header, ["-" * w for w in widths[:-1]] + ["-" * 7], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


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
        except KeyboardInterrupt:
            print("relaxit: interrupted", file=sys.stderr)
            return 130
