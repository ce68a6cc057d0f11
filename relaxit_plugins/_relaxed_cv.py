"""Shared engine of REBAR and RELAX: relaxed and conditional relaxed samples, and the
control-variate gradient estimate with its variance objective.

Not a plugin (declares no estimator); :mod:`relaxit_plugins.rebar` and
:mod:`relaxit_plugins.relax` use it.

References:
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein (2017), *REBAR: Low-variance, unbiased
    gradient estimates for discrete latent variable models*, NeurIPS — eq. (6)-(7) and
    Appendix (the conditional sample ``z̃ ~ p(z | b)``), Sec. 3.3 (variance objective).
    Grathwohl, Choi, Wu, Roeder & Duvenaud (2018), *Backpropagation through the Void:
    Optimizing control variates for black-box gradient estimation*, ICLR — eq. (8),
    Algorithms 1-2, Appendix B (conditional Bernoulli and categorical samples).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro.distributions as pdist
import torch
import torch.nn.functional as F

from relaxit_core import Estimate
from relaxit_core.distributions import gumbel_like, logistic_like, uniform_like
from relaxit_core.estimator import call_objective
from relaxit_plugins._multisample import OneHotCategorical, with_parameter_gradients, with_score

__all__ = ["relaxed_pair", "soft_relaxation", "score", "law", "relaxed_cv_estimate"]


def law(family: str, logits: torch.Tensor):
    """The discrete law of the hard samples: ``Bernoulli(logits)`` or ``OneHotCategorical(logits)``."""
    if family == "bernoulli":
        return pdist.Bernoulli(logits=logits)
    return OneHotCategorical(logits=logits)


def relaxed_pair(family: str, logits: torch.Tensor, num_samples: int):
    """``(z, b, z̃)``: the relaxed variable ``z``, its hard value ``b = H(z)`` and an
    independent draw ``z̃ ~ p(z | b)``, each of shape ``[S, *logits.shape]``.

    Bernoulli (logistic space): ``z = logits + L``, ``b = 1[z > 0]`` and, with ``v ~ U(0, 1)``,
    ``z̃ = softplus(logit v + softplus(logits))`` when ``b = 1``,
    ``z̃ = -softplus(logit v + softplus(-logits))`` when ``b = 0`` — REBAR's appendix
    ``z̃ = logit(θ/(1-θ)) + logit(v')`` with ``v' = v(1-θ)`` or ``vθ + 1 - θ``, rewritten
    without cancellation (Grathwohl et al. 2018, App. B).

    Categorical (Gumbel space, normalised ``log p``): ``z = log p + G``, ``b = onehot(argmax z)``,
    ``z̃_b = -log E_b`` and ``z̃_i = -log(E_i / p_i + E_b)`` for ``i != b``, ``E ~ Exp(1)``
    (Grathwohl et al. 2018, App. B) — the top value is a Gumbel of location
    ``logsumexp log p = 0``, the others Gumbels truncated below it.

    ``z`` and ``z̃`` are differentiable in ``logits``; ``b`` is not.
    """
    shape = torch.Size((num_samples,)) + logits.shape
    if family == "bernoulli":
        z = logits + logistic_like(shape, logits)
        hard = z > 0
        b = hard.to(logits.dtype)
        lv = logistic_like(shape, logits)  # logit(v), v ~ U(0, 1)
        # one softplus over [S, *batch]: z̃ = ±softplus(logit v + softplus(±logits)) for b = 1 / 0
        shift = torch.where(hard, F.softplus(logits), F.softplus(-logits))
        return z, b, F.softplus(lv + shift) * (2 * b - 1)
    logp = logits.log_softmax(-1)
    z = logp + gumbel_like(shape, logits)
    b = F.one_hot(z.argmax(-1), logits.shape[-1]).to(logits.dtype)
    log_e = (-uniform_like(shape, logits).log()).log()  # log E, E ~ Exp(1)
    log_e_top = (log_e * b).sum(-1, keepdim=True)
    others = -torch.logaddexp(log_e - logp, log_e_top)
    return z, b, torch.where(b > 0, -log_e_top.expand_as(log_e), others)


def soft_relaxation(family: str, z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``σ_λ(z)``: ``sigmoid(z / λ)`` (Bernoulli) or ``softmax(z / λ)`` (categorical).

    Computed in at least float32 and rounded to ``z``'s dtype: in float16 ``z / λ`` (and the
    ``z / λ²`` of its temperature gradient) overflows at small ``λ``, giving NaN."""
    wide = torch.promote_types(z.dtype, torch.float32)
    x = z.to(wide) / tau.to(wide)
    return (torch.sigmoid(x) if family == "bernoulli" else x.softmax(-1)).to(z.dtype)


def score(family: str, b: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``∇_logits log p(b)``: ``b - sigmoid(logits)`` or ``b - softmax(logits)`` (per sample)."""
    if family == "bernoulli":
        return b - torch.sigmoid(logits)
    return b - logits.softmax(-1)


def _trail(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """``x`` with singleton dimensions appended up to ``ndim`` dimensions."""
    return x.reshape(x.shape + (1,) * (ndim - x.dim()))


def _reduce(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """``x`` summed over every dimension from ``ndim`` on."""
    return x.sum(tuple(range(ndim, x.dim()))) if x.dim() > ndim else x


def relaxed_cv_estimate(
    name: str,
    family: str,
    objective: Callable[[torch.Tensor], torch.Tensor],
    num_samples: int,
    logits: torch.Tensor,
    *,
    tau: torch.Tensor,
    eta: torch.Tensor | None,
    network: Callable[[torch.Tensor, int], torch.Tensor] | None,
    learned: Sequence[torch.Tensor] | Callable[[], Sequence[torch.Tensor]],
    dist=None,
) -> Estimate:
    """The REBAR / RELAX estimate (Grathwohl et al. 2018, eq. 8, Algorithms 1-2).

    With ``c(z) = η f(σ_λ(z)) + r(z)`` (``η = None``: no relaxation term; ``network = None``:
    no ``r``), ``S = num_samples`` independent ``(z, b, z̃)`` and ``d log p / dθ`` taken with
    respect to ``logits``::

        ĝ = mean_s [ (f(b_s) - c(z̃_s)) ∇ log p(b_s) + ∇ c(z_s) - ∇ c(z̃_s) ]

    ``ĝ`` is formed explicitly (``torch.autograd.grad`` w.r.t. a detached copy of ``logits``,
    so non-leaf logits work) and the surrogate is::

        mean_s f(b_s) + Σ (logits - logits.detach()) ĝ + Σ_p (p - p.detach()) ∂(Σ ĝ²)/∂p / |B|

    (its last two terms attached by single autograd nodes, ``with_score`` and
    ``with_parameter_gradients``, so that the forward value stays finite at ``logits = ±inf``)

    over the ``learned`` estimator parameters ``p`` (a list, or a callable giving it, read again
    after ``network`` ran, which may create parameters): its forward value is exactly
    ``mean_s f(b_s)``; its backward gives ``ĝ`` to the logits (and so to whatever produced
    them), the Monte Carlo gradient ``mean_s ∂f(b_s)/∂φ`` to the objective's own parameters
    (the relaxed evaluations never reach them), and the single-estimate variance gradient
    ``∂ Σ ĝ² / ∂p`` (REBAR sec. 3.3; RELAX Alg. 1) to the estimator's parameters — spread over
    the ``|B|`` surrogate elements so that ``surrogate.sum().backward()`` delivers it once.

    Two objective calls, on ``b`` (``S`` samples) and on ``[σ_λ(z); σ_λ(z̃)]`` (``2S``), or on ``b`` alone
    (``S`` samples) without the relaxation term or when nothing needs a gradient (under
    ``torch.no_grad()``, or neither ``logits`` nor a learned parameter requires one).
    """
    dist = law(family, logits) if dist is None else dist
    learned_fn = learned if callable(learned) else (lambda: learned)
    learned = list(learned_fn())
    theta = logits.detach().requires_grad_(True)
    wants_grad = torch.is_grad_enabled() and (logits.requires_grad or any(p.requires_grad for p in learned))
    if not wants_grad:  # nothing to differentiate: just the Monte Carlo value
        with torch.no_grad():
            _, b, _ = relaxed_pair(family, theta, num_samples)
        f = call_objective(objective, b, dist, name)
        value = f.mean(0)
        return Estimate(value, value.detach(), b)
    learn = len(learned) > 0
    with torch.enable_grad():
        z, b, zt = relaxed_pair(family, theta, num_samples)
        s = num_samples
        soft = None
        if eta is not None or network is not None:
            soft = soft_relaxation(family, torch.cat([z, zt]), tau)
        # b in a call of its own: its graph reaches only the objective's parameters (b has none),
        # and the relaxed rows' graph only θ (the pathwise gradient), so that neither backward
        # pass runs through the other's rows
        f_b = call_objective(objective, b, dist, name)
        if eta is not None:
            f_z, f_zt = call_objective(objective, soft, dist, name).split(s)
            c_z, c_zt = eta * f_z, eta * f_zt
        else:
            c_z = c_zt = f_b.new_zeros(())
        b_nd = f_b.dim() - 1
        if network is not None:
            r = network(soft, 1 + b_nd)
            c_z, c_zt = c_z + r[:s], c_zt + r[s:]
            learned = [p for p in learned_fn() if p.requires_grad]  # a network may have been created
        full_nd = z.dim()
        coef = f_b.detach() - c_zt
        if not learn:
            coef = coef.detach()
        g_score = (_trail(coef, full_nd) * score(family, b, theta.detach())).sum(0)
        pathwise = (c_z - c_zt).sum()
        if pathwise.requires_grad:
            (g_path,) = torch.autograd.grad(pathwise, theta, create_graph=learn, retain_graph=learn, allow_unused=True)
            g_hat = g_score if g_path is None else g_score + g_path
        else:
            g_hat = g_score
        g_hat = g_hat / s
        var_grads = ()
        if learn:
            var_grads = torch.autograd.grad(g_hat.pow(2).sum(), list(learned), allow_unused=True)
    value = f_b.mean(0)
    surrogate = with_parameter_gradients(value, learned, var_grads) if learn else value
    surrogate = with_score(surrogate, logits, g_hat.detach())
    return Estimate(surrogate, value.detach(), b)
