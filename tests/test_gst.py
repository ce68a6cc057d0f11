"""Gapped straight-through (GST): the gapped logits, the backward pass against the authors' recipe."""

from __future__ import annotations

import pytest
import torch

import relaxit
from relaxit_plugins.gst import gapped_logits


def _reference_gst(logits, action, temperature, gap, detach):
    """A transcription of the recipe of the authors' ``gst_mover`` (chijames/GST,
    model/basic.py) for a given one-hot ``action``: the soft tensor whose gradient GST uses."""
    src = logits.detach() if detach else logits
    probs = src.softmax(-1)
    max_logits = src.gather(-1, probs.argmax(-1, keepdim=True))
    move = (max_logits - src) * action
    if gap == "p":
        pi = (probs * action).sum(-1, keepdim=True) * (1 - 1e-5)
        gap = -(1 - pi).log() / pi
    move2 = (src + (-max_logits + gap)).clamp(min=0.0) * (1 - action)
    moved = logits + (move - move2)
    moved = moved - moved.mean(-1, keepdim=True)
    return (moved / temperature).softmax(-1)


@pytest.mark.parametrize("gap", [1.0, 0.3, "p"])
def test_gapped_logits_make_the_sample_the_argmax_by_the_gap_with_minimal_moves(gap):
    gen = torch.Generator().manual_seed(0)
    theta = 2 * torch.randn(500, 6, generator=gen, dtype=torch.float64)
    idx = torch.randint(0, 6, (500,), generator=gen)
    hard = torch.nn.functional.one_hot(idx, 6).to(theta)
    m = gapped_logits(theta, hard, gap)
    assert torch.equal(m.argmax(-1), idx)
    t_max = theta.max(-1).values
    torch.testing.assert_close((m * hard).sum(-1), t_max)  # the sample moves up to the largest logit
    if gap == "p":
        pi = (theta.softmax(-1) * hard).sum(-1) * (1 - 1e-5)
        kappa = -torch.log1p(-pi) / pi
        assert bool((kappa >= 1).all())  # -log(1-p)/p >= 1
    else:
        kappa = torch.full_like(t_max, gap)
    others = m.masked_fill(hard.bool(), float("-inf")).max(-1).values
    assert bool((t_max - others >= kappa - 1e-12).all())  # the gap
    # the others move only when they are within the gap of the top, and then to exactly top - gap
    want = torch.minimum(theta, (t_max - kappa)[:, None])
    torch.testing.assert_close(m[~hard.bool()], want[~hard.bool()])


@pytest.mark.parametrize("cfg", [{}, {"gap": "p", "tau": 0.5}, {"gap": 1.2, "tau": 2.0}, {"gap": "p", "detach": False},
                                 {"gap": 0.8, "detach": False, "tau": 0.7}])
def test_gradient_is_the_authors_gst(cfg):
    est = relaxit.get("gst", **cfg)
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(8, 3, 5, generator=gen, dtype=torch.float64)
    leaf = theta.clone().requires_grad_()
    torch.manual_seed(2)
    z = est.distribution(logits=leaf).rsample((8,))
    (g,) = torch.autograd.grad((z * w).sum(), leaf)
    leaf2 = theta.clone().requires_grad_()
    soft = _reference_gst(leaf2.expand(8, 3, 5), z.detach(), cfg.get("tau", 1.0), cfg.get("gap", 1.0), cfg.get("detach", True))
    (want,) = torch.autograd.grad((soft * w).sum(), leaf2)
    torch.testing.assert_close(g, want)
    assert torch.equal(z.detach().sum(-1), torch.ones(8, 3))


def test_masked_categories_give_finite_gradients():
    logits = torch.tensor([[0.0, float("-inf"), 1.0, -2.0]] * 4, requires_grad=True)
    for gap in (1.0, "p"):
        torch.manual_seed(0)
        z = relaxit.get("gst", gap=gap).distribution(logits=logits).rsample((50,))
        assert z[..., 1].sum() == 0
        (g,) = torch.autograd.grad((z * torch.arange(4.0)).sum(), logits)
        assert torch.isfinite(g).all()


def test_bad_gap_is_a_config_error():
    with pytest.raises(relaxit.ConfigError, match="gst.gap"):
        relaxit.get("gst", gap=0)
    with pytest.raises(relaxit.ConfigError, match="gst.gap"):
        relaxit.get("gst", gap="q")
