"""ARMS: antithetic REINFORCE with K >= 2 negatively correlated samples (Dirichlet copula).

Reference:
    Dimitriev & Zhou (2021), *ARMS: Antithetic-REINFORCE-Multi-Sample Gradient for Binary
    Variables*, ICML (arXiv:2105.14141) — ARMS with the Dirichlet copula (uniforms
    ``u_k = (1 - d_k)^{K-1}``, ``d ~ Dirichlet(1_K)``),
    the bivariate copula ``C(p, p) = max(2 p^{1/(K-1)} - 1, 0)^{K-1}``,
    and the debiased leave-one-out estimator
    ``g = 1/(K-1) Σ_k (f(b_k) - mean_j f(b_j)) (b_k - p) · p(1-p) / (p - P(b_i = b_j = 1))``
    (for ``p > 1/2`` the antithetic uniforms ``1 - u_k`` are used).  For ``K = 2`` the pair
    is antithetic (``u, 1 - u``) and the estimate equals DisARM's (Dong et al. 2020).
    Checked against the authors' code (``alekdimi/arms``, ``networks.py``,
    ``grad_type="arms"``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.distributions import clamp_probs, exponential_like
from relaxit_plugins._multisample import LAWS, call_objective, expand_to, loo_mean, reduce_log_prob

__all__ = ["ArmsEstimator", "arms_sample", "arms_debias"]


def arms_sample(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``k >= 2`` negatively correlated ``Bernoulli(sigmoid(logits))`` samples, ``[k, *logits.shape]``.

    Each coordinate has its own Dirichlet copula: ``d ~ Dirichlet(1, ..., 1)`` over the
    ``k`` samples, ``u_j = (1 - d_j)^{k-1}`` (uniform marginals), and
    ``b_j = 1[u_j < m]`` for the rarer outcome of probability ``m = min(p, 1 - p)``
    (i.e. ``u_j < p`` when ``p < 1/2`` and ``1 - u_j < p`` otherwise).
    """
    e = exponential_like((k,) + tuple(logits.shape), logits)
    d = e / e.sum(0, keepdim=True)
    u = (1 - d).pow(k - 1)
    m = torch.sigmoid(-logits.detach().abs())  # probability of the rarer value
    rare = u < m
    return torch.where(logits.detach() < 0, rare, ~rare).to(logits.dtype)


def arms_debias(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The factor ``p(1-p) / (p - P(b_i = 1, b_j = 1))`` of ARMS with ``k`` samples, computed
    stably from the logits as ``σ(|η|) / (1 - C(m, m) / m)`` with ``m = σ(-|η|)``."""
    a = logits.detach().abs()
    m = clamp_probs(torch.sigmoid(-a))
    if k == 2:
        ratio = torch.zeros_like(m)
    else:
        base = (2 * m.pow(1.0 / (k - 1)) - 1).clamp_min(0)
        ratio = base.pow(k - 1) / m
    return torch.sigmoid(a) / (1 - ratio)


class ArmsEstimator(relaxit_core.EstimatorBase):
    r"""ARMS (Dimitriev & Zhou 2021): antithetic REINFORCE with K negatively correlated samples.

    Draws ``K = num_samples >= 2`` samples per coordinate that are marginally
    ``Bernoulli(σ(η))`` but negatively correlated through a Dirichlet copula (see
    :func:`arms_sample`), and returns the debiased leave-one-out estimate

    ``g_d = (1/K) Σ_k (f(b_k) - (1/(K-1)) Σ_{j≠k} f(b_j)) (b_{k,d} - p_d) · c_d``,
    ``c_d = p_d(1-p_d) / (p_d - P(b_{i,d} = b_{j,d} = 1))``

    which is unbiased (Dimitriev & Zhou 2021).  ``K = 2`` gives the antithetic pair
    of DisARM and the same estimate.  The ``samples`` returned are the ``K`` correlated
    samples; ``value`` is the mean objective on them (unbiased for ``E_q[f]`` since each is
    marginally from ``q``) and the objective's own parameters get the mean of their
    gradients.  ``distribution()`` is the marginal law ``Bernoulli(logits)`` (PMF
    ``log_prob``).

    Cost: ``K`` objective evaluations in one batched call, as RLOO.

    Maths:
        :Law: :math:`K = S \ge 2` samples :math:`b_{k,d} = \mathbf{1}[u_{k,d} < p_d]`,
            :math:`p = \sigma(\eta)`, each marginally :math:`\operatorname{Bernoulli}(p_d)`; the uniforms
            :math:`u_{1,d}, \dots, u_{K,d}` are coupled by a Dirichlet copula, so the samples are
            mutually antithetic.
        :Estimator: the debiased leave-one-out estimate (Dimitriev & Zhou 2021, the ARMS estimator;
            equation number not checked here):

            .. math::
                \hat g_d = \frac{c_d}{K} \sum_{k=1}^{K} \Bigl(f(b_k) - \frac{1}{K-1}\sum_{j \ne k} f(b_j)\Bigr)
                (b_{k,d} - p_d), \qquad
                c_d = \frac{p_d (1 - p_d)}{p_d - P(b_{i,d} = b_{j,d} = 1)} .
        :Gradient: unbiased, :math:`\mathbb{E}[\hat g] = \nabla_\eta \mathbb{E}_{b \sim q}[f(b)]`;
            :math:`K = 2` is DisARM, independent samples give RLOO.
        :Cost: :math:`K` objective evaluations in one batched call.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("arms")
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=4, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([3])
    """

    name: ClassVar[str] = "arms"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Dimitriev & Zhou (2021), ARMS: Antithetic-REINFORCE-Multi-Sample Gradient for Binary "
        "Variables, ICML (arXiv:2105.14141): Dirichlet copula and debiased estimator"
    )
    reductions: ClassVar[tuple[str, ...]] = ("mean",)
    min_num_samples: int = 2

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`ArmsEstimator` (no hyperparameters: ``K`` is ``num_samples``)."""

        name: Literal["arms"] = "arms"

    def build_distribution(self, logits=None):
        return LAWS["bernoulli"](logits=logits)

    def estimate(self, objective, *, num_samples=2, reduce="mean", **params):
        k = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)
        logits = dist.logits
        z = arms_sample(logits.expand(dist.batch_shape), k)
        f = call_objective(objective, z, dist, self.name)
        fd = f.detach()
        signal = expand_to(fd - loo_mean(fd), z.dim())  # [K, *B, 1...]
        weight = signal * arms_debias(logits, k)  # [K, *batch]
        log_q = dist.log_prob(z)  # per coordinate
        score = reduce_log_prob(weight * (log_q - log_q.detach()), f.dim())
        surrogate = (f + score).mean(0)
        return relaxit_core.Estimate(surrogate, fd.mean(0), z)  # value: the objective's mean alone


@relaxit_core.hookimpl
def relaxit_estimators():
    return [ArmsEstimator]
