"""Helpers of the plugin tests: install a package as a site directory with real entry-point
metadata, and put such sites on ``sys.path`` for the length of a ``with`` block."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path


def write_dist_info(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """A ``.dist-info`` for distribution ``dist`` in ``site`` declaring ``relaxit`` entry points."""
    info = site / f"{dist}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[relaxit]\n{lines}")


@contextlib.contextmanager
def on_sys_path(*paths: Path, packages: tuple[str, ...] = (), prefix: str | None = None):
    """Put ``paths`` first on ``sys.path`` (as an installation would) and undo it after,
    forgetting the imported modules of ``packages`` (top-level names) and of every top-level
    name starting with ``prefix``."""
    saved = list(sys.path)
    sys.path[:0] = [str(p) for p in paths]
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved
        for name in list(sys.modules):
            top = name.split(".")[0]
            if top in packages or (prefix is not None and top.startswith(prefix)):
                del sys.modules[name]
        importlib.invalidate_caches()
