"""Tests of ``stochastic_times_smooth`` (Bengio et al. 2013, Sec. 3.3): one law for sample and rsample."""

import math

import pytest
import torch
from scipy import stats

import relaxit
from relaxit_plugins.stochastic_times_smooth import StochasticTimesSmooth

P_MIN = 1e-6
Z = 5.0


def _counts(z, a):
    return torch.stack([(z == 0).sum(0), (z == a).sum(0)]).double()  # [2, batch]


@pytest.mark.parametrize("param", ["probs", "logits"])
def test_sample_and_rsample_have_the_same_law_as_log_prob(param):
    p = torch.tensor([0.04, 0.3, 0.5, 0.9], dtype=torch.float64)
    d = StochasticTimesSmooth(**{param: p if param == "probs" else torch.logit(p)})
    a = d.sqrt_probs
    n = 20_000
    pmf = d.log_prob(torch.stack([torch.zeros_like(a), a])).exp()  # [2, batch]
    assert torch.allclose(pmf.sum(0), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(pmf[1], p.sqrt())
    results = {}
    for name, z in (("sample", d.sample((n,))), ("rsample", d.rsample((n,)).detach())):
        counts = _counts(z, a)
        assert torch.equal(counts.sum(0), torch.full((4,), float(n), dtype=torch.float64)), f"{name} left the two atoms"
        chi2 = ((counts - n * pmf) ** 2 / (n * pmf)).sum().item()
        assert stats.chi2.sf(chi2, 4) > P_MIN, name
        results[name] = counts
    # two-sample test: sample vs rsample (upstream's sample drew Bernoulli(p) instead)
    table = torch.stack([results["sample"][1], results["rsample"][1]])
    for k in range(4):
        t = [[table[0, k].item(), n - table[0, k].item()], [table[1, k].item(), n - table[1, k].item()]]
        assert stats.chi2_contingency(t).pvalue > P_MIN


def test_mean_is_p_and_variance():
    p = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64)
    d = StochasticTimesSmooth(probs=p)
    n = 100_000
    z = d.rsample((n,))
    var = p ** 1.5 - p ** 2
    assert torch.allclose(d.mean, p) and torch.allclose(d.variance, var)
    assert ((z.mean(0) - p).abs() <= Z * (var / n).sqrt()).all()


def test_gradient_through_the_smooth_part():
    p = torch.tensor([0.09, 0.25, 0.64], dtype=torch.float64, requires_grad=True)
    z = StochasticTimesSmooth(probs=p).rsample((1000,))
    z.sum().backward()
    b = (z.detach() > 0).double()
    assert torch.allclose(p.grad, b.sum(0) * 0.5 / p.detach().sqrt())
    logits = torch.tensor([-30.0, 0.0, 30.0], requires_grad=True)
    StochasticTimesSmooth(logits=logits).rsample((100,)).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_log_prob_base_measure_is_counting_measure():
    d = StochasticTimesSmooth(probs=torch.tensor([0.25, 0.0, 1.0]))
    lp = d.log_prob(torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 1.0], [0.3, 0.3, 0.3]]))
    assert torch.allclose(lp[0].exp(), torch.tensor([0.5, 1.0, 0.0]))
    assert torch.allclose(lp[1].exp(), torch.tensor([0.5, 0.0, 1.0]))
    assert torch.isneginf(lp[2]).all()  # not an atom: zero mass


def test_expanded_and_pickled_laws_score_the_original_samples():
    import io

    for kw in ({"logits": torch.randn(3)}, {"probs": torch.rand(3)}):
        d = StochasticTimesSmooth(**kw)
        _ = d.probs, d.logits  # both lazy properties materialised
        z = d.sample((200,))
        e = d.expand((5, 3))
        assert torch.isfinite(e.log_prob(z.unsqueeze(1))).all()
        buf = io.BytesIO()
        torch.save(d, buf)
        buf.seek(0)
        d2 = torch.load(buf, weights_only=False)
        assert torch.equal(d2.log_prob(z), d.log_prob(z))


def test_log_prob_gradients_finite_at_the_edges():
    p = torch.tensor([0.0, 1e-12, 0.5, 1.0], requires_grad=True)
    d = StochasticTimesSmooth(probs=p)
    z = d.sample((50,))
    lp = d.log_prob(z)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype):
    logits = torch.tensor([-30.0, -1.0, 0.0, 30.0], dtype=dtype, requires_grad=True)
    d = relaxit.get("stochastic_times_smooth").distribution(logits=logits)
    z = d.rsample((64,))
    assert z.dtype == dtype
    lp = d.log_prob(z)
    assert torch.isfinite(lp).all()
    (z.sum() + lp.float().sum()).backward()
    assert torch.isfinite(logits.grad).all()
