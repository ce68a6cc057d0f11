"""relaxit 1.x's ``relaxit.distributions.approx``: the Laplace bridge between Dirichlet and logistic normal.

Both functions use the ``logistic_normal`` plugin's ``laplace_bridge`` and
``dirichlet_from_logistic_normal`` (Hobbhahn et al. 2022, eqs. 5-6), found through the
registry.  The logistic normal's ``scale`` is a standard deviation, ``sqrt(Σ_kk)``; relaxit 1.x
passed the variance ``Σ_kk`` as the scale, so its approximating law was too wide (or too
narrow where ``Σ_kk < 1``), and read ``scale`` back as a variance.
"""

from __future__ import annotations

from pyro.distributions import Dirichlet

from relaxit.distributions._adapter import plugin_module
from relaxit.distributions.LogisticNormalSoftmax import LogisticNormalSoftmax

__all__ = ["lognorm_approximation_fn", "dirichlet_approximation_fn"]


def lognorm_approximation_fn(dirichlet_distribution) -> LogisticNormalSoftmax:
    """The logistic normal that is the Laplace approximation of ``dirichlet_distribution`` (a
    ``Dirichlet``) in the softmax basis."""
    bridge = plugin_module("logistic_normal")
    loc, scale = bridge.laplace_bridge(dirichlet_distribution.concentration)
    return LogisticNormalSoftmax(loc, scale)


def dirichlet_approximation_fn(lognorm_distribution: LogisticNormalSoftmax):
    """The Dirichlet whose Laplace approximation is ``lognorm_distribution`` (the inverse bridge;
    a Pyro ``Dirichlet``, as in 1.x)."""
    bridge = plugin_module("logistic_normal")
    alpha = bridge.dirichlet_from_logistic_normal(lognorm_distribution.loc, lognorm_distribution.scale)
    return Dirichlet(alpha)
