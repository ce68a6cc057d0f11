"""RELAX: a learned control variate for REINFORCE (Bernoulli and categorical).

References:
    Grathwohl, Choi, Wu, Roeder & Duvenaud (2018), *Backpropagation through the Void:
    Optimizing control variates for black-box gradient estimation*, ICLR — eq. (8) (the
    estimator), Algorithm 1 (variance objective), Algorithm 2 (discrete ``b = H(z)``),
    Appendix B (the conditional samples ``z̃ ~ p(z | b)`` for Bernoulli and categorical
    variables, and ``c_φ(z) = f(σ_λ(z)) + r_ρ(z)`` for discrete models).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.estimator import protect_parameters
from relaxit_plugins._relaxed_cv import law, relaxed_cv_estimate

__all__ = ["RelaxEstimator", "ControlNetwork"]


class ControlNetwork(torch.nn.Module):
    """``r_ρ(x) = w₂ᵀ tanh(W₁ (2x - 1) + b₁) + b₂`` on relaxed vectors ``x`` of ``D`` values
    (the authors' ``QFunc``), the output layer at zero; ``[..., D] -> [...]``.

    ``W₁ (2x - 1) + b₁`` is evaluated as ``(2 W₁) x + (b₁ - W₁ 1)``: one matrix product, no
    ``[..., D]`` temporaries.  Initialisation is deterministic (seed 0): ``W₁`` normal with
    variance ``1/D``, ``b₁`` normal with scale 0.1.
    """

    def __init__(self, d: int, hidden: int):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(hidden, d, generator=gen) / math.sqrt(d))
        self.b1 = torch.nn.Parameter(torch.randn(hidden, generator=gen) * 0.1)
        self.w2 = torch.nn.Parameter(torch.zeros(hidden))
        self.b2 = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        w1 = self.w1.to(dt)
        h = torch.tanh(F.linear(x, 2 * w1, self.b1.to(dt) - w1.sum(1)))
        return h @ self.w2.to(dt) + self.b2.to(dt)


class RelaxEstimator(relaxit_core.EstimatorBase):
    r"""RELAX: REINFORCE with a learned control-variate network, trained on the estimator's variance.

    With ``b = H(z)``, ``z`` the relaxed variable (Bernoulli: ``z = logits + L``, ``L``
    logistic; categorical: ``z = log p + G``, ``G`` Gumbel), ``z̃ ~ p(z | b)`` the
    conditional sample (Appendix B; the conditional Gumbel for categorical) and a
    differentiable ``c_φ``, the estimate of ``∇_logits E[f(b)]`` is (eq. 8, Algorithm 2)::

        ĝ = [f(b) - c_φ(z̃)] ∇ log p(b) + ∇ c_φ(z) - ∇ c_φ(z̃)

    unbiased for every ``φ``.  Here ``c_φ(z) = η f(σ_λ(z)) + r_ρ(σ_λ(z))`` (Appendix B's form
    for discrete models, with a learned scale ``η``): ``σ_λ`` is ``sigmoid(z/λ)`` or
    ``softmax(z/λ)`` and ``r_ρ(x) = w₂ᵀ tanh(W₁ (2x - 1) + b₁) + b₂`` is a one-hidden-layer
    tanh network of width ``hidden`` that reads the *whole* relaxed vector ``x`` of one
    objective event — the ``D`` values the objective reduces to one number (Bernoulli: the
    trailing batch dimensions it sums; categorical: those times the ``K`` categories) — as
    the paper's network and the authors' code do (``duvenaud/relax``: ``pytorch_toy.py``'s
    ``QFunc`` reads ``2 σ_λ(z) - 1`` through ``Linear(D, hidden)``, tanh, ``Linear(hidden, 1)``;
    ``mnist_vae.py``'s ``Q_func`` the same with ReLU).  Its output layer starts at zero, so an
    untrained RELAX is REBAR with ``η = eta``, ``λ = tau``.  ``relaxation=False`` drops the
    ``η f(σ_λ(z))`` term (``c_φ = r_ρ``, as in the paper's toy problem).

    The network's size depends on ``D``: give ``latents=D`` to create it with the estimator
    (then a call with another ``D`` raises :class:`~relaxit_core.ParameterError`), or leave
    ``latents`` out and it is created at the first ``estimate()`` that meets a new ``D``
    (one network per ``D``, deterministic initialisation).  An optimiser only trains the
    parameters it was given: without ``latents``, build it after the first ``estimate()``.

    ``φ = (η, log λ, ρ)`` are parameters of this module; in the same ``backward()`` they
    receive ``∂ Σ ĝ² / ∂φ``, the gradient of the single-estimate variance (Algorithm 1:
    ``E[ĝ]`` does not depend on ``φ``).  Hand ``estimator.parameters()`` to an optimiser.
    Nothing of that term reaches the logits' producer or the objective's parameters, which
    get ``ĝ`` and ``mean_s ∂f(b_s)/∂θ_f`` respectively.  ``logits`` may be any tensor,
    leaf or not.

    ``num_samples = S``: the mean of ``S`` independent single-sample RELAX estimates.
    Cost: ``3S`` objective evaluations in two calls, ``b`` (``S`` rows; its backward pass reaches
    only the objective's parameters) and ``σ_λ(z)``, ``σ_λ(z̃)`` (``2S`` rows, reaching only the
    logits and the control variate; ``S`` evaluations without the relaxation term), the
    network on ``2S`` relaxed vectors (one ``D × hidden`` matrix product), and two backward
    passes through them (the second differentiates ``ĝ`` for the variance objective: a
    Hessian-vector product through the objective).  Samples are exactly
    0/1 or one-hot (``family``, required); the law is ``Bernoulli(logits)`` or ``OneHotCategorical(logits)``
    (``log_prob`` is the PMF).

    Maths:
        :Law: :math:`b = H(z)` with the relaxed variable :math:`z = \theta + L` (Bernoulli, :math:`L`
            logistic) or :math:`z = \log p + G` (categorical, :math:`G` Gumbel); :math:`\tilde z \sim p(z \mid b)`
            (Grathwohl et al. 2018, Appendix B).
        :Estimator: REINFORCE with a learned control variate :math:`c_\phi` (Grathwohl et al. 2018,
            eq. 8 and Algorithm 2):

            .. math::
                \hat g = \bigl[f(b) - c_\phi(\tilde z)\bigr] \nabla_\theta \log p(b)
                + \nabla_\theta c_\phi(z) - \nabla_\theta c_\phi(\tilde z), \qquad
                c_\phi(z) = \eta f(\sigma_\lambda(z)) + r_\rho(z) .
        :Gradient: unbiased for every :math:`\phi = (\eta, \lambda, \rho)`, which follow
            :math:`\partial \sum \hat g^2 / \partial \phi` (Algorithm 1).
        :Cost: :math:`3S` objective evaluations (:math:`S` without the relaxation term), the network on
            :math:`2S` inputs and two backward passes.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("relax", family="categorical", hidden=8, latents=8)
        >>> logits = torch.zeros(2, 4, requires_grad=True)
        >>> out = est.estimate(lambda z: (z[..., 0] - 0.45).pow(2).sum(-1), num_samples=2, logits=logits)
        >>> out.surrogate.backward()
        >>> logits.grad.shape, est.eta.grad is not None
        (torch.Size([2, 4]), True)
    """

    name: ClassVar[str] = "relax"
    family: ClassVar[str] = "bernoulli"
    families: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical")
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Grathwohl, Choi, Wu, Roeder & Duvenaud (2018), Backpropagation through the Void: "
        "Optimizing control variates for black-box gradient estimation, ICLR, eq. 8, "
        "Algorithms 1-2, Appendix B"
    )
    example_config: ClassVar[dict] = {"family": "bernoulli"}
    """The config of the docs' generated example: ``family`` is required."""
    conformance_configs = (
        {"family": "bernoulli"},
        {"family": "categorical"},
        {"family": "bernoulli", "relaxation": False, "hidden": 4},
    )
    reductions: ClassVar[tuple[str, ...]] = ("mean",)

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`RelaxEstimator`."""

        name: Literal["relax"] = "relax"
        family: Literal["bernoulli", "categorical"] = Field(
            description="The discrete law: independent Bernoulli or one-hot categorical (required)."
        )
        hidden: int = Field(16, ge=1, le=65536, description="Width of the control-variate network r_ρ.")
        latents: int | None = Field(
            None, ge=1, le=2**24,
            description="Size D of the relaxed vector of one objective event (the network's input); "
            "None: the network is created at the first estimate() with a new D.",
        )
        relaxation: bool = Field(True, description="Include η f(σ_λ(z)) in the control variate (3 objective evaluations per sample).")
        tau: float = Field(0.5, gt=0, le=1e3, description="Initial temperature λ of the relaxation term.")
        eta: float = Field(1.0, ge=-1e3, le=1e3, description="Initial scale η of the relaxation term.")

        @field_validator("tau", mode="before")
        @classmethod
        def _tau_not_scheduled(cls, value):
            if isinstance(value, Mapping) or hasattr(value, "schedule"):
                raise ValueError(
                    "RELAX learns its temperature: tau is its initial value (a number) and cannot be a schedule"
                )
            return value

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.eta = torch.nn.Parameter(torch.tensor(float(self.config.eta)))
        self.log_tau = torch.nn.Parameter(torch.tensor(math.log(self.config.tau)))
        self.nets = torch.nn.ModuleDict()
        """The control-variate networks ``r_ρ``, keyed by the input size ``D`` (as a string)."""
        if self.config.latents is not None:
            self.nets[str(self.config.latents)] = ControlNetwork(self.config.latents, self.config.hidden)

    def network(self, soft: torch.Tensor, keep_ndim: int) -> torch.Tensor:
        """``r_ρ`` on the relaxed values ``soft``, reading every dimension from ``keep_ndim`` on as
        one vector of ``D`` values -> shape ``soft.shape[:keep_ndim]``."""
        x = soft.flatten(keep_ndim) if soft.dim() > keep_ndim else soft.unsqueeze(-1)
        d = x.shape[-1]
        key = str(d)
        if key not in self.nets:
            if self.config.latents is not None:
                raise relaxit_core.ParameterError(
                    f"relax: the control-variate network reads latents={self.config.latents} relaxed "
                    f"values per objective event, the objective's events hold {d}"
                )
            self._add_network(d)
        return self.nets[key](x)

    def _add_network(self, d: int) -> None:
        net = ControlNetwork(d, self.config.hidden).to(device=self.eta.device, dtype=self.eta.dtype)
        self.nets[str(d)] = net.requires_grad_(self.log_tau.requires_grad)
        protect_parameters(self, self.name)  # its parameters skip non-finite updates too

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Networks made at the first estimate() (no ``latents``) are state like any other: a
        # state dict brings the networks it holds (a fresh estimator can load a trained one)
        # and drops the ones it lacks (restoring a state saved before they were made).
        if self.config.latents is None:
            held = {k[len(prefix) + 5:].split(".", 1)[0] for k in state_dict if k.startswith(prefix + "nets.")}
            for key in [k for k in self.nets if k not in held]:
                del self.nets[key]
            for key in sorted(held - set(self.nets)):
                if key.isdigit():
                    self._add_network(int(key))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def build_distribution(self, logits):
        return law(self.family, logits)

    def evaluations_per_sample(self, *, batch_ndim=0, **params):
        """Three objective rows per hard sample with the relaxation term (``b``, ``σ_λ(z)``,
        ``σ_λ(z̃)``), one without it."""
        return 3 if self.config.relaxation else 1

    def estimate(self, objective, *, num_samples=1, reduce="mean", **params):
        num_samples = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)  # argument checks and validation
        logits = self.check_params(params)["logits"]
        dt = logits.dtype
        relax = self.config.relaxation
        return relaxed_cv_estimate(
            self.name, self.family, objective, num_samples, logits,
            tau=self.log_tau.to(dt).exp(), eta=self.eta.to(dt) if relax else None,
            network=self.network, learned=self._learned, dist=dist,
        )

    def _learned(self) -> list[torch.Tensor]:
        """The parameters trained by the variance objective (read after the network exists)."""
        relax = self.config.relaxation
        return [p for p in self.parameters() if p.requires_grad and (relax or p is not self.eta)]


@relaxit_core.hookimpl
def relaxit_estimators():
    return [RelaxEstimator]
