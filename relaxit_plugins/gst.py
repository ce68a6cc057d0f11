"""Gapped straight-through (GST) estimator for one-hot categorical variables.

References:
    Fan, Chi, Rudnicky & Ramadge (2022), *Training Discrete Deep Generative Models via
    Gapped Straight-Through Estimator*, ICML (arXiv:2206.07235) — the gapped perturbation of
    the logits (GST-1.0 with a constant gap, GST-p with a gap set by the sampled category's
    probability); the authors' code, ``gst_mover`` in ``model/basic.py`` of
    github.com/chijames/GST, settles the details (the moves are computed on detached logits;
    the ``nd_gst`` modes of its scripts keep them attached).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

import torch
from pydantic import Field, Strict

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.schedules import Temperature
from relaxit_plugins._straight_through_categorical import OneHotStraightThrough

__all__ = ["GappedStraightThrough", "GSTEstimator", "gapped_logits"]

_P_SHRINK = 1.0 - 1e-5
"""GST-p evaluates its gap at ``π · (1 − 1e-5)`` (as the authors' code) so that ``π = 1`` stays finite."""


def gapped_logits(theta: torch.Tensor, hard: torch.Tensor, gap: float | str = 1.0, *, detach: bool = True) -> torch.Tensor:
    r"""GST's perturbed logits ``m = θ + δ`` for the one-hot sample ``hard``.

    With ``i`` the sampled category and ``θ_max = max_k θ_k``:

    - ``m_i = θ_max`` (the sampled category is moved up to the largest logit);
    - ``m_j = min(θ_j, θ_max − κ)`` for ``j ≠ i`` (the others are pushed at least ``κ`` below),

    so ``argmax m = i`` with a gap of at least ``κ``.  ``gap`` is ``κ`` (a number, GST-κ),
    or ``"p"`` (GST-p): ``κ = −log(1 − π_i) / π_i``, ``π = softmax(θ)``.  With ``detach=True``
    (the paper's GST) the move ``δ`` is a constant: ``∂m/∂θ = I``; with ``detach=False``
    it is differentiated too (the authors' ``nd_gst`` variant).

    ``theta`` broadcasts against ``hard`` (``[..., K]``).
    """
    t = theta.detach() if detach else theta
    picked = hard > 0
    t_max = t.max(-1, keepdim=True).values
    if isinstance(gap, str):
        # in float32 at least: in float16 or bfloat16, π (1 - 1e-5) rounds to 1 when π = 1 and
        # the gap was infinite (NaN at a masked category)
        ct = torch.promote_types(t.dtype, torch.float32)
        pi = (t.to(ct).softmax(-1) * hard.to(ct)).sum(-1, keepdim=True) * _P_SHRINK
        kappa = (-torch.log1p(-pi) / pi).to(t.dtype)
    else:
        kappa = gap
    # where() rather than products, so that a logit of -inf (a masked category) gives no NaN
    up = torch.where(picked, t_max - t, torch.zeros_like(t + hard))
    down = torch.where(picked, torch.zeros_like(up), (t - t_max + kappa).clamp_min(0.0))
    return theta + (up - down)


class GappedStraightThrough(OneHotStraightThrough):
    r"""One-hot ``Categorical(softmax(logits))`` whose ``rsample`` backward pass is GST.

    Forward: ``D = one_hot(argmax(θ + g))``, exactly categorical.  Backward: the gradient
    of ``softmax(m / τ)`` with ``m`` = :func:`gapped_logits` ``(θ, D, gap)``; with
    ``detach=True`` that is ``J(softmax(m/τ)) / τ · ∇_z f(D)``, ``J(p) = diag(p) − ppᵀ``.
    ``log_prob`` is the categorical PMF of the one-hot value.

    Example:
        >>> d = GappedStraightThrough(logits=torch.zeros(4, requires_grad=True), temperature=1.0, gap=1.0)
        >>> z = d.rsample((2,))
        >>> z.sum(-1).tolist(), z.requires_grad
        ([1.0, 1.0], True)
    """

    extra_attrs = ("temperature", "gap", "detach")

    def __init__(self, probs=None, logits=None, temperature=1.0, gap=1.0, detach=True, validate_args=None):
        super().__init__(probs=probs, logits=logits, validate_args=validate_args,
                         temperature=temperature, gap=gap, detach=detach)

    def _surrogate(self, hard, noise):
        m = gapped_logits(self.raw_logits, hard, self.gap, detach=self.detach)
        return (m / self.temperature).softmax(-1)


class GSTEstimator(relaxit_core.EstimatorBase):
    r"""Gapped straight-through (GST; Fan et al. 2022): ST gradients through softmax of logits moved to make the sample their argmax with a gap.

    Forward: ``D ~ Categorical(softmax(logits))``, exactly one-hot.  Backward: the
    straight-through gradient of ``softmax(m / τ)``, where ``m`` is the logits minimally
    moved so that ``D`` is their argmax by at least the gap ``κ`` (:func:`gapped_logits`).
    It replaces the Gumbel-softmax's noise (whose soft sample may disagree with ``D``) by a
    deterministic perturbation consistent with ``D``, without resampling and without any
    extra objective evaluation: one evaluation per sample.  Biased for the discrete
    objective, like every straight-through estimator.

    Variants (config fields): ``gap`` — a number (GST-1.0 is ``gap=1.0``, the default; the
    paper's experiments also use 0.8 and 1.2) or ``"p"`` (GST-p, ``κ = −log(1 − π_D)/π_D``);
    ``detach`` — ``True`` (the paper's GST) or ``False`` (the authors' ``nd_gst``, which also
    differentiates the move).  ``tau`` may be scheduled.

    Maths:
        :Law: :math:`D \sim \operatorname{Categorical}(\operatorname{softmax}(\theta))`, one-hot
            (Gumbel-max), :math:`i` the sampled category.
        :Estimator: straight-through through the gapped logits :math:`m` (Fan et al. 2022, the
            GST construction; equation number not checked here), with
            :math:`\theta_{\max} = \max_k \theta_k`:

            .. math::
                m_i = \theta_i + (\theta_{\max} - \theta_i), \qquad
                m_j = \theta_j - \max(0, \theta_j - \theta_{\max} + \kappa) \ (j \ne i), \qquad
                \hat g = \frac{1}{\tau} J\bigl(\operatorname{softmax}(m/\tau)\bigr) \nabla_D f(D),

            :math:`J(p) = \operatorname{diag}(p) - pp^\top`, the moves held constant;
            :math:`\kappa` = ``gap``, or :math:`\kappa = -\log(1 - \pi_i)/\pi_i` for GST-p.
        :Gradient: biased, :math:`\mathbb{E}[\hat g] \ne \nabla_\theta \mathbb{E}[f(D)]` in general
            (a straight-through estimator); no extra objective evaluation.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("gst", gap="p", tau=0.5)
        >>> logits = torch.zeros(2, 5, requires_grad=True)
        >>> out = est.estimate(lambda z: z[..., 0].sum(-1), num_samples=4, logits=logits)
        >>> out.samples.shape, out.value.shape
        (torch.Size([4, 2, 5]), torch.Size([]))
    """

    name: ClassVar[str] = "gst"
    family: ClassVar[str] = "categorical"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.LOG_PROB, C.HARD, C.ENUMERATE_SUPPORT, C.KL})
    reference: ClassVar[str] = (
        "Fan, Chi, Rudnicky & Ramadge (2022), Training Discrete Deep Generative Models via Gapped "
        "Straight-Through Estimator, ICML, arXiv:2206.07235 (GST-κ and GST-p); authors' code "
        "chijames/GST, model/basic.py gst_mover"
    )
    conformance_configs = ({}, {"gap": "p", "tau": 0.5}, {"gap": 0.8, "detach": False, "tau": 0.1})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`GSTEstimator`."""

        name: Literal["gst"] = "gst"
        tau: Temperature = Field(1.0, description="Temperature τ of softmax(m/τ) in the backward pass.")
        gap: Union[Literal["p"], Annotated[float, Strict(), Field(gt=0, le=100)]] = Field(
            1.0, description="The gap κ: a number in (0, 100] (GST-κ; 1.0 is GST-1.0) or 'p' (GST-p).",
        )
        detach: bool = Field(
            True, description="Treat the move of the logits as a constant (the paper's GST); False: nd_gst.",
        )

    def build_distribution(self, logits=None, probs=None):
        return GappedStraightThrough(
            probs=probs, logits=logits, temperature=self.current_temperature("tau"),
            gap=self.config.gap, detach=self.config.detach,
        )


@relaxit_core.hookimpl
def relaxit_estimators():
    return [GSTEstimator]
