"""Gradient diagnostics: exact gradients by enumeration, and the mean, variance and bias of
an estimator's gradient estimate.  The conformance kit and the benchmarks use them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["GradientStats", "family_law", "exact_expectation", "exact_gradient", "gradient_samples", "gradient_variance", "gradient_bias"]

_MAX_CONFIGS = 1 << 16


@dataclass(frozen=True)
class GradientStats:
    """Statistics of ``num_draws`` independent gradient estimates of one parameter.

    ``mean``, ``variance`` and ``stderr`` (``sqrt(variance / num_draws)``) have the
    parameter's shape; ``total_variance`` is ``variance.sum()`` (the trace of the covariance).
    ``bias`` and ``bias_stderr`` are set by :func:`gradient_bias`.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    stderr: torch.Tensor
    num_draws: int
    bias: torch.Tensor | None = None

    @property
    def total_variance(self) -> torch.Tensor:
        return self.variance.sum()

    def z_scores(self) -> torch.Tensor:
        """``bias / stderr`` elementwise (``bias`` must be set).

        The standard error is floored at the rounding error of the mean (64 machine epsilons
        of its magnitude), so an estimator with zero variance (e.g. DisARM in one dimension,
        IndeCateR with one variable) that is exact up to rounding gets a z-score near zero,
        not an astronomically large one."""
        if self.bias is None:
            raise ValueError("z_scores needs bias: use gradient_bias()")
        eps = torch.finfo(self.stderr.dtype).eps
        floor = (64 * eps * (self.mean.abs() + (self.mean - self.bias).abs())).clamp_min(torch.finfo(self.stderr.dtype).tiny)
        return self.bias / torch.maximum(self.stderr, floor)


def family_law(family: str, params: Mapping[str, torch.Tensor]):
    """The canonical discrete law of ``family`` (``Bernoulli`` or ``OneHotCategorical``) for
    ``logits``/``probs`` in ``params``."""
    from pyro.distributions import Bernoulli, OneHotCategorical

    law = {"bernoulli": Bernoulli, "categorical": OneHotCategorical}.get(family)
    if law is None:
        raise ValueError(f"exact_gradient knows families 'bernoulli' and 'categorical'; for {family!r} pass law=")
    return law(**{k: v for k, v in params.items() if k in ("logits", "probs")})


def _joint_support(dist) -> tuple[torch.Tensor, torch.Tensor]:
    """All joint values of the batch elements of ``dist`` and their log-probabilities.

    Returns ``values`` of shape ``[N, *batch_shape, *event_shape]`` and ``log_q`` of shape
    ``[N]`` (the sum over batch elements), ``N = n ** batch_numel``.
    """
    support = dist.enumerate_support(expand=True)  # [n, *batch, *event]
    n = support.shape[0]
    batch = tuple(dist.batch_shape)
    m = int(torch.Size(batch).numel())
    if n ** m > _MAX_CONFIGS:
        raise ValueError(f"exact enumeration needs {n}^{m} configurations; at most {_MAX_CONFIGS} allowed")
    event = tuple(dist.event_shape)
    flat = support.reshape(n, m, *event)  # [n, m, *event]
    idx = torch.arange(n ** m, device=support.device)
    digits = (idx[:, None] // (n ** torch.arange(m, device=support.device))) % n  # [N, m]
    values = flat[digits, torch.arange(m, device=support.device)[None, :]]  # [N, m, *event]
    values = values.reshape(-1, *batch, *event)
    log_q = dist.log_prob(values).reshape(values.shape[0], -1).sum(-1)
    return values, log_q


def exact_expectation(
    objective: Callable[[torch.Tensor], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    family: str | None = None,
    *,
    law: Callable[..., Any] | None = None,
) -> torch.Tensor:
    """``E_q[objective(z)]`` by enumerating every joint value of the batch elements.

    The law is ``law(**params)`` when given (it must have ``enumerate_support`` and a
    differentiable ``log_prob``), else the canonical law of ``family`` (``"bernoulli"``:
    ``Bernoulli(logits|probs)``, ``"categorical"``: ``OneHotCategorical(logits|probs)``).
    ``objective`` maps ``[N, *batch_shape, *event_shape]`` to ``[N, *B]``; the result has
    shape ``B`` and is differentiable in ``params``.
    """
    dist = law(**params) if law is not None else family_law(family or "bernoulli", params)
    values, log_q = _joint_support(dist)
    f = objective(values)
    w = log_q.exp().reshape((-1,) + (1,) * (f.dim() - 1))
    return (w * f).sum(0)


def exact_gradient(
    objective: Callable[[torch.Tensor], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    family: str | None = None,
    *,
    law: Callable[..., Any] | None = None,
) -> dict[str, torch.Tensor]:
    """The exact gradient of ``E_q[objective(z)].sum()`` with respect to each of ``params``,
    by enumeration (see :func:`exact_expectation`)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items() if v.is_floating_point()}
    full = {**params, **leaves}
    value = exact_expectation(objective, full, family, law=law).sum()
    grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    return {k: (g if g is not None else torch.zeros_like(leaves[k])) for k, g in zip(leaves, grads)}


def gradient_samples(
    estimator: Any,
    objective: Callable[[torch.Tensor], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    num_draws: int = 1000,
    *,
    num_samples: int = 1,
    vectorize: bool = True,
    wrt: tuple[str, ...] | None = None,
    context: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``num_draws`` independent gradient estimates, stacked: ``{name: [num_draws, *shape]}``.

    With ``vectorize=True`` the parameters are replicated along a new leading batch
    dimension and one ``estimate()`` call makes every draw; ``objective`` must then accept
    samples ``[S, num_draws, *batch_shape, *event_shape]`` and return ``[S, num_draws, *B]``
    (objectives that reduce trailing dimensions do).  With ``vectorize=False`` it calls
    ``estimate()`` ``num_draws`` times.  ``context`` (for estimators that read one, e.g.
    ``reinforce`` with a learned baseline: ``[*B, C]``) is passed to every ``estimate()``
    call, replicated along the draws' dimension when vectorised.
    """
    wrt = wrt or tuple(k for k, v in params.items() if v.is_floating_point() and k in ("logits", "probs", "loc", "log_alpha", "scale"))
    if vectorize:
        leaves = {}
        for k, v in params.items():
            rep = v.detach().unsqueeze(0).expand(num_draws, *v.shape).clone()
            leaves[k] = rep.requires_grad_(k in wrt)
        ctx = {} if context is None else {"context": context.unsqueeze(0).expand(num_draws, *context.shape)}
        out = estimator.estimate(objective, num_samples=num_samples, **ctx, **leaves)
        grads = torch.autograd.grad(out.surrogate.sum(), [leaves[k] for k in wrt], allow_unused=True)
        return {k: (g if g is not None else torch.zeros_like(leaves[k])).detach() for k, g in zip(wrt, grads)}
    draws: dict[str, list[torch.Tensor]] = {k: [] for k in wrt}
    for _ in range(num_draws):
        leaves = {k: (v.detach().clone().requires_grad_(k in wrt)) for k, v in params.items()}
        ctx = {} if context is None else {"context": context}
        out = estimator.estimate(objective, num_samples=num_samples, **ctx, **leaves)
        grads = torch.autograd.grad(out.surrogate.sum(), [leaves[k] for k in wrt], allow_unused=True)
        for k, g in zip(wrt, grads):
            draws[k].append(g.detach() if g is not None else torch.zeros_like(leaves[k]))
    return {k: torch.stack(v) for k, v in draws.items()}


def _stats(draws: torch.Tensor) -> GradientStats:
    n = draws.shape[0]
    mean = draws.mean(0)
    var = draws.var(0, unbiased=True) if n > 1 else torch.zeros_like(mean)
    return GradientStats(mean=mean, variance=var, stderr=(var / n).sqrt(), num_draws=n)


def gradient_variance(
    estimator: Any,
    objective: Callable[[torch.Tensor], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    num_draws: int = 1000,
    *,
    num_samples: int = 1,
    vectorize: bool = True,
) -> dict[str, GradientStats]:
    """Mean, variance and standard error of the gradient estimate, per parameter."""
    draws = gradient_samples(estimator, objective, params, num_draws, num_samples=num_samples, vectorize=vectorize)
    return {k: _stats(v) for k, v in draws.items()}


def gradient_bias(
    estimator: Any,
    objective: Callable[[torch.Tensor], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    num_draws: int = 1000,
    *,
    num_samples: int = 1,
    family: str | None = None,
    law: Callable[..., Any] | None = None,
    vectorize: bool = True,
) -> dict[str, GradientStats]:
    """:func:`gradient_variance` plus ``bias = mean - exact`` (exact by enumeration).

    ``objective`` must work both on the replicated samples (when vectorised) and on the
    enumerated values (leading dimension ``N``, no replicate dimension).
    """
    family = family or getattr(estimator, "family", None)
    exact = exact_gradient(objective, params, family, law=law)
    stats = gradient_variance(estimator, objective, params, num_draws, num_samples=num_samples, vectorize=vectorize)
    return {
        k: GradientStats(s.mean, s.variance, s.stderr, s.num_draws, bias=s.mean - exact[k].to(s.mean))
        for k, s in stats.items()
    }
