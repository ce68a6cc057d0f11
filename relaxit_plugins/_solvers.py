r"""MAP solvers for perturb-and-MAP estimators (``imle``, ``aimle``, ``perturbed``), by name.

A MAP solver maps scores ``s`` (``[..., n]``) to a maximiser ``y*(s) = argmax_{y ∈ Y} <s, y>``
over the vertices ``Y`` of a family's structures, a tensor of the same shape.  Built in:

- ``"topk"`` (family ``"subset"``): the k-hot vector of the ``k`` largest scores;
- ``"argmax"`` (family ``"categorical"``): the one-hot vector of the largest score.

Configs stay JSON (they never import or evaluate strings): the ``solver`` field of an
estimator's config is the *name* of a registered solver.  Your own solver (a shortest path,
a matching, any combinatorial MAP oracle) is registered once under a name, with the family
of the structures it returns, and is then available to every config::

    from relaxit_plugins.imle import register_solver

    @register_solver("my_topk", family="subset")
    def my_topk(scores, k):          # k: the config's k (None for categorical); or my_topk(scores)
        ...

    est = relaxit.build({"name": "imle", "family": "subset", "k": 3, "solver": "my_topk"})

or passed directly at construction, ``relaxit.get("imle", family="subset", k=3, solver=MapSolver(...))`` (or
a callable with a ``family`` attribute): it is then registered under its name, which the
config records, so that the config validates and rebuilds in this process (another process
registers it again, as it imports any plugin).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import math
from typing import Annotated, Optional

import torch
from pydantic import AfterValidator, Field
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

import relaxit_core
from relaxit_core.distributions import gumbel_like
from relaxit_core.errors import ConfigError, ParameterError
from relaxit_plugins.gumbel_topk import KHot as _KHot

__all__ = [
    "MapSolver",
    "register_solver",
    "get_solver",
    "available_solvers",
    "resolve_solver",
    "validate_solver_name",
    "topk_map",
    "argmax_map",
    "sum_of_gamma_like",
    "noise_like",
    "PerturbAndMAP",
    "DEFAULT_SOLVER",
    "SolverName",
    "SolverEstimator",
]

SOLVER_FAMILIES = ("subset", "categorical")
DEFAULT_SOLVER = {"subset": "topk", "categorical": "argmax"}
"""The built-in solver of each family (the default of an estimator's ``solver`` field)."""


@dataclass(frozen=True)
class MapSolver:
    """A named MAP oracle ``fn(scores, k) -> structure`` returning, without gradient, a tensor
    of the shape of ``scores``: structures of ``family`` (``"subset"`` or ``"categorical"``).
    :func:`register_solver` and :func:`resolve_solver` also accept ``fn(scores)``."""

    name: str
    fn: Callable[[torch.Tensor, int | None], torch.Tensor]
    family: str

    def __post_init__(self):
        if self.family not in SOLVER_FAMILIES:
            raise ValueError(f"MapSolver {self.name!r}: family must be one of {SOLVER_FAMILIES}, got {self.family!r}")

    def __call__(self, scores: torch.Tensor, k: int | None = None) -> torch.Tensor:
        with torch.no_grad():
            out = self.fn(scores.detach(), k)
        if not isinstance(out, torch.Tensor) or out.shape != scores.shape:
            raise ValueError(
                f"MAP solver {self.name!r} returned {getattr(out, 'shape', type(out).__name__)}; "
                f"expected a tensor of the scores' shape {tuple(scores.shape)}"
            )
        return out.to(scores.dtype)


def topk_map(scores: torch.Tensor, k: int | None) -> torch.Tensor:
    """The k-hot vector of the ``k`` largest scores (ties broken by ``torch.topk``)."""
    if k is None:
        raise ValueError("the 'topk' solver needs k")
    idx = scores.topk(k, dim=-1).indices
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


def argmax_map(scores: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """The one-hot vector of the largest score."""
    idx = scores.argmax(-1, keepdim=True)
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


_REGISTRY: dict[str, MapSolver] = {
    "topk": MapSolver("topk", topk_map, "subset"),
    "argmax": MapSolver("argmax", argmax_map, "categorical"),
}


def _two_args(f: Callable) -> Callable:
    """Accept ``f(scores)`` as well as ``f(scores, k)``."""
    try:
        params = [p for p in inspect.signature(f).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        return f
    if len(params) == 1 and params[0].kind != params[0].VAR_POSITIONAL:
        return _IgnoreK(f)
    return f


class _IgnoreK:
    """``f(scores)`` called as ``f(scores, k)`` (a class, so that it pickles)."""

    def __init__(self, f):
        self.f = f
        functools.update_wrapper(self, f)

    def __call__(self, scores, k=None):
        return self.f(scores)


def register_solver(name: str, fn: Callable | None = None, *, family: str):
    """Register a MAP solver ``fn(scores, k) -> structure`` under ``name``; usable as a
    decorator.  Re-registering a name replaces it (built-in names cannot be replaced)."""

    def deco(f):
        if name in ("topk", "argmax"):
            raise ValueError(f"{name!r} is a built-in solver; choose another name")
        _REGISTRY[name] = MapSolver(name, _two_args(f), family)
        return f

    return deco(fn) if fn is not None else deco


def available_solvers() -> dict[str, str]:
    """``{name: family}`` of the registered solvers."""
    return {k: v.family for k, v in sorted(_REGISTRY.items())}


def get_solver(name: str, owner: str = "solver") -> MapSolver:
    """The registered solver ``name``; :class:`~relaxit_core.ConfigError` listing the names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"{owner}: unknown solver {name!r}; registered: {', '.join(sorted(_REGISTRY))} "
            "(register your own with relaxit_plugins.imle.register_solver)"
        ) from None


def resolve_solver(est_name: str, config_kwargs: dict, default: str | None = None):
    """Split a ``solver=`` callable out of constructor keywords: returns ``(kwargs, solver or None)``.

    A :class:`MapSolver` (or a callable with ``family`` and ``__name__``) is taken as the
    instance's solver and its name is written into the config."""
    solver = config_kwargs.get("solver")
    if solver is None or isinstance(solver, str):
        return config_kwargs, None
    if not isinstance(solver, MapSolver):
        family = getattr(solver, "family", None)
        if family is None or not callable(solver):
            raise ConfigError(
                f"{est_name}: solver must be a registered name, a MapSolver or a callable with a "
                f"`family` attribute, got {type(solver).__name__}"
            )
        solver = MapSolver(getattr(solver, "__name__", "custom"), _two_args(solver), family)
    if _REGISTRY.get(solver.name) is not solver:
        if solver.name in ("topk", "argmax"):
            raise ConfigError(f"{est_name}: {solver.name!r} is a built-in solver name; give your MapSolver another name")
        _REGISTRY[solver.name] = solver  # so that the config naming it validates and rebuilds
    return {**config_kwargs, "solver": solver.name}, solver


def validate_solver_name(name: str | None) -> str | None:
    """Pydantic validator of a ``solver`` config field: a registered name (or ``None``)."""
    if name is not None and name not in _REGISTRY:
        raise ValueError(
            f"unknown solver {name!r}; registered: {', '.join(sorted(_REGISTRY))} "
            "(register your own with relaxit_plugins.imle.register_solver)"
        )
    return name


# ------------------------------------------------------------------- perturb-and-MAP
def sum_of_gamma_like(shape: torch.Size, like: torch.Tensor, kappa: int, iterations: int = 10) -> torch.Tensor:
    r"""Sum-of-Gamma noise (Niepert et al. 2021, I-MLE; section and theorem numbers not checked here):
    ``ε = (1/κ) (Σ_{i=1}^{s} G_i - log s)``, ``G_i ~ Gamma(shape 1/κ, rate i/κ)``, drawn in at
    least float32.  Its sum over ``κ`` i.i.d. copies tends to a Gumbel as ``s → ∞``, which
    makes perturb-and-MAP with top-``κ`` sample the k-subset law ``∝ exp(θ·z)`` closely."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    conc = torch.full((iterations,) + tuple(shape), 1.0 / kappa, dtype=dtype, device=like.device)
    rate = torch.arange(1, iterations + 1, dtype=dtype, device=like.device) / kappa
    g = torch._standard_gamma(conc) / rate.view((iterations,) + (1,) * len(shape))
    return ((g.sum(0) - math.log(iterations)) / kappa).to(like.dtype)


def noise_like(kind: str, shape: torch.Size, like: torch.Tensor, *, kappa: int = 1, iterations: int = 10) -> torch.Tensor:
    """Perturbation noise: ``"sum_of_gamma"``, ``"gumbel"``, ``"normal"`` or ``"none"`` (zeros)."""
    if kind == "sum_of_gamma":
        return sum_of_gamma_like(shape, like, kappa, iterations)
    if kind == "gumbel":
        return gumbel_like(shape, like)
    if kind == "normal":
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    if kind == "none":
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    raise ValueError(f"unknown noise {kind!r}")


class PerturbAndMAP(TorchDistribution):
    r"""The law of ``y*(θ + τ ε)``: a MAP solver applied to noisy scores (perturb-and-MAP).

    ``sample`` draws fresh noise per sample and batch element and returns the solver's
    structures (k-hot for ``"subset"`` solvers, one-hot for ``"categorical"``).  The law has no
    tractable ``log_prob`` in general, so it is offered for sampling only.
    """

    arg_constraints = {"logits": constraints.independent(constraints.real, 1)}
    has_rsample = False

    def __init__(self, logits, *, solver: MapSolver, k: int | None, noise: str, temperature: float,
                 kappa: int = 1, iterations: int = 10, validate_args=None):
        if logits.dim() < 1:
            raise ValueError("PerturbAndMAP: `logits` need a last dimension")
        self.logits = logits
        self.solver, self.k, self.noise = solver, k, noise
        self.temperature, self.kappa, self.iterations = float(temperature), int(kappa), int(iterations)
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    _attrs = ("solver", "k", "noise", "temperature", "kappa", "iterations")

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        if self.solver.family == "categorical":
            return constraints.one_hot
        return _KHot(self.k)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape + self.event_shape)
        for a in self._attrs:
            setattr(new, a, getattr(self, a))
        super(PerturbAndMAP, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, logits):
        shape = torch.Size(logits)
        return shape[:-1], shape[-1:]

    def noise_sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """``ε`` of shape ``sample_shape + batch_shape + event_shape``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        return noise_like(self.noise, shape, self.logits, kappa=self.kappa, iterations=self.iterations)

    def map(self, scores: torch.Tensor) -> torch.Tensor:
        return self.solver(scores, self.k)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.map(self.logits + self.temperature * self.noise_sample(sample_shape))


def check_solver_k(name: str, solver: MapSolver, k: int, logits: torch.Tensor) -> None:
    if logits.dim() < 1:
        raise ParameterError(f"{name}: `logits` need a last dimension of items")
    if solver.family == "subset" and logits.shape[-1] < k:
        raise ParameterError(
            f"{name}: k={k} needs at least k items in the last dimension of `logits`, got shape {tuple(logits.shape)}"
        )


SolverName = Annotated[
    Optional[str],
    Field(None, description="Name of a registered MAP solver of the family; default 'topk' (subset) or 'argmax' (categorical)."),
    AfterValidator(validate_solver_name),
]
"""The ``solver`` config field: a registered solver's name (configs stay JSON), or ``None``."""


class SolverEstimator(relaxit_core.EstimatorBase):
    """Base of estimators that call a MAP solver (``self.solver``): the config's ``solver``
    names a registered one (default by ``family``); a :class:`MapSolver` or a callable with a
    ``family`` attribute given as ``solver=`` is registered under its name first (so the config
    naming it validates and rebuilds).  The solver's family must be the config's ``family``."""

    def __init__(self, config=None, **kwargs):
        if isinstance(config, dict) and not isinstance(config.get("solver") or "", str):
            config, solver = resolve_solver(self.name, dict(config))
        else:
            kwargs, solver = resolve_solver(self.name, kwargs)
        super().__init__(config, **kwargs)
        name = self.config.solver or DEFAULT_SOLVER[self.config.family]
        self.solver = solver if solver is not None else get_solver(name, self.name)
        if self.solver.family != self.config.family:
            raise ConfigError(
                f"{self.name}: solver {self.solver.name!r} returns {self.solver.family!r} structures, "
                f"but family={self.config.family!r}"
            )
