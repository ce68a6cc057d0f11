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

from relaxit_core.capabilities import FAMILIES, Capability
from relaxit_core.config import EstimatorConfig
from relaxit_core.errors import (
    ConfigError,
    DuplicateEstimatorError,
    NonFiniteGradientWarning,
    ObjectiveError,
    EstimatorWarning,
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
