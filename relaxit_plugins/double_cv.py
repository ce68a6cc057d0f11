"""Double control variates: RLOO plus a global Taylor control variate.

Reference:
    Titsias & Shi (2022), *Double Control Variates for Gradient Estimation in Discrete
    Latent Variable Models*, AISTATS (arXiv:2111.05300) — a double control variate acting on
    top of the REINFORCE leave-one-out baseline, built from a first-order Taylor expansion
    of ``f`` around the other samples, with its global correction ``α ∇f̄ ⊙ p(1-p)`` for
    Bernoulli latents; ``α`` is adapted online by minimising the estimate's squared norm.
    Checked against the authors' code (``thjashin/double-cv``, ``src/networks.py``,
    ``grad_type="double_cv"``; the same estimator is in ``thjashin/rodeo``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_plugins._multisample import (
    LAWS,
    bernoulli_draw,
    bernoulli_probs,
    dot_reduced,
    expand_to,
    loo_mean,
    objective_and_input_gradient,
    with_score_and_lazy_gradients,
)

__all__ = ["DoubleCVEstimator"]


class DoubleCVEstimator(relaxit_core.EstimatorBase):
    r"""Double control variates (Titsias & Shi 2022): RLOO plus a global linear control variate.

    With ``K = num_samples >= 2`` samples ``b_k ~ Bernoulli(p)``, ``p = σ(η)``, objective
    values ``f_k`` and input gradients ``g_k = ∇_b f(b_k)`` (the objective differentiated at
    the binary sample as if it were continuous — no extra evaluation, one backward pass),
    the control variate of sample ``k`` is the Taylor term
    ``h_k(b) = α ḡ_{-k}ᵀ (b - p)``, ``ḡ_{-k} = mean_{j≠k} g_j``, and the estimate is

    ``ĝ = (1/K) Σ_k (f_k + h_k(b_k) - mean_{j≠k} [f_j + h_j(b_j)]) (b_k - p) - α ḡ ⊙ p(1-p)``

    with ``ḡ = mean_k g_k``; the last (global) term cancels the control variate's mean, so
    ``ĝ`` is unbiased for every ``α`` (Titsias & Shi 2022).  ``α`` is a parameter of the
    module (initially ``alpha_init``; ``0`` gives RLOO); when ``learn`` is true the
    surrogate's ``backward()`` gives it the gradient of ``Σ ĝ²`` (the estimate's variance
    up to a constant), and nothing of it reaches the model's parameters.  Put
    ``estimator.parameters()`` in an optimiser to adapt it.

    Cost: ``K`` objective evaluations in one batched call (as RLOO) plus one backward pass
    through the objective for ``∇_b f``.  An objective that is not differentiable in ``z``
    gets a zero Taylor term (plain RLOO).  ``distribution()`` is ``Bernoulli(logits)``.

    Maths:
        :Law: :math:`K = S \ge 2` independent :math:`b_k \sim \operatorname{Bernoulli}(p)`,
            :math:`p = \sigma(\eta)`.
        :Estimator: RLOO with a Taylor control variate and its global correction (Titsias & Shi 2022,
            the double control variate; equation number not checked here), with
            :math:`g_k = \nabla_b f(b_k)`, :math:`\bar g_{-k} = \frac{1}{K-1}\sum_{j\ne k} g_j`,
            :math:`\bar g = \frac1K \sum_k g_k` and :math:`h_k(b) = \alpha\, \bar g_{-k}^\top (b - p)`:

            .. math::
                \hat g = \frac1K \sum_{k=1}^{K} \Bigl(f(b_k) + h_k(b_k)
                - \frac{1}{K-1}\sum_{j \ne k} \bigl[f(b_j) + h_j(b_j)\bigr]\Bigr)(b_k - p)
                - \alpha\, \bar g \odot p \odot (1 - p) .
        :Gradient: unbiased for every :math:`\alpha` (:math:`\alpha = 0` is RLOO);
            :math:`\alpha` is learned on :math:`\sum \hat g^2` when ``learn`` is true.
        :Cost: :math:`K` objective evaluations in one batched call and one backward pass through
            the objective for :math:`\nabla_b f`.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("double_cv")
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=4, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape, est.alpha.grad is not None
        (torch.Size([3]), True)
    """

    name: ClassVar[str] = "double_cv"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Titsias & Shi (2022), Double Control Variates for Gradient Estimation in Discrete "
        "Latent Variable Models, AISTATS (arXiv:2111.05300): double control variate on the "
        "leave-one-out baseline from a first-order Taylor expansion, with its global correction"
    )
    conformance_configs = ({}, {"alpha_init": 0.5})
    reductions: ClassVar[tuple[str, ...]] = ("mean",)
    min_num_samples: int = 2

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`DoubleCVEstimator`."""

        name: Literal["double_cv"] = "double_cv"
        alpha_init: float = Field(
            0.0, ge=-10, le=10, description="Initial weight α of the Taylor control variate (0: RLOO)."
        )
        learn: bool = Field(
            True, description="Give α the gradient of the estimate's squared norm in backward()."
        )

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.alpha = torch.nn.Parameter(torch.tensor(float(self.config.alpha_init)), requires_grad=self.config.learn)

    def build_distribution(self, logits=None):
        return LAWS["bernoulli"](logits=logits)

    def estimate(self, objective, *, num_samples=2, reduce="mean", **params):
        k = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)
        p = bernoulli_probs(dist)
        z = bernoulli_draw(p, (k,))
        f, grad = objective_and_input_gradient(objective, z, dist, self.name)
        nb = f.dim()  # S plus the objective's batch dims
        fd = f.detach()
        score = z - p  # d log q / d logits, [K, *batch]
        alpha = self.alpha.detach().to(fd.dtype)
        g_sum = grad.sum(0)  # [*batch]
        # h_k = ḡ_{-k}ᵀ(b_k - p) = (Σ_j g_j - g_k)ᵀ (b_k - p) / (K - 1), [K, *B]
        h = dot_reduced(g_sum - grad, score, nb) / (k - 1)
        h_cv = h - loo_mean(h)  # the signal's derivative in α
        signal = fd - loo_mean(fd) + alpha * h_cv
        correction = g_sum * (p * (1 - p) / k)  # ḡ ⊙ p(1-p), ḡ = mean_k g_k
        # ĝ = mean_k signal_k (b_k - p) - α ḡ ⊙ p(1-p): the logits' gradient, attached directly
        g_hat = torch.addcmul((expand_to(signal, z.dim()) * score).mean(0), correction, alpha, value=-1)
        value = f.mean(0)

        def variance_gradient(c):  # ∇_α Σ_b c_b Σ ĝ_b² = Σ_b 2 c_b Σ ĝ_b ⊙ ∂ĝ_b/∂α, in closed form
            per_row = (h_cv * dot_reduced(g_hat, score, nb)).mean(0) - dot_reduced(g_hat, correction, nb - 1)
            return ((2 * c.to(fd.dtype) * per_row).sum().to(self.alpha.dtype),)

        surrogate = with_score_and_lazy_gradients(value, dist.logits, g_hat, variance_gradient, [self.alpha])
        return relaxit_core.Estimate(surrogate, value.detach(), z)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [DoubleCVEstimator]
