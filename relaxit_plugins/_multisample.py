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

from relaxit_core.distributions import bernoulli_draw
from relaxit_core.estimator import call_objective, reduce_log_prob

__all__ = [
    "LAWS",
    "Bernoulli",
    "bernoulli_probs",
    "bernoulli_draw",
    "with_score",
    "with_parameter_gradients",
    "bernoulli_score_gradient",
    "call_objective",
    "reduce_log_prob",
    "loo_mean",
    "expand_to",
    "sum_reduced",
    "objective_and_input_gradient",
]


class Bernoulli(pdist.Bernoulli):
    """Pyro's ``Bernoulli`` drawing ``sample`` as ``U < p``, ``U ~ U[0, 1)``.

    The same law (``P(U < p) = p`` up to the uniform's resolution, ``2^-24`` in float32 and
    ``2^-53`` in float64) as ``torch.bernoulli``, which is about 2.3x slower on CPU.  Finite
    at ``p = 0`` and ``1`` (logits ``±inf``).
    """

    def sample(self, sample_shape=torch.Size()):
        return bernoulli_draw(bernoulli_probs(self), sample_shape)


LAWS = {"bernoulli": Bernoulli, "categorical": pdist.OneHotCategorical}
"""The plain discrete laws the score-function estimators sample from."""


def bernoulli_probs(dist) -> torch.Tensor:
    """``σ(logits)`` of a Bernoulli law, detached, without building ``dist.probs``'s graph."""
    if "probs" in dist.__dict__:
        return dist.probs.detach()
    return torch.sigmoid(dist.logits.detach())


class _WithScore(torch.autograd.Function):
    """``value`` unchanged in the forward pass; in the backward pass its gradient passes to
    ``value`` and ``logits`` gets ``g`` times it (broadcast over ``logits``' trailing dims)."""

    @staticmethod
    def forward(ctx, value, logits, g):
        # g is a fresh detached tensor nothing else holds or changes: kept on ctx, which is
        # cheaper than save_for_backward's saved-variable packing (a few µs per call)
        ctx.g = g
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        g = ctx.g
        # applied only when logits need a gradient (see with_score): no needs_input_grad test
        return grad, grad.reshape(grad.shape + (1,) * (g.dim() - grad.dim())) * g, None


def with_score(value: torch.Tensor, logits: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``value`` (shape a prefix of ``logits.shape``), whose backward also gives ``logits`` the
    gradient ``g`` (``logits``' shape, detached) times the incoming gradient.

    One autograd node: the surrogate's forward value stays exactly ``value`` and finite
    (unlike adding ``(logits - logits.detach()) * g``, NaN at ``logits = ±inf``), and the
    backward pass costs one product.
    """
    if not logits.requires_grad:
        return value
    return _WithScore.apply(value, logits, g.detach() if g.requires_grad else g)


class _WithParameterGradients(torch.autograd.Function):
    """``value`` unchanged; in the backward pass each tensor ``t_i`` gets ``g_i`` times the sum
    of the incoming gradient divided by ``value.numel()``."""

    @staticmethod
    def forward(ctx, value, n, *args):
        ctx.n = n
        ctx.numel = max(1, value.numel())
        ctx.save_for_backward(*args[n:])
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        grads = ctx.saved_tensors
        total = grad.sum() / ctx.numel
        out = [g * total.to(g.dtype) if need else None for g, need in zip(grads, ctx.needs_input_grad[2:])]
        return (grad, None, *out, *([None] * ctx.n))


def with_parameter_gradients(value: torch.Tensor, tensors, grads) -> torch.Tensor:
    """``value``, whose ``.sum().backward()`` also gives each ``tensors[i]`` the gradient
    ``grads[i]`` (detached, that tensor's shape): spread over the ``value.numel()`` elements so
    that it arrives once.  One autograd node for all of them."""
    pairs = [(t, g.detach()) for t, g in zip(tensors, grads) if g is not None and t.requires_grad]
    if not pairs:
        return value
    ts, gs = zip(*pairs)
    return _WithParameterGradients.apply(value, len(ts), *ts, *gs)


def bernoulli_score_gradient(weight: torch.Tensor, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``Σ_s weight_s (z_s - p)``: the score-function gradient in the logits of a Bernoulli
    law (its score is ``z - σ(logits)``, finite at ``logits = ±inf``).

    ``weight`` is ``[S, *B]``, ``z`` is ``[S, *batch]`` and ``p`` is ``batch`` (``B`` a prefix
    of ``batch``); one difference, one product (in place) and one sum over ``[S, *batch]``.
    """
    w = weight.reshape(weight.shape + (1,) * (z.dim() - weight.dim()))
    score = z - p
    if w.requires_grad or score.requires_grad:  # differentiated through: out of place
        return (score * w).sum(0)
    return score.mul_(w).sum(0)


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
