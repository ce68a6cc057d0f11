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
from relaxit_core.estimator import Estimate, call_objective, reduce_log_prob
from relaxit_core.limits import is_compiling

__all__ = [
    "LAWS",
    "Bernoulli",
    "OneHotCategorical",
    "bernoulli_probs",
    "bernoulli_draw",
    "with_score",
    "with_parameter_gradients",
    "with_score_and_lazy_gradients",
    "bernoulli_score_gradient",
    "bernoulli_evaluate",
    "bernoulli_mean_estimate",
    "rloo_weights",
    "call_objective",
    "reduce_log_prob",
    "loo_mean",
    "expand_to",
    "sum_reduced",
    "dot_reduced",
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


class OneHotCategorical(pdist.OneHotCategorical):
    """Pyro's ``OneHotCategorical``, whose argument check reads only the argument given.

    torch checks ``probs`` even when the law is built from ``logits`` (its ``probs`` is a
    plain property, computed for the check): ``softmax`` of half-precision logits misses the
    simplex's ``1e-6`` tolerance on the sum by rounding, and valid float16/bfloat16 logits
    were refused about once in thirty draws.  Here ``probs`` is computed on first use, as in
    ``Categorical``, and checked only when it is the argument given."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)
        if probs is not None and self._validate_args:
            value = self.probs
            if not bool(torch.distributions.constraints.simplex.check(value).all()):
                raise ValueError(
                    f"Expected parameter probs (Tensor of shape {tuple(value.shape)}) of distribution "
                    f"{self!r} to satisfy the constraint Simplex(), but found invalid values:\n{value}"
                )

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(OneHotCategorical, _instance)
        return super().expand(batch_shape, _instance=new)

    @torch.distributions.utils.lazy_property
    def probs(self):
        return self._categorical.probs


LAWS = {"bernoulli": Bernoulli, "categorical": OneHotCategorical}
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


class _WithScoreAndLazyGradients(torch.autograd.Function):
    """``value`` unchanged; in the backward pass ``logits`` gets ``g`` times the incoming
    gradient (as :class:`_WithScore`) and ``tensors`` get ``fn(grad)``."""

    @staticmethod
    def forward(ctx, value, logits, g, fn, *tensors):
        ctx.save_for_backward(g)
        ctx.fn = fn
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        grad_logits = None
        if ctx.needs_input_grad[1]:
            grad_logits = grad.reshape(grad.shape + (1,) * (g.dim() - grad.dim())) * g
        lazy = ctx.fn(grad)
        return (grad, grad_logits, None, None) + tuple(t if need else None for t, need in zip(lazy, ctx.needs_input_grad[4:]))


def with_score_and_lazy_gradients(value: torch.Tensor, logits: torch.Tensor, g: torch.Tensor, fn, tensors) -> torch.Tensor:
    """:func:`with_score` (``logits`` get ``g`` times the incoming gradient), and ``tensors`` get
    the gradients ``fn(grad)`` (a tuple, one per tensor, each of that tensor's shape), ``grad``
    being the gradient arriving at ``value``: a closed-form gradient of a function of
    ``value``'s rows (e.g. ``∇ Σ_b c_b Σ ĝ_b²`` for learned control variates), computed only if
    a backward pass happens, in the same single autograd node."""
    tensors = list(tensors)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return with_score(value, logits, g)
    return _WithScoreAndLazyGradients.apply(value, logits, g.detach(), fn, *tensors)


def dot_reduced(a: torch.Tensor, b: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(a * b)`` summed over every dimension from ``ndim`` on (``a`` and ``b`` broadcast, their
    dtypes promoted)."""
    return sum_reduced(a * b, ndim)


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


def bernoulli_evaluate(objective, logits: torch.Tensor, num_samples: int, name: str):
    """``(p, z, f)`` for Bernoulli ``logits`` checked by the core's guard (finite, or limits
    replaced by stand-ins), without building a law: ``p = σ(logits)`` detached, ``num_samples``
    draws ``z = 1[U < p]`` and their checked objective values ``f`` (``[S, *B]``, ``B`` a prefix
    of ``logits.shape``, the law's ``batch_shape``)."""
    p = torch.sigmoid(logits.detach())
    z = bernoulli_draw(p, (num_samples,))
    return p, z, call_objective(objective, z, tuple(logits.shape), name)


def rloo_weights(fd: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """RLOO's weights ``(f_s - b_s) / S``, ``b_s`` the mean of the other samples' values: that is
    ``(f_s - mean_j f_j) / (S - 1)`` (``fd`` ``[S, *B]``, ``mean`` its mean over ``S``)."""
    return (fd - mean) / (fd.shape[0] - 1)


def bernoulli_mean_estimate(objective, logits: torch.Tensor, num_samples: int, name: str, weights=rloo_weights):
    """``mean_s f_s`` with the gradient ``Σ_s w_s (z_s - σ(logits))`` attached to the logits by
    one autograd node (finite at ``logits = ±inf``), ``w = weights(f detached, its mean)``: the
    score-function estimate for Bernoulli logits without a law (:func:`bernoulli_evaluate`)."""
    p, z, f = bernoulli_evaluate(objective, logits, num_samples, name)
    value = f.mean(0)
    fd, mean = f.detach(), value.detach()
    g = bernoulli_score_gradient(weights(fd, mean), z, p)
    return Estimate(with_score(value, logits, g), mean, z)


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


def _reaches_other_leaves(fn, leaf: torch.Tensor, limit: int = 10000) -> bool:
    """Whether the autograd graph below the node ``fn`` accumulates a gradient into a tensor
    other than ``leaf`` (the objective's own parameters, or anything upstream of them).  A graph
    of more than ``limit`` nodes counts as reaching one (the conservative answer)."""
    seen, stack = set(), [fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        if len(seen) >= limit:
            return True
        seen.add(node)
        var = getattr(node, "variable", None)
        if var is not None and var is not leaf:
            return True
        stack.extend(nxt for nxt, _ in node.next_functions)
    return False


def objective_and_input_gradient(objective, z: torch.Tensor, dist, name: str):
    """``f = objective(z)`` (checked) and ``df/dz`` at the discrete samples, treating ``z`` as
    continuous (as Titsias & Shi 2022 and Shi et al. 2022 do).

    ``f`` keeps its graph (the gradient is taken with ``retain_graph=True``) where it depends
    on tensors other than ``z`` that need a gradient (the objective's own parameters), which
    then get their Monte Carlo gradient through ``f``; otherwise ``f`` is returned detached, so
    that the backward pass does not go through the objective a second time for ``z`` alone (a
    gradient nobody reads).  An objective that does not depend differentiably on ``z`` gives a
    zero gradient (the control variates then vanish).
    """
    leaf = z.detach().requires_grad_(True)
    with torch.enable_grad():
        f = call_objective(objective, leaf, dist, name)
        grad = None
        if f.requires_grad:
            keep = is_compiling() or _reaches_other_leaves(f.grad_fn, leaf)
            (grad,) = torch.autograd.grad(f.sum(), leaf, retain_graph=keep, allow_unused=True)
            if not keep:
                f = f.detach()
    if grad is None:
        grad = torch.zeros_like(z)
    return f, grad.detach()
