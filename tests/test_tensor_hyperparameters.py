"""Per-element hyper-parameters: an optional tensor argument of ``distribution()`` overrides the
config's number element by element.

For each estimator and hyper-parameter: a law built with the tensor ``[v_0, v_1]`` (one value
per batch element) draws, under one seed, exactly what the law built from the config
``field = v_j`` draws for element ``j``, and scores it the same; and the tensor receives a
gradient through ``rsample``.
"""

from __future__ import annotations

import pytest
import torch

import relaxit


def _g(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


F64 = dict(dtype=torch.float64)
CORR = torch.tensor([[1.0, 0.4, 0.0], [0.4, 1.0, -0.2], [0.0, -0.2, 1.0]], **F64)
VALUES = torch.tensor([0.0, 1.0, 3.0, 4.0], **F64)

# (estimator, config, argument == config field, the two values, base arguments, tensor shape)
CASES = [
    ("hard_concrete", {}, "beta", (0.3, 2.0), {"log_alpha": _g(2)}, (2,)),
    ("hard_concrete", {}, "gamma", (-0.05, -1.5), {"log_alpha": _g(2)}, (2,)),
    ("hard_concrete", {}, "zeta", (1.05, 2.5), {"log_alpha": _g(2)}, (2,)),
    ("gaussian_relaxed_bernoulli", {}, "sigma", (0.1, 2.0), {"loc": torch.sigmoid(_g(2))}, (2,)),
    ("invertible_gaussian", {}, "tau", (0.3, 2.0), {"loc": _g(2, 3), "scale": 0.5 + _g(2, 3).abs()}, (2,)),
    ("correlated_relaxed_bernoulli", {}, "tau", (0.3, 2.0), {"logits": _g(2, 3), "corr": CORR}, (2, 1)),
    ("generalized_gumbel_softmax", {}, "tau", (0.3, 2.0), {"logits": _g(2, 4), "values": VALUES}, (2,)),
    ("generalized_gumbel_softmax", {"hard": True}, "tau", (0.3, 2.0), {"logits": _g(2, 4), "values": VALUES}, (2,)),
    ("gumbel_topk", {"k": 2}, "tau", (0.3, 2.0), {"logits": _g(2, 5)}, (2,)),
    ("gumbel_topk", {"k": 2, "hard": True}, "tau", (0.3, 2.0), {"logits": _g(2, 5)}, (2,)),
    ("decoupled_st_gumbel_softmax", {}, "tau_forward", (0.3, 2.0), {"logits": _g(2, 4)}, (2,)),
    ("decoupled_st_gumbel_softmax", {}, "tau_backward", (0.3, 2.0), {"logits": _g(2, 4)}, (2,)),
]


@pytest.mark.parametrize("name, config, field, values, base, shape", CASES,
                         ids=[f"{c[0]}-{c[2]}{'-hard' if c[1].get('hard') else ''}" for c in CASES])
def test_tensor_hyperparameter_is_the_config_value_per_element(name, config, field, values, base, shape):
    est = relaxit.get(name, **config)
    tensor = torch.tensor(values, **F64).reshape(shape).requires_grad_(True)
    law = est.distribution(**base, **{field: tensor})
    assert law.batch_shape == relaxit.get(name, **config).distribution(**base).batch_shape
    torch.manual_seed(7)
    x = law.rsample((5,))
    for j, v in enumerate(values):
        ref = relaxit.get(name, **config, **{field: v}).distribution(**base)
        torch.manual_seed(7)
        y = ref.rsample((5,))
        assert torch.allclose(x[:, j], y[:, j], rtol=1e-12, atol=1e-12), f"element {j} differs from {field}={v}"
        try:
            want = ref.log_prob(y.detach())
        except NotImplementedError:  # laws without a density (soft top-k, soft GenGS)
            continue
        got = law.log_prob(x.detach())
        assert torch.allclose(got[:, j], want[:, j], rtol=1e-10, atol=1e-10)
    w = torch.linspace(-1, 1, x.numel(), **F64).reshape(x.shape)
    (x * w).sum().backward()
    if field != "tau_forward":  # the forward temperature tempers a hard law: its pathwise gradient is 0
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


def test_rebar_relaxation_tensor_temperature_is_the_number_per_element():
    est = relaxit.get("rebar")
    logits = _g(2)
    law = est.relaxation(logits=logits, tau=torch.tensor([0.3, 2.0], **F64))
    torch.manual_seed(1)
    x = law.rsample((4,))
    for j, v in enumerate((0.3, 2.0)):
        torch.manual_seed(1)
        y = est.relaxation(logits=logits, tau=v).rsample((4,))
        assert torch.allclose(x[:, j], y[:, j], rtol=1e-12, atol=1e-12)
        assert torch.allclose(law.log_prob(x)[:, j], est.relaxation(logits=logits, tau=v).log_prob(y)[:, j], rtol=1e-10)


def test_invalid_tensor_hyperparameter_names_the_argument():
    with pytest.raises(ValueError, match="beta"):
        relaxit.get("hard_concrete").distribution(log_alpha=torch.zeros(2), beta=torch.tensor([0.5, -1.0]))
    with pytest.raises(ValueError, match="sigma"):
        relaxit.get("gaussian_relaxed_bernoulli").distribution(loc=torch.zeros(2), sigma=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="temperature"):
        relaxit.get("invertible_gaussian").distribution(loc=torch.zeros(2), scale=torch.ones(2), tau=torch.tensor(-1.0))
