"""Shared helpers of the multi-sample score-function estimators (``vimco``, ``arms``,
``double_cv``, ``rodeo``, ``indecater``, ``unordered_set``).

They only use :mod:`relaxit_core`'s public API.  Shapes follow the contract: samples
``z`` are ``[S, *batch_shape, *event_shape]``, the objective returns ``[S, *B]`` with
``B`` a prefix of ``batch_shape``; the trailing batch dimensions ``R = batch_shape[len(B):]``
belong to one event of the objective.
"""

from __future__ import annotations

import pyro.distributions as pdist
import torch

from relaxit_core.estimator import call_objective, reduce_log_prob

__all__ = [
    "LAWS",
    "call_objective",
    "reduce_log_prob",
    "loo_mean",
    "expand_to",
    "sum_reduced",
    "objective_and_input_gradient",
]

LAWS = {"bernoulli": pdist.Bernoulli, "categorical": pdist.OneHotCategorical}
"""The plain discrete laws the score-function estimators sample from."""


def loo_mean(x: torch.Tensor) -> torch.Tensor:
    """For each ``k`` along dimension 0, the mean of the other ``S - 1`` entries (``S >= 2``)."""
    return (x.sum(0, keepdim=True) - x) / (x.shape[0] - 1)


def expand_to(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append singleton dimensions to ``x`` until it has ``ndim`` dimensions."""
    return x.reshape(tuple(x.shape) + (1,) * (ndim - x.dim()))


def sum_reduced(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Sum the trailing dimensions of ``x`` so that it keeps its first ``ndim`` dimensions."""
    extra = x.dim() - ndim
    return x.sum(tuple(range(ndim, x.dim()))) if extra > 0 else x


def objective_and_input_gradient(objective, z: torch.Tensor, dist, name: str):
    """``f = objective(z)`` (checked) and ``df/dz`` at the discrete samples, treating ``z`` as
    continuous (as Titsias & Shi 2022 and Shi et al. 2022 do).

    The gradient is taken with ``retain_graph=True`` so that ``f`` still carries the
    objective's own parameters' gradient.  An objective that does not depend
    differentiably on ``z`` gives a zero gradient (the control variates then vanish).
    """
    leaf = z.detach().requires_grad_(True)
    with torch.enable_grad():
        f = call_objective(objective, leaf, dist, name)
        grad = None
        if f.requires_grad:
            (grad,) = torch.autograd.grad(f.sum(), leaf, retain_graph=True, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(z)
    return f, grad.detach()
