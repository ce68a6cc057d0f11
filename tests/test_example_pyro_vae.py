"""Smoke test of examples/pyro_vae.py: the Pyro VAE trains with each of its three
estimators, swapped by one word, and the estimator named is the one that runs."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pyro_vae.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("relaxit_example_pyro_vae", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("word", ["disarm", "rebar", "reinforce"])
def test_trains_with_each_estimator(example, word):
    import pyro

    pyro.set_rng_seed(0)  # train() seeds the same way: this is the VAE it starts from
    initial = example.PyroVAE(16, 16, 64).encoder.state_dict()
    result = example.train(word, steps=10, batch_size=16, hidden=16, log=None, eval_particles=2)
    assert result["elbo"].estimators["z"].name == word
    # finite, and below coding 64 pixels and 16 latents at probability 1/2 (80 log 2 nats): no blow-up
    assert math.isfinite(result["test_nelbo"]) and result["test_nelbo"] < 80 * math.log(2)
    trained = result["vae"].encoder.state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)  # the estimator's gradient reached it


def test_the_three_estimators_differ_in_one_word(example):
    assert set(example.ESTIMATORS) == {"disarm", "rebar", "reinforce"}
    source = EXAMPLE.read_text()
    assert source.count('infer={"estimator": self.estimator}') == 1
