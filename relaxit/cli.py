"""The ``relaxit`` command: ``list``, ``describe NAME``, ``schema`` (and ``bench``, when installed).

Subcommands are small functions registered in :data:`COMMANDS`; each adds its own parser.
"""

from __future__ import annotations

import argparse
import json
import sys
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

    infos = [i for i in relaxit.available() if not args.family or args.family in i.families]
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
    advice = _advice(info.name)
    if args.json:
        print(json.dumps({**info.to_dict(), "advice": advice}, indent=2))
        return 0
    print(f"{info.name}  ({'/'.join(info.families)})")
    print(f"  {info.summary}")
    if advice:
        print(f"  advice:       {advice}")
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

    text = json.dumps(relaxit.schema(), indent=2)
    if args.output:
        args.output.write_text(text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


@command
def add_bench(sub: argparse._SubParsersAction) -> None:
    from relaxit.bench.cli import add_parser

    add_parser(sub)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    widths[-1] = 0
    for r in [header, ["-" * w for w in widths[:-1]] + ["-" * 7], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def build_parser() -> argparse.ArgumentParser:
    from relaxit import __version__

    parser = argparse.ArgumentParser(
        prog="relaxit", description="Gradient estimators for discrete random variables."
    )
    parser.add_argument("--version", action="version", version=f"relaxit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from relaxit_core.errors import RelaxitError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RelaxitError as exc:
        print(f"relaxit: error: {exc}", file=sys.stderr)
        return 2
