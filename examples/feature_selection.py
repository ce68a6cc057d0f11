"""Learn which k = 5 of 40 features carry the signal, with a relaxed k-subset selector.

The data are generated: ``y = Σ_{j ∈ S} w_j x_j + noise`` where ``S`` is a random set of 5
features.  A selector with logits ``θ`` draws a k-hot mask ``z`` with
``relaxit.get("gumbel_topk", k=5, hard=True)`` (exactly 5 features in the forward pass,
straight-through gradients), a linear model is fitted on the selected features, and ``θ``
and the model are trained together on the mean squared error.  The 5 largest logits
recover ``S``.

Run::

    python examples/feature_selection.py --steps 300
"""

from __future__ import annotations

import argparse

import torch

import relaxit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps")
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--n", type=int, default=512, help="training examples")
    parser.add_argument("--samples", type=int, default=8, help="subset samples per step")
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    d, k = args.features, args.k
    informative = torch.randperm(d)[:k].sort().values
    x = torch.randn(args.n, d)
    w = torch.zeros(d)
    w[informative] = torch.randn(k).sign() * (1 + torch.rand(k))
    y = x @ w + 0.1 * torch.randn(args.n)

    selector = relaxit.get("gumbel_topk", k=k, tau=args.tau, hard=True)
    logits = torch.zeros(d, requires_grad=True)
    beta = torch.zeros(d, requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([logits, beta, bias], lr=0.05)

    def objective(z):  # z: [S, d] k-hot masks -> [S] mean squared errors
        pred = (x * z.unsqueeze(1)) @ beta.unsqueeze(-1)  # [S, n, 1]
        return (pred.squeeze(-1) + bias - y).square().mean(-1)

    for step in range(args.steps):
        out = selector.estimate(objective, num_samples=args.samples, logits=logits)
        opt.zero_grad()
        out.surrogate.backward()
        opt.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  mse {out.value.item():.4f}")

    chosen = logits.detach().topk(k).indices.sort().values
    print("informative features:", informative.tolist())
    print("selected features:   ", chosen.tolist())
    ok = torch.equal(chosen, informative)
    print("recovered" if ok else "NOT recovered")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
