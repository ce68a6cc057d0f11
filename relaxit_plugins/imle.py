r"""I-MLE: implicit maximum-likelihood estimation through a MAP solver (perturb-and-MAP).

Niepert, Minervini & Franceschi (2021), *Implicit MLE: Backpropagating Through Discrete
Exponential Family Distributions*, NeurIPS (arXiv 2106.01798).  A discrete structure is drawn
by perturb-and-MAP, ``z = y*(θ + τ ε)``, ``y*(s) = argmax_{y ∈ Y} <s, y>``; for k-subsets ``y*``
is top-k and ``ε`` is the sum-of-Gamma noise of the paper,

.. math::
    ε = \frac1κ \Bigl(\sum_{i=1}^{s} G_i - \log s\Bigr), \qquad
    G_i \sim \mathrm{Gamma}(1/κ,\ \text{rate } i/κ), \qquad κ = k,

whose top-k perturb-and-MAP samples approximate the k-subset law ``∝ exp(θ·z)``.  The
gradient of a loss ``f`` is the difference between the MAP states of the current and of a
*target* distribution whose parameters moved against the downstream gradient taken at the
forward sample (the paper's perturbation-based implicit differentiation, with the same noise
``ε`` in both MAP calls):

.. math::
    θ' = θ - λ\, ∇_z f(z), \qquad
    \widehat{∇_θ} f = \frac1λ \bigl( y^*(θ + τε) - y^*(θ' + τε) \bigr).

The ``1/λ`` factor is the finite-difference scale: without it the gradient grows with ``λ``
(the gradient-scale trap of the first release of the authors' code, uclnlp/torch-imle#3).
With ``noise="none"`` (or ``noise_temperature=0``) the estimate is exactly
``(MAP(θ) - MAP(θ - λ∇f)) / λ``.  Biased; needs ``f`` differentiable in ``z``.

``family`` is required (``"subset"`` or ``"categorical"``), as for every estimator serving
several families.  MAP solvers come by name from a registry (default ``"topk"`` for
``family="subset"``, ``"argmax"`` for ``"categorical"``; register your own with
:func:`~relaxit_plugins._solvers.register_solver`, also importable from this module) or as a
:class:`~relaxit_plugins._solvers.MapSolver` passed at construction; the solver's
family must be the estimator's.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.estimator import call_objective
from relaxit_core.errors import ParameterError
from relaxit_plugins._solvers import (
    SolverEstimator,
    SolverName,
    MapSolver,
    PerturbAndMAP,
    available_solvers,
    check_solver_k,
    register_solver,
)

__all__ = ["ImleEstimator", "PerturbAndMAPEstimator"]
# re-exported for users (documented in relaxit_plugins._solvers): MapSolver, register_solver, available_solvers

Noise = Literal["sum_of_gamma", "gumbel", "normal", "none"]


class PerturbAndMAPEstimator(SolverEstimator):
    """Shared machinery of the perturb-and-MAP estimators (``imle``, ``aimle``): the solver
    hook, the law ``y*(θ + τε)`` and an ``estimate()`` that takes ``∇_z f`` at the forward
    sample and asks :meth:`map_gradient` for the gradient."""

    family: ClassVar[str] = "subset"
    families: ClassVar[tuple[str, ...]] = ("subset", "categorical")
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset({C.HARD})
    reductions: ClassVar[tuple[str, ...]] = ("mean",)

    # ------------------------------------------------------------------ law
    @property
    def _k(self):
        return self.config.k if self.solver.family == "subset" else None

    def build_distribution(self, logits):
        check_solver_k(self.name, self.solver, self.config.k, logits)
        kappa = self.config.k if self.solver.family == "subset" else 1
        return PerturbAndMAP(
            logits, solver=self.solver, k=self._k, noise=self.config.noise,
            temperature=self.config.noise_temperature, kappa=kappa, iterations=self.config.noise_iterations,
        )

    def example_params(self, batch_shape=(), *, event_size=3, dtype=torch.float32, device=None,
                       generator=None, extreme=False):
        size = max(event_size, self.config.k + 2) if self.solver.family == "subset" else event_size
        return super().example_params(batch_shape, event_size=size, dtype=dtype, device=device,
                                      generator=generator, extreme=extreme)

    # ------------------------------------------------------------- estimate
    def map_gradient(self, dist, theta, eps, z, dz):
        """The per-sample gradient estimate, shape of ``z`` (implemented by each estimator)."""
        raise NotImplementedError

    def estimate(self, objective, *, num_samples=1, reduce="mean", **params):
        """Perturb-and-MAP forward sample, ``∇_z f`` at that sample, the estimator's MAP
        difference backward (see the module docstring)."""
        s = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)
        theta = dist.logits
        eps = dist.noise_sample((s,))
        tau = self.config.noise_temperature
        z = dist.map(theta.detach() + tau * eps).requires_grad_(True)
        f = call_objective(objective, z, dist, self.name)
        try:
            (dz,) = torch.autograd.grad(f.sum(), z, retain_graph=True)
        except RuntimeError as exc:
            raise ParameterError(
                f"{self.name}: the objective must be differentiable in z (I-MLE uses its gradient at the "
                f"sample); for objectives that are not, use a score-function estimator such as 'sfess' ({exc})"
            ) from None
        with torch.no_grad():
            grad = self.map_gradient(dist, theta.detach(), eps, z.detach(), dz.detach())
        g = grad.mean(0)
        nb = f.dim() - 1
        term = (theta - theta.detach()) * g
        term = term.sum(tuple(range(nb, term.dim())))
        value = f.mean(0)
        return relaxit_core.Estimate(value + term, value.detach(), z.detach())


class ImleEstimator(PerturbAndMAPEstimator):
    r"""I-MLE (Niepert et al. 2021): perturb-and-MAP forward, ``(MAP(θ+τε) - MAP(θ - λ∇f + τε)) / λ`` backward.

    Forward: ``z = y*(θ + τε)`` with sum-of-Gamma noise (``κ = k``) and a MAP solver
    (``"topk"`` built in, ``"argmax"`` for one-hot categories, or your own, see
    :mod:`relaxit_plugins.imle`).  Backward: the target parameters ``θ' = θ - λ ∇_z f(z)``
    with ``∇_z f`` taken at the forward sample, the same noise, and the difference of the two
    MAP states divided by ``λ`` (uclnlp/torch-imle#3).  Biased; needs ``f`` differentiable in
    ``z``.  Cost: ``num_samples`` objective evaluations (and ``2·num_samples`` MAP calls).

    Maths:
        :Law: perturb-and-MAP, :math:`z = y^*(\theta + \tau\varepsilon)`,
            :math:`y^*(s) = \arg\max_{y \in \mathcal Y} \langle s, y\rangle`, with sum-of-Gamma noise
            :math:`\varepsilon = \frac1\kappa\bigl(\sum_{i=1}^{m} G_i - \log m\bigr)`,
            :math:`G_i \sim \operatorname{Gamma}(1/\kappa, i/\kappa)`, :math:`\kappa = k`.
        :Estimator: the target distribution :math:`\theta' = \theta - \lambda \nabla_z f(z)` and the
            difference of MAP states, divided by :math:`\lambda` (Niepert et al. 2021, the I-MLE
            gradient; equation number not checked here; uclnlp/torch-imle#3 for the :math:`1/\lambda`):

            .. math::
                \hat g = \frac1S \sum_{s=1}^{S} \frac{y^*(\theta + \tau\varepsilon_s) - y^*(\theta - \lambda \nabla_z f(z_s) + \tau\varepsilon_s)}{\lambda}.
        :Gradient: biased; with the noise off it is exactly
            :math:`(y^*(\theta) - y^*(\theta - \lambda \nabla_z f))/\lambda`.  Needs :math:`f`
            differentiable in :math:`z`.
        :Cost: :math:`S` objective evaluations (one call) and :math:`2S` MAP calls.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("imle", family="subset", k=2, lambda_=5.0)
        >>> logits = torch.zeros(3, 6, requires_grad=True)
        >>> out = est.estimate(lambda z: (z * torch.arange(6.0)).sum(-1), num_samples=4, logits=logits)
        >>> out.samples.sum(-1).unique().tolist(), out.value.shape
        ([2.0], torch.Size([3]))
    """

    name: ClassVar[str] = "imle"
    reference: ClassVar[str] = (
        "Niepert, Minervini & Franceschi (2021), Implicit MLE: Backpropagating Through Discrete Exponential "
        "Family Distributions, NeurIPS (arXiv 2106.01798): perturb-and-MAP, target theta - lambda grad f, "
        "sum-of-Gamma noise; gradient divided by lambda (uclnlp/torch-imle#3)"
    )
    conformance_configs = ({"family": "subset"}, {"family": "subset", "k": 2, "noise": "gumbel", "lambda_": 1.0},
                           {"family": "categorical"})
    example_config: ClassVar[dict] = {"family": "subset", "k": 3}

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`ImleEstimator`."""

        name: Literal["imle"] = "imle"
        family: Literal["subset", "categorical"] = Field(
            description="The structures: k-hot subsets (default solver top-k) or one-hot categories (argmax). Required."
        )
        k: int = Field(1, ge=1, le=1_000_000, description="Subset size for subset solvers (ignored by categorical ones).")
        lambda_: float = Field(10.0, gt=0, le=1e6, description="Step of the target distribution theta - lambda * grad f; the gradient is divided by it.")
        noise: Noise = Field("sum_of_gamma", description="Perturbation noise (sum-of-Gamma with kappa = k, Gumbel, normal, or none).")
        noise_temperature: float = Field(1.0, ge=0, le=1e3, description="Scale tau of the noise.")
        noise_iterations: int = Field(10, ge=1, le=10_000, description="Terms s of the sum-of-Gamma noise.")
        solver: SolverName

    def map_gradient(self, dist, theta, eps, z, dz):
        lam = self.config.lambda_
        target = dist.map(theta - lam * dz + self.config.noise_temperature * eps)
        return (z - target) / lam


@relaxit_core.hookimpl
def relaxit_estimators():
    return [ImleEstimator]
