"""relaxit's framework: the estimator protocol, configs, capabilities, the plugin registry.

Plugins import what they need from here (never from pluggy or from :mod:`relaxit`)::

    import relaxit_core

    class MyEstimator(relaxit_core.EstimatorBase): ...

    @relaxit_core.hookimpl
    def relaxit_estimators():
        return [MyEstimator]

The conformance kit is :mod:`relaxit_core.testing`; gradient diagnostics are
:mod:`relaxit_core.diagnostics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaxit_core._lazy import lazy_exports

if TYPE_CHECKING:  # imported on first access (see __getattr__)
    from relaxit_core.capabilities import FAMILIES, Capability
    from relaxit_core.config import EstimatorConfig
    from relaxit_core.errors import (
        ConfigError,
        DuplicateEstimatorError,
        EstimatorWarning,
        NonFiniteGradientWarning,
        ObjectiveError,
        ParameterError,
        PluginWarning,
        RelaxitError,
        UnknownEstimatorError,
    )
    from relaxit_core.estimator import Draw, Estimate, EstimatorBase, GradientEstimator, Objective
    from relaxit_core.hookspecs import hookimpl, hookspec
    from relaxit_core.registry import EstimatorInfo, Registry

__all__ = [
    "Capability",
    "FAMILIES",
    "EstimatorConfig",
    "Estimate",
    "Draw",
    "EstimatorBase",
    "GradientEstimator",
    "Objective",
    "EstimatorInfo",
    "Registry",
    "hookimpl",
    "hookspec",
    "RelaxitError",
    "UnknownEstimatorError",
    "ConfigError",
    "ParameterError",
    "ObjectiveError",
    "DuplicateEstimatorError",
    "PluginWarning",
    "NonFiniteGradientWarning",
    "EstimatorWarning",
]

_WHERE = {
    "Capability": "capabilities",
    "FAMILIES": "capabilities",
    "EstimatorConfig": "config",
    "Estimate": "estimator",
    "Draw": "estimator",
    "EstimatorBase": "estimator",
    "GradientEstimator": "estimator",
    "Objective": "estimator",
    "EstimatorInfo": "registry",
    "Registry": "registry",
    "hookimpl": "hookspecs",
    "hookspec": "hookspecs",
    **dict.fromkeys(
        ("RelaxitError", "UnknownEstimatorError", "ConfigError", "ParameterError", "ObjectiveError",
         "DuplicateEstimatorError", "PluginWarning", "NonFiniteGradientWarning", "EstimatorWarning"),
        "errors",
    ),
}
_SUBMODULES = ("capabilities", "config", "diagnostics", "distributions", "errors", "estimator", "hookspecs",
               "inference", "limits", "registry", "schedules", "surrogate", "testing", "text")


# Each name is imported from its module on first access: the modules that need neither torch
# nor pydantic (errors, capabilities, text) stay light, which the ``relaxit`` command's
# ``--help`` and ``list`` rely on.
__getattr__, __dir__ = lazy_exports(
    "relaxit_core", {name: f"relaxit_core.{module}" for name, module in _WHERE.items()}, _SUBMODULES, globals()
)
