"""The ``relaxit`` entry points: which plugins are installed and which are disabled.

Light on purpose (the standard library only): :mod:`relaxit_core.registry` loads the plugins
these name, and the ``relaxit list`` command reads them to decide whether the catalog shipped
with relaxit (:mod:`relaxit.catalog`) describes every installed plugin without importing any.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
import weakref
from collections.abc import Callable, Iterable
from importlib import metadata
from importlib.metadata import EntryPoint
from typing import Any

from relaxit_core.errors import PluginWarning

__all__ = ["ENTRY_POINT_GROUP", "DISABLE_ENV", "entry_points", "relaxit_entry_points", "enabled_entry_points"]

ENTRY_POINT_GROUP = "relaxit"
DISABLE_ENV = "RELAXIT_DISABLE_PLUGINS"
"""Comma-separated plugins to skip, e.g. ``RELAXIT_DISABLE_PLUGINS=mypkg:foo,otherpkg``: each
item a ``distribution:entry_point``, a distribution, a plugin module, or an entry-point name
that only one distribution uses."""


def entry_points(*, group: str) -> list[EntryPoint]:
    """:func:`importlib.metadata.entry_points` of one ``group``, the same entry points in the
    same order, for less: a distribution's ``entry_points.txt`` is parsed only when its
    text names the group (the standard function parses every installed distribution's).

    Distributions are taken once each, by normalised name, first on ``sys.path`` first, as
    the standard function does.
    """
    seen: set[str] = set()
    out: list[EntryPoint] = []
    for dist in metadata.distributions():
        name = getattr(dist, "_normalized_name", None)  # what importlib.metadata dedupes by
        if name is None:
            name = _canonical(str(dist.metadata["Name"] or "")).replace("-", "_")
        if name in seen:
            continue
        seen.add(name)
        text = dist.read_text("entry_points.txt")
        if text and group in text:
            out.extend(dist.entry_points.select(group=group))
    return out


def relaxit_entry_points(group: str, scan: Callable[..., Iterable[EntryPoint]] = entry_points) -> list[EntryPoint]:
    """The group's entry points, each once, in a fixed order (entry-point name, distribution).

    ``scan`` is :func:`importlib.metadata.entry_points` (the registry passes its own name
    for it, which tests replace)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for ep in scan(group=group):
        key = (_dist_name(ep), ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return sorted(out, key=lambda e: (e.name, _dist_name(e), e.value))


def _canonical(name: str) -> str:
    """A distribution name in its normalised form (PEP 503): ``My_Pkg.x`` -> ``my-pkg-x``.

    Metadata spells a name as its build backend wrote it (``relaxit_example_plugin`` or
    ``relaxit-example-plugin``); names are compared in the normalised form, as pip does."""
    return re.sub(r"[-_.]+", "-", name).lower()


_DIST_NAMES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
"""Distribution -> its name: ``Distribution.name`` parses the whole metadata file at every
access, and the entry points of one distribution share one distribution object."""


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "(unknown distribution)"
    try:
        return _DIST_NAMES[dist]
    except (KeyError, TypeError):  # TypeError: not weak-referenceable, not cached
        pass
    name = getattr(dist, "name", None)
    name = str(name) if name else "(unknown distribution)"
    with contextlib.suppress(TypeError):
        _DIST_NAMES[dist] = name
    return name


def _plugin_id(ep: EntryPoint) -> str:
    """``distribution:entry_point``: a provider is its package and entry point, never the
    entry-point name alone (a third party may reuse a built-in's name)."""
    dist = getattr(ep, "dist", None)
    return f"{_dist_name(ep)}:{ep.name}" if dist is not None else ep.name


def _disabled(eps: list[EntryPoint]) -> set[str]:
    """The plugin ids that :data:`DISABLE_ENV` disables.

    Each comma-separated item is ``distribution:entry_point``, a distribution name (all its
    plugins), a module (``mypkg.plugin``) or an entry-point name; an entry-point name that
    several distributions use is ambiguous: it disables none of them, with a warning.
    """
    items = {s.strip() for s in os.environ.get(DISABLE_ENV, "").split(",") if s.strip()}
    if not items:
        return set()
    # a distribution may be named in any spelling pip accepts (``my_pkg`` for ``my-pkg``)
    items |= {_canonical(i.split(":", 1)[0]) + (":" + i.split(":", 1)[1] if ":" in i else "") for i in items}

    def canonical_id(ep: EntryPoint) -> str:
        return f"{_canonical(_dist_name(ep))}:{ep.name}"

    out: set[str] = set()
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in eps:
        by_name.setdefault(ep.name, []).append(ep)
        if (_plugin_id(ep) in items or canonical_id(ep) in items or _canonical(_dist_name(ep)) in items
                or ep.value in items):
            out.add(_plugin_id(ep))
    for item in items:
        matches = by_name.get(item, [])
        if len(matches) == 1:
            out.add(_plugin_id(matches[0]))
        elif len(matches) > 1:
            ids = ", ".join(_plugin_id(e) for e in matches)
            warnings.warn(
                f"{DISABLE_ENV}: {item!r} is the entry-point name of several plugins ({ids}); "
                "none is disabled: name one as distribution:entry_point",
                PluginWarning, stacklevel=4,
            )
    return out


def enabled_entry_points(group: str = ENTRY_POINT_GROUP) -> list[EntryPoint]:
    """The entry points the registry loads: each once, minus those :data:`DISABLE_ENV`
    disables (warning as the registry does about an ambiguous item)."""
    eps = relaxit_entry_points(group)
    disabled = _disabled(eps)
    return [ep for ep in eps if _plugin_id(ep) not in disabled]
