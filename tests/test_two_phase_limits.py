"""The two-phase form (``draw`` then ``from_costs``, used by :class:`relaxit.pyro.EstimatorELBO`)
follows the non-finite rule as ``estimate()`` does: limits sampled as themselves, finite values
and gradients, zero gradient on the limit entries; NaN and categorical ``+inf`` refused."""

from __future__ import annotations

import pytest
import torch

import relaxit
from relaxit_core import ParameterError

INF = float("inf")


def _two_phase():
    out = []
    for info in relaxit.available():
        for family in info.families:
            if family not in ("bernoulli", "categorical"):
                continue
            cfg = {"family": family} if len(info.families) > 1 else {}
            est = relaxit.get(info.name, **cfg)
            if getattr(est, "cost_samples", None) is not None:
                out.append(pytest.param(est, family, id=f"{info.name}-{family}"))
    return out


@pytest.mark.parametrize(("est", "family"), _two_phase())
def test_limits_on_the_two_phase_route(est, family):
    if family == "bernoulli":
        logits = torch.tensor([[0.3, INF, -INF, -0.2]], dtype=torch.float64, requires_grad=True)
    else:
        logits = torch.tensor([[[0.3, -INF, 0.1], [-INF, 0.5, -INF]]], dtype=torch.float64, requires_grad=True)
    s = max(4, est.min_num_samples)
    draw = est.draw(s, logits=logits)
    z = draw.samples
    assert bool(torch.isfinite(z).all())
    if family == "bernoulli":
        assert bool((z[..., 1] == 1).all()) and bool((z[..., 2] == 0).all())
        costs = ((z - 0.4) ** 2 * torch.arange(1.0, 5.0, dtype=z.dtype)).sum(-1)
    else:
        masked = torch.isinf(logits.detach()).expand_as(z)
        assert bool((z[masked] == 0).all())
        costs = ((z - 0.4) ** 2 * torch.arange(1.0, 4.0, dtype=z.dtype)).sum((-1, -2))
    out = est.from_costs(costs, draw, logits=logits)
    assert bool(torch.isfinite(out.value).all()) and bool(torch.isfinite(out.surrogate).all())
    out.surrogate.sum().backward()
    assert bool(torch.isfinite(logits.grad).all())
    assert bool((logits.grad[torch.isinf(logits.detach())] == 0).all())


@pytest.mark.parametrize(("est", "family"), _two_phase())
@pytest.mark.parametrize("bad", [float("nan"), INF])
def test_refused_values_on_the_two_phase_route(est, family, bad):
    if family == "bernoulli" and bad == INF:
        pytest.skip("a Bernoulli +inf logit is a limit, not an error")
    shape = (1, 3) if family == "bernoulli" else (1, 2, 3)
    logits = torch.zeros(shape)
    logits.view(-1)[1] = bad
    with pytest.raises(ParameterError, match="logits"):
        est.draw(max(2, est.min_num_samples), logits=logits)
