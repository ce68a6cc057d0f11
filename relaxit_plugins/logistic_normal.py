r"""The logistic normal law on the simplex, and the Laplace bridge to and from the Dirichlet.

Law (Aitchison & Shen 1980, *Logistic-normal distributions: some properties and uses*,
Biometrika 67(2), Sec. 2).  With ``loc``, ``scale`` of shape ``[..., K]``,

.. math::
    x = \operatorname{softmax}(\mu + s \odot \varepsilon), \qquad \varepsilon \sim N(0, I_K).

The additive log-ratio ``u = \log(x_{1:K-1} / x_K) = A(\mu + s \odot \varepsilon)``,
``A = [I_{K-1} \mid -\mathbf 1]``, is Gaussian with mean ``A\mu`` and covariance
``\Sigma = A \operatorname{diag}(s^2) A^\top = \operatorname{diag}(s_{1:K-1}^2) + s_K^2 \mathbf 1 \mathbf 1^\top``.
The map ``u \mapsto x_{1:K-1}`` has Jacobian determinant ``\prod_{k=1}^{K} x_k``, so the
density w.r.t. Lebesgue measure on the first ``K - 1`` coordinates is (Aitchison & Shen
1980, eq. 2.2)

.. math::
    \log p(x) = \log N(u; A\mu, \Sigma) - \sum_{k=1}^{K} \log x_k .

``\Sigma`` is diagonal plus rank one, so its inverse (Sherman–Morrison) and determinant
(matrix determinant lemma) cost ``O(K)``; so does the closed-form KL between two logistic
normals, which is the KL between their additive log-ratio Gaussians (KL is invariant under
the common invertible map ``x \mapsto u``).

Laplace bridge (Hennig, Stern, Herbrich & Graepel 2012, *Kernel Topic Models*, AISTATS,
Sec. 3.1; Hobbhahn, Kristiadi & Hennig 2022, *Fast Predictive Uncertainty for Classification
with Bayesian Deep Networks*, UAI, eqs. 5–6).  The Dirichlet ``Dir(α)`` in the softmax
basis has its Laplace approximation ``N(μ, Σ)`` with

.. math::
    \mu_k = \log\alpha_k - \frac1K \sum_l \log\alpha_l, \qquad
    \Sigma_{kk} = \frac{1}{\alpha_k}\Bigl(1 - \frac2K\Bigr) + \frac{1}{K^2}\sum_l \frac1{\alpha_l},

and the inverse map ``\alpha_k = \frac{1}{\Sigma_{kk}}\bigl(1 - \frac2K + \frac{e^{\mu_k}}{K^2}
\sum_l e^{-\mu_l}\bigr)``.  :func:`laplace_bridge` returns ``(loc, scale)`` with
``scale = sqrt(Σ_kk)`` (a variance turned into a standard deviation, once), ready for
``logistic_normal``; :func:`dirichlet_from_logistic_normal` is its inverse.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints, register_kl
from torch.distributions.utils import broadcast_all

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.distributions import simplex

__all__ = ["LogisticNormal", "LogisticNormalEstimator", "laplace_bridge", "dirichlet_from_logistic_normal"]

_LOG_2PI = math.log(2 * math.pi)


def laplace_bridge(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Dirichlet concentrations ``alpha`` ``[..., K]`` -> ``(loc, scale)`` of the logistic normal
    that is the Dirichlet's Laplace approximation in the softmax basis (Hobbhahn et al.
    2022, eq. 5): ``loc_k = log α_k - mean_l log α_l``,
    ``scale_k² = Σ_kk = (1 - 2/K)/α_k + Σ_l (1/α_l) / K²``.

    The mode of ``softmax(loc)`` is the Dirichlet's ``α / Σα``; ``dirichlet_from_logistic_normal``
    inverts the map exactly.

    Example:
        >>> loc, scale = laplace_bridge(torch.tensor([2.0, 2.0, 2.0, 2.0]))
        >>> loc.tolist(), [round(v, 4) for v in (scale ** 2).tolist()]
        ([0.0, 0.0, 0.0, 0.0], [0.375, 0.375, 0.375, 0.375])
    """
    k = alpha.shape[-1]
    log_alpha = alpha.log()
    loc = log_alpha - log_alpha.mean(-1, keepdim=True)
    inv = alpha.reciprocal()
    var = inv * (1 - 2 / k) + inv.sum(-1, keepdim=True) / k**2
    return loc, var.sqrt()


def dirichlet_from_logistic_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""The inverse Laplace bridge (Hobbhahn et al. 2022, eq. 6): ``(loc, scale)`` ``[..., K]`` ->
    Dirichlet concentrations ``α_k = (1 - 2/K + e^{loc_k} Σ_l e^{-loc_l} / K²) / scale_k²``
    (``scale_k²`` is the variance ``Σ_kk``).  Invariant to a common shift of ``loc``.

    Example:
        >>> alpha = torch.tensor([0.5, 3.0, 10.0])
        >>> torch.allclose(dirichlet_from_logistic_normal(*laplace_bridge(alpha)), alpha)
        True
    """
    loc, scale = broadcast_all(loc, scale)
    k = loc.shape[-1]
    # e^{μ_k} Σ_l e^{-μ_l} computed in log space
    cross = (loc + (-loc).logsumexp(-1, keepdim=True)).exp()
    return (1 - 2 / k + cross / k**2) / scale.square()


def _alr_gaussian(loc: torch.Tensor, scale: torch.Tensor):
    """Mean ``A loc`` and the pieces of ``Σ = diag(d) + c 1 1ᵀ`` of the additive log-ratio."""
    mean = loc[..., :-1] - loc[..., -1:]
    var = scale.square()
    return mean, var[..., :-1], var[..., -1:]


def _structured_inverse(d: torch.Tensor, c: torch.Tensor):
    """For ``Σ = diag(d) + c 1 1ᵀ``: ``Σ⁻¹ = diag(1/d) - β v vᵀ`` with ``v = 1/d``, and ``log det Σ``."""
    v = d.reciprocal()
    one_plus = 1 + c * v.sum(-1, keepdim=True)
    beta = c / one_plus
    logdet = d.log().sum(-1) + one_plus.squeeze(-1).log()
    return v, beta, logdet


class LogisticNormal(TorchDistribution):
    r"""Logistic normal on the ``K``-simplex: ``x = softmax(loc + scale * eps)``, ``eps ~ N(0, I_K)``.

    ``log_prob`` is the density w.r.t. Lebesgue measure on the first ``K - 1``
    coordinates (module docstring); values must lie in the open simplex.  Note the
    parametrisation: ``K`` locations and ``K`` scales (the softmax basis of the Laplace
    bridge), not Pyro's ``K - 1`` (stick-breaking) one.

    Example:
        >>> d = LogisticNormal(torch.zeros(3), torch.ones(3))
        >>> x = d.rsample((2,))
        >>> x.shape, d.log_prob(x).shape
        (torch.Size([2, 3]), torch.Size([2]))
    """

    arg_constraints = {
        "loc": constraints.independent(constraints.real, 1),
        "scale": constraints.independent(constraints.positive, 1),
    }
    support = simplex  # the sum's tolerance follows the dtype
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args=None):
        if loc.dim() < 1 or scale.dim() < 1:
            raise ValueError("LogisticNormal: loc and scale need a last dimension of K >= 2 categories")
        self.loc, self.scale = broadcast_all(loc, scale)
        if self.loc.shape[-1] < 2:
            raise ValueError("LogisticNormal: need K >= 2 categories")
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LogisticNormal, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.loc, new.scale = self.loc.expand(shape), self.scale.expand(shape)
        super(LogisticNormal, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, loc, scale):
        shape = torch.broadcast_shapes(torch.Size(loc), torch.Size(scale))
        return shape[:-1], shape[-1:]

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return (self.loc + self.scale * eps).softmax(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_x = value.clamp_min(torch.finfo(value.dtype).tiny).log()
        u = log_x[..., :-1] - log_x[..., -1:]
        mean, d, c = _alr_gaussian(self.loc, self.scale)
        v, beta, logdet = _structured_inverse(d, c)
        r = u - mean
        rv = r * v
        quad = (r * rv).sum(-1) - beta.squeeze(-1) * rv.sum(-1).square()
        km1 = value.shape[-1] - 1
        return -0.5 * (km1 * _LOG_2PI + logdet + quad) - log_x.sum(-1)

    def alr_gaussian(self) -> torch.distributions.MultivariateNormal:
        """The Gaussian law of ``log(x[:-1] / x[-1])`` (a dense ``MultivariateNormal``, for reference)."""
        mean, d, c = _alr_gaussian(self.loc, self.scale)
        cov = torch.diag_embed(d) + c.unsqueeze(-1)
        return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)


@register_kl(LogisticNormal, LogisticNormal)
def _kl_logistic_normal(p: LogisticNormal, q: LogisticNormal) -> torch.Tensor:
    r"""``KL(p || q)`` = KL of the additive log-ratio Gaussians, in ``O(K)``:
    ``½ [tr(Σ_q⁻¹Σ_p) + rᵀΣ_q⁻¹r - (K-1) + log|Σ_q| - log|Σ_p|]``, ``r = A(μ_q - μ_p)``."""
    mp, dp, cp = _alr_gaussian(p.loc, p.scale)
    mq, dq, cq = _alr_gaussian(q.loc, q.scale)
    vq, bq, logdet_q = _structured_inverse(dq, cq)
    _, _, logdet_p = _structured_inverse(dp, cp)
    bq = bq.squeeze(-1)
    cp_ = cp.squeeze(-1)
    sum_vq = vq.sum(-1)
    # tr((D_q⁻¹ - β v vᵀ)(D_p + c_p 1 1ᵀ))
    trace = (dp * vq).sum(-1) + cp_ * sum_vq - bq * (vq.square() * dp).sum(-1) - bq * cp_ * sum_vq.square()
    r = mq - mp
    rv = r * vq
    quad = (r * rv).sum(-1) - bq * rv.sum(-1).square()
    km1 = mp.shape[-1]
    return 0.5 * (trace + quad - km1 + logdet_q - logdet_p)


class LogisticNormalEstimator(relaxit_core.EstimatorBase):
    r"""Logistic normal on the simplex (pathwise): ``x = softmax(loc + scale * eps)``, exact density and KL.

    Reparameterised samples of a continuous law on the simplex (Aitchison & Shen 1980); its
    ``log_prob`` is the density w.r.t. Lebesgue measure on the first ``K - 1`` coordinates
    and ``kl_divergence`` between two of them is closed-form.  It is the logistic normal of
    the Laplace bridge (:func:`laplace_bridge`, :func:`dirichlet_from_logistic_normal`), a
    reparameterisable stand-in for a Dirichlet.  One objective evaluation per sample.

    Maths:
        :Law: :math:`x = \operatorname{softmax}(\mu + \sigma \odot \varepsilon)`,
            :math:`\varepsilon \sim \mathcal{N}(0, I_K)` (Aitchison & Shen 1980, eq. 2.2); the Laplace
            bridge from a Dirichlet(:math:`\alpha`) (Hobbhahn et al. 2022, eq. 5):

            .. math::
                \mu_k = \log\alpha_k - \frac1K \sum_{l} \log\alpha_l, \qquad
                \sigma_k^2 = \frac{1}{\alpha_k}\Bigl(1 - \frac2K\Bigr) + \frac{1}{K^2} \sum_l \frac{1}{\alpha_l} .
        :Estimator: pathwise, :math:`\hat g = \frac1S \sum_s \nabla_{\mu,\sigma} f(x_s)`
            (reparameterisation of Aitchison & Shen 1980, eq. 2.2).
        :Gradient: unbiased for :math:`\nabla \mathbb{E}[f(x)]` under the logistic normal.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("logistic_normal")
        >>> loc = torch.zeros(2, 4, requires_grad=True)
        >>> out = est.estimate(lambda x: x[..., 0].sum(-1), num_samples=8, loc=loc, scale=torch.ones(2, 4))
        >>> out.samples.shape
        torch.Size([8, 2, 4])
    """

    name: ClassVar[str] = "logistic_normal"
    family: ClassVar[str] = "simplex"
    params: ClassVar[tuple[str, ...]] = ("loc", "scale")
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.LOG_PROB, C.KL})
    reference: ClassVar[str] = (
        "Aitchison & Shen (1980), Logistic-normal distributions: some properties and uses, Biometrika, "
        "Sec. 2, eq. 2.2; Hobbhahn, Kristiadi & Hennig (2022), Fast Predictive Uncertainty for "
        "Classification with Bayesian Deep Networks, UAI, eqs. 5-6 (Laplace bridge)"
    )

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`LogisticNormalEstimator` (no hyperparameters)."""

        name: Literal["logistic_normal"] = "logistic_normal"

    def build_distribution(self, loc, scale):
        return LogisticNormal(loc, scale)

    def example_params(self, batch_shape=(), *, event_size=3, dtype=torch.float32, device=None,
                       generator=None, extreme=False):
        shape = tuple(batch_shape) + (event_size,)
        if extreme:
            n = int(torch.Size(shape).numel())
            loc = (30.0 * torch.tensor([1.0, -1.0]).repeat((n + 1) // 2)[:n]).reshape(shape)
            scale = torch.full(shape, 0.05)
        else:
            loc = torch.randn(shape, generator=generator, dtype=torch.float64)
            scale = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
        return {"loc": loc.to(dtype=dtype, device=device), "scale": scale.to(dtype=dtype, device=device)}


@relaxit_core.hookimpl
def relaxit_estimators():
    return [LogisticNormalEstimator]
