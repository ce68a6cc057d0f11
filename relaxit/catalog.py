"""The catalog of relaxit's built-in estimators, shipped with the package (``catalog.json``).

``relaxit list`` prints what :func:`relaxit.available` knows of each estimator (name,
families, capabilities, parameters, summary, reference, provider, class).  Building that
from the registry imports every plugin, and so torch: seconds for a table.  The catalog
holds the same rows for the plugins relaxit itself declares, keyed by their entry points,
so that ``relaxit list`` reads the installed entry points (metadata only, as the registry
does, with :data:`~relaxit_core.plugins.DISABLE_ENV` applied) and prints the catalog's rows
when every enabled entry point is one of relaxit's own, unchanged.  With any other plugin
installed (a third party's, or a built-in declared differently), it uses the registry, which
imports every plugin (and torch), as before.

The catalog is generated from the live registry (``python -m relaxit.catalog`` rewrites
it) and ``tests/test_startup.py`` checks that it equals what the registry gives, so it
cannot go stale unnoticed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["CATALOG_PATH", "DISTRIBUTION", "build_catalog", "load_catalog", "catalog_rows"]

CATALOG_PATH = Path(__file__).with_name("catalog.json")
DISTRIBUTION = "relaxit"
"""The distribution whose entry points the catalog describes (canonical name)."""


def _row(info: Any) -> dict[str, Any]:
    """What ``relaxit list --json`` prints of one estimator, minus its provider (which
    depends on how the distribution is installed and is read from the entry point)."""
    return {k: v for k, v in info.to_dict().items() if k not in ("config_schema", "provider")}


def build_catalog() -> dict[str, Any]:
    """The catalog from the live registry: relaxit's own entry points and the rows of the
    estimators each provides (loads every plugin)."""
    from relaxit_core.capabilities import FAMILIES
    from relaxit_core.plugins import DISABLE_ENV, _canonical, _dist_name, _plugin_id, relaxit_entry_points
    from relaxit_core.registry import ENTRY_POINT_GROUP, registry

    if os.environ.get(DISABLE_ENV, "").strip():
        raise RuntimeError(f"unset {DISABLE_ENV} to build the catalog (it describes every built-in plugin)")
    infos = registry.available()
    plugins = []
    for ep in relaxit_entry_points(ENTRY_POINT_GROUP):
        if _canonical(_dist_name(ep)) != DISTRIBUTION:
            continue
        provider = f"{_plugin_id(ep)} ({ep.value})"
        rows = [_row(i) for i in infos if i.provider == provider]
        plugins.append({"entry_point": ep.name, "value": ep.value, "estimators": rows})
    return {"families": list(FAMILIES), "plugins": plugins}


def load_catalog() -> dict[str, Any] | None:
    """The shipped catalog (``None`` if it is missing or unreadable)."""
    try:
        return json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def catalog_rows() -> tuple[list[dict[str, Any]], tuple[str, ...]] | None:
    """The rows of ``relaxit list --json`` (sorted by name) and the families, read from the
    catalog without importing any plugin; ``None`` when the catalog does not describe every
    enabled plugin (then only the registry can say)."""
    from relaxit_core.plugins import ENTRY_POINT_GROUP, _canonical, _dist_name, _plugin_id, enabled_entry_points

    catalog = load_catalog()
    if catalog is None:
        return None
    known = {(p["entry_point"], p["value"]): p["estimators"] for p in catalog["plugins"]}
    rows: list[dict[str, Any]] = []
    seen_modules: set[str] = set()
    for ep in enabled_entry_points(ENTRY_POINT_GROUP):
        if _canonical(_dist_name(ep)) != DISTRIBUTION or (ep.name, ep.value) not in known:
            return None
        if ep.value in seen_modules:  # the registry skips a module registered already
            continue
        seen_modules.add(ep.value)
        provider = f"{_plugin_id(ep)} ({ep.value})"
        for row in known[(ep.name, ep.value)]:
            rows.append({**{k: v for k, v in row.items() if k != "class"}, "provider": provider, "class": row["class"]})
    names = [r["name"] for r in rows]
    if len(names) != len(set(names)):  # two providers of one name: the registry's error
        return None
    return sorted(rows, key=lambda r: r["name"]), tuple(catalog["families"])


def main(argv: list[str] | None = None) -> int:
    """``python -m relaxit.catalog [--check]``: rewrite ``catalog.json`` from the registry
    (``--check``: exit 1 if it differs)."""
    argv = sys.argv[1:] if argv is None else argv
    text = json.dumps(build_catalog(), indent=1, ensure_ascii=False) + "\n"
    if "--check" in argv:
        same = CATALOG_PATH.exists() and CATALOG_PATH.read_text(encoding="utf-8") == text
        print(f"{CATALOG_PATH}: {'up to date' if same else 'STALE: run python -m relaxit.catalog'}")
        return 0 if same else 1
    CATALOG_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {CATALOG_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
