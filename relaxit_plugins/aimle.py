r"""AIMLE: adaptive I-MLE, with the target step ``λ`` adapted to a target gradient norm and central differences.

Minervini, Franceschi & Niepert (2023), *Adaptive Perturbation-Based Gradient Estimation for
Discrete Latent Variable Models*, AAAI (arXiv 2209.04862).  Like I-MLE
(:mod:`relaxit_plugins.imle`) the forward sample is ``z = y*(θ + τε)`` and the backward pass
compares MAP states of perturbed target distributions, now two-sided (the central
difference):

.. math::
    \widehat{∇_θ} f = \frac{1}{2λ} \bigl( y^*(θ + λ∇_z f + τε) - y^*(θ - λ∇_z f + τε) \bigr),

and ``λ`` is set per example relative to the scales of ``θ`` and of the downstream gradient,
``λ = β ‖θ + τε‖ / ‖∇_z f‖``, with ``β`` adapted across calls so that the gradient hits a target
sparsity "norm" (the adaptive target distribution): an exponential moving average
``ν`` (``ema_decay``) of the mean number of non-zero entries of the per-sample MAP difference
is kept, and ``β ← max(0, β + β_step)`` when ``ν < target_norm``, ``β - β_step`` otherwise
(the authors' ``AdaptiveTargetDistribution``).  ``β`` and ``ν`` are buffers (saved in the
``state_dict``) updated without a host sync.  ``symmetric=False`` gives the one-sided
difference ``(y*(θ + τε) - y*(θ - λ∇f + τε)) / λ``.

Differences from the authors' code: the norms in ``λ`` are taken per example (each batch
element and sample on its own), not over the whole batch, so one example's scale does not
set another's step; and the scale is the norm of the perturbed scores ``θ + τε`` that the
solver sees, not of ``θ`` alone, so that ``θ = 0`` (a common initialisation) still gets a
non-zero step (with ``‖θ‖`` it would never move).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_plugins._solvers import SolverName
from relaxit_plugins.imle import Noise, PerturbAndMAPEstimator

__all__ = ["AimleEstimator"]


class AimleEstimator(PerturbAndMAPEstimator):
    r"""Adaptive I-MLE (Minervini et al. 2023): central MAP differences with ``λ = β‖θ+τε‖/‖∇f‖``, ``β`` adapted to a target gradient norm.

    Backward: ``(y*(θ + λ∇f + τε) - y*(θ - λ∇f + τε)) / (2λ)``, ``∇f`` at the forward sample
    ``z = y*(θ + τε)``; ``β`` moves by ``beta_step`` per call towards a mean number
    ``target_norm`` of non-zero gradient entries per sample (see :mod:`relaxit_plugins.aimle`).
    Biased; needs ``f`` differentiable in ``z``.  Cost: ``num_samples`` objective evaluations
    (and ``3·num_samples`` MAP calls).

    Maths:
        :Law: perturb-and-MAP as in ``imle``: :math:`z = y^*(\theta + \tau\varepsilon)`.
        :Estimator: central differences of MAP states with an adaptive step (Minervini et al.
            2023, AIMLE; equation number not checked here):

            .. math::
                \hat g = \frac1S \sum_{s=1}^{S}
                \frac{y^*(\theta + \lambda_s \nabla_z f(z_s) + \tau\varepsilon_s) - y^*(\theta - \lambda_s \nabla_z f(z_s) + \tau\varepsilon_s)}{2\lambda_s},
                \qquad \lambda_s = \beta\, \frac{\lVert \theta + \tau\varepsilon_s \rVert}{\lVert \nabla_z f(z_s) \rVert},

            :math:`\beta \leftarrow \max(0, \beta \pm \beta_{\text{step}})` towards a target mean number of
            non-zero gradient entries per sample.
        :Gradient: biased; needs :math:`f` differentiable in :math:`z`.
        :Cost: :math:`S` objective evaluations (one call) and :math:`3S` MAP calls.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("aimle", family="subset", k=2)
        >>> logits = torch.randn(3, 6, requires_grad=True)
        >>> out = est.estimate(lambda z: (z * torch.arange(6.0)).sum(-1), num_samples=4, logits=logits)
        >>> out.surrogate.sum().backward(); logits.grad.shape, float(est.beta) != 1.0
        (torch.Size([3, 6]), True)
    """

    name: ClassVar[str] = "aimle"
    reference: ClassVar[str] = (
        "Minervini, Franceschi & Niepert (2023), Adaptive Perturbation-Based Gradient Estimation for Discrete "
        "Latent Variable Models, AAAI (arXiv 2209.04862): adaptive target distribution "
        "(lambda = beta * norm(theta + tau eps) / norm(grad f), beta adapted to a target gradient norm), central differences"
    )
    conformance_configs = ({"family": "subset"}, {"family": "subset", "k": 2, "symmetric": False, "noise": "gumbel"},
                           {"family": "categorical"})
    example_config: ClassVar[dict] = {"family": "subset", "k": 3}

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`AimleEstimator`."""

        name: Literal["aimle"] = "aimle"
        family: Literal["subset", "categorical"] = Field(
            description="The structures: k-hot subsets (default solver top-k) or one-hot categories (argmax). Required."
        )
        k: int = Field(1, ge=1, le=1_000_000, description="Subset size for subset solvers (ignored by categorical ones).")
        target_norm: float = Field(1.0, gt=0, le=1e6, description="Target mean number of non-zero gradient entries per sample.")
        beta: float = Field(1.0, ge=0, le=1e6, description="Initial beta of lambda = beta * norm(theta + tau eps) / norm(grad f).")
        beta_step: float = Field(1e-4, ge=0, le=1e3, description="Change of beta per call (towards the target norm).")
        ema_decay: float = Field(0.9, ge=0, lt=1, description="Decay of the moving average of the gradient norm.")
        symmetric: bool = Field(True, description="Central (two-sided) differences; False: one-sided I-MLE differences.")
        noise: Noise = Field("sum_of_gamma", description="Perturbation noise (sum-of-Gamma with kappa = k, Gumbel, normal, or none).")
        noise_temperature: float = Field(1.0, ge=0, le=1e3, description="Scale tau of the noise.")
        noise_iterations: int = Field(10, ge=1, le=10_000, description="Terms s of the sum-of-Gamma noise.")
        solver: SolverName

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.register_buffer("beta", torch.tensor(float(self.config.beta), dtype=torch.float64))
        self.register_buffer("grad_norm", torch.tensor(float(self.config.target_norm), dtype=torch.float64))

    def map_gradient(self, dist, theta, eps, z, dz):
        noisy = theta + self.config.noise_temperature * eps
        beta = self.beta.to(theta.dtype)
        theta_norm = torch.linalg.vector_norm(noisy, dim=-1, keepdim=True)  # the scores the solver sees
        dz_norm = torch.linalg.vector_norm(dz, dim=-1, keepdim=True)
        lam = torch.where(dz_norm > 0, beta * theta_norm / dz_norm.clamp_min(torch.finfo(dz.dtype).tiny),
                          torch.zeros_like(dz_norm))
        step = lam * dz
        minus = dist.map(noisy - step)
        if self.config.symmetric:
            diff, scale = dist.map(noisy + step) - minus, 2 * lam
        else:
            diff, scale = dist.map(noisy) - minus, lam
        grad = diff / torch.where(scale > 0, scale, torch.ones_like(scale))
        # adapt beta towards the target number of non-zero entries per sample (no host sync)
        nnz = (diff != 0).sum(-1).to(torch.float64).mean()
        d = self.config.ema_decay
        self.grad_norm.copy_(d * self.grad_norm + (1 - d) * nnz)
        direction = torch.where(self.grad_norm < self.config.target_norm, 1.0, -1.0).to(torch.float64)
        self.beta.copy_((self.beta + direction * self.config.beta_step).clamp_min(0.0))
        return grad


@relaxit_core.hookimpl
def relaxit_estimators():
    return [AimleEstimator]
