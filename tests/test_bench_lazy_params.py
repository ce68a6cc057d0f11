"""The bench trains parameters an estimator creates at its first ``estimate()``.

RELAX without ``latents`` creates its control-variate network when it first sees an objective
event (its input size); an optimiser built before that call would never train it.
"""

from __future__ import annotations

import torch

import relaxit
from relaxit.bench.tasks import adopt_new_parameters


def test_relax_network_created_at_first_estimate_is_trained():
    est = relaxit.get("relax", family="bernoulli")
    logits = torch.zeros(4, 6, requires_grad=True)
    opt = torch.optim.Adam([logits, *est.parameters()], lr=0.1)
    held = sum(len(g["params"]) for g in opt.param_groups)
    f = lambda z: ((z - 0.3) ** 2).sum(-1)  # noqa: E731
    out = est.estimate(f, num_samples=2, logits=logits)
    opt.zero_grad(set_to_none=True)
    out.surrogate.sum().backward()
    net = [p for p in est.nets.parameters()]
    assert net, "relax created no network"
    before = [p.detach().clone() for p in net]
    adopt_new_parameters(opt, est)
    assert sum(len(g["params"]) for g in opt.param_groups) == held + len(net)
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net)), "the network took no step"
    adopt_new_parameters(opt, est)  # idempotent: nothing new the second time
    assert sum(len(g["params"]) for g in opt.param_groups) == held + len(net)
