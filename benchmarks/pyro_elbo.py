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
   (``infer={"baseline": {"use_decaying_avg_baseline": True}}``).  Estimators with
   parameters (RELAX, REBAR) are measured at their initial values.  Stateful baselines
   (moving averages) are warmed up on ``--repeats // 2`` random minibatches, as in training,
   then frozen while measuring (else a per-data-point average would learn the fixed
   minibatch, which training never shows it twice).  ``vimco`` estimates
   the IWAE bound's gradient (a different objective), reported for completeness.
2. A plate of 3 Bernoulli sites: each unbiased estimator on the whole ELBO (the latents as
   one ``to_event`` site) and on the plate-local costs, against ``TraceGraph_ELBO``.
3. Speed: one ``svi.step()`` with ``EstimatorELBO`` + ``disarm`` (2 particles) against one
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


def encoder_grads(vae, loss_and_grads, x, repeats: int, warm: int, pool=None, state=None) -> torch.Tensor:
    """``repeats`` encoder gradients on the fixed minibatch ``x``.  A stateful baseline is
    first run ``warm`` times on random minibatches of ``pool`` (as in training), then frozen:
    its state (``state()`` returns a dict of tensors) is restored before every repeat, so it
    does not learn the fixed minibatch."""
    params = list(vae.encoder.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(warm):
        loss_and_grads(vae.model, vae.guide, pool[torch.randint(len(pool), (len(x),), generator=gen)])
    frozen = {k: v.detach().clone() for k, v in state().items()} if state is not None else {}
    rows = []
    for _ in range(repeats):
        with torch.no_grad():
            for k, v in state().items() if state is not None else ():
                v.copy_(frozen[k])
        for p in vae.parameters():
            p.grad = None
        loss_and_grads(vae.model, vae.guide, x)
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
    stateful_warm = max(50, repeats // 2)
    for spec in unbiased_bernoulli():
        vae.estimator = spec
        elbo = EstimatorELBO(num_particles=2, max_plate_nesting=1)
        stateful = isinstance(spec, dict) and spec.get("baseline") == "moving_average"
        # one call builds the site's estimator (and warms a stateful baseline up on random minibatches)
        g = encoder_grads(vae, elbo.loss_and_grads, x, repeats, stateful_warm if stateful else 1, x_train,
                          state=(lambda elbo=elbo: dict(elbo.estimators.named_buffers())) if stateful else None)
        est = elbo.estimators["z"]
        evals = est.evaluations(2, batch_ndim=1, logits=torch.zeros(batch, vae.latent)) if hasattr(est, "evaluations") else 2
        rows.append((label(spec), *total_variance(g), evals))
    vae.estimator = None
    store = pyro.get_param_store()
    for name, infer in (("TraceGraph_ELBO", {}), ("TraceGraph_ELBO + decaying-average baseline", {"baseline": {"use_decaying_avg_baseline": True}})):
        def guide(x, infer=infer):
            pyro.module("encoder", vae.encoder)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", pyro.distributions.Bernoulli(logits=vae.encoder(x)).to_event(1), infer=dict(infer))

        def baseline_state():
            return {k: store[k] for k in store.keys() if k.startswith("__baseline")}

        tg = TraceGraph_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
        g = encoder_grads(_Swap(vae, guide), tg.loss_and_grads, x, repeats, stateful_warm if infer else 0, x_train,
                          state=baseline_state if infer else None)
        rows.append((name, *total_variance(g), 2))
    return rows


class _Swap:
    """The VAE with another guide (for TraceGraph_ELBO's baseline options)."""

    def __init__(self, vae, guide):
        self.vae, self.guide, self.model, self.encoder = vae, guide, vae.model, vae.encoder

    def parameters(self):
        return self.vae.parameters()


P0 = torch.tensor([0.3, -0.2, 0.5])
XA = torch.tensor([1.0, -0.5, 2.0])
LA = torch.tensor([0.4, -0.7, 1.2])


def plate_table(n: int = 20000) -> list[tuple]:
    """Gradient variance on a plate of 3 Bernoulli sites (``x_i ~ N(2 z_i - 1, 1)``): every
    unbiased estimator on the plate-local costs and on the whole ELBO (the same latents as one
    ``to_event(1)`` site), and TraceGraph_ELBO, at 2 particles.  ``n`` independent replicates
    run side by side in an outer plate, each with its own copy of the guide's logits."""

    def model(local: bool):
        def fn():
            with pyro.plate("rep", n, dim=-2 if local else -1):
                if local:
                    with pyro.plate("i", 3, dim=-1):
                        z = pyro.sample("z", pyro.distributions.Bernoulli(logits=P0))
                        pyro.sample("x", pyro.distributions.Normal(2 * z - 1, 1.0), obs=XA)
                else:
                    z = pyro.sample("z", pyro.distributions.Bernoulli(logits=P0).to_event(1))
                    pyro.sample("x", pyro.distributions.Normal(2 * z - 1, 1.0).to_event(1), obs=XA)
        return fn

    def guide(leaf, local: bool):
        def fn():
            with pyro.plate("rep", n, dim=-2 if local else -1):
                if local:
                    with pyro.plate("i", 3, dim=-1):
                        pyro.sample("z", pyro.distributions.Bernoulli(logits=leaf))
                else:
                    pyro.sample("z", pyro.distributions.Bernoulli(logits=leaf).to_event(1))
        return fn

    def var(loss_and_grads, local):
        leaf = LA.expand(n, 3).clone().requires_grad_(True)
        loss_and_grads(model(local), guide(leaf, local))
        return float(leaf.grad.var(0).sum())

    rows = []
    mpn = 2
    for spec in unbiased_bernoulli():
        if isinstance(spec, dict) and spec.get("baseline") == "moving_average":
            continue  # its state would need warming up; the leave-one-out row stands for REINFORCE
        pyro.clear_param_store()
        whole = var(EstimatorELBO(num_particles=2, max_plate_nesting=1, default=spec, bound="elbo").loss_and_grads, False)
        local = var(EstimatorELBO(num_particles=2, max_plate_nesting=mpn, default=spec, bound="elbo").loss_and_grads, True)
        rows.append((label(spec), whole, local))
    tg = var(TraceGraph_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=mpn).loss_and_grads, True)
    rows.append(("TraceGraph_ELBO", float("nan"), tg))
    return rows


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
    plate = plate_table(4000 if args.quick else 20000)
    tg_plate = plate[-1][2]
    lines = [
        "Gradient variance (sum over the 3 logits) on a plate of 3 Bernoulli sites, 2 particles "
        "(`whole ELBO`: the estimator on the whole ELBO, the latents as one site; `plate-local`: "
        "each element on its own downstream cost, as EstimatorELBO does):",
        "",
        "| estimator | whole ELBO | plate-local | plate-local vs TraceGraph_ELBO |",
        "|---|---:|---:|---:|",
    ]
    for name, whole, local in sorted(plate, key=lambda r: r[2]):
        w = "" if math.isnan(whole) else f"{whole:.3g}"
        lines.append(f"| {name} | {w} | {local:.3g} | {local / tg_plate:.3g} |")
    lines += [
        "",
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
