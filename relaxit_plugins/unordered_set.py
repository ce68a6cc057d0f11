"""The unordered-set estimator: k samples without replacement (Gumbel top-k / stochastic
beam search) with its built-in baseline.

References:
    Kool, van Hoof & Welling (2020), *Estimating Gradients for Discrete Random Variables by
    Sampling without Replacement*, ICLR (https://openreview.net/forum?id=rklEj2EFvB) — the
    unordered-set estimator ``e^US(S) = Σ_{s∈S} p(s) R(S, s) f(s)``,
    ``R(S, s) = p^{D\\s}(S\\{s}) / p(S)``, its gradient ``Σ_s ∇p(s) R(S, s) f(s)``, the
    built-in baseline from the second-order leave-one-out ratios ``R^{D\\s}(S, s')``, and
    ``p(S)`` as the one-dimensional integral ``∫_0^1 Π_{s∈S} (1 - u^{p(s)/q}) du``,
    ``q = 1 - Σ_{s∈S} p(s)``.  Checked against the authors' code
    (``wouterkool/estimating-gradients-without-replacement``, ``bernoulli/baselines_lib.py``
    ``reinforce_unordered`` and ``bernoulli/gumbel.py`` ``compute_log_R``).
    Kool, van Hoof & Welling (2019), *Stochastic Beams and Where to Find Them*, ICML —
    stochastic beam search (top-down Gumbel sampling with truncated Gumbels) to draw the
    set from a product of categoricals.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.distributions import gumbel_like
from relaxit_plugins._multisample import LAWS, call_objective, reduce_log_prob

__all__ = ["UnorderedSetEstimator", "stochastic_beam_search", "leave_one_out_ratios"]



def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-x))`` for ``x > 0``, stably."""
    return torch.where(x < math.log(2), torch.log(-torch.expm1(-x)), torch.log1p(-torch.exp(-x)))


def stochastic_beam_search(log_p: torch.Tensor, first: torch.Tensor, k: int):
    """The ``k`` largest perturbed log-probabilities of the product law with per-variable
    log-probabilities ``log_p`` (``[N, D, C]``), by top-down Gumbel sampling.

    ``first`` (``[N, D]`` category indices) is an independent sample of the law; it is used
    as the argmax of the Gumbel process (the first element of the top-k), which is how a
    Gumbel process may be sampled (the argmax is a sample of the law, independent of the
    maximum).  Returns category indices ``[N, k, D]`` (slot 0 is ``first``), a validity mask
    ``[N, k]`` (``False`` where the law has fewer than ``k`` configurations of positive
    probability) and the joint log-probabilities ``[N, k]``.
    """
    n, d, c = log_p.shape
    dev = log_p.device
    neg_inf = torch.tensor(float("-inf"), dtype=log_p.dtype, device=dev)
    idx = torch.zeros((n, k, 0), dtype=torch.long, device=dev)
    lp = torch.full((n, k), float("-inf"), dtype=log_p.dtype, device=dev)
    lp[:, 0] = 0
    g = lp.clone()  # the root's perturbed log-probability is arbitrary: take 0
    on_first = torch.zeros((n, k), dtype=torch.bool, device=dev)
    on_first[:, 0] = True
    cats = torch.arange(c, device=dev)
    for j in range(d):
        lpd = log_p[:, j, :].unsqueeze(1)  # [N, 1, C]
        child_lp = lp.unsqueeze(-1) + lpd  # [N, k, C]
        # which child carries the parent's maximum: a draw from p_j, or the forced first sample
        star = (lpd + gumbel_like((n, k, c), log_p)).argmax(-1)
        star = torch.where(on_first, first[:, j : j + 1].expand(n, k), star)
        phi = child_lp + gumbel_like((n, k, c), log_p)
        trunc = -torch.logaddexp(-g.unsqueeze(-1), -phi)  # Gumbel(child_lp) truncated below g
        trunc = torch.where(torch.isfinite(phi), trunc, neg_inf)
        child_g = torch.where(cats == star.unsqueeze(-1), g.unsqueeze(-1), trunc)
        child_first = on_first.unsqueeze(-1) & (cats == first[:, j].reshape(n, 1, 1))
        top, ind = child_g.reshape(n, k * c).topk(k, dim=-1)
        parent, cat = ind // c, ind % c
        idx = torch.cat([idx.gather(1, parent.unsqueeze(-1).expand(n, k, j)), cat.unsqueeze(-1)], -1)
        lp = child_lp.reshape(n, k * c).gather(1, ind)
        on_first = child_first.reshape(n, k * c).gather(1, ind)
        g = top
    valid = torch.isfinite(g)
    return idx, valid, lp


Q_COVERED = 1e-12
"""Below this mass outside a set (``q = 1 - Σ_s p_s``), :func:`leave_one_out_ratios` gives the
exhaustive limit ``R = 1``."""


def leave_one_out_ratios(log_p: torch.Tensor, num_points: int = 500):
    """``R(S, s) = p^{D\\s}(S\\{s}) / p(S)`` and ``R2[s, s'] = p^{D\\{s,s'}}(S\\{s,s'}) / p^{D\\s}(S\\{s})``
    (``R2[s, s] = 1``) for sets of ``k`` distinct elements with joint log-probabilities
    ``log_p`` (``[N, k]``), in float64.

    ``p(S) = ∫_0^1 Π_s (1 - u^{p_s/q}) du``, ``q = 1 - Σ_s p_s`` (Kool et al. 2020),
    and the leave-one-out sets keep the same ``q``, so all are integrals of one family.
    With ``u = exp(-e^y)`` it becomes ``∫ exp(y - e^y) Π_s (1 - exp(-c_s e^y)) dy``,
    ``c_s = p_s / q``: a smooth, unimodal integrand on the real line for every scale of the
    ``c_s``, integrated by the trapezoid rule on ``num_points`` points over
    ``[min(0, -log max c) - 30, log 50]`` (truncation below ``e^{-30}`` relative).  (Kool et
    al. use the substitution ``u^{1/q} = v^{e^5}`` on ``(0, 1)``, which loses accuracy when
    ``p(S)`` is small or ``q`` is small.)

    A set that holds all the mass but ``q < 1e-12`` (``Σ_s p_s`` is 1 to rounding, and ``q``
    itself is not resolved) gets the exhaustive limit ``R = R2 = 1``: as ``q -> 0`` every
    ratio of an element with ``p_s >> q`` tends to 1, and an element with ``p_s`` of the
    order of ``q`` (which only enters ``S`` once every element of larger mass is in it) has a
    weight ``p_s R(S, s) <= q``, so each weight ``p_s R(S, s)`` is off by ``O(q)`` at most.
    (Left to the integral, such an element made ``0 * inf = NaN``.)
    """
    lp = log_p.detach().to(torch.float64)
    n, k = lp.shape
    eye = torch.eye(k, dtype=torch.bool, device=lp.device)
    phi_s = lp.logsumexp(-1)  # log Σ p_s
    covered = phi_s >= math.log1p(-Q_COVERED)  # q < 1e-12: the exhaustive limit
    phi_s = torch.where(covered, torch.full_like(phi_s, math.log(0.5)), phi_s)  # any q > 0: overwritten
    lp = torch.where(covered.unsqueeze(-1), phi_s.unsqueeze(-1) - math.log(k), lp)
    log_q = torch.log(-torch.expm1(phi_s.clamp_max(-1e-300)))  # log q
    log_c = lp - log_q.unsqueeze(-1)  # [N, k]
    lo = torch.minimum(-log_c.max(-1).values, torch.zeros_like(log_q)) - 30.0
    hi = torch.full_like(lo, math.log(50.0))
    grid = torch.linspace(0, 1, num_points, dtype=torch.float64, device=lp.device)
    y = lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * grid  # [N, M]
    terms = _log1mexp(torch.exp(log_c.unsqueeze(-1) + y.unsqueeze(1)))  # log(1 - exp(-c_s e^y)), [N, k, M]
    log_trap = torch.zeros(num_points, dtype=torch.float64, device=lp.device)
    log_trap[0] = log_trap[-1] = math.log(0.5)
    integrand = y - y.exp() + terms.sum(1) + log_trap  # [N, M]
    top = integrand.max(-1, keepdim=True).values
    scaled = (integrand - top).exp()  # [N, M]
    inv = (-terms).exp()  # 1 / (1 - exp(-c_s e^y)), [N, k, M]
    # leave-one-out and leave-two-out integrals without a [N, k, k, M] tensor
    q_s = scaled.sum(-1)
    q_s1 = torch.einsum("nm,nsm->ns", scaled, inv)
    q_s2 = torch.einsum("nm,nsm,ntm->nst", scaled, inv, inv)
    r1 = q_s1 / q_s.unsqueeze(-1)
    r2 = q_s2 / q_s1.unsqueeze(-1)
    r1 = r1.masked_fill(covered.unsqueeze(-1), 1.0)
    r2 = r2.masked_fill(covered.view(n, 1, 1), 1.0)
    return r1, r2.masked_fill(eye, 1.0)


class UnorderedSetEstimator(relaxit_core.EstimatorBase):
    r"""The unordered-set estimator (Kool et al. 2020): ``k`` samples without replacement with a built-in baseline.

    ``k = num_samples`` distinct configurations ``S`` of one event of the objective (the
    trailing batch dimensions it reduces: a product of ``D`` categoricals, domain size
    ``C^D``) are drawn without replacement by Gumbel top-k, with stochastic beam search
    over the ``D`` variables (one vectorised step per variable).  With
    ``R(S, s) = p^{D\s}(S\{s}) / p(S)`` the gradient estimate is

    ``ĝ = Σ_{s∈S} p(s) R(S, s) ∇θ log p(s) (f(s) - b_s)``,
    ``b_s = Σ_{s'∈S} p(s') R^{D\s}(S, s') f(s')``

    (Kool et al. 2020, the unordered-set estimator with its baseline; ``k = 1`` has no
    baseline and is plain REINFORCE), unbiased; when ``k``
    covers the whole domain it is the exact gradient.  The probabilities of sets use
    the paper's one-dimensional integral, by the trapezoid rule on ``integration_points`` points (see
    :func:`leave_one_out_ratios`).

    ``value``, and the objective's own parameters (``objective_weights``):

    - ``"uniform"`` (default, the ``estimate()`` contract): ``value`` is the plain mean of
      the objective over the ``k`` returned samples and the objective's parameters get the
      plain mean of their gradients.  Samples drawn without replacement over-weight
      unlikely configurations, so these are biased estimates of ``E_q[f]`` and
      ``E_q[∇φ f]`` (the law's gradient stays unbiased).
    - ``"unordered_set"``: ``value = Σ_s p(s) R(S, s) f(s)`` and the objective's parameters
      get ``Σ_s p(s) R(S, s) ∇φ f(s)``: both unbiased (Kool et al. 2020, the unordered-set estimator), but ``value``
      is then a weighted, not a plain, mean of the returned samples.

    Cost: exactly ``k`` objective evaluations, in two calls (the first sample alone, which
    also tells which batch dimensions the objective reduces, then the other ``k - 1``).
    When ``k`` exceeds the number of configurations, the surplus slots repeat the first
    sample and carry zero weight.  Law: ``OneHotCategorical(logits)`` (PMF ``log_prob``).

    Maths:
        :Law: :math:`S^k`: :math:`k = S` distinct configurations of one event, drawn without
            replacement from :math:`p_\theta` by Gumbel top-k (stochastic beam search over the
            :math:`D` variables; Kool et al. 2019).
        :Estimator: the unordered-set estimator with its built-in baseline (Kool et al. 2020; equation
            number not checked here), with the leave-one-out ratio
            :math:`R(S^k, s) = p^{D \setminus \{s\}}(S^k \setminus \{s\}) / p(S^k)`:

            .. math::
                \hat g = \sum_{s \in S^k} \nabla_\theta p_\theta(s)\, R(S^k, s)
                \Bigl(f(s) - \sum_{s' \in S^k} p_\theta(s')\, R^{D \setminus \{s\}}(S^k, s')\, f(s')\Bigr) .
        :Gradient: unbiased; exact when :math:`k` covers the domain; :math:`k = 1` is REINFORCE.
        :Cost: exactly :math:`k` objective evaluations (in two calls).

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("unordered_set")
        >>> logits = torch.zeros(2, 4, requires_grad=True)
        >>> out = est.estimate(lambda z: (z * torch.arange(4.0)).sum((-1, -2)), num_samples=3, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape, out.samples.shape
        (torch.Size([2, 4]), torch.Size([3, 2, 4]))
    """

    name: ClassVar[str] = "unordered_set"
    family: ClassVar[str] = "categorical"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    masks_natively: ClassVar[bool] = True  # -inf configurations are invalid beam slots (never drawn)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Kool, van Hoof & Welling (2020), Estimating Gradients for Discrete Random Variables by "
        "Sampling without Replacement, ICLR: unordered-set estimator, built-in baseline, p(S) integral; "
        "Kool, van Hoof & Welling (2019), Stochastic Beams and Where to Find Them, ICML"
    )
    reductions: ClassVar[tuple[str, ...]] = ("mean",)

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`UnorderedSetEstimator`."""

        name: Literal["unordered_set"] = "unordered_set"
        objective_weights: Literal["uniform", "unordered_set"] = Field(
            "uniform",
            description="How value and the objective's own gradient weight the k samples: plain mean "
            "(the estimate() contract) or the unbiased unordered-set weights p(s) R(S, s).",
        )
        integration_points: int = Field(
            500, ge=10, le=100000, description="Points of the trapezoid rule for the set probabilities p(S)."
        )

    def build_distribution(self, logits=None, probs=None):
        return LAWS["categorical"](probs=probs, logits=logits)

    def estimate(self, objective, *, num_samples=1, reduce="mean", **params):
        k = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)
        first = dist.sample((1,))
        f1 = call_objective(objective, first, dist, self.name)
        nb = f1.dim() - 1
        batch = tuple(dist.batch_shape)
        b_shape, r_shape = batch[:nb], batch[nb:]
        n_b = int(torch.Size(b_shape).numel())
        d = int(torch.Size(r_shape).numel())
        c = dist.event_shape[-1]
        log_p = dist.logits.detach().expand(batch + (c,)).reshape(n_b, d, c)
        first_idx = first[0].argmax(-1).reshape(n_b, d)
        idx, valid, lp = stochastic_beam_search(log_p, first_idx, k)
        idx = torch.where(valid.unsqueeze(-1), idx, idx[:, :1])  # surplus slots repeat the first
        z = F.one_hot(idx, c).to(first.dtype)  # [n_b, k, D, C]
        z = z.transpose(0, 1).reshape((k,) + batch + (c,))
        if k > 1:
            f = torch.cat([f1, call_objective(objective, z[1:], dist, self.name)], 0)
        else:
            f = f1
        # weights p(s) R(S, s) and the baseline's second-order ratios
        exhaustive = d * math.log(c) <= math.log(k) + 1e-9
        exhaustive = torch.full((n_b,), exhaustive, device=lp.device) | ~valid.all(-1)
        r1, r2 = leave_one_out_ratios(torch.where(valid, lp, torch.zeros_like(lp)), self.config.integration_points)
        ex = exhaustive.unsqueeze(-1)
        r1 = torch.where(ex, torch.ones_like(r1), r1)
        r2 = torch.where(ex.unsqueeze(-1), torch.ones_like(r2), r2)
        p_s = torch.where(valid, lp.to(torch.float64).exp(), torch.zeros_like(r1))
        w = p_s * r1  # [n_b, k]
        fd = f.detach().to(torch.float64).reshape(k, n_b).T  # [n_b, k]
        # the baseline needs k >= 2 (it is an unordered-set estimate from the other k - 1)
        base = torch.einsum("nst,nt->ns", r2, p_s * fd) if k > 1 else torch.zeros_like(fd)
        coef = (w * (fd - base)).T.reshape((k,) + b_shape).to(f.dtype)
        log_q = reduce_log_prob(dist.log_prob(z), nb + 1)  # [k, *B]
        score = (coef * (log_q - log_q.detach())).sum(0)
        if self.config.objective_weights == "uniform":
            value = f.mean(0)
        else:
            value = (w.T.reshape((k,) + b_shape).to(f.dtype) * f).sum(0)
        surrogate = value + score
        return relaxit_core.Estimate(surrogate, value.detach(), z)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [UnorderedSetEstimator]
