"""EstimatorELBO against Pyro's TraceGraph_ELBO on the Bernoulli VAE of examples/pyro_vae.py.

1. Encoder-gradient variance: the VAE is first trained a little (DisARM, ``--warmup``
   steps), then frozen; on one fixed minibatch every ELBO computes ``--repeats``
   independent gradients of the encoder's parameters, and the table reports the total
   variance (sum over parameters of the per-parameter variance across repeats) with its
   standard error (delta method over the repeats), at equal particles ``P = 2``, next to
   the objective evaluations each estimator spends per data point (``est.evaluations``).
   Rows: every registered unbiased estimator that serves Bernoulli latents (so estimators
   added later appear by themselves), and ``TraceGraph_ELBO(num_particles=2,
   vectorize_particles=True)`` without a baseline and with its decaying-average baseline
   (``infer={"baseline": {"use_decaying_avg_baseline": True}}``).  Stateful baselines
   (moving averages) run ``--repeats // 4`` calls before measuring.  ``vimco`` estimates
   the IWAE bound's gradient (a different objective), reported for completeness.
2. Speed: one ``svi.step()`` with ``EstimatorELBO`` + ``disarm`` (2 particles) against one
   with ``TraceGraph_ELBO(num_particles=2, vectorize_particles=True)``, the same VAE and
   minibatch, timed interleaved; the median of per-pair ratios is reported (the machine is
   shared, so ratios, not absolute times, are what count).

    python benchmarks/pyro_elbo.py --quick        # about a minute
    python benchmarks/pyro_elbo.py                # several minutes
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, TraceGraph_ELBO
from pyro.optim import Adam

import relaxit
from relaxit.pyro import EstimatorELBO
from relaxit_core import Capability

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("relaxit_example_pyro_vae", ROOT / "examples" / "pyro_vae.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def unbiased_bernoulli() -> list[dict]:
    """Every registered score-function estimator with ``UNBIASED`` serving Bernoulli latents."""
    out = []
    for info in relaxit.available():
        if "bernoulli" not in info.families:
            continue
        cfg = {"name": info.name}
        if len(info.families) > 1:
            cfg["family"] = "bernoulli"
        variants = [cfg]
        if info.name == "reinforce":
            variants = [dict(cfg, baseline=b) for b in ("none", "moving_average", "leave_one_out")]
        for c in variants:
            est = relaxit.build(c)
            if Capability.UNBIASED in est.capabilities and Capability.RSAMPLE not in est.capabilities:
                out.append(c)
    return out


def label(spec) -> str:
    if isinstance(spec, str):
        return spec
    extra = {k: v for k, v in spec.items() if k not in ("name", "family")}
    return spec["name"] + ("[" + ", ".join(f"{k}={v}" for k, v in extra.items()) + "]" if extra else "")


def encoder_grads(vae, loss_and_grads, x, repeats: int, warm: int) -> torch.Tensor:
    params = list(vae.encoder.parameters())
    rows = []
    for i in range(warm + repeats):
        for p in vae.parameters():
            p.grad = None
        loss_and_grads(vae.model, vae.guide, x)
        if i >= warm:
            rows.append(torch.cat([p.grad.reshape(-1) for p in params]))
    return torch.stack(rows)


def total_variance(g: torch.Tensor) -> tuple[float, float]:
    """``sum_j Var g_j`` and its standard error, from the per-repeat squared deviations."""
    dev2 = (g - g.mean(0)).pow(2).sum(1) * g.shape[0] / (g.shape[0] - 1)  # unbiased per-repeat terms
    return float(dev2.mean()), float(dev2.std() / math.sqrt(len(dev2)))


def variance_table(ex, repeats: int, warmup: int, batch: int) -> list[tuple]:
    pyro.set_rng_seed(0)
    x_train, _ = ex.load_digits()
    vae = ex.PyroVAE(estimator="disarm")
    pyro.clear_param_store()
    svi = SVI(vae.model, vae.guide, Adam({"lr": 3e-3}), loss=EstimatorELBO(num_particles=2, max_plate_nesting=1))
    gen = torch.Generator().manual_seed(0)
    for _ in range(warmup):
        svi.step(x_train[torch.randint(len(x_train), (100,), generator=gen)])
    x = x_train[:batch]
    rows = []
    for spec in unbiased_bernoulli():
        vae.estimator = spec
        elbo = EstimatorELBO(num_particles=2, max_plate_nesting=1)
        warm = repeats // 4 if (isinstance(spec, dict) and spec.get("baseline") == "moving_average") else 1
        g = encoder_grads(vae, elbo.loss_and_grads, x, repeats, warm)
        est = elbo.estimators["z"]
        evals = est.evaluations(2, batch_ndim=1, logits=torch.zeros(batch, vae.latent)) if hasattr(est, "evaluations") else 2
        rows.append((label(spec), *total_variance(g), evals))
    vae.estimator = None
    for name, infer in (("TraceGraph_ELBO", {}), ("TraceGraph_ELBO + decaying-average baseline", {"baseline": {"use_decaying_avg_baseline": True}})):
        def guide(x, infer=infer):
            pyro.module("encoder", vae.encoder)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", pyro.distributions.Bernoulli(logits=vae.encoder(x)).to_event(1), infer=dict(infer))

        tg = TraceGraph_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
        g = encoder_grads(_Swap(vae, guide), tg.loss_and_grads, x, repeats, repeats // 4 if infer else 1)
        rows.append((name, *total_variance(g), 2))
    return rows


class _Swap:
    """The VAE with another guide (for TraceGraph_ELBO's baseline options)."""

    def __init__(self, vae, guide):
        self.vae, self.guide, self.model, self.encoder = vae, guide, vae.model, vae.encoder

    def parameters(self):
        return self.vae.parameters()


def speed(ex, pairs: int, batch: int) -> tuple[float, float, float]:
    pyro.set_rng_seed(0)
    x_train, _ = ex.load_digits()
    x = x_train[:batch]
    vae = ex.PyroVAE(estimator="disarm")
    pyro.clear_param_store()
    ours = SVI(vae.model, vae.guide, Adam({"lr": 1e-4}), loss=EstimatorELBO(num_particles=2, max_plate_nesting=1))
    theirs = SVI(vae.model, vae.guide, Adam({"lr": 1e-4}),
                 loss=TraceGraph_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1))
    for _ in range(5):
        ours.step(x)
        theirs.step(x)
    ratios, t_ours, t_theirs = [], [], []
    for i in range(pairs):
        first, second = (ours, theirs) if i % 2 == 0 else (theirs, ours)
        t0 = time.perf_counter()
        first.step(x)
        t1 = time.perf_counter()
        second.step(x)
        t2 = time.perf_counter()
        a, b = (t1 - t0, t2 - t1) if first is ours else (t2 - t1, t1 - t0)
        t_ours.append(a)
        t_theirs.append(b)
        ratios.append(a / b)
    return statistics.median(ratios), statistics.median(t_ours), statistics.median(t_theirs)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown tables here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = args.repeats or (100 if args.quick else 400)
    warmup = 100 if args.quick else 500
    batch = 50
    ex = _example()
    rows = variance_table(ex, repeats, warmup, batch)
    ratio, t_ours, t_theirs = speed(ex, 30 if args.quick else 200, 100)
    tg = next(r for r in rows if r[0] == "TraceGraph_ELBO")[1]
    lines = [
        f"Encoder-gradient variance, Bernoulli VAE on the digits (16 latents, batch {batch}, "
        f"{warmup} warm-up steps, {repeats} repeats, 2 particles):",
        "",
        "| ELBO / estimator | total variance | ± SE | vs TraceGraph_ELBO | objective rows per data point |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, var, se, evals in sorted(rows, key=lambda r: r[1]):
        lines.append(f"| {name} | {var:.4g} | {se:.2g} | {var / tg:.3g} | {evals} |")
    lines += [
        "",
        f"Speed, one `svi.step()` (batch 100), median of interleaved pairs: EstimatorELBO + disarm "
        f"{1e3 * t_ours:.1f} ms, TraceGraph_ELBO(num_particles=2, vectorize_particles=True) "
        f"{1e3 * t_theirs:.1f} ms; **ratio {ratio:.2f}x** (one thread; shared machine, the ratio is what counts).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
