r"""Generalized Gumbel-softmax (GenGS): relax any law on a finite set of integer values.

Joo, Kim, Shin, Yang & Moon (2020), *Generalized Gumbel-Softmax Gradient Estimator for
Generic Discrete Random Variables*, arXiv:2003.01847, Sec. 3: a discrete variable ``X``
taking values ``v_1 < ... < v_K`` with probabilities ``π`` is written ``X = Σ_k v_k o_k``
with ``o`` one-hot ~ Categorical(π) (the *linear transformation* of a one-hot vector); the
one-hot is relaxed by Gumbel-softmax (Jang et al. 2017, eq. 2),

.. math::
    \tilde X = \sum_{k=1}^{K} v_k\, w_k, \qquad
    w = \operatorname{softmax}((\log π + g) / τ),\ g \text{ i.i.d. Gumbel},

and with ``hard=True`` the forward value is exactly ``X = v_{argmax_k(\log π_k + g_k)}``
(exactly ``P(X = v_k) = π_k``), the gradient w.r.t. the logits that of ``\tilde X``
(straight-through) and w.r.t. ``values`` the exact pathwise ``∂X/∂v = e_{argmax}``.

Laws with infinite support (Poisson, geometric, negative binomial) are first truncated to a
finite window with :func:`truncate`, which bounds the dropped probability mass (GenGS,
Sec. 3.1, truncation of the support); binomial and other finite laws are enumerated whole.

``log_prob``: with ``hard=True`` the PMF of the hard value.  The soft ``\tilde X`` is a 1-D
projection of a Concrete vector and has no tractable density, so the soft law does not
claim ``LOG_PROB`` (it serves ``rsample`` and ``estimate()``, not a Pyro ELBO site).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple

import torch
from pydantic import Field
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

import relaxit_core
from relaxit_core.schedules import Temperature
from relaxit_core import Capability as C
from relaxit_core.distributions import as_logits, gumbel_like
from relaxit_core.errors import ParameterError
from relaxit_plugins._special import validating

__all__ = [
    "GeneralizedGumbelSoftmax",
    "StraightThroughGeneralizedGumbelSoftmax",
    "GeneralizedGumbelSoftmaxEstimator",
    "Truncation",
    "truncate",
]


# ----------------------------------------------------------------------------- truncation
class Truncation(NamedTuple):
    """A finite window of a law on the integers: ``values`` ``[K]`` (increasing), ``logits``
    ``[*batch, K]`` (the log-PMF on the window, unnormalised) and ``dropped`` ``[*batch]``, the
    probability mass outside the window (at most the requested ``tol``)."""

    values: torch.Tensor
    logits: torch.Tensor
    dropped: torch.Tensor


def truncate(dist: torch.distributions.Distribution, tol: float = 1e-6) -> Truncation:
    r"""Truncate a law on the non-negative integers to a window ``lo..hi`` holding all but at
    most ``tol`` of its mass, for every batch element.

    Works for any torch law with ``support`` ``nonnegative_integer`` or ``integer_interval``,
    a ``log_prob`` and finite ``mean``/``variance`` (``Poisson``, ``Geometric``,
    ``NegativeBinomial``, ``Binomial``, ...).  The window is found on a grid ``0..M`` with
    ``M = max(mean + 2 std / sqrt(tol))`` (by Cantelli's inequality the mass beyond ``M`` is
    ``<= tol / 4``) or the upper end of a bounded support; the left and right tails are cut
    where their computed mass stays below ``tol / 4`` and ``tol / 2``.  The returned
    ``dropped`` is ``1 - Σ_window pmf``, computed in float64.

    This is a set-up helper (it reads the window size back to the host), not for hot paths.

    Example:
        >>> t = truncate(torch.distributions.Poisson(torch.tensor([3.0, 5.0])), tol=1e-6)
        >>> t.values[0].item(), t.logits.shape[0], bool((t.dropped <= 1e-6).all())
        (0.0, 2, True)
    """
    if not 0 < tol < 1:
        raise ValueError(f"truncate: tol must be in (0, 1), got {tol}")
    support = dist.support
    upper = None
    if isinstance(support, constraints.integer_interval):
        if torch.as_tensor(support.lower_bound).min() < 0:
            raise ValueError("truncate: needs a law on the non-negative integers")
        upper = int(torch.as_tensor(support.upper_bound).max())
    elif support is not constraints.nonnegative_integer:
        raise ValueError(f"truncate: needs a law on the non-negative integers, got support {support}")
    mean = dist.mean.detach().to(torch.float64)
    std = dist.variance.detach().to(torch.float64).sqrt()
    m = int(torch.ceil((mean + 2 * std / math.sqrt(tol)).max()).item())
    if upper is not None:
        m = min(m, upper)
    m = max(m, 0)
    like = dist.mean
    grid = torch.arange(m + 1, dtype=like.dtype, device=like.device)
    batch = dist.batch_shape
    g = grid.view((m + 1,) + (1,) * len(batch))
    log_pmf = dist.log_prob(g.expand((m + 1,) + tuple(batch)))  # [M+1, *batch]
    pmf = log_pmf.detach().to(torch.float64).exp().reshape(m + 1, -1)  # [M+1, B]
    left = pmf.cumsum(0)  # mass of 0..i
    right = pmf.flip(0).cumsum(0).flip(0)  # mass of i..M
    ok_lo = (left <= tol / 4).all(1)  # window may start after i
    ok_hi = (right <= tol / 2).all(1)  # window may end before i
    lo = int(ok_lo.to(torch.int64).cumprod(0).sum().item())  # first index not safely droppable
    n_right = int(ok_hi.flip(0).to(torch.int64).cumprod(0).sum().item())
    hi = max(m - n_right, lo)
    values = grid[lo: hi + 1]
    logits = log_pmf[lo: hi + 1].movedim(0, -1)
    dropped = (1 - pmf[lo: hi + 1].sum(0)).clamp_min(0).reshape(batch)
    return Truncation(values, logits, dropped)


# ----------------------------------------------------------------------------- constraints
class _FiniteSet(constraints.Constraint):
    """Values equal to one of ``values`` (last dimension), broadcast over the batch."""

    is_discrete = True
    event_dim = 0

    def __init__(self, values: torch.Tensor):
        self.values = values
        super().__init__()

    def check(self, value):
        return (value.unsqueeze(-1) == self.values).any(-1)


class _IncreasingIntegers(constraints.Constraint):
    """Integer-valued, strictly increasing along the last dimension."""

    event_dim = 1

    def check(self, value):
        integer = (value == value.round()).all(-1)
        return integer & (value.diff(dim=-1) > 0).all(-1)


# -------------------------------------------------------------------------------- the laws
class GeneralizedGumbelSoftmax(TorchDistribution):
    r"""GenGS relaxation ``\tilde X = Σ_k v_k softmax((logits + g)/τ)_k`` of a law on ``values``.

    ``logits``/``probs`` ``[..., K]`` and ``values`` ``[..., K]`` (broadcast; usually ``[K]``),
    strictly increasing integers.  ``batch_shape`` is the broadcast of their leading
    dimensions (and of ``temperature``'s shape when it is a per-element tensor);
    ``event_shape`` is ``()``.  Soft samples lie in ``[v_1, v_K]``; no ``log_prob`` (module
    docstring).  :meth:`rsample_weights` returns the weights over ``values`` of the same draw
    (relaxit 1.x returned those from ``rsample``).

    Example:
        >>> d = GeneralizedGumbelSoftmax(logits=torch.zeros(2, 3), values=torch.tensor([0.0, 2.0, 5.0]), temperature=0.5)
        >>> d.rsample((4,)).shape
        torch.Size([4, 2])
    """

    arg_constraints = {
        "probs": constraints.simplex,
        "logits": constraints.independent(constraints.real, 1),
        "values": _IncreasingIntegers(),
    }
    has_rsample = True

    def __init__(self, probs=None, logits=None, values=None, *, temperature: float | torch.Tensor = 1.0,
                 validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError(f"{type(self).__name__}: give exactly one of `probs` or `logits`")
        if values is None:
            raise ValueError(f"{type(self).__name__}: `values` (the finite integer support) is required")
        param = probs if probs is not None else logits
        if param.dim() < 1 or values.dim() < 1:
            raise ValueError(f"{type(self).__name__}: logits/probs and values need a last dimension K")
        if param.shape[-1] != values.shape[-1]:
            raise ValueError(
                f"{type(self).__name__}: {param.shape[-1]} probabilities for {values.shape[-1]} values"
            )
        if probs is not None:
            self.probs = probs
        else:
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self._param = param
        self.values = values.to(param.dtype) if not values.is_floating_point() else values
        batch = torch.broadcast_shapes(param.shape[:-1], values.shape[:-1])
        if isinstance(temperature, torch.Tensor):
            temperature = temperature.to(dtype=param.dtype, device=param.device)
            if validating(validate_args) and not bool((temperature > 0).all()):
                raise ValueError(f"{type(self).__name__}: argument 'temperature' must be positive")
            batch = torch.broadcast_shapes(batch, temperature.shape)
            temperature = temperature.expand(batch)
        elif not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"{type(self).__name__}: temperature must be positive, got {temperature!r}")
        else:
            temperature = float(temperature)
        self.temperature = temperature
        super().__init__(batch, torch.Size(), validate_args=validate_args)

    def _tau(self):
        """The temperature, broadcastable against ``[..., K]``."""
        t = self.temperature
        return t.unsqueeze(-1) if isinstance(t, torch.Tensor) else t

    @lazy_property
    def logits(self):
        return as_logits(self.probs, 1)

    @lazy_property
    def probs(self):
        return self.logits.softmax(-1)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.values[..., 0], self.values[..., -1])

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self._param.shape[-1:]
        for key in ("probs", "logits"):
            if key in self.__dict__:
                setattr(new, key, getattr(self, key).expand(shape))
        new._param = new.__dict__.get("logits", new.__dict__.get("probs"))
        new.values = self.values  # broadcasts against the new batch shape
        t = self.temperature
        new.temperature = t.expand(batch_shape) if isinstance(t, torch.Tensor) else t
        super(GeneralizedGumbelSoftmax, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, values, logits=None, probs=None, temperature=()):
        param = torch.Size(logits if logits is not None else probs)
        return torch.broadcast_shapes(param[:-1], torch.Size(values)[:-1], torch.Size(temperature)), torch.Size()

    def _weights(self, sample_shape):
        """Perturbed logits ``[*sample, *batch, K]``."""
        logits = self.logits
        k = logits.shape[-1]
        shape = torch.Size(sample_shape) + self.batch_shape + (k,)
        return logits + gumbel_like(shape, logits)

    def rsample_weights(self, sample_shape=torch.Size()):
        """The weights ``softmax((logits + g)/τ)`` over ``values``, ``[*sample, *batch, K]``,
        of the draw ``rsample`` makes (same noise: under one seed, ``rsample`` equals
        ``(rsample_weights() * values).sum(-1)``)."""
        return (self._weights(sample_shape) / self._tau()).softmax(-1)

    def rsample(self, sample_shape=torch.Size()):
        return (self.rsample_weights(sample_shape) * self.values).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mean(self):
        return (self.probs * self.values).sum(-1).expand(self.batch_shape)


class StraightThroughGeneralizedGumbelSoftmax(GeneralizedGumbelSoftmax):
    r"""Straight-through GenGS: forward exactly ``v_{argmax(logits + g)}`` (so ``P(X = v_k) = π_k``),
    backward through the soft ``\tilde X`` for the logits and exactly for ``values``.

    ``log_prob`` is the PMF ``log π_k`` at ``x = v_k``; ``enumerate_support`` lists ``values``.

    Example:
        >>> d = StraightThroughGeneralizedGumbelSoftmax(probs=torch.tensor([0.2, 0.3, 0.5]), values=torch.tensor([1.0, 4.0, 6.0]))
        >>> x = d.rsample((5,))
        >>> bool(d.support.check(x).all()), round(d.log_prob(torch.tensor(4.0)).exp().item(), 4)
        (True, 0.3)
    """

    has_enumerate_support = True

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return _FiniteSet(self.values)

    def rsample(self, sample_shape=torch.Size()):
        scores = self._weights(sample_shape)
        values = self.values
        index = scores.argmax(-1, keepdim=True)
        full = values.expand(scores.shape)
        hard = full.gather(-1, index).squeeze(-1)  # exact, differentiable in `values`
        w = (scores / self._tau()).softmax(-1)
        soft = (w * values.detach()).sum(-1)
        return hard + (soft - soft.detach())

    def rsample_weights(self, sample_shape=torch.Size()):
        """Straight-through one-hot weights over ``values`` of one draw: forward exactly
        ``onehot(argmax(logits + g))``, backward through ``softmax((logits + g)/τ)``."""
        scores = self._weights(sample_shape)
        w = (scores / self._tau()).softmax(-1)
        hard = torch.zeros_like(w).scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)
        return hard + (w - w.detach())

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            probs = self.probs
            k = probs.shape[-1]
            flat = probs.expand(self.batch_shape + (k,)).reshape(-1, k)
            num = int(torch.Size(sample_shape).numel())
            index = torch.multinomial(flat, num, replacement=True).T  # [num, B]
            index = index.reshape(torch.Size(sample_shape) + self.batch_shape + (1,))
            full = self.values.expand(torch.Size(sample_shape) + self.batch_shape + (k,))
            return full.gather(-1, index).squeeze(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        match = value.unsqueeze(-1) == self.values
        logits, match = torch.broadcast_tensors(self.logits, match)
        # a PMF is locally constant in the value: keep the value in the graph with derivative 0
        return logits.masked_fill(~match, float("-inf")).logsumexp(-1) + 0.0 * value

    def enumerate_support(self, expand=True):
        v = self.values.movedim(-1, 0)  # [K, *vbatch]
        nb = len(self.batch_shape)
        v = v.reshape((v.shape[0],) + (1,) * (nb - (v.dim() - 1)) + tuple(v.shape[1:]))
        return v.expand((v.shape[0],) + self.batch_shape) if expand else v


# ---------------------------------------------------------------------------- estimator
class GeneralizedGumbelSoftmaxEstimator(relaxit_core.EstimatorBase):
    r"""Generalized Gumbel-softmax (GenGS, pathwise): relaxes a law on a finite set of integer ``values``; ``hard=True`` is straight-through.

    ``X = Σ_k v_k softmax((logits + g)/τ)_k`` (Joo et al. 2020, Sec. 3); with ``hard=True``
    the forward value is exactly ``v_{argmax(logits + g)}``.  Pass ``values`` (``[K]`` or
    ``[..., K]``, strictly increasing integers) with ``logits``/``probs``; use
    :func:`truncate` for Poisson, geometric, negative-binomial or binomial laws.  One
    objective evaluation per sample; biased for the discrete objective.

    Maths:
        :Law: :math:`X = v_I`, :math:`I \sim \operatorname{Categorical}(\operatorname{softmax}(\theta))`
            on strictly increasing integer values :math:`v_1 < \dots < v_K` (a truncated count law;
            Joo et al. 2020, Sec. 3).
        :Estimator: pathwise through the relaxed value (Joo et al. 2020, Sec. 3; Jang et al. 2017, eq. 2)

            .. math::
                \tilde X = \sum_{k=1}^{K} v_k\, \operatorname{softmax}\bigl((\theta + g)/\tau\bigr)_k ,
                \qquad \hat g = \nabla_\theta f(\tilde X),

            with ``hard=True`` the forward value :math:`v_{\arg\max(\theta + g)}` and the backward pass
            that of :math:`\tilde X`.
        :Gradient: the gradient of the relaxed objective: biased for :math:`\nabla_\theta \mathbb{E}[f(X)]`.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> t = truncate(torch.distributions.Poisson(torch.tensor([2.0, 4.0])), tol=1e-6)
        >>> est = relaxit.get("generalized_gumbel_softmax", tau=0.5, hard=True)
        >>> logits = t.logits.clone().requires_grad_(True)
        >>> out = est.estimate(lambda x: (x - 3.0) ** 2, num_samples=16, logits=logits, values=t.values)
        >>> out.samples.shape, bool((out.samples == out.samples.round()).all())
        (torch.Size([16, 2]), True)
    """

    name: ClassVar[str] = "generalized_gumbel_softmax"
    family: ClassVar[str] = "integer"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs", "values", "tau")
    optional_params: ClassVar[tuple[str, ...]] = ("tau",)
    integer_params: ClassVar[tuple[str, ...]] = ("values",)  # the integer support may be an integer tensor
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.HARD, C.LOG_PROB, C.ENUMERATE_SUPPORT})
    reference: ClassVar[str] = (
        "Joo, Kim, Shin, Yang & Moon (2020), Generalized Gumbel-Softmax Gradient Estimator for Generic "
        "Discrete Random Variables, arXiv:2003.01847, Sec. 3 (truncation and linear transformation); "
        "Jang, Gu & Poole (2017), eq. 2"
    )
    conformance_configs = ({}, {"hard": True}, {"tau": 0.05, "hard": True})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`GeneralizedGumbelSoftmaxEstimator`."""

        name: Literal["generalized_gumbel_softmax"] = "generalized_gumbel_softmax"
        tau: Temperature = Field(
            1.0, description="Temperature of the Gumbel-softmax weights.")
        hard: bool = Field(False, description="Straight-through: forward the exact integer value.")

    @classmethod
    def capabilities_for(cls, config):
        return cls.capabilities if config.hard else frozenset({C.RSAMPLE})

    def build_distribution(self, logits=None, probs=None, values=None, tau=None):
        param = logits if logits is not None else probs
        if values.dim() < 1 or param.dim() < 1 or values.shape[-1] != param.shape[-1]:
            raise ParameterError(
                f"{self.name}: `values` {tuple(values.shape)} and `logits`/`probs` {tuple(param.shape)} "
                "must share their last dimension K"
            )
        law = StraightThroughGeneralizedGumbelSoftmax if self.config.hard else GeneralizedGumbelSoftmax
        return law(probs=probs, logits=logits, values=values, temperature=self.current_temperature("tau") if tau is None else tau)

    def example_params(self, batch_shape=(), *, event_size=3, dtype=torch.float32, device=None,
                       generator=None, extreme=False):
        params = super().example_params(batch_shape, event_size=event_size, dtype=dtype, device=device,
                                        generator=generator, extreme=extreme)
        values = torch.arange(event_size, dtype=torch.float64).square() + torch.arange(event_size)  # 0, 2, 6, ...
        params["values"] = values.to(dtype=dtype, device=device)
        return params


@relaxit_core.hookimpl
def relaxit_estimators():
    return [GeneralizedGumbelSoftmaxEstimator]
