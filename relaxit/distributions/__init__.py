"""relaxit 1.x's ``relaxit.distributions``: its classes, names and constructor signatures,
each a thin adapter onto a registered law.

Programs written for relaxit 1.2.1 keep working::

    from relaxit.distributions import InvertibleGaussian, HardConcrete, GumbelSoftmaxTopK

Each class builds the law of a registered estimator (``relaxit.get(name, ...).distribution(...)``)
and delegates to it, so it samples and scores exactly as that law; where 1.x was wrong,
the numbers change (see the docs' "Upgrading from relaxit 1.x" page, class by class).
New code can use the registry directly: ``relaxit.get(name, ...)`` gives the estimator,
its ``distribution(...)`` the law and its ``estimate(...)`` the gradient estimate.

>>> import torch
>>> from relaxit.distributions import HardConcrete
>>> d = HardConcrete(alpha=torch.full((3,), 2.0), beta=torch.tensor(2 / 3), xi=torch.tensor(1.1), gamma=torch.tensor(-0.1))
>>> type(d.law).__module__, d.batch_shape   # the registered hard_concrete law
('relaxit_plugins.hard_concrete', torch.Size([3]))

=====================================  ================================================
relaxit 1.x class                      registered law
=====================================  ================================================
GaussianRelaxedBernoulli               ``gaussian_relaxed_bernoulli``
CorrelatedRelaxedBernoulli             ``correlated_relaxed_bernoulli``
GumbelSoftmaxTopK                      ``gumbel_topk``
StraightThroughBernoulli               ``straight_through_bernoulli``
StochasticTimesSmooth                  ``stochastic_times_smooth``
InvertibleGaussian                     ``invertible_gaussian``
HardConcrete                           ``hard_concrete``
LogisticNormalSoftmax                  ``logistic_normal``
GeneralizedGumbelSoftmax(NP)           ``generalized_gumbel_softmax``
DecoupledStraightThroughGumbelSoftmax  ``decoupled_st_gumbel_softmax``
RebarRelaxation                        ``rebar`` (its ``relaxation()`` law)
=====================================  ================================================
"""

from __future__ import annotations

from relaxit.distributions.CorrelatedRelaxedBernoulli import CorrelatedRelaxedBernoulli
from relaxit.distributions.DecoupledStraightThroughGumbelSoftmax import DecoupledStraightThroughGumbelSoftmax
from relaxit.distributions.GaussianRelaxedBernoulli import GaussianRelaxedBernoulli
from relaxit.distributions.GeneralizedGumbelSoftmax import GeneralizedGumbelSoftmax, GeneralizedGumbelSoftmaxNP
from relaxit.distributions.GumbelSoftmaxTopK import GumbelSoftmaxTopK
from relaxit.distributions.HardConcrete import HardConcrete
from relaxit.distributions.InvertibleGaussian import InvertibleGaussian
from relaxit.distributions.LogisticNormalSoftmax import LogisticNormalSoftmax
from relaxit.distributions.RebarRelaxation import RebarRelaxation
from relaxit.distributions.StochasticTimesSmooth import StochasticTimesSmooth
from relaxit.distributions.StraightThroughBernoulli import StraightThroughBernoulli
from relaxit.distributions import approx, kl

__all__ = [
    "CorrelatedRelaxedBernoulli",
    "DecoupledStraightThroughGumbelSoftmax",
    "GaussianRelaxedBernoulli",
    "GeneralizedGumbelSoftmax",
    "GeneralizedGumbelSoftmaxNP",
    "GumbelSoftmaxTopK",
    "HardConcrete",
    "InvertibleGaussian",
    "LogisticNormalSoftmax",
    "RebarRelaxation",
    "StochasticTimesSmooth",
    "StraightThroughBernoulli",
    "approx",
    "kl",
]
