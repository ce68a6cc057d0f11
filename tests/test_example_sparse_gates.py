"""The sparse-gates example runs and recovers the true features with both gate estimators."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sparse_gates.py"


def _load():
    spec = importlib.util.spec_from_file_location("sparse_gates_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["hard_concrete", "gaussian_relaxed_bernoulli"])
def test_sparse_gates_example_selects_the_true_features(name):
    selected, truth = _load().train(name, steps=150, verbose=False)
    assert selected.tolist() == truth.tolist()
