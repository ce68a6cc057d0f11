"""Feature selection with stochastic gates: a sparse-gated linear model on generated data.

The same training loop runs with the hard concrete gates of Louizos et al. (2018) and the
Gaussian stochastic gates of Yamada et al. (2020); the method is chosen by name through
the registry (``relaxit.get(name)``), and each law's ``expected_l0()`` gives the sparsity
penalty.  Data: ``y = X w* + noise`` with only a few non-zero weights; the gates should
keep exactly those features.

    python examples/sparse_gates.py                      # both methods
    python examples/sparse_gates.py --method hard_concrete --steps 100
"""

from __future__ import annotations

import argparse

import torch

import relaxit

# the initial value of each method's gate parameter (about half of the gates open)
INIT = {"hard_concrete": 0.0, "gaussian_relaxed_bernoulli": 0.5}


def make_data(n: int = 512, d: int = 20, k: int = 4, noise: float = 0.1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.zeros(d)
    w[:k] = torch.tensor([2.0, -1.5, 1.0, 3.0])[:k]
    y = x @ w + noise * torch.randn(n, generator=g)
    return x, y, (w != 0)


def train(name: str, steps: int = 150, lam: float = 0.05, num_samples: int = 4, seed: int = 0, verbose: bool = True):
    """Fit gates and weights with the estimator ``name``; returns the selected-feature mask."""
    torch.manual_seed(seed)
    x, y, truth = make_data(seed=seed)
    d = x.shape[1]
    est = relaxit.get(name)
    pname = est.params[0]  # "log_alpha" for hard_concrete, "loc" for gaussian_relaxed_bernoulli (the rest are optional)
    gate_param = torch.full((d,), INIT[name], requires_grad=True)
    weight = torch.zeros(d, requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([gate_param, weight, bias], lr=0.1)

    def mse(z):  # z: [S, d] gates -> [S] losses
        pred = (x * z.unsqueeze(1)) @ weight.unsqueeze(-1)
        return (pred.squeeze(-1) + bias - y).pow(2).mean(-1)

    for step in range(steps):
        opt.zero_grad()
        out = est.estimate(mse, num_samples=num_samples, **{pname: gate_param})
        penalty = est.distribution(**{pname: gate_param}).expected_l0().sum()
        (out.surrogate + lam * penalty).backward()
        opt.step()
        if verbose and (step % max(1, steps // 5) == 0 or step == steps - 1):
            print(f"  {name:>28s} step {step:4d}  mse {out.value.item():8.4f}  E[L0] {penalty.item():5.2f}")
    gate = est.distribution(**{pname: gate_param.detach()}).deterministic_gate()
    selected = gate > 0
    if verbose:
        hits = int((selected & truth).sum())
        print(f"  {name}: kept {int(selected.sum())} of {d} features, {hits} of {int(truth.sum())} true ones; "
              f"test-time gates {[round(v, 2) for v in gate[: int(truth.sum()) + 2].tolist()]} ...")
    return selected, truth


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(INIT), action="append",
                        help="gate estimator (repeatable; default: both)")
    parser.add_argument("--steps", type=int, default=150, help="optimisation steps (default 150)")
    parser.add_argument("--lam", type=float, default=0.05, help="weight of the expected-L0 penalty")
    args = parser.parse_args(argv)
    results = {}
    for name in args.method or sorted(INIT):
        print(f"{name}:")
        results[name] = train(name, steps=args.steps, lam=args.lam)
    return results


if __name__ == "__main__":
    main()
