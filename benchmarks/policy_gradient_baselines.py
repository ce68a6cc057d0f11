"""REINFORCE baselines on a contextual bandit: gradient variance and final reward at equal samples.

The task (generated data): contexts ``x ∈ R^d`` (``d = 8``), ``A = 10`` actions, reward
``r(x, a) = w_aᵀx + 3·uᵀx + ε`` with ``ε ~ N(0, 0.5²)`` drawn at every evaluation.  The shared
term ``3·uᵀx`` does not depend on the action (it cancels in the gradient) but makes the reward's
level vary a lot from context to context: the situation of RL fine-tuning, where prompts differ
in difficulty.  Policy: ``softmax(xᵀΘ)``; the loss handed to the estimator is ``−r``.  Every
step draws ``B = 32`` contexts and ``G = 4`` actions per context (the *group*), so every
baseline sees exactly the same number of reward evaluations (``B·G`` per step).

Baselines (``reinforce``, ``family="categorical"``): none, moving_average, leave_one_out
(RLOO), group_mean (Dr. GRPO), group_normalized (GRPO), learned (a critic reading ``x``,
NVIL) and learned with NVIL's signal normalisation.  Adam (lr 0.05) trains Θ and the critic.

Reported, over ``--seeds`` seeds:

- **final regret**: ``E_x[max_a E r(x, a) − E_{a~π} E r(x, a)]`` of the final policy on 4096
  held-out contexts (exact: the policy is enumerated), lower is better;
- **gradient variance**: at checkpoints during training (every ``--steps // 5`` steps, on a
  fixed batch, with a copy of the estimator so its state is not advanced), the trace of the
  covariance of one estimate of ``∇_Θ`` from 256 independent draws, averaged over
  checkpoints — relative to ``none``;
- **relative bias** and **cosine** of the mean estimate to the exact gradient (enumerated) at
  the same checkpoints: the group baselines are biased (Dr. GRPO by the factor ``(G−1)/G``).

Usage::

    python benchmarks/policy_gradient_baselines.py --out /tmp/pg            # ~ a minute
    python benchmarks/policy_gradient_baselines.py --out /tmp/pg --quick    # seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

import relaxit

D, A, B, G = 8, 10, 32, 4
NOISE, OFFSET = 0.5, 3.0

BASELINES = [
    ("none", {"baseline": "none"}),
    ("moving_average", {"baseline": "moving_average"}),
    ("leave_one_out (RLOO)", {"baseline": "leave_one_out"}),
    ("group_mean (Dr. GRPO)", {"baseline": "group_mean"}),
    ("group_normalized (GRPO)", {"baseline": "group_normalized"}),
    ("learned (NVIL critic on x)", {"baseline": "learned", "context_size": D, "critic_hidden": 32}),
    ("learned + normalize (NVIL)", {"baseline": "learned", "context_size": D, "critic_hidden": 32, "normalize": True}),
]


class Bandit:
    def __init__(self, seed: int):
        gen = torch.Generator().manual_seed(1000 + seed)
        self.w = torch.randn(D, A, generator=gen)
        self.u = torch.randn(D, generator=gen)
        self.gen = gen

    def contexts(self, n: int) -> torch.Tensor:
        return torch.randn(n, D, generator=self.gen)

    def mean_reward(self, x: torch.Tensor) -> torch.Tensor:
        """``E r(x, a)`` for every action: ``[n, A]``."""
        return x @ self.w + OFFSET * (x @ self.u)[:, None]

    def loss(self, x: torch.Tensor):
        mean = self.mean_reward(x)

        def objective(z):  # z: [G, (draws,) n, A] one-hot -> loss [G, (draws,) n]
            r = (z * mean).sum(-1)
            return -(r + NOISE * torch.randn_like(r))

        return objective

    def regret(self, theta: torch.Tensor, x: torch.Tensor) -> float:
        mean = self.mean_reward(x)
        pi = (x @ theta).softmax(-1)
        return float((mean.max(-1).values - (pi * mean).sum(-1)).mean())


def exact_grad(bandit: Bandit, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = theta.detach().clone().requires_grad_()
    loss = -((x @ t).softmax(-1) * bandit.mean_reward(x)).sum(-1).mean()
    return torch.autograd.grad(loss, t)[0]


def grad_draws(est, bandit: Bandit, theta: torch.Tensor, x: torch.Tensor, draws: int) -> torch.Tensor:
    """``draws`` independent estimates of ``∇_Θ`` of the mean loss over the batch ``x``: ``[draws, D, A]``."""
    est = copy.deepcopy(est)  # do not advance the run's moving averages
    t = theta.detach().unsqueeze(0).expand(draws, D, A).clone().requires_grad_()
    logits = torch.einsum("nd,kda->kna", x, t)  # [draws, n, A]
    ctx = {"context": x.expand(draws, *x.shape)} if est.config.baseline == "learned" else {}
    out = est.estimate(bandit.loss(x), num_samples=G, logits=logits, **ctx)
    # surrogate [draws, n]: each draw's mean over the batch, summed over draws
    return torch.autograd.grad(out.surrogate.mean(-1).sum(), t)[0]


def run(cfg: dict, seed: int, steps: int, lr: float, draws: int) -> dict:
    torch.manual_seed(seed)
    bandit = Bandit(seed)
    est = relaxit.get("reinforce", family="categorical", **cfg)
    theta = torch.zeros(D, A, requires_grad=True)
    opt = torch.optim.Adam([theta, *est.parameters()], lr=lr)
    probe = bandit.contexts(B)
    test = bandit.contexts(4096)
    every = max(1, steps // 5)
    variances, rel_variances, rel_biases, cosines = [], [], [], []
    for step in range(steps + 1):
        if step % every == 0 and step > 0:
            g = grad_draws(est, bandit, theta, probe, draws).flatten(1)
            exact = exact_grad(bandit, theta, probe).flatten()
            mean = g.mean(0)
            variances.append(float(g.var(0).sum()))
            rel_variances.append(float(g.var(0).sum() / mean.pow(2).sum()))
            rel_biases.append(float((mean - exact).norm() / exact.norm()))
            cosines.append(float(mean @ exact / (mean.norm() * exact.norm())))
        if step == steps:
            break
        x = bandit.contexts(B)
        ctx = {"context": x} if cfg["baseline"] == "learned" else {}
        out = est.estimate(bandit.loss(x), num_samples=G, logits=x @ theta, **ctx)
        opt.zero_grad()
        out.surrogate.mean().backward()
        opt.step()
    return {
        "regret": bandit.regret(theta.detach(), test),
        "initial_regret": bandit.regret(torch.zeros(D, A), test),
        "variance": sum(variances) / len(variances),
        "rel_variance": sum(rel_variances) / len(rel_variances),
        "rel_bias": sum(rel_biases) / len(rel_biases),
        "cosine": sum(cosines) / len(cosines),
    }


def _ms(values):
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / max(1, len(values) - 1))
    return m, s


def table(results: dict, steps: int, seeds: int, draws: int) -> str:
    base_var = _ms([r["variance"] for r in results["none"]])[0]
    init = _ms([r["initial_regret"] for r in results["none"]])[0]
    lines = [
        f"Contextual bandit (d={D}, A={A} actions, reward offset {OFFSET}·uᵀx, noise σ={NOISE}); {steps} Adam "
        f"steps, B={B} contexts × G={G} actions per step (equal samples for every baseline); {seeds} seeds, "
        f"mean ± std.  Regret of the uniform initial policy: {init:.3f}.",
        "",
        "| baseline | final regret | gradient variance tr Σ (× none) | tr Σ / ‖E ĝ‖² | rel. bias of E ĝ | cos(E ĝ, ∇) |",
        "|---|---|---|---|---|---|",
    ]
    for label, _ in BASELINES:
        rs = results[label]
        reg = _ms([r["regret"] for r in rs])
        var = _ms([r["variance"] / base_var for r in rs])
        bias = _ms([r["rel_bias"] for r in rs])
        rvar = _ms([r["rel_variance"] for r in rs])
        cos = _ms([r["cosine"] for r in rs])
        lines.append(f"| {label} | {reg[0]:.3f} ± {reg[1]:.3f} | {var[0]:.3g} ± {var[1]:.2g} | "
                     f"{rvar[0]:.3g} ± {rvar[1]:.2g} | {bias[0]:.3f} ± {bias[1]:.3f} | {cos[0]:.3f} |")
    lines += ["", f"Variance, bias and cosine are measured with {draws} draws of one step's estimate on a fixed batch "
              "at 5 checkpoints of each run (at that run's policy and baseline state) and averaged.  tr Σ / ‖E ĝ‖² is "
              "scale-free: GRPO and NVIL's normalisation rescale the gradient, which changes tr Σ but not it.  "
              f"Monte Carlo noise is included: an unbiased estimator's relative bias is ~ sqrt(tr Σ/{draws})/‖∇‖, not 0."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args(argv)
    steps = args.steps or (60 if args.quick else 400)
    seeds = args.seeds or (1 if args.quick else 3)
    draws = 64 if args.quick else 256
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results = {label: [run(cfg, s, steps, args.lr, draws) for s in range(seeds)] for label, cfg in BASELINES}
    md = table(results, steps, seeds, draws)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "policy_gradient_baselines.md").write_text(md + "\n")
    (args.out / "policy_gradient_baselines.json").write_text(json.dumps(results, indent=1))
    print(md)
    print(f"\n{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
