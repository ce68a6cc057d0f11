"""relaxit — gradient estimators for discrete random variables, under one interface.

>>> import relaxit, torch
>>> est = relaxit.get("gumbel_softmax", tau=0.5)
>>> est.distribution(logits=torch.zeros(2, 3)).rsample().shape
torch.Size([2, 3])

Estimators are found through the registry (:mod:`relaxit_core.registry`), fed by the
``relaxit`` entry-point group; ``import relaxit`` imports no method, scans no entry point and
imports neither torch nor pydantic: that happens on the first :func:`get`, :func:`build`,
:func:`available` or :func:`describe` (or the first access of another name, such as
:class:`~relaxit_core.EstimatorBase`).

:data:`EstimatorSpec` is a pydantic field type for an estimator block in your own config;
:mod:`relaxit.nn` (imported on first access of ``relaxit.nn``) has ready-made stochastic
layers built from such a block; :mod:`relaxit.pyro` (likewise) has
:class:`~relaxit.pyro.EstimatorELBO`, Pyro inference with any estimator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaxit_core._lazy import lazy_exports

if TYPE_CHECKING:  # imported on first use (see __getattr__): ``import relaxit`` imports no torch
    from relaxit_core import (
        Capability,
        ConfigError,
        Estimate,
        EstimatorBase,
        EstimatorConfig,
        EstimatorInfo,
        GradientEstimator,
        ObjectiveError,
        ParameterError,
        UnknownEstimatorError,
    )
    from relaxit import schedules
    from relaxit.spec import EstimatorSpec

__version__ = "2.0.0"

__all__ = [
    "__version__",
    "get",
    "build",
    "available",
    "describe",
    "register",
    "schema",
    "validate",
    "EstimatorSpec",
    "schedules",
    "Capability",
    "ConfigError",
    "Estimate",
    "EstimatorBase",
    "EstimatorConfig",
    "EstimatorInfo",
    "GradientEstimator",
    "ObjectiveError",
    "ParameterError",
    "UnknownEstimatorError",
]


def get(name: str, /, **config: Any) -> GradientEstimator:
    """The estimator ``name`` with its config fields given as keywords.

    >>> get("reinforce", family="bernoulli", baseline="leave_one_out").config.baseline
    'leave_one_out'

    Raises:
        UnknownEstimatorError: no estimator of that name (the message suggests close names).
        ConfigError: a field is invalid or unknown (pydantic's field-level detail kept).
    """
    return _registry().get(name, **config)


def build(spec: Any) -> GradientEstimator:
    """An estimator from a spec: a mapping with a ``name`` key, an :class:`EstimatorConfig`,
    an OmegaConf/Hydra node, or the path of a JSON/YAML/TOML file holding such a mapping.

    >>> build({"name": "gumbel_softmax", "tau": 0.5}).config.tau
    0.5

    Names are looked up in the registry only; nothing in a spec is imported or evaluated.
    """
    return _registry().build(spec)


def validate(spec: Any) -> EstimatorConfig:
    """The validated config of a spec (as :func:`build` takes), without building."""
    return _registry().validate(spec)


def available() -> list[EstimatorInfo]:
    """Every registered estimator, sorted by name."""
    return _registry().available()


def describe(name: str) -> EstimatorInfo:
    """What the registry knows of ``name``: family, capabilities, params, config schema,
    summary and paper reference."""
    return _registry().describe(name)


def register(cls: type) -> type:
    """Register an estimator class at run time (usable as a class decorator)."""
    return _registry().register(cls)


_LAZY = {
    "Capability": "relaxit_core.capabilities",
    "ConfigError": "relaxit_core.errors",
    "ObjectiveError": "relaxit_core.errors",
    "ParameterError": "relaxit_core.errors",
    "UnknownEstimatorError": "relaxit_core.errors",
    "EstimatorConfig": "relaxit_core.config",
    "Estimate": "relaxit_core.estimator",
    "EstimatorBase": "relaxit_core.estimator",
    "GradientEstimator": "relaxit_core.estimator",
    "EstimatorInfo": "relaxit_core.registry",
    "EstimatorSpec": "relaxit.spec",
}
_SUBMODULES = ("schedules", "spec", "nn", "pyro", "cli", "bench", "distributions")


def _registry() -> Any:
    from relaxit_core.registry import registry

    return registry


# Everything but the facade's functions is imported on first access, so that ``import
# relaxit`` (and the ``relaxit`` command's ``--help`` and ``list``) import neither torch nor
# pydantic; ``relaxit.nn`` (the stochastic layers) and ``relaxit.pyro`` likewise.
__getattr__, __dir__ = lazy_exports("relaxit", _LAZY, _SUBMODULES, globals())


def schema() -> dict[str, Any]:
    """JSON schema of every registered config: a union discriminated by ``name``."""
    return _registry().schema()
