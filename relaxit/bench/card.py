"""The gradient card: every estimator's gradient against the exact gradient of the same
objective, at equal objective evaluations, at shared checkpoints.

Models (``GradientCardTask.model``), each with an exact gradient w.r.t. the logits of the
discrete law:

- ``toy``: ``E[(z - t)^2]``, one Bernoulli latent (Tucker et al. 2017, Sec. 6.1; closed form);
- ``toy-categorical``: ``E[(c·z - t)^2]``, one categorical of ``categories`` values
  ``c_j = j / (categories - 1)`` (closed form);
- ``poly``: the ReinMax polynomial toy (Liu et al. 2023, Sec. 6.1; ``poly/poly_programming.py``
  of LiyuanLucasLiu/ReinMax): ``mean_i |z_i - 0.45|^p`` over 128 independent binary latents,
  ``θ ~ U(-0.01, 0.01)``; the loss is separable, so
  ``E = mean_i [σ(θ_i) |1 - c|^p + (1 - σ(θ_i)) |c|^p]`` in closed form;
- ``vae-bernoulli`` / ``vae-categorical``: a VAE on the bundled 8x8 digits with 12 binary
  latents (4096 codes) or ``latents x categories`` one-hot latents (4 x 8 = 4096 codes, the
  ReinMax bias protocol). The architecture is ReinMax's 784-512-256-(L·C) encoder and
  mirrored decoder with every width divided by 8 (the digits have 64 pixels, not 784):
  64-64-32-(L·C) and (L·C)-32-64-64, ReLU. The objective is the ELBO's reconstruction term
  ``E_q[-log p(x|z)]`` of a fixed batch (the analytic KL is exact for every estimator and
  left out); its exact gradient w.r.t. the encoder logits enumerates every code: the
  decoder does not depend on ``x``, so it runs once per code and ``log p(x|z)`` for the
  whole batch is one matrix product.

Protocol, per model and seed: one training run with the exact gradient (Adam,
``train_steps``) saves its start, middle and end; at each checkpoint every estimator
(built fresh from its config) first trains its own state — learned control variates and
temperatures with Adam, moving averages by being called — on the frozen model for
``warmup`` steps (only when it has state: parameters, or buffers that one call changes),
then is frozen and drawn from: the parameters are replicated ``draws`` times along a new
batch dimension and ONE ``estimate()`` call makes every draw
(:func:`relaxit_core.diagnostics.gradient_samples`).  ``num_samples`` is chosen so that
``est.evaluations(num_samples, ...)`` (objective rows per call) is the largest that fits in
``budget``; estimators without ``evaluations`` are measured by counting the rows their
objective receives.

Metrics per checkpoint (:func:`card_metrics`), for draws ``g_1..g_N`` and exact ``g``:
``rel_bias = sqrt(max(0, |ḡ - g|² - tr Σ̂ / N)) / |g|`` (the squared bias debiased for the
Monte Carlo noise, so that unbiased estimators show none), ``rel_std = sqrt(tr Σ̂) / |g|``,
``cosine`` (mean cosine similarity of one estimate with ``g``), ``mse = mean |g_i - g|² / |g|²``
(relative, so checkpoints of different gradient norms average), each with its standard
error (``_se``).  The run's metrics are their means over the three checkpoints.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["run_card", "card_metrics", "Problem", "problem"]

CHECKPOINTS = ("start", "middle", "end")
DTYPE = torch.float64  # the toys (exact zeros stay exact to rounding); the VAEs use float32
VAE_DTYPE = torch.float32


@dataclass
class Problem:
    """A model at its checkpoints: ``params[c]`` (the logits, detached), ``objective[c]``
    (``z -> loss`` with leading sample/replicate dimensions kept) and ``exact[c]`` (the
    exact gradient of ``E_q[objective].sum()`` w.r.t. the logits)."""

    family: str
    dtype: torch.dtype
    steps: list[int]
    params: list[torch.Tensor]
    objective: list[Callable[[torch.Tensor], torch.Tensor]]
    exact: list[torch.Tensor]
    batch_ndim: int = 0  # leading batch dimensions the objective keeps (the VAE's data points)


# ----------------------------------------------------------------- closed-form toys
def _train(expected: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, steps: int, lr: float):
    """Adam with the exact gradient of ``expected(theta)``; the logits at start, middle, end."""
    theta = theta.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    marks = {0: None, steps // 2: None, steps: None}
    for step in range(steps + 1):
        if step in marks:
            marks[step] = theta.detach().clone()
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        expected(theta).sum().backward()
        opt.step()
    return sorted(marks), [marks[s] for s in sorted(marks)]


def _exact_grad(expected: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
    theta = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(expected(theta).sum(), [theta])
    return g.detach()


def _toy_problem(task: dict[str, Any], seed: int, device: torch.device) -> Problem:
    t, model = task["target"], task["model"]
    if model == "toy":
        def f(z):
            return (z - t).pow(2).sum(-1)

        def expected(theta):
            p = torch.sigmoid(theta)
            return (p * (1 - t) ** 2 + (1 - p) * t**2).sum(-1)

        theta0 = torch.zeros(1, dtype=DTYPE, device=device)
        family = "bernoulli"
    elif model == "toy-categorical":
        C = task["categories"]
        c = torch.linspace(0, 1, C, dtype=DTYPE, device=device)

        def f(z):
            return ((z * c.to(z.dtype)).sum(-1) - t).pow(2)

        def expected(theta):
            return (theta.softmax(-1) * (c - t).pow(2)).sum(-1)

        theta0 = torch.zeros(C, dtype=DTYPE, device=device)
        family = "categorical"
    else:  # poly
        p_, D = task["power"], task["dim"]

        def f(z):
            return (z - t).abs().pow(p_).mean(-1)

        def expected(theta):
            q = torch.sigmoid(theta)
            return (q * abs(1 - t) ** p_ + (1 - q) * abs(t) ** p_).mean(-1)

        gen = torch.Generator().manual_seed(seed)
        theta0 = (torch.rand(D, generator=gen, dtype=DTYPE) * 0.02 - 0.01).to(device)
        family = "bernoulli"
    steps, thetas = _train(expected, theta0, task["train_steps"], task["train_lr"])
    return Problem(family, DTYPE, steps, thetas, [f] * 3, [_exact_grad(expected, th) for th in thetas])


# ----------------------------------------------------------------------- VAE
class CardVAE(nn.Module):
    """ReinMax's VAE with every width divided by 8 (64-64-32-(L·C) encoder, mirrored
    decoder, ReLU); Bernoulli (``categories=None``) or one-hot categorical latents."""

    def __init__(self, latents: int, categories: int | None, hidden: list[int], x_dim: int = 64):
        super().__init__()
        self.latents, self.categories = latents, categories
        width = latents * (categories or 1)
        enc = [x_dim, *hidden, width]
        dec = [width, *reversed(hidden), x_dim]
        self.encoder = nn.Sequential(*_layers(enc))
        self.decoder = nn.Sequential(*_layers(dec))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encoder(x)
        return out if self.categories is None else out.view(*x.shape[:-1], self.latents, self.categories)

    def codes(self) -> torch.Tensor:
        """Every latent code, ``[V, L]`` or ``[V, L, C]`` (V = 2^L or C^L)."""
        if self.categories is None:
            return torch.tensor(list(itertools.product((0.0, 1.0), repeat=self.latents)), dtype=VAE_DTYPE)
        idx = torch.tensor(list(itertools.product(range(self.categories), repeat=self.latents)))
        return F.one_hot(idx, self.categories).to(VAE_DTYPE)

    def dec_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z if self.categories is None else z.flatten(-2))

    def neg_log_lik(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``-log p(x|z)``: z ``[..., B, L(, C)]``, x ``[B, D]`` -> ``[..., B]``."""
        logits = self.dec_logits(z)
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def exact_terms(self, x: torch.Tensor, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``E_q[-log p(x|z)]`` per data point by enumeration, ``[B]``."""
        dl = self.dec_logits(codes)  # [V, D]: the decoder does not depend on x
        nll = -(x @ dl.T) + F.softplus(dl).sum(-1)  # [B, V]
        flat = codes.flatten(1)  # [V, L] or [V, L*C]
        if self.categories is None:
            log_q = F.logsigmoid(logits) @ flat.T + F.logsigmoid(-logits) @ (1 - flat).T
        else:
            log_q = logits.log_softmax(-1).flatten(1) @ flat.T
        return (log_q.exp() * nll).sum(-1)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        if self.categories is None:
            q = torch.sigmoid(logits)
            return (q * F.logsigmoid(logits) + (1 - q) * F.logsigmoid(-logits) + math.log(2)).sum(-1)
        logq = logits.log_softmax(-1)
        return (logq.exp() * logq).sum(-1).add(math.log(self.categories)).sum(-1)


def _layers(sizes: list[int]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        out.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            out.append(nn.ReLU())
    return out


def _vae_problem(task: dict[str, Any], seed: int, device: torch.device) -> Problem:
    from relaxit.bench.data import load_digits_binary

    train_np, _ = load_digits_binary()
    train = torch.as_tensor(train_np, dtype=VAE_DTYPE, device=device)
    categories = task["categories"] if task["model"] == "vae-categorical" else None
    latents = task["latents"]
    torch.manual_seed(seed)
    model = CardVAE(latents, categories, task["hidden"], train.shape[1]).to(device=device, dtype=VAE_DTYPE)
    codes = model.codes().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=task["train_lr"])
    gen = torch.Generator().manual_seed(seed)
    steps = task["train_steps"]
    marks: dict[int, CardVAE] = {}
    for step in range(steps + 1):
        if step in (0, steps // 2, steps):
            marks[step] = copy.deepcopy(model).requires_grad_(False)
        if step == steps:
            break
        x = train[torch.randint(len(train), (64,), generator=gen).to(device)]
        logits = model.logits(x)
        loss = (model.exact_terms(x, logits, codes) + model.kl(logits)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    x = train[: task["batch"]]
    params, objectives, exact = [], [], []
    for step in sorted(marks):
        frozen = marks[step]
        with torch.no_grad():
            logits = frozen.logits(x)
        params.append(logits)
        objectives.append(functools.partial(_vae_objective, frozen, x))
        # the exact gradient in float64 (the estimators draw in float32)
        wide = copy.deepcopy(frozen).to(DTYPE)
        leaf = wide.logits(x.to(DTYPE)).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(wide.exact_terms(x.to(DTYPE), leaf, codes.to(DTYPE)).sum(), [leaf])
        exact.append(g.detach())
    family = "bernoulli" if categories is None else "categorical"
    return Problem(family, VAE_DTYPE, sorted(marks), params, objectives, exact, batch_ndim=1)


def _vae_objective(model: CardVAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return model.neg_log_lik(z.to(VAE_DTYPE), x)


@functools.lru_cache(maxsize=8)
def _cached_problem(key: str, seed: int, device: str) -> Problem:
    task = json.loads(key)
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        if task["model"].startswith("vae"):
            return _vae_problem(task, seed, dev)
        return _toy_problem(task, seed, dev)


_PROBLEM_FIELDS = ("model", "target", "power", "dim", "categories", "latents", "hidden", "batch", "train_steps", "train_lr")


def problem(task: dict[str, Any], seed: int, device: str = "cpu") -> Problem:
    """The card model of ``task`` at its checkpoints (cached per process: every estimator
    of a seed shares the same checkpoints)."""
    key = json.dumps({k: task[k] for k in _PROBLEM_FIELDS if k in task}, sort_keys=True)
    return _cached_problem(key, seed, device)


# ------------------------------------------------------------------ metrics
def card_metrics(draws: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Bias, spread, cosine and MSE of ``draws`` (``[N, P]``) against ``exact`` (``[P]``),
    each with its standard error; see the module docstring for the definitions."""
    draws, exact = draws.to(DTYPE), exact.to(DTYPE)
    n = draws.shape[0]
    norm2 = exact.pow(2).sum().clamp_min(torch.finfo(DTYPE).tiny)
    mean = draws.mean(0)
    centred = draws - mean
    dev2 = centred.pow(2).sum(1)  # |g_i - ḡ|²
    tr = dev2.sum() / (n - 1)  # tr Σ̂
    d = mean - exact
    raw_b2 = d.pow(2).sum()
    b2 = (raw_b2 - tr / n).clamp_min(0.0)
    # se of |ḡ - g|² (delta method): 4 dᵀΣd / N + 2 tr(Σ²) / N²; tr(Σ²) from the N x N Gram matrix.
    gram = centred @ centred.T / (n - 1)
    tr_s2 = gram.pow(2).sum()
    dsd = (centred @ d).pow(2).sum() / (n - 1)
    se_b2 = (4 * dsd / n + 2 * tr_s2 / n**2).clamp_min(0).sqrt()
    rel_bias = (b2 / norm2).sqrt()
    rel_bias_se = torch.where(b2 > 0, se_b2 / (2 * b2.clamp_min(1e-300).sqrt() * norm2.sqrt()), (se_b2 / norm2).sqrt())
    se_tr = dev2.std() / math.sqrt(n) if n > 1 else torch.zeros((), dtype=DTYPE)
    rel_std = (tr / norm2).sqrt()
    rel_std_se = torch.where(tr > 0, se_tr / (2 * tr.clamp_min(1e-300).sqrt() * norm2.sqrt()), torch.zeros((), dtype=DTYPE))
    cos = F.cosine_similarity(draws, exact.expand_as(draws), dim=1, eps=1e-300)
    err = (draws - exact).pow(2).sum(1) / norm2
    out = {
        "rel_bias": rel_bias, "rel_bias_se": rel_bias_se,
        "rel_std": rel_std, "rel_std_se": rel_std_se,
        "cosine": cos.mean(), "cosine_se": cos.std() / math.sqrt(n),
        "mse": err.mean(), "mse_se": err.std() / math.sqrt(n),
        "bias_sq": b2 / norm2, "exact_norm": norm2.sqrt(),
    }
    res = {k: float(v) for k, v in out.items()}
    # Relative values at the level of float64 rounding are exact zeros (e.g. IndeCateR on one
    # variable, DisARM's bias): shown and compared as 0, not as 1e-16.
    for key in ("rel_bias", "rel_std", "mse", "bias_sq"):
        if res[key] < ZERO:
            res[key] = 0.0
            if key + "_se" in res and res[key + "_se"] < ZERO:
                res[key + "_se"] = 0.0
    return res


ZERO = 1e-12


METRICS = ("rel_bias", "rel_std", "cosine", "mse")


# ---------------------------------------------------------------------- runs
def _evaluations(est, objective, params: torch.Tensor, k: int, batch_ndim: int = 0) -> int:
    """Objective rows of one ``estimate()`` call: ``est.evaluations`` (contract) when the
    estimator has it, else counted on a copy (leading sizes of every objective call)."""
    fn = getattr(est, "evaluations", None)
    if callable(fn):
        return int(fn(k, batch_ndim=batch_ndim, logits=params))
    rows = 0

    def counting(z):
        nonlocal rows
        rows += z.shape[0]
        return objective(z)

    probe = copy.deepcopy(est)
    with torch.random.fork_rng(devices=[]):
        leaf = params.detach().clone().requires_grad_(True)
        probe.estimate(counting, num_samples=k, logits=leaf)
    return rows


def num_samples_for(est, objective, params: torch.Tensor, budget: int, batch_ndim: int = 0) -> tuple[int, int]:
    """``(num_samples, evaluations)``: the largest ``num_samples`` whose evaluations fit in
    ``budget``; the estimator's smallest when none fits."""
    k0 = int(getattr(est, "min_num_samples", 1) or 1)
    best = (k0, _evaluations(est, objective, params, k0, batch_ndim))
    for k in range(k0 + 1, budget + 1):
        try:
            ev = _evaluations(est, objective, params, k, batch_ndim)
        except ValueError:  # e.g. ARM's num_samples must be even
            continue
        if ev > budget:
            break
        best = (k, ev)
    return best


def _is_stateful(est, objective, params: torch.Tensor, k: int) -> bool:
    if any(True for _ in est.parameters()):
        return True
    before = {n: b.clone() for n, b in est.named_buffers()}
    if not before:
        return False
    probe = copy.deepcopy(est)
    with torch.random.fork_rng(devices=[]):
        probe.estimate(objective, num_samples=k, logits=params.detach().clone().requires_grad_(True))
    after = dict(probe.named_buffers())
    return any(not torch.equal(before[n], after[n]) for n in before)


def _warm_up(est, objective, params: torch.Tensor, k: int, steps: int, lr: float, tick) -> None:
    from relaxit.bench.tasks import adopt_new_parameters

    opt = None  # built at the first step: an estimator may create its parameters there (RELAX's network)
    for _ in range(steps):
        leaf = params.detach().clone().requires_grad_(True)
        out = est.estimate(objective, num_samples=k, logits=leaf)
        own = [p for p in est.parameters() if p.requires_grad]
        if own:
            if opt is None:
                opt = torch.optim.Adam(own, lr=lr)
            opt.zero_grad(set_to_none=True)
            out.surrogate.sum().backward()
            adopt_new_parameters(opt, est)
            opt.step()
        tick()


def run_card(run: dict[str, Any], progress: Callable[[int], None]) -> dict[str, Any]:
    """One estimator on one card model and seed: metrics at the three checkpoints."""
    import relaxit
    from relaxit_core.diagnostics import gradient_samples

    task, device = run["task"], torch.device(run["device"])
    prob = problem(task, run["seed"], run["device"])
    base = relaxit.build(run["estimator"]).to(device=device, dtype=prob.dtype)
    k, evals = num_samples_for(base, prob.objective[0], prob.params[0], task["budget"], prob.batch_ndim)
    stateful = _is_stateful(base, prob.objective[0], prob.params[0], k)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        progress(done)

    curves: dict[str, list[Any]] = {"checkpoint": list(CHECKPOINTS), "step": prob.steps}
    draw_s = draw_cpu = 0.0
    for c in range(3):
        est = copy.deepcopy(base)
        if stateful and task["warmup"]:
            _warm_up(est, prob.objective[c], prob.params[c], k, task["warmup"], task["warmup_lr"], tick)
        else:
            done += task["warmup"]
        t0, c0 = time.perf_counter(), time.process_time()
        draws = gradient_samples(est, prob.objective[c], {"logits": prob.params[c]}, task["draws"], num_samples=k)["logits"]
        draw_s += time.perf_counter() - t0
        draw_cpu += time.process_time() - c0
        m = card_metrics(draws.flatten(1), prob.exact[c].flatten())
        for key, value in m.items():
            curves.setdefault(key, []).append(value)
        tick()
    metrics: dict[str, Any] = {}
    for key in METRICS:
        metrics[key] = sum(curves[key]) / 3
        metrics[key + "_se"] = math.sqrt(sum(s * s for s in curves[key + "_se"])) / 3
    metrics.update(
        k=k,
        evaluations=evals,
        budget=task["budget"],
        stateful=stateful,
        # CPU time of this process (one torch thread), so that other runs sharing the machine
        # do not inflate it; the report divides it by REINFORCE's of the same task
        ms_per_gradient=1000 * draw_cpu / (3 * task["draws"]),
        wall_ms_per_gradient=1000 * draw_s / (3 * task["draws"]),
    )
    return {"metrics": metrics, "curves": curves, "train_s": draw_s}
