"""Learning to explain on the bundled digits: select k of the 64 pixels that let a small
classifier predict the digit (the L2X protocol of Chen et al. 2018 as used by the SIMPLE and
SFESS papers, shrunk to sklearn's 8x8 digits).

An explainer MLP (64-64-64) maps an image to per-pixel logits ``θ``; a k-subset ``z`` of the
pixels is drawn by the estimator under test; a predictor MLP (64-64-10) sees ``x * z`` and its
cross-entropy is the objective.  Both networks train together (Adam), the estimator giving the
explainer its gradient and the predictor getting the Monte Carlo gradient of the objective.
Reported: test accuracy when the predictor sees the top-k pixels of ``θ`` (the explanation),
mean ± std over seeds, and the training time (the machine is shared: compare times within one
run only).  Every method runs at the same k, steps, batch and ``num_samples``.

    python benchmarks/l2x_digits.py               # k=8, 600 steps, 3 seeds
    python benchmarks/l2x_digits.py --quick       # seconds

The model and data are the bench's (``relaxit bench --preset l2x`` runs the same comparison
with checkpoints, gradient variances and a report).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import relaxit
from relaxit.bench.data import load_digits_labelled
from relaxit.bench.tasks import L2X

METHODS = {
    "simple": {"name": "simple"},
    "sfess": {"name": "sfess"},
    "imle": {"name": "imle", "family": "subset"},
    "aimle": {"name": "aimle", "family": "subset"},
    "perturbed": {"name": "perturbed", "family": "subset", "sigma": 0.5},
    "gumbel_topk (ST)": {"name": "gumbel_topk", "hard": True, "tau": 0.5},
    "gumbel_topk (soft)": {"name": "gumbel_topk", "tau": 0.5},
}


def load_digits():
    """The bench's digits for classification (pixels in [0, 1], fixed 1437/360 split)."""
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(a) for a in load_digits_labelled())
    return (x_tr, y_tr), (x_te, y_te)


def run(config: dict, k: int, steps: int, batch: int, num_samples: int, seed: int, data) -> tuple[float, float]:
    """One training run of the bench's :class:`relaxit.bench.tasks.L2X` model."""
    (x_tr, y_tr), (x_te, y_te) = data
    torch.manual_seed(seed)
    model = L2X(relaxit.build({**config, "k": k}), k)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(y_tr), (batch,))
        loss = model(x_tr[idx], y_tr[idx], num_samples)
        opt.zero_grad()
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    return model.accuracy(x_te, y_te), elapsed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds = 60, 1
    torch.set_num_threads(1)
    data = load_digits()
    print(f"digits 8x8, k={args.k} of 64 pixels, {args.steps} steps, batch {args.batch}, "
          f"num_samples {args.num_samples}, {args.seeds} seed(s)\n")
    print("| method | test accuracy (top-k explanation) | train time (s) |")
    print("|---|---:|---:|")
    for name in args.methods:
        accs, times = [], []
        for seed in range(args.seeds):
            acc, t = run(METHODS[name], args.k, args.steps, args.batch, args.num_samples, seed, data)
            accs.append(acc)
            times.append(t)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {statistics.mean(accs):.3f} ± {sd:.3f} | {statistics.mean(times):.1f} |", flush=True)


if __name__ == "__main__":
    main()
