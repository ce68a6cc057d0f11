"""Hard concrete gates: the stretched and rectified binary Concrete of Louizos et al. (2018).

References:
    Louizos, Welling & Kingma (2018), *Learning Sparse Neural Networks through L0
    Regularization*, ICLR — eqs. (9)-(10): ``u ~ U(0, 1)``,
    ``s = sigmoid((log u - log(1 - u) + log α) / β)``, ``s̄ = s (ζ - γ) + γ``,
    ``z = min(1, max(0, s̄))``; eq. (12): the expected-L0 penalty
    ``Σ_j sigmoid(log α_j - β log(-γ/ζ))``; eq. (13): the test-time gate
    ``min(1, max(0, sigmoid(log α)(ζ - γ) + γ))``.  Default ``β = 2/3``, ``γ = -0.1``,
    ``ζ = 1.1`` (their Sec. 4).
    Maddison, Mnih & Teh (2017), *The Concrete Distribution*, ICLR — the binary Concrete
    density and CDF used for the atoms.

The law of ``z`` is mixed.  With ``Q_s(t) = sigmoid(β logit(t) - log α)`` the CDF of the
binary Concrete ``s``, the atoms are
``P(z = 0) = Q_s(-γ/(ζ-γ)) = sigmoid(β log(-γ/ζ) - log α)`` and
``P(z = 1) = 1 - Q_s((1-γ)/(ζ-γ)) = sigmoid(log α - β log((1-γ)/(ζ-1)))``; on ``(0, 1)``
the density is the binary Concrete density of ``s = (z-γ)/(ζ-γ)`` divided by ``ζ - γ``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.distributions import logistic_like
from relaxit_plugins._special import compute_dtype as _compute_dtype
from relaxit_plugins._special import hyper_tensors, log_

__all__ = ["HardConcrete", "HardConcreteEstimator", "L0Gate", "L0Linear", "expected_l0"]

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


def _check_hyper(beta: float, gamma: float, zeta: float) -> None:
    if not (beta > 0 and gamma < 0 and zeta > 1):
        raise ValueError(f"hard concrete needs beta > 0, gamma < 0 < 1 < zeta; got beta={beta}, gamma={gamma}, zeta={zeta}")


def _hyper(log_alpha, beta, gamma, zeta, validate_args=None):
    """``log_alpha`` and the hyper-parameters broadcast together: each of ``beta``, ``gamma``,
    ``zeta`` is a number or a per-element tensor."""
    return hyper_tensors(log_alpha, "hard concrete", {
        "beta": (beta, lambda v: v > 0, "> 0"),
        "gamma": (gamma, lambda v: v < 0, "< 0"),
        "zeta": (zeta, lambda v: v > 1, "> 1"),
    }, validate_args)


def expected_l0(log_alpha: torch.Tensor, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA) -> torch.Tensor:
    """``P(z != 0) = sigmoid(log α - β log(-γ/ζ))`` per gate (Louizos et al. 2018, eq. 12);
    sum it for the expected number of non-zero gates.  Differentiable in ``log_alpha`` (and in
    ``beta``, ``gamma``, ``zeta`` when they are tensors)."""
    log_alpha, h = _hyper(log_alpha, beta, gamma, zeta)
    return torch.sigmoid(log_alpha - h["beta"] * log_(-h["gamma"] / h["zeta"]))


class HardConcrete(TorchDistribution):
    r"""Hard concrete law on ``[0, 1]`` (Louizos et al. 2018, eqs. 9-10).

    ``rsample`` draws one uniform per gate (per element of ``sample_shape + batch_shape``),
    as logistic noise ``L = log u - log(1 - u)``, and returns
    ``clamp(sigmoid((log α + L)/β)(ζ - γ) + γ, 0, 1)``; its gradient is zero on the atoms.

    ``log_prob`` is w.r.t. Lebesgue measure on ``(0, 1)`` plus unit point masses at 0 and 1:
    at exactly 0 it is ``log P(z=0) = -softplus(log α - β log(-γ/ζ))``, at exactly 1
    ``log P(z=1) = -softplus(β log((1-γ)/(ζ-1)) - log α)``, and inside, with
    ``y = log(z-γ) - log(ζ-z)`` and ``v = β y - log α``,
    ``log p(z) = log β - v - 2 softplus(-v) - log(z-γ) - log(ζ-z) + log(ζ-γ)``.
    16-bit parameters are computed in float32 and returned in their own dtype.

    ``beta``, ``gamma`` and ``zeta`` are numbers or per-element tensors (broadcast with
    ``log_alpha``; the batch shape is their common shape), so that they can be learned per
    gate as relaxit 1.x's ``HardConcrete(alpha, beta, xi, gamma)`` allowed (``xi`` is ``zeta``).

    Example:
        >>> d = HardConcrete(torch.tensor([0.0, 5.0]))
        >>> z = d.rsample((4,))
        >>> z.shape
        torch.Size([4, 2])
        >>> d.prob_zero() + d.prob_one() < 1
        tensor([True, True])
        >>> d.expected_l0()  # eq. (12)
        tensor([0.8318, 0.9986])
    """

    arg_constraints = {"log_alpha": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, log_alpha: torch.Tensor, beta: float | torch.Tensor = BETA, gamma: float | torch.Tensor = GAMMA,
                 zeta: float | torch.Tensor = ZETA, validate_args: bool | None = None):
        if not isinstance(log_alpha, torch.Tensor):
            log_alpha = torch.as_tensor(log_alpha, dtype=torch.get_default_dtype())
        self.log_alpha, h = _hyper(log_alpha, beta, gamma, zeta, validate_args)
        self.beta, self.gamma, self.zeta = h["beta"], h["gamma"], h["zeta"]
        super().__init__(self.log_alpha.shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HardConcrete, _instance)
        batch_shape = torch.Size(batch_shape)
        new.log_alpha = self.log_alpha.expand(batch_shape)
        new.beta, new.gamma, new.zeta = (v.expand(batch_shape) if isinstance(v, torch.Tensor) else v
                                         for v in (self.beta, self.gamma, self.zeta))
        super(HardConcrete, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, log_alpha=(), beta=(), gamma=(), zeta=()):
        return torch.broadcast_shapes(log_alpha, beta, gamma, zeta), torch.Size()

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(torch.Size(sample_shape))
        noise = logistic_like(shape, self.log_alpha)  # one uniform per gate
        s = torch.sigmoid((self.log_alpha + noise) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0, 1)

    # log-masses of the atoms, in the compute dtype
    def _log_atoms(self, log_alpha, b, g, z):
        log0 = -F.softplus(log_alpha - b * log_(-g / z))
        log1 = -F.softplus(b * log_((1 - g) / (z - 1)) - log_alpha)
        return log0, log1

    def _hyper_in(self, ct, like):
        return tuple(v.to(ct).expand_as(like) if isinstance(v, torch.Tensor) else v
                     for v in (self.beta, self.gamma, self.zeta))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_alpha, value = torch.broadcast_tensors(self.log_alpha, value)
        ct = _compute_dtype(value.dtype)
        x, la = value.to(ct), log_alpha.to(ct)
        b, g, z = self._hyper_in(ct, la)
        log0, log1 = self._log_atoms(la, b, g, z)
        xi = x.clamp(0, 1)  # keep the unused branch finite
        log_lo, log_hi = (xi - g).log(), (z - xi).log()
        v = b * (log_lo - log_hi) - la
        dens = log_(b) - v - 2 * F.softplus(-v) - log_lo - log_hi + log_(z - g)
        out = torch.where(x <= 0, log0, torch.where(x >= 1, log1, dens))
        return out.to(value.dtype)

    def prob_zero(self) -> torch.Tensor:
        """Mass of the atom at 0: ``sigmoid(β log(-γ/ζ) - log α)``."""
        return torch.sigmoid(self.beta * log_(-self.gamma / self.zeta) - self.log_alpha)

    def prob_one(self) -> torch.Tensor:
        """Mass of the atom at 1: ``sigmoid(log α - β log((1-γ)/(ζ-1)))``."""
        return torch.sigmoid(self.log_alpha - self.beta * log_((1 - self.gamma) / (self.zeta - 1)))

    def expected_l0(self) -> torch.Tensor:
        """``P(z != 0)`` per gate, the expected-L0 penalty of Louizos et al. (2018), eq. (12)."""
        return expected_l0(self.log_alpha, self.beta, self.gamma, self.zeta)

    def deterministic_gate(self) -> torch.Tensor:
        """The test-time gate of eq. (13): ``clamp(sigmoid(log α)(ζ - γ) + γ, 0, 1)``."""
        return (torch.sigmoid(self.log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0, 1)


class HardConcreteEstimator(relaxit_core.EstimatorBase):
    r"""Hard concrete (stretched and rectified binary Concrete) gates of L0 regularisation, pathwise.

    Louizos et al. (2018), eqs. (9)-(10): ``z = clamp(sigmoid((log_alpha + L) / beta) *
    (zeta - gamma) + gamma, 0, 1)``, one logistic noise ``L`` per gate.  The law has atoms
    at 0 and 1 in closed form (:class:`HardConcrete`; ``log_prob`` is w.r.t. Lebesgue
    measure plus unit point masses at 0 and 1), so exact zeros occur during training while
    the gradient flows through gates inside ``(0, 1)``.  The expected-L0 penalty of their
    eq. (12) is ``distribution(log_alpha=...).expected_l0()`` (or :func:`expected_l0`);
    :class:`L0Gate` and :class:`L0Linear` show how to prune a layer.  ``estimate`` draws
    ``num_samples`` gate vectors and differentiates through them (one objective
    evaluation).  Not ``HARD``: gates inside ``(0, 1)`` are continuous.

    ``beta``, ``gamma`` and ``zeta`` may also be given to ``distribution()`` / ``estimate()``
    as optional tensors (per gate, broadcast with ``log_alpha``); they override the config's
    numbers.

    Maths:
        :Law: the stretched and rectified binary Concrete (Louizos et al. 2018, eqs. 9-10): with
            :math:`u \sim \mathcal{U}(0, 1)`,

            .. math::
                s = \sigma\Bigl(\frac{\log u - \log(1 - u) + \log\alpha}{\beta}\Bigr), \qquad
                z = \min\bigl(1, \max(0, s(\zeta - \gamma) + \gamma)\bigr),

            which has atoms at 0 and 1.
        :Estimator: pathwise, :math:`\hat g = \frac1S \sum_s \nabla_{\log\alpha} f(z_s)` (eqs. 9-10); the
            expected-:math:`L_0` penalty is
            :math:`\sum_j \sigma\bigl(\log\alpha_j - \beta \log(-\gamma/\zeta)\bigr)` (eq. 12).
        :Gradient: :math:`\nabla_{\log\alpha} \mathbb{E}[f(z)]` under the gate law itself.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("hard_concrete")
        >>> log_alpha = torch.zeros(4, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 1).pow(2).sum(-1), num_samples=8, log_alpha=log_alpha)
        >>> out.surrogate.backward(); log_alpha.grad.shape
        torch.Size([4])
    """

    name: ClassVar[str] = "hard_concrete"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("log_alpha", "beta", "gamma", "zeta")
    optional_params: ClassVar[tuple[str, ...]] = ("beta", "gamma", "zeta")
    limit_params: ClassVar[tuple[str, ...]] = ("log_alpha",)  # a logit: ±inf are the closed/open gate
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.LOG_PROB})
    reference: ClassVar[str] = (
        "Louizos, Welling & Kingma (2018), Learning Sparse Neural Networks through L0 Regularization, "
        "ICLR, eqs. (9)-(10) (hard concrete), (12) (expected L0), (13) (test-time gate)"
    )
    conformance_configs = ({}, {"beta": 0.1, "gamma": -0.5, "zeta": 1.5})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`HardConcreteEstimator`."""

        name: Literal["hard_concrete"] = "hard_concrete"
        beta: float = Field(BETA, gt=0, le=1e3, description="Temperature β of the binary Concrete (2/3 in the paper).")
        gamma: float = Field(GAMMA, lt=0, ge=-1e3, description="Lower stretch limit γ < 0 (-0.1 in the paper).")
        zeta: float = Field(ZETA, gt=1, le=1e3, description="Upper stretch limit ζ > 1 (1.1 in the paper).")

    def build_distribution(self, log_alpha, beta=None, gamma=None, zeta=None):
        c = self.config
        return HardConcrete(log_alpha, beta=c.beta if beta is None else beta, gamma=c.gamma if gamma is None else gamma,
                            zeta=c.zeta if zeta is None else zeta)

    def example_params(self, batch_shape=(), *, event_size=3, dtype=torch.float32, device=None,
                       generator=None, extreme=False):
        shape = tuple(batch_shape)
        if extreme:
            n = max(1, int(torch.Size(shape).numel()))
            la = (30.0 * torch.tensor([1.0, -1.0], dtype=dtype).repeat((n + 1) // 2)[:n]).reshape(shape)
        else:
            la = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
        return {"log_alpha": la.to(device)}


class L0Gate(torch.nn.Module):
    """A vector of ``n`` hard concrete gates with learnable ``log_alpha`` (Louizos et al. 2018).

    ``forward()`` returns a gate vector of shape ``[n]``: a reparameterised sample in
    training mode (one uniform per gate, one draw per call), the test-time gate of eq. (13)
    in eval mode.  ``penalty()`` is the expected number of non-zero gates (eq. 12).
    ``log_alpha`` starts at ``log(1 - drop) - log(drop)`` plus ``N(0, 0.01²)`` noise
    (their code's ``droprate_init``).

    Example:
        >>> gate = L0Gate(5)
        >>> gate().shape, gate.penalty().shape
        (torch.Size([5]), torch.Size([]))
    """

    def __init__(self, n: int, *, drop_init: float = 0.5, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA):
        super().__init__()
        _check_hyper(beta, gamma, zeta)
        self.beta, self.gamma, self.zeta = beta, gamma, zeta
        mean = math.log(1 - drop_init) - math.log(drop_init)
        self.log_alpha = torch.nn.Parameter(mean + 0.01 * torch.randn(n))

    def law(self) -> HardConcrete:
        return HardConcrete(self.log_alpha, self.beta, self.gamma, self.zeta)

    def forward(self) -> torch.Tensor:
        law = self.law()
        return law.rsample() if self.training else law.deterministic_gate()

    def penalty(self) -> torch.Tensor:
        return self.law().expected_l0().sum()


class L0Linear(torch.nn.Module):
    """A linear layer whose input features are gated by an :class:`L0Gate` (group sparsity
    over the columns of the weight, Louizos et al. 2018, Sec. 4.1).

    ``y = (x * z) W^T + b``; features whose gate is 0 in eval mode can be pruned.

    Example:
        >>> layer = L0Linear(6, 2)
        >>> layer(torch.randn(3, 6)).shape
        torch.Size([3, 2])
        >>> _ = layer.eval(); layer.active_features().shape
        torch.Size([6])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **gate_kwargs):
        super().__init__()
        self.linear = torch.nn.Linear(in_features, out_features, bias=bias)
        self.gate = L0Gate(in_features, **gate_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.gate())

    def penalty(self) -> torch.Tensor:
        """Expected number of active input features (eq. 12)."""
        return self.gate.penalty()

    def active_features(self) -> torch.Tensor:
        """Boolean mask of the features whose test-time gate is non-zero."""
        return self.gate.law().deterministic_gate() > 0


@relaxit_core.hookimpl
def relaxit_estimators():
    return [HardConcreteEstimator]
