"""Sphinx extension: cross-references to relaxit's public names, and local intersphinx inventories.

1. **Aliases.**  Classes are documented under their public names (``relaxit_core.EstimatorBase``)
   while type hints and docstrings may name them by defining module
   (``relaxit_core.estimator.EstimatorBase``) or through the facade (``relaxit.Capability``).
   A ``missing-reference`` handler retries such targets under the public name, so that
   ``nitpicky`` builds resolve them instead of warning.

2. **Inventory stubs.**  intersphinx needs each project's ``objects.inv``, which is fetched
   over the network.  So that the docs build offline and reproducibly, ``docs/_inventories/``
   holds small plain-text listings (``name role uri``) of the external objects these docs
   refer to; :func:`compile_inventories` turns them into ``objects.inv`` files that
   ``intersphinx_mapping`` in ``conf.py`` reads.  The links point at the real pages of
   torch, Pyro, pydantic and Python.  A build that refers to a new external object fails
   (``nitpicky`` + ``-W``) until its line is added to the listing.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

_ROLE_TO_TYPE = {"class": "class", "func": "function", "meth": "method", "data": "data",
                 "exc": "exception", "mod": "module", "attr": "attribute", "obj": "data"}


def compile_inventories(src: Path, dest: Path) -> dict[str, Path]:
    """Compile ``src/<project>.txt`` listings into ``dest/<project>.inv``.

    Each non-comment line of a listing is ``name role uri`` with ``role`` one of
    ``class func meth data exc mod attr``; the first line is ``# project version``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for txt in sorted(src.glob("*.txt")):
        lines = txt.read_text(encoding="utf-8").splitlines()
        project, version = lines[0].lstrip("# ").split(maxsplit=1)
        body = []
        for line in lines[1:]:
            if not line.strip() or line.startswith("#"):
                continue
            name, role, uri = line.split()
            body.append(f"{name} py:{_ROLE_TO_TYPE[role]} 1 {uri} -")
        header = (
            "# Sphinx inventory version 2\n"
            f"# Project: {project}\n# Version: {version}\n"
            "# The remainder of this file is compressed using zlib.\n"
        )
        data = header.encode() + zlib.compress(("\n".join(body) + "\n").encode())
        path = dest / f"{txt.stem}.inv"
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        out[txt.stem] = path
    return out


def _aliases() -> dict[str, str]:
    """``{other spelling: documented name}`` for the public names of relaxit and relaxit_core."""
    import relaxit
    import relaxit_core

    aliases: dict[str, str] = {}
    for name in relaxit_core.__all__:
        obj = getattr(relaxit_core, name)
        module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if module and qual and module != "relaxit_core" and module.startswith("relaxit_core"):
            aliases[f"{module}.{qual}"] = f"relaxit_core.{name}"
        aliases[f"relaxit.{name}"] = f"relaxit_core.{name}"
        aliases[name] = f"relaxit_core.{name}"
    aliases["relaxit_core.estimator.Objective"] = "relaxit_core.Objective"
    aliases["relaxit.EstimatorSpec"] = "relaxit.spec.EstimatorSpec"
    aliases["EstimatorSpec"] = "relaxit.spec.EstimatorSpec"
    # names a facade re-exports but relaxit_core documents
    for name in getattr(relaxit, "__all__", ()):
        if name in relaxit_core.__all__:
            aliases[f"relaxit.{name}"] = f"relaxit_core.{name}"
    return aliases


def _resolve_alias(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    aliases = getattr(app, "relaxit_aliases", {})
    module = node.get("py:module") or ""
    alias = aliases.get(target) or aliases.get(f"{module}.{target}")
    if alias is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", alias, node, contnode)


def _on_config_inited(app: Any, config: Any) -> None:
    app.relaxit_aliases = _aliases()


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _on_config_inited)
    app.connect("missing-reference", _resolve_alias)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
