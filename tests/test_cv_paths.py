"""The fast paths of the control-variate estimators (issue 23) against their general forms.

- ``objective_and_input_gradient`` keeps ``f``'s graph exactly when it reaches a tensor other
  than the samples (the objective's own parameters), so those still get their Monte Carlo
  gradient and nothing else goes through the objective twice;
- ``double_cv``'s closed-form gradient of ``α`` is ``∇_α Σ_b c_b Σ ĝ_b²`` (``ĝ`` is affine in
  ``α``, so a central difference is exact up to rounding), for per-row weights ``c`` and an
  objective that reduces trailing batch dimensions.

RODEO's closed-form network gradient is checked against autograd through the plain network in
``tests/test_rodeo.py``; REBAR's variance gradient by finite differences in
``tests/test_unbiased_cv.py``.
"""

import pytest
import torch

import relaxit
from relaxit_plugins._multisample import _reaches_other_leaves, objective_and_input_gradient

DT = torch.float64


def test_graph_kept_only_for_other_tensors():
    z = torch.rand(3, 4, 5, dtype=DT).round()
    dist = relaxit.get("double_cv").distribution(logits=torch.zeros(4, 5, dtype=DT))
    leaf = z.clone().requires_grad_(True)
    assert not _reaches_other_leaves(((leaf - 0.3) ** 2).sum(-1).grad_fn, leaf)
    phi = torch.tensor(2.0, dtype=DT, requires_grad=True)
    assert _reaches_other_leaves((phi * leaf).sum(-1).grad_fn, leaf)
    assert _reaches_other_leaves((leaf * (phi * 3).exp()).sum(-1).grad_fn, leaf)  # through a non-leaf
    f, g = objective_and_input_gradient(lambda x: ((x - 0.3) ** 2).sum(-1), z, dist, "double_cv")
    assert not f.requires_grad and torch.allclose(g, 2 * (z - 0.3))
    f, g = objective_and_input_gradient(lambda x: phi * ((x - 0.3) ** 2).sum(-1), z, dist, "double_cv")
    assert f.requires_grad and torch.allclose(g, 4 * (z - 0.3))
    (dphi,) = torch.autograd.grad(f.sum(), phi)
    assert torch.allclose(dphi, ((z - 0.3) ** 2).sum())


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("batch_ndim", [1, 2])
def test_double_cv_alpha_gradient_is_that_of_sum_g_squared(k, batch_ndim):
    logits0 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(k), dtype=DT)
    target = torch.tensor([0.2, 0.9, 0.4, 0.6], dtype=DT)
    dims = tuple(range(1 + batch_ndim, 4))

    def objective(z):
        return (((z - target) ** 2).sum(-1, keepdim=True) * (1 + z.sin())).sum(dims)

    weights = torch.tensor([1.0, -0.5, 2.0, 0.3, 1.5, -1.0], dtype=DT)[: 2 * 3 ** (batch_ndim - 1)]
    weights = weights.reshape((2, 3)[:batch_ndim])

    def run(alpha):
        torch.manual_seed(11)
        est = relaxit.get("double_cv", alpha_init=alpha).double()
        logits = logits0.clone().requires_grad_(True)
        out = est.estimate(objective, num_samples=k, logits=logits)
        (out.surrogate * weights).sum().backward()
        g = logits.grad / weights.reshape(weights.shape + (1,) * (3 - batch_ndim))  # ĝ per row
        return est.alpha.grad, (g.pow(2).sum(tuple(range(batch_ndim, 3))) * weights).sum()

    got, _ = run(0.4)
    h = 0.25  # config floats are stored in float32: h dwarfs their rounding
    fd = (run(0.4 + h)[1] - run(0.4 - h)[1]) / (2 * h)
    torch.testing.assert_close(got, fd.to(got.dtype), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
@pytest.mark.parametrize("dtypes", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_closed_form_gradients_with_an_objective_of_another_dtype(name, dtypes):
    """Logits of one dtype and an objective returning another: the closed-form backward of the
    learned parameters follows autograd's type promotion (the same samples and, to float32
    precision, the same gradients as with an objective returning the logits' dtype)."""
    logits_dtype, f_dtype = dtypes
    target = torch.tensor([0.2, 0.9, 0.4], dtype=DT)

    def grads(cast):
        torch.manual_seed(5)
        est = relaxit.get(name, alpha_init=0.5, **({"beta_init": -0.4} if name == "rodeo" else {})).double()
        logits = torch.tensor([[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]], dtype=logits_dtype)
        logits.requires_grad_(True)
        out = est.estimate(lambda z: ((z.to(DT) - target) ** 3).sum(-1).to(f_dtype if cast else logits_dtype),
                           num_samples=3, logits=logits)
        assert out.value.dtype == (f_dtype if cast else logits_dtype)
        out.surrogate.sum().backward()
        return [logits.grad.to(DT)] + [p.grad for p in est.parameters()]

    for got, want in zip(grads(True), grads(False)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
@pytest.mark.parametrize("learn", [True, False])
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0), (2, 0, 3), (3, 1)])
def test_empty_and_single_variable_batches(name, learn, shape):
    """The fast paths reshape with explicit sizes: empty batches, no variables and one variable
    give gradients of the logits' shape and finite (or no) gradients to the learned parameters."""
    est = relaxit.get(name, learn=learn)
    logits = torch.zeros(*shape, requires_grad=True)
    out = est.estimate(lambda z: (z - 0.3).pow(2).sum(-1), num_samples=3, logits=logits)
    out.surrogate.sum().backward()
    assert logits.grad.shape == logits.shape
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in est.parameters())
