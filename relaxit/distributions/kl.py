"""relaxit 1.x's ``relaxit.distributions.kl``: ``kl_divergence``, with every adapter's KL that of its registered law.

``kl_divergence(p, q)`` between two adapters is ``kl_divergence(p.law, q.law)`` (registered
in ``relaxit.distributions._adapter``); between two
:class:`~relaxit.distributions.InvertibleGaussian` laws it is exact for any two temperatures
(1.x's ignored them and returned one value per Gaussian coordinate).
"""

from __future__ import annotations

from torch.distributions import kl_divergence, register_kl

import relaxit.distributions._adapter  # noqa: F401  (registers the adapters' KL)

__all__ = ["kl_divergence", "register_kl"]
