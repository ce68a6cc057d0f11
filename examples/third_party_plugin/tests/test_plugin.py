"""The plugin's own tests: relaxit's conformance kit plus one test of its own maths."""

import torch

from relaxit_core.diagnostics import exact_gradient, gradient_samples
from relaxit_core.testing import parametrize_with_checks
from relaxit_example_plugin import ConstantBaselineReinforce


@parametrize_with_checks([ConstantBaselineReinforce])
def test_conformance(estimator, check):
    check(estimator)


def test_a_good_baseline_lowers_the_variance():
    """Unbiased for any b; b near E[f] has smaller variance than b = 0 (f >= 1 here)."""
    torch.manual_seed(0)
    logits = torch.tensor([0.3, -0.8, 1.2], dtype=torch.float64)

    def f(z):
        return 2.0 + (z - 0.45).pow(2).sum(-1)

    exact = exact_gradient(f, {"logits": logits}, "bernoulli")["logits"]
    n = 5000
    variances = {}
    for b in (0.0, 2.6):
        g = gradient_samples(ConstantBaselineReinforce(baseline=b), f, {"logits": logits}, n)["logits"]
        stderr = g.std(0) / n**0.5
        assert ((g.mean(0) - exact).abs() < 5 * stderr).all()
        variances[b] = g.var(0).sum()
    assert variances[2.6] < variances[0.0]


def test_found_by_relaxit_when_installed():
    """Once the package is installed, relaxit finds it by name through the entry point."""
    import relaxit

    info = relaxit.describe("constant_baseline_reinforce")
    assert info.cls is ConstantBaselineReinforce
    assert relaxit.build({"name": "constant_baseline_reinforce", "baseline": 1.0}).config.baseline == 1.0
