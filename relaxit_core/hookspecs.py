"""Hook specifications of relaxit's plugin system (pluggy).

A plugin is a module (declared under the ``relaxit`` entry-point group) with functions
marked ``@relaxit_core.hookimpl`` whose names are the hooks below.  Plugins never import
pluggy themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

PROJECT = "relaxit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marker for plugin functions implementing a hook: ``@relaxit_core.hookimpl``."""

__all__ = ["hookspec", "hookimpl", "relaxit_estimators"]


@hookspec
def relaxit_estimators() -> Iterable[type]:
    """Return the estimator classes this plugin provides.

    Each class implements :class:`relaxit_core.GradientEstimator` (usually by subclassing
    :class:`relaxit_core.EstimatorBase`) and has a ``name`` unique across all installed
    plugins.  Example::

        @relaxit_core.hookimpl
        def relaxit_estimators():
            return [MyEstimator]
    """
