"""``est.evaluations()``: every estimator declares the objective rows one ``estimate()`` costs.

The conformance kit (``check_evaluations``) compares the declaration with a counting objective
for every registered estimator; these tests pin the documented values and the argument errors.
"""

from __future__ import annotations

import pytest
import torch

import relaxit
from relaxit_core import ParameterError


@pytest.mark.parametrize(
    ("name", "config", "num_samples", "expected"),
    [
        ("gumbel_softmax", {}, 5, 5),
        ("reinforce", {"family": "bernoulli", "baseline": "leave_one_out"}, 4, 4),
        ("arm", {}, 6, 6),  # ARM counts objective evaluations: 3 antithetic pairs
        ("disarm", {}, 2, 2),
        ("rebar", {}, 4, 12),  # b, σ(z), σ(z̃) per hard sample
        ("relax", {"family": "bernoulli"}, 2, 6),
        ("relax", {"family": "bernoulli", "relaxation": False}, 2, 2),
        ("vimco", {"family": "bernoulli"}, 3, 3),
    ],
)
def test_declared_cost(name, config, num_samples, expected):
    assert relaxit.get(name, **config).evaluations(num_samples) == expected


def test_default_is_min_num_samples():
    est = relaxit.get("disarm")
    assert est.evaluations() == est.min_num_samples * 1 == 2


def test_indecater_counts_variables_of_one_event():
    logits = torch.zeros(4, 10)
    est = relaxit.get("indecater", family="bernoulli")
    assert est.evaluations(3, logits=logits) == 3 * (1 + 40 * 2)  # all 40 variables in one event
    assert est.evaluations(3, batch_ndim=1, logits=logits) == 3 * (1 + 10 * 2)  # objective keeps the batch
    cat = relaxit.get("indecater", family="categorical")
    assert cat.evaluations(1, batch_ndim=1, logits=torch.zeros(4, 5, 3)) == 1 + 5 * 3
    with pytest.raises(ParameterError, match="logits"):
        est.evaluations(3)
    with pytest.raises(ParameterError, match="batch_ndim"):
        est.evaluations(3, batch_ndim=3, logits=logits)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_num_samples_checked(bad):
    with pytest.raises(ParameterError, match="num_samples"):
        relaxit.get("disarm").evaluations(bad)


@pytest.mark.parametrize("bad", [-1, 1.0, True])
def test_batch_ndim_checked(bad):
    with pytest.raises(ParameterError, match="batch_ndim"):
        relaxit.get("gumbel_softmax").evaluations(2, batch_ndim=bad)
