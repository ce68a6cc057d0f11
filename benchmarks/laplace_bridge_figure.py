"""Figure for the docs: Dirichlet densities next to their Laplace-bridge logistic normals.

For each concentration ``α`` it draws, on the 2-simplex, the Dirichlet density and the density
of ``logistic_normal(*laplace_bridge(α))`` (both w.r.t. Lebesgue measure on the first two
coordinates), and prints the total-variation distance between them (by quadrature).

    python benchmarks/laplace_bridge_figure.py --out docs/_static/laplace_bridge.png
"""

from __future__ import annotations

import argparse
import math
import pathlib

import torch

import relaxit
from relaxit_plugins.logistic_normal import laplace_bridge

ALPHAS = [(1.5, 1.5, 1.5), (2.0, 5.0, 3.0), (10.0, 10.0, 10.0), (0.9, 4.0, 12.0)]


def grid(n: int):
    """Interior points of the simplex on a triangular grid, and the area of one cell."""
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i + j < n - 1
    x1 = (i[keep].double() + 1 / 3) / n
    x2 = (j[keep].double() + 1 / 3) / n
    return torch.stack([x1, x2, 1 - x1 - x2], -1), 0.5 / n**2


def draw(n: int):
    """Draw the figure on a grid of resolution ``n``; returns ``(figure, [(alpha, tv), ...])``."""
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri

    x, cell = grid(n)
    # triangle coordinates for plotting
    px = x[:, 1] + 0.5 * x[:, 2]
    py = x[:, 2] * math.sqrt(3) / 2
    tri = mtri.Triangulation(px.numpy(), py.numpy())
    est = relaxit.get("logistic_normal")
    fig, axes = plt.subplots(2, len(ALPHAS), figsize=(3.2 * len(ALPHAS), 6.2))
    rows = []
    for col, alpha in enumerate(ALPHAS):
        a = torch.tensor(alpha, dtype=torch.float64)
        dirichlet = torch.distributions.Dirichlet(a).log_prob(x).exp()
        loc, scale = laplace_bridge(a)
        bridge = est.distribution(loc=loc, scale=scale).log_prob(x).exp()
        tv = 0.5 * float((dirichlet - bridge).abs().sum() * cell)
        rows.append((alpha, tv))
        top = float(torch.quantile(torch.cat([dirichlet, bridge]), 0.99))
        levels = torch.linspace(0, top, 15).tolist()
        for row, (dens, label) in enumerate([(dirichlet, "Dirichlet"), (bridge, "Laplace bridge")]):
            ax = axes[row, col]
            ax.tricontourf(tri, dens.numpy(), levels=levels, cmap="viridis", extend="max")
            ax.plot([0, 1, 0.5, 0], [0, 0, math.sqrt(3) / 2, 0], color="k", lw=0.8)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(f"{label}, α = {alpha}" if row == 0 else f"{label} (TV {tv:.2f})", fontsize=9)
    fig.tight_layout()
    return fig, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="laplace_bridge.png")
    parser.add_argument("--resolution", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    fig, rows = draw(80 if args.quick else args.resolution)
    print("| alpha | total variation (Dirichlet, bridge) |")
    print("|---|---:|")
    for alpha, tv in rows:
        print(f"| {alpha} | {tv:.3f} |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
