"""Cost of the score-function and control-variate estimators per ``estimate()`` + ``backward()``,
as ratios to two hand-written references measured in the same run.

Problem: independent Bernoulli latents, ``D = 200``, batch ``B = 256`` (``--batch``), logits
``[B, D]`` a leaf, one CPU thread, torch's argument validation off (as the performance guide
recommends for training loops).  Two objectives: ``cheap``, ``Σ_d (z_d - t_d)²``, and
``decoder``, a 200→784 linear decoder with a Bernoulli likelihood of fixed binary "images"
(its weights get the Monte Carlo gradient too).  Every estimator runs at 3 objective
evaluations per latent: ``num_samples = 3`` for the multi-sample estimators, ``1`` for REBAR and
RELAX (which evaluate ``b``, ``σ(z)`` and ``σ(z̃)``).

References, each a plain function in this file:

(a) a hand-written version of the *same algorithm* (same network, same ``learn`` flags, same
    evaluations): ``hand_<name>``;
(b) the fastest honest RLOO with the same number of evaluations: samples ``rand < p``, score
    ``b - σ(l)`` (finite at ``l = ±inf``), the estimate ``ĝ = mean_s w_s (b_s - σ(l))`` formed by one product and sum (faster here than ``einsum``)
    and handed to ``backward`` beside the Monte Carlo loss.

The reinforce batch sweep also reports two variants of (b): drawing in place
(``rand(...).lt_(p)``, as the library draws), and returning a surrogate (one autograd node
whose backward hands ``g`` to the logits; the caller runs ``.sum().backward()``, as with any
estimator object): the share of the fixed cost that an ``estimate()`` interface adds at
small batches, whoever writes it.

Timing: each round calls every case once, in an interleaved order shuffled anew each round, each call timed on its
own by the CPU time of the (single) thread that runs it, so that other processes' time slices
on a loaded machine do not count; the ratio of a case to its reference is taken within a round, and the table gives the
median over rounds with a distribution-free 95% confidence interval of that median (order
statistics of the binomial).  The machine may be loaded by other work: read the ratios.

    python benchmarks/cv_speed.py                 # full table, both objectives, batch sweep
    python benchmarks/cv_speed.py --quick         # smoke run (seconds)
    python benchmarks/cv_speed.py --only reinforce vimco --rounds 15
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch
import torch.nn.functional as F

import relaxit

from _stats import interleaved_times, median_ci  # noqa: E402

D_LATENT, D_OUT, EVALS = 200, 784, 3


# --------------------------------------------------------------------------- problems
class Problem:
    """Logits, objective and the objective's own parameters of one benchmark case."""

    def __init__(self, kind: str, batch: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.kind = kind
        self.logits = torch.randn(batch, D_LATENT, generator=gen).requires_grad_(True)
        if kind == "cheap":
            target = torch.rand(D_LATENT, generator=gen)
            self.params = []
            self.objective = lambda z: (z - target).pow(2).sum(-1)
        else:
            dec = torch.nn.Linear(D_LATENT, D_OUT)
            x = (torch.rand(batch, D_OUT, generator=gen) < 0.3).float()
            self.params = list(dec.parameters())

            def objective(z):  # [S, B, D] -> [S, B]
                out = dec(z)
                return F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)

            self.objective = objective

    def zero(self, *modules):
        self.logits.grad = None
        for p in self.params:
            p.grad = None
        for m in modules:
            for p in m.parameters():
                p.grad = None


# --------------------------------------------------------------------------- (b) RLOO
def _backward(loss, l, g):
    """Hand ``g`` to the logits and the Monte Carlo ``loss`` to the objective's parameters."""
    if loss.requires_grad:
        torch.autograd.backward((loss, l), (None, g))
    else:
        l.backward(g)


def rlooo_b(pb: Problem, k: int = EVALS):
    """(b): the fastest honest RLOO with ``k`` evaluations."""
    l = pb.logits
    p = torch.sigmoid(l.detach())
    _rloo_step(pb, p, (torch.rand((k,) + l.shape) < p).to(l.dtype))


def _rloo_step(pb: Problem, p: torch.Tensor, z: torch.Tensor):
    """RLOO from the samples ``z`` ``[k, *logits.shape]`` of ``Bernoulli(p)``: the estimate
    ``ĝ = mean_s w_s (z_s - σ(l))`` formed by one product and sum, handed to ``backward``."""
    k = z.shape[0]
    f = pb.objective(z)
    fd = f.detach()
    w = fd - (fd.sum(0) - fd) / (k - 1)  # leave-one-out baseline
    g = (w.unsqueeze(-1) * (z - p)).sum(0) / k  # mean_s w_s (z_s - σ(l))
    _backward(f.mean(0).sum(), pb.logits, g)


def rlooo_b_in_place(pb: Problem, k: int = EVALS):
    """(b) drawing in place, ``rand(...).lt_(p)`` (no boolean tensor, no conversion pass), as
    ``relaxit_core.distributions.bernoulli_draw`` does: reported beside (b) in the batch sweep,
    so that the library's own saving on the draw is not mistaken for a smaller fixed cost."""
    l = pb.logits
    p = torch.sigmoid(l.detach())
    _rloo_step(pb, p, torch.rand((k,) + l.shape).lt_(p))


class _Surrogate(torch.autograd.Function):
    """``value`` unchanged; its backward also hands ``logits`` the gradient ``g`` times the
    incoming one: the cheapest surrogate found for an interface that returns one (the custom
    node costs less than ``value + ((l - l.detach()) * g).sum(-1)``'s three built-in nodes)."""

    @staticmethod
    def forward(ctx, value, logits, g):
        ctx.g = g
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.unsqueeze(-1) * ctx.g, None


def rlooo_b_surrogate(pb: Problem, k: int = EVALS):
    """(b) behind an ``estimate()`` interface: the same RLOO, but it returns a surrogate (one
    autograd node, :class:`_Surrogate`) and the caller runs ``surrogate.sum().backward()``, as
    with any estimator object, instead of handing ``g`` to the logits directly.  Reported
    beside (b) in the batch sweep: the part of the fixed cost that the interface itself adds."""
    l = pb.logits
    p = torch.sigmoid(l.detach())
    z = (torch.rand((k,) + l.shape) < p).to(l.dtype)
    f = pb.objective(z)
    fd = f.detach()
    w = fd - (fd.sum(0) - fd) / (k - 1)
    g = (w.unsqueeze(-1) * (z - p)).sum(0) / k
    _Surrogate.apply(f.mean(0), l, g).sum().backward()


# --------------------------------------------------------------------------- (a) hand-written
def hand_vimco(pb: Problem, k: int = EVALS):
    """VIMCO (Mnih & Rezende 2016, eqs. 10-11) on log-weights ``-f``, written out."""
    l = pb.logits
    p = torch.sigmoid(l.detach())
    z = (torch.rand((k,) + l.shape) < p).to(l.dtype)
    logw = -pb.objective(z)
    bound = logw.logsumexp(0) - math.log(k)
    lw = logw.detach()
    geo = (lw.sum(0, keepdim=True) - lw) / (k - 1)
    # L_{-j}: log-weights with w_j replaced by the geometric mean of the others
    eye = torch.eye(k, dtype=torch.bool).view(k, k, 1)
    loo = torch.where(eye, geo.unsqueeze(1), lw.unsqueeze(0)).logsumexp(1) - math.log(k)
    signal = bound.detach() - loo
    g = (signal.unsqueeze(-1) * (z - p)).sum(0)
    _backward(-bound.sum(), l, -g)


def hand_double_cv(pb: Problem, alpha: torch.Tensor, k: int = EVALS):
    """Double control variates (Titsias & Shi 2022), ``α`` learned by ``Σ ĝ²``, written out.

    The Monte Carlo loss goes through the objective only where it has parameters (the
    decoder); the cheap objective's value is detached, as in the library."""
    l = pb.logits
    p = torch.sigmoid(l.detach())
    z = (torch.rand((k,) + l.shape) < p).to(l.dtype).requires_grad_(True)
    f = pb.objective(z)
    (gz,) = torch.autograd.grad(f.sum(), z, retain_graph=bool(pb.params))
    z = z.detach()
    fd = f.detach()
    score = z - p
    g_loo = (gz.sum(0, keepdim=True) - gz) / (k - 1)
    h = (g_loo * score).sum(-1)
    sig = fd - (fd.sum(0) - fd) / (k - 1) + alpha * (h - (h.sum(0) - h) / (k - 1))
    g_bar = gz.mean(0)
    g_hat = (sig.unsqueeze(-1) * score).sum(0) / k - alpha * g_bar * p * (1 - p)
    var = g_hat.pow(2).sum()
    _backward((f if pb.params else fd).mean(0).sum() + var, l, g_hat.detach())


class HandRodeoNet(torch.nn.Module):
    """RODEO's control network as the authors write it (``SteinControlNNSingleLayer``): two scalar
    inputs, one hidden layer of LeakyReLU(0.3) units, two outputs, evaluated densely."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.dense_x = torch.nn.Linear(1, hidden)
        self.dense_z = torch.nn.Linear(1, hidden)
        self.out = torch.nn.Linear(hidden, 2)
        self.alpha = torch.nn.Parameter(torch.tensor(0.0))
        self.beta = torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, t, z):  # t [..., N], z [...] -> [..., N, 2]
        pre = self.dense_x(t.unsqueeze(-1)) + self.dense_z(z.unsqueeze(-1)).unsqueeze(-2)
        return self.out(F.leaky_relu(pre, 0.3))


def hand_rodeo(pb: Problem, net: HandRodeoNet, k: int = EVALS):
    """RODEO (Shi et al. 2022, the authors' ``discrete_stein_avg``) written out in plain torch:
    the Taylor surrogate of the other samples at the state and its ``D`` one-flip neighbours,
    the network on all of them (``[K, B, D + 1, H]``), ``α``, ``β`` and the network learned by
    ``Σ ĝ²`` through autograd."""
    l = pb.logits
    p = torch.sigmoid(l.detach())
    x = (torch.rand((k,) + l.shape) < p).to(l.dtype).requires_grad_(True)
    f = pb.objective(x)
    (g,) = torch.autograd.grad(f.sum(), x, retain_graph=bool(pb.params))
    x, fd = x.detach(), f.detach()
    loo = lambda v: (v.sum(0) - v) / (k - 1)  # noqa: E731
    d = x.shape[-1]
    score = x - p
    g_loo = loo(g)
    lin_x = (g_loo * x).sum(-1) - loo((g * x).sum(-1))
    flip = 1 - 2 * x
    t = torch.cat([lin_x.unsqueeze(-1) + g_loo * flip, lin_x.unsqueeze(-1)], -1)  # neighbours, then x
    h = net(t, loo(fd))  # [K, B, D + 1, 2]
    w = torch.where(x > 0, 1 - p, p)  # Gibbs kernel: q of the flipped coordinate
    h0, h1 = h[..., 0], h[..., 1]
    a_h0 = (w * (h0[..., :d] - h0[..., d:])).sum(-1) / d
    wh1 = w * h1[..., :d]
    a_h1 = (score * (wh1.sum(-1) - h1[..., d] * w.sum(-1)).unsqueeze(-1) + wh1 * flip) / d
    signal = fd - loo(fd + net.alpha * a_h0)
    g_hat = (signal.unsqueeze(-1) * score + net.beta * a_h1).mean(0)
    _backward((f if pb.params else fd).mean(0).sum() + g_hat.pow(2).sum(), l, g_hat.detach())


def _conditional(l, b, v):
    """``z̃ ~ p(z | b)`` in logistic space (Tucker et al. 2017, appendix), without cancellation."""
    lv = v.log() - (-v).log1p()
    return torch.where(b > 0, F.softplus(lv + F.softplus(l)), -F.softplus(lv + F.softplus(-l)))


def _uniform(shape, like):
    eps = torch.finfo(like.dtype).eps
    return torch.rand(shape, dtype=like.dtype).clamp_(eps, 1 - eps)


def hand_rebar(pb: Problem, eta: float = 1.0, tau: float = 0.5, s: int = 1):
    """REBAR (Tucker et al. 2017, eq. 7), ``learn=False``: 3 evaluations per sample, ``b`` in one
    objective call and the two relaxations in another."""
    l = pb.logits
    theta = l.detach().requires_grad_(True)
    shape = (s,) + l.shape
    u = _uniform(shape, l)
    z = theta + (u.log() - (-u).log1p())
    b = (z > 0).to(l.dtype).detach()
    zt = _conditional(theta, b, _uniform(shape, l))
    f_b = pb.objective(b)  # its own call: its backward reaches only the objective's parameters
    f_z, f_zt = pb.objective(torch.sigmoid(torch.cat([z, zt]) / tau)).split(s)
    (g_path,) = torch.autograd.grad(eta * (f_z - f_zt).sum(), theta)
    coef = (f_b - eta * f_zt).detach()
    g = (coef.unsqueeze(-1) * (b - torch.sigmoid(theta.detach()))).sum(0) / s + g_path / s
    _backward(f_b.mean(0).sum(), l, g)


class HandRelaxNet(torch.nn.Module):
    """RELAX's ``c_φ(z) = η f(σ_λ(z)) + r_ρ(z)``, ``r_ρ`` reading the whole relaxed vector
    ``2 σ_λ(z) - 1`` (one tanh hidden layer, the authors' ``QFunc``), output layer at zero."""

    def __init__(self, d: int, hidden: int = 16):
        super().__init__()
        self.eta = torch.nn.Parameter(torch.tensor(1.0))
        self.log_tau = torch.nn.Parameter(torch.tensor(math.log(0.5)))
        self.h1 = torch.nn.Linear(d, hidden)
        self.out = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def r(self, soft):
        return self.out(torch.tanh(self.h1(2 * soft - 1))).squeeze(-1)


def hand_relax(pb: Problem, net: HandRelaxNet, s: int = 1):
    """RELAX (Grathwohl et al. 2018, eq. 8, Algorithms 1-2), control variate learned by ``Σ ĝ²``."""
    l = pb.logits
    theta = l.detach().requires_grad_(True)
    shape = (s,) + l.shape
    u = _uniform(shape, l)
    z = theta + (u.log() - (-u).log1p())
    b = (z > 0).to(l.dtype).detach()
    zt = _conditional(theta, b, _uniform(shape, l))
    soft = torch.sigmoid(torch.cat([z, zt]) / net.log_tau.exp())
    f_b, f_s = pb.objective(b), pb.objective(soft)  # b's backward reaches only the objective's parameters
    c = net.eta * f_s + net.r(soft)
    c_z, c_zt = c[:s], c[s:]
    (g_path,) = torch.autograd.grad((c_z - c_zt).sum(), theta, create_graph=True)
    g_hat = ((f_b.detach() - c_zt).unsqueeze(-1) * (b - torch.sigmoid(theta.detach()))).sum(0) / s + g_path / s
    learned = list(net.parameters())
    var_grads = torch.autograd.grad(g_hat.pow(2).sum(), learned)
    for p_, g_ in zip(learned, var_grads):
        p_.grad = g_
    _backward(f_b.mean(0).sum(), l, g_hat.detach())


# --------------------------------------------------------------------------- library calls
def lib_step(est, pb: Problem, k: int, **kw):
    out = est.estimate(pb.objective, num_samples=k, logits=pb.logits, **kw)
    out.surrogate.sum().backward()


def lib_vimco(est, pb: Problem, k: int):
    out = est.estimate(lambda z: -pb.objective(z), num_samples=k, reduce="logmeanexp", logits=pb.logits)
    (-out.surrogate.sum()).backward()


# --------------------------------------------------------------------------- timing
def run_cases(cases, rounds):
    """``{label: [seconds, one per round]}``: :func:`_stats.interleaved_times` (each round in a
    freshly shuffled order, thread CPU time per call, ratios taken within a round)."""
    return interleaved_times(cases, rounds)


def build_cases(pb: Problem, only):
    k = EVALS
    cases, refs = {}, {}

    def add(label, fn, ref_a=None):
        cases[label] = fn
        refs[label] = ref_a

    add("(b) RLOO", lambda: (rlooo_b(pb), pb.zero()))
    want = lambda n: not only or n in only  # noqa: E731
    if want("reinforce"):
        est = relaxit.get("reinforce", family="bernoulli", baseline="leave_one_out")
        add("reinforce (RLOO)", lambda: (lib_step(est, pb, k), pb.zero()), "(b) RLOO")
    if want("vimco"):
        est_v = relaxit.get("vimco", family="bernoulli")
        add("(a) VIMCO", lambda: (hand_vimco(pb), pb.zero()))
        add("vimco (logmeanexp)", lambda: (lib_vimco(est_v, pb, k), pb.zero()), "(a) VIMCO")
        add("vimco (mean)", lambda: (lib_step(est_v, pb, k), pb.zero()), "(b) RLOO")
    if want("double_cv"):
        est_d = relaxit.get("double_cv")
        alpha = torch.nn.Parameter(torch.tensor(0.0))
        add("(a) double_cv", lambda: (hand_double_cv(pb, alpha), pb.zero(), setattr(alpha, "grad", None)))
        add("double_cv", lambda: (lib_step(est_d, pb, k), pb.zero(est_d)), "(a) double_cv")
    if want("rodeo"):
        est_r = relaxit.get("rodeo")
        net_r = HandRodeoNet(est_r.config.hidden)
        add("(a) rodeo", lambda: (hand_rodeo(pb, net_r), pb.zero(net_r)))
        add("rodeo", lambda: (lib_step(est_r, pb, k), pb.zero(est_r)), "(a) rodeo")
    if want("rebar"):
        est_rb = relaxit.get("rebar")
        add("(a) rebar", lambda: (hand_rebar(pb), pb.zero()))
        add("rebar", lambda: (lib_step(est_rb, pb, 1), pb.zero()), "(a) rebar")
    if want("relax"):
        est_rx = relaxit.get("relax", family="bernoulli")
        net = HandRelaxNet(D_LATENT)
        add("(a) relax", lambda: (hand_relax(pb, net), pb.zero(net)))
        add("relax", lambda: (lib_step(est_rx, pb, 1), pb.zero(est_rx)), "(a) relax")
        # c_φ = r_ρ alone (one evaluation per sample), the default of storchastic's RELAX
        est_rn = relaxit.get("relax", family="bernoulli", relaxation=False)
        add("relax (relaxation=False, 1 evaluation)", lambda: (lib_step(est_rn, pb, 1), pb.zero(est_rn)))
    return cases, refs


def table(times, refs, title):
    print(f"\n### {title}\n")
    print("| case | ms | ratio to (a) [95% CI] | ratio to (b) RLOO [95% CI] |")
    print("|---|---:|---:|---:|")
    base = times["(b) RLOO"]
    for label, ts in times.items():
        ms = statistics.median(ts) * 1e3
        rb = median_ci([t / b for t, b in zip(ts, base)])
        ref = refs.get(label)
        if ref and ref != "(b) RLOO":
            ra = median_ci([t / r for t, r in zip(ts, times[ref])])
            sa = f"{ra[0]:.2f} [{ra[1]:.2f}, {ra[2]:.2f}]"
        elif ref == "(b) RLOO":
            sa = "= (b)"
        else:
            sa = "—"
        print(f"| {label} | {ms:.3f} | {sa} | {rb[0]:.2f} [{rb[1]:.2f}, {rb[2]:.2f}] |")
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds, short timers: a smoke run")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sweep", type=int, nargs="*", default=[32, 128, 512, 1024],
                    help="batch sizes of the reinforce sweep (empty: none)")
    ap.add_argument("--rounds", type=int, default=101)
    ap.add_argument("--objectives", nargs="+", default=["cheap", "decoder"])
    ap.add_argument("--only", nargs="*", default=[], help="estimators to include (default: all)")
    ap.add_argument("--validate", action="store_true", help="keep torch's argument validation on")
    ap.add_argument("--seed", type=int, default=0,
                    help="torch's seed before the cases are built (the learned control variates' initial weights)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.sweep = 7, [64]
    torch.set_num_threads(1)
    relaxit.available()  # loads every plugin before timing (the loading keeps the validation setting)
    torch.distributions.Distribution.set_default_validate_args(args.validate)
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, 1 thread, validation {'on' if args.validate else 'off'}, "
          f"D = {D_LATENT}, {EVALS} evaluations, {args.rounds} interleaved rounds")
    for kind in args.objectives:
        pb = Problem(kind, args.batch)
        cases, refs = build_cases(pb, args.only)
        table(run_cases(cases, args.rounds), refs, f"{kind} objective, batch {args.batch}")
    if args.sweep and (not args.only or "reinforce" in args.only):
        for kind in args.objectives:
            print(f"\n### reinforce (RLOO) / (b), {kind} objective, batch sweep\n")
            print("| batch | (b) ms | reinforce ms | ratio [95% CI] | / (b) drawing in place [95% CI] "
                  "| / (b) returning a surrogate [95% CI] | (b) returning a surrogate / (b) [95% CI] |\n"
                  "|---:|---:|---:|---:|---:|---:|---:|")
            for batch in args.sweep:
                pb = Problem(kind, batch)
                est = relaxit.get("reinforce", family="bernoulli", baseline="leave_one_out")
                cases = {"b": lambda: (rlooo_b(pb), pb.zero()),
                         "r": lambda: (lib_step(est, pb, EVALS), pb.zero()),
                         "b2": lambda: (rlooo_b_in_place(pb), pb.zero()),
                         "bs": lambda: (rlooo_b_surrogate(pb), pb.zero())}
                t = run_cases(cases, 3 * args.rounds)
                r, r2, r3, r4 = (median_ci([x / y for x, y in zip(t[a], t[b])])
                                 for a, b in (("r", "b"), ("r", "b2"), ("r", "bs"), ("bs", "b")))
                print(f"| {batch} | {statistics.median(t['b']) * 1e3:.3f} | {statistics.median(t['r']) * 1e3:.3f} "
                      + "".join(f"| {x[0]:.2f} [{x[1]:.2f}, {x[2]:.2f}] " for x in (r, r2, r3, r4)) + "|")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
