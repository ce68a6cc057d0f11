"""Lazy module attributes (PEP 562), shared by :mod:`relaxit` and :mod:`relaxit_core`: a name is
imported from its module on first access and then kept in the package's namespace, so that
importing the package imports neither torch nor pydantic.  The standard library only."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str], submodules: tuple[str, ...],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package`` whose globals are ``namespace``:
    ``where`` maps an exported name to the module (full dotted path) that defines it, and
    ``submodules`` are imported as ``package.name`` on first access."""

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())) | set(submodules))

    return __getattr__, __dir__
