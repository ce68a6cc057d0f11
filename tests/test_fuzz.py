"""Hypothesis fuzzing of shapes, dtypes and parameter scales over every registered estimator."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import relaxit
from relaxit_core import Capability as C
from relaxit_core.testing import instances

CASES = [est for info in relaxit.available() for est in instances(info.cls)]
IDS = [f"{e.name}-{i}" for i, e in enumerate(CASES)]

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple)


@pytest.mark.parametrize("est", CASES, ids=IDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=shapes, sample=shapes, dtype=st.sampled_from([torch.float32, torch.float64]),
       scale=st.floats(0.0, 40.0), seed=st.integers(0, 2**16))
def test_fuzz_shapes_and_finiteness(est, batch, sample, dtype, scale, seed):
    params = est.example_params(batch, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    if "logits" in params:
        params["logits"] = params["logits"] * scale
    d = est.distribution(**params)
    assert tuple(d.batch_shape) == batch
    draw = d.rsample if C.RSAMPLE in est.capabilities else d.sample
    x = draw(torch.Size(sample))
    assert x.shape == torch.Size(sample) + d.batch_shape + d.event_shape
    assert x.dtype == dtype and torch.isfinite(x).all()
    if C.LOG_PROB in est.capabilities:
        lp = d.log_prob(x)
        assert lp.shape == torch.Size(sample) + d.batch_shape
        assert torch.isfinite(lp).all()
