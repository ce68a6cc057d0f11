"""The bench tasks: ``toy`` / ``toy-categorical``, ``vae-bernoulli`` / ``vae-categorical``
and ``subset``.  Each trains one estimator (built with :func:`relaxit.build`) and
returns a JSON-ready result with final metrics, curves at the checkpoints and timings.

Randomness: every run starts from ``torch.manual_seed(seed)``, so runs with the same seed
share their model initialisation (common random numbers across estimators); evaluations
and gradient-variance probes run under :func:`torch.random.fork_rng` on a copy of the model,
so they never change the training trajectory.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from relaxit_core.schedules import step as step_schedules

__all__ = ["DiscreteVAE", "L2X", "run_task", "runner"]

Progress = Callable[[int], None]



def adopt_new_parameters(opt: torch.optim.Optimizer, *modules: nn.Module) -> None:
    """Add to ``opt`` the trainable parameters of ``modules`` that it does not hold yet.

    An estimator may create parameters at its first ``estimate()`` (RELAX's control-variate
    network when its config leaves ``latents`` out: the network's size is the number of values
    of one objective event); an optimiser built before that call would never train them.
    Called before every ``opt.step()``: a set look-up per parameter, no tensor work.
    """
    known = {id(p) for group in opt.param_groups for p in group["params"]}
    new = []
    for m in modules:  # modules may share submodules (the Pyro task's model and ELBO share the estimator)
        for p in m.parameters():
            if p.requires_grad and id(p) not in known:
                known.add(id(p))
                new.append(p)
    if new:
        opt.add_param_group({"params": new})


def _train_logits(est, f, logits, opt, timer, steps, num_samples, checkpoints, record, progress) -> None:
    """Adam steps on free ``logits`` with the estimator's surrogate of ``f``; ``record`` at step 0
    and at every checkpoint (timed training only)."""
    record(0)
    for step in range(1, steps + 1):
        timer.start()
        out = est.estimate(f, num_samples=num_samples, logits=logits)
        opt.zero_grad(set_to_none=True)
        out.surrogate.sum().backward()
        adopt_new_parameters(opt, est)
        opt.step()
        step_schedules(est)  # temperature schedules advance once per optimisation step
        timer.stop()
        if step in checkpoints:
            record(step)
        progress(step)

def _checkpoints(steps: int, n: int) -> list[int]:
    return sorted({round(i * steps / n) for i in range(n + 1)})


class _Timer:
    """Accumulated wall time of training steps (synchronising CUDA only at the boundaries)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.total = 0.0
        self._t0: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        self._sync()
        if self._t0 is not None:
            self.total += time.perf_counter() - self._t0
            self._t0 = None
        return self.total


def _fork_rng(device: torch.device):
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.random.fork_rng(devices=[index])
    return torch.random.fork_rng(devices=[])


def _minibatches(n: int, bs: int, gen: torch.Generator, device: torch.device):
    """Index tensors of minibatches of ``bs`` out of ``n``: epochs of random permutations drawn
    by ``gen`` (an epoch's last partial batch is skipped)."""
    perm, pos = torch.randperm(n, generator=gen).to(device), 0
    while True:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen).to(device), 0
        yield perm[pos: pos + bs]
        pos += bs


def _train_model(loss_of, batches, opt, modules, timer, steps, checkpoints, record, segment, progress) -> None:
    """Adam steps of the model tasks: per step the next of ``batches``, then (timed) its loss
    ``loss_of(batch)``, the backward, the optimiser step (with parameters ``modules`` created
    on the way, :func:`adopt_new_parameters`) and the schedules' step; ``record`` at every
    checkpoint (it reads and clears ``segment``, the losses since the last one)."""
    for step in range(1, steps + 1):
        batch = next(batches)
        timer.start()
        loss = loss_of(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        adopt_new_parameters(opt, *modules)
        opt.step()
        step_schedules(modules[0])  # temperature schedules advance once per optimisation step
        timer.stop()
        segment.append(loss.detach())
        if step in checkpoints:
            record(step)
        progress(step)


def _result(curves: dict[str, list], metrics: tuple[str, ...], timer: _Timer) -> dict[str, Any]:
    """A run's result: ``metrics`` are the last values of those curves (``train_loss`` is
    ``None`` when no step was taken)."""
    return {"metrics": {m: curves[m][-1] for m in metrics}, "curves": curves, "train_s": timer.total}


def _build(spec: dict[str, Any], device: torch.device) -> nn.Module:
    import relaxit

    return relaxit.build(spec).to(device)


# --------------------------------------------------------------------------- toy
def _toy_objective(task: dict[str, Any]) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable]:
    t = task["target"]
    if task["name"] == "toy":
        def f(z: torch.Tensor) -> torch.Tensor:
            return (z - t).pow(2).sum(-1)

        def init(device):
            return torch.zeros(task["dim"], device=device)
    else:
        def f(z: torch.Tensor) -> torch.Tensor:
            c = torch.linspace(0, 1, z.shape[-1], dtype=z.dtype, device=z.device)
            return ((z * c).sum(-1) - t).pow(2)

        def init(device):
            return torch.zeros(task["categories"], device=device)
    return f, init


def run_toy(run: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from relaxit_core.diagnostics import exact_expectation, gradient_bias, gradient_variance

    task, device = run["task"], torch.device(run["device"])
    family = "bernoulli" if task["name"] == "toy" else "categorical"
    K = run["num_samples"]
    est = _build(run["estimator"], device)
    f, init = _toy_objective(task)
    logits = init(device).requires_grad_(True)

    def exact(lg: torch.Tensor) -> float:
        with torch.no_grad():
            return float(exact_expectation(f, {"logits": lg.detach()}, family))

    # Bias and variance at the initial logits against the exact gradient (enumeration).
    with _fork_rng(device):
        stats = gradient_bias(
            copy.deepcopy(est), f, {"logits": logits.detach()}, task["bias_draws"], num_samples=K, family=family
        )["logits"]
    exact_grad = stats.mean - stats.bias
    z = stats.z_scores().abs().max()
    optimum = _toy_optimum(task)
    opt = torch.optim.Adam([logits, *est.parameters()], lr=task["lr"])
    timer = _Timer(device)
    checkpoints = set(_checkpoints(task["steps"], task["checkpoints"]))
    curves: dict[str, list[float]] = {"step": [], "time": [], "loss": [], "gap": [], "grad_var": [], "prob": []}

    def record(step: int) -> None:
        with _fork_rng(device):
            var = gradient_variance(
                copy.deepcopy(est), f, {"logits": logits.detach()}, task["variance_draws"], num_samples=K
            )["logits"].total_variance
        loss = exact(logits)
        curves["step"].append(step)
        curves["time"].append(timer.total)
        curves["loss"].append(loss)
        curves["gap"].append(loss - optimum)
        curves["grad_var"].append(float(var))
        curves["prob"].append(float(_toy_prob(logits.detach(), family)))

    _train_logits(est, f, logits, opt, timer, task["steps"], K, checkpoints, record, progress)
    return {
        "metrics": {
            "exact_loss": curves["loss"][-1],
            "loss_gap": curves["gap"][-1],
            "final_prob": curves["prob"][-1],
            "bias": float(stats.bias.norm()),
            "bias_z": float(z),
            "relative_bias": float(stats.bias.norm() / exact_grad.norm().clamp_min(1e-30)),
            "variance": float(stats.total_variance),
            "exact_grad_norm": float(exact_grad.norm()),
            "grad_var": curves["grad_var"][-1],
        },
        "curves": curves,
        "train_s": timer.total,
    }


def _toy_optimum(task: dict[str, Any]) -> float:
    t = task["target"]
    if task["name"] == "toy":
        return task["dim"] * min(t * t, (1 - t) ** 2)
    c = torch.linspace(0, 1, task["categories"], dtype=torch.float64)
    return float(((c - t) ** 2).min())


def _toy_prob(logits: torch.Tensor, family: str) -> torch.Tensor:
    """Probability of the better value: z = 0 (bernoulli, mean over variables) or of
    the best category."""
    if family == "bernoulli":
        return torch.sigmoid(-logits).mean()
    return logits.softmax(-1).max()


# --------------------------------------------------------------------------- VAE
def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    act = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh}[activation]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class DiscreteVAE(nn.Module):
    """A VAE with ``latents`` Bernoulli or one-hot categorical latents whose encoder gradient
    comes from a relaxit estimator (a submodule, so its own parameters and buffers train and
    synchronise with the model, e.g. under ``DistributedDataParallel``).

    ``forward(x)`` returns the training loss (a scalar):

    - ``reduce="mean"``: ``E_q[-log p(x|z)]`` through ``estimator.estimate`` plus the
      analytic ``KL(q(z|x) || p(z))`` of the discrete laws (uniform prior), i.e. the
      negative ELBO;
    - ``reduce="logmeanexp"``: minus the ``K``-sample importance-weighted bound, with
      log-weights ``log p(x|z) + log p(z) - log q(z|x)`` of the discrete laws.
    """

    def __init__(
        self,
        estimator: nn.Module,
        x_dim: int,
        latents: int,
        categories: int | None = None,
        encoder: tuple[int, ...] = (128,),
        decoder: tuple[int, ...] = (128,),
        activation: str = "leaky_relu",
        num_samples: int = 1,
        reduce: str = "mean",
        train_mean: torch.Tensor | None = None,
    ):
        super().__init__()
        self.estimator = estimator
        self.latents, self.categories = latents, categories
        self.num_samples, self.reduce = num_samples, reduce
        width = latents * (categories or 1)
        self.encoder = _mlp([x_dim, *encoder, width], activation)
        self.decoder = _mlp([width, *decoder, x_dim], activation)
        if train_mean is not None:  # decoder output bias at the data's log-odds
            with torch.no_grad():
                self.decoder[-1].bias.copy_(torch.logit(train_mean.clamp(1e-3, 1 - 1e-3)))

    @property
    def family(self) -> str:
        return "bernoulli" if self.categories is None else "categorical"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.encoder(x)
        return logits if self.categories is None else logits.view(*x.shape[:-1], self.latents, self.categories)

    def log_lik(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)``, shape ``[S, B]``."""
        h = z if self.categories is None else z.flatten(-2)
        logits = self.decoder(h)
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """``KL(q(z|x) || p(z))`` of the discrete laws, uniform prior; shape ``[B]``."""
        if self.categories is None:
            q = torch.sigmoid(logits)
            kl = q * F.logsigmoid(logits) + (1 - q) * F.logsigmoid(-logits) + math.log(2)
            return kl.sum(-1)
        logq = logits.log_softmax(-1)
        return (logq.exp() * logq).sum(-1).add(math.log(self.categories)).sum(-1)

    def discrete_law(self, logits: torch.Tensor):
        from relaxit_core.diagnostics import family_law

        return family_law(self.family, {"logits": logits})

    def log_weights(self, z: torch.Tensor, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``log p(x|z) + log p(z) - log q(z|x)`` with the discrete laws, shape ``[S, B]``."""
        log_prior = -self.latents * math.log(self.categories or 2)
        log_q = self.discrete_law(logits).log_prob(z).sum(-1)
        return self.log_lik(z, x) + log_prior - log_q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.encode(x)
        if self.reduce == "mean":
            out = self.estimator.estimate(lambda z: -self.log_lik(z, x), num_samples=self.num_samples, logits=logits)
            return (out.surrogate + self.kl(logits)).mean()
        out = self.estimator.estimate(
            lambda z: self.log_weights(z, x, logits),
            num_samples=self.num_samples,
            reduce="logmeanexp",
            logits=logits,
        )
        return -out.surrogate.mean()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, num_samples: int, chunk: int = 500) -> tuple[float, float]:
        """Test ``(-ELBO, -IWAE bound)`` per example (nats), with samples of the discrete laws."""
        neg_elbo = neg_iwae = 0.0
        for xb in x.split(chunk):
            logits = self.encode(xb)
            z = self.discrete_law(logits).sample((num_samples,))
            ll = self.log_lik(z, xb)
            neg_elbo += float((self.kl(logits) - ll.mean(0)).sum())
            logw = self.log_weights(z, xb, logits)
            neg_iwae -= float((logw.logsumexp(0) - math.log(num_samples)).sum())
        return neg_elbo / len(x), neg_iwae / len(x)


def _encoder_grad_variance(model: DiscreteVAE, x: torch.Tensor, draws: int) -> float:
    """Mean over encoder parameters of the variance of ``draws`` independent gradient
    estimates of the loss on the batch ``x`` (a copy of the model; its estimator state is
    discarded)."""
    probe = copy.deepcopy(model)
    params = list(probe.encoder.parameters())
    grads = []
    for _ in range(draws):
        loss = probe(x)
        g = torch.autograd.grad(loss, params, allow_unused=True)
        grads.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten() for gi, p in zip(g, params)]))
    return float(torch.stack(grads).var(0, unbiased=True).mean())


_VAE_METRICS = ("test_neg_elbo", "test_neg_iwae", "grad_var", "train_loss")


class _VAETraining:
    """What the two VAE tasks share: the data, the model (``DiscreteVAE`` with the run's
    estimator), Adam, the minibatch generator, the timer, the checkpoints and the curves,
    with :meth:`record` (test bounds and the encoder's gradient variance at a checkpoint)
    and :meth:`batches`.  Built in the order the tasks always used, so that a run draws the
    same random numbers (its results are reproducible across versions)."""

    def __init__(self, run: dict[str, Any], *, categorical: bool, reduce: bool):
        from relaxit.bench.data import load_dataset

        task, device = run["task"], torch.device(run["device"])
        train_np, test_np = load_dataset(task["data"])
        self.task, self.device = task, device
        self.train = torch.as_tensor(train_np, device=device)
        test = torch.as_tensor(test_np, device=device)
        self.test = test[: task["test_size"]] if task.get("test_size") else test
        self.estimator = _build(run["estimator"], device)
        extra = {"reduce": run["reduce"]} if reduce else {}
        self.model = DiscreteVAE(
            self.estimator,
            x_dim=self.train.shape[1],
            latents=task["latents"],
            categories=task["categories"] if categorical else None,
            encoder=tuple(task["encoder"]),
            decoder=tuple(task["decoder"]),
            activation=task["activation"],
            num_samples=run["num_samples"],
            train_mean=self.train.mean(0),
            **extra,
        ).to(device)

    def start(self, run: dict[str, Any]) -> None:
        """Adam, the minibatch generator, the probe batch, the timer and empty curves."""
        task = self.task
        self.opt = torch.optim.Adam(self.model.parameters(), lr=task["lr"])
        self.gen = torch.Generator(device="cpu").manual_seed(run["seed"])
        self.bs = min(task["batch_size"], len(self.train))
        self.probe_x = self.train[: self.bs]
        self.timer = _Timer(self.device)
        self.checkpoints = set(_checkpoints(task["steps"], task["checkpoints"]))
        self.curves: dict[str, list[float]] = {
            "step": [], "time": [], "test_neg_elbo": [], "test_neg_iwae": [], "grad_var": [], "train_loss": []
        }
        self.segment: list[torch.Tensor] = []

    def record(self, step: int, grad_variance: Callable[[], float]) -> None:
        """The checkpoint at ``step``: test bounds, ``grad_variance()`` and the mean training
        loss since the last checkpoint, with the global RNG forked (training draws the same)."""
        curves, segment = self.curves, self.segment
        with _fork_rng(self.device):
            neg_elbo, neg_iwae = self.model.evaluate(self.test, self.task["eval_samples"])
            var = grad_variance()
        curves["step"].append(step)
        curves["time"].append(self.timer.total)
        curves["test_neg_elbo"].append(neg_elbo)
        curves["test_neg_iwae"].append(neg_iwae)
        curves["grad_var"].append(var)
        curves["train_loss"].append(float(torch.stack(segment).mean()) if segment else None)
        segment.clear()

    def batches(self):
        """Minibatches of the training set, epochs of permutations drawn by the run's generator."""
        return (self.train[i] for i in _minibatches(len(self.train), self.bs, self.gen, self.device))

    def result(self) -> dict[str, Any]:
        return _result(self.curves, _VAE_METRICS, self.timer)


def run_vae(run: dict[str, Any], progress: Progress) -> dict[str, Any]:
    vt = _VAETraining(run, categorical=run["task"]["name"] == "vae-categorical", reduce=True)
    vt.start(run)
    model, task = vt.model, vt.task

    def record(step: int) -> None:
        vt.record(step, lambda: _encoder_grad_variance(model, vt.probe_x, task["variance_draws"]))

    record(0)
    _train_model(model, vt.batches(), vt.opt, (model,), vt.timer, task["steps"], vt.checkpoints, record,
                 vt.segment, progress)
    return vt.result()


# ---------------------------------------------------------------------- VAE in Pyro
def _pyro_model(vae: DiscreteVAE, x: torch.Tensor) -> None:
    """``z ~ Bernoulli(1/2)^L``, ``x | z ~ Bernoulli(decoder(z))`` (the decoder of ``vae``)."""
    import pyro
    import pyro.distributions as dist

    prior = torch.zeros(vae.latents, dtype=x.dtype, device=x.device)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(logits=prior).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=vae.decoder(z)).to_event(1), obs=x)


def _pyro_guide(vae: DiscreteVAE, x: torch.Tensor) -> None:
    """``q(z | x) = Bernoulli(encoder(x))``; the site's estimator is the run's (``vae.estimator``)."""
    import pyro
    import pyro.distributions as dist

    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Bernoulli(logits=vae.encode(x)).to_event(1), infer={"estimator": vae.estimator})


def _pyro_loss(vae: DiscreteVAE, elbo: Any, x: torch.Tensor) -> torch.Tensor:
    """``-ELBO`` (or ``-IWAE`` bound) of the batch, per example, whose gradient is the
    site estimator's (:meth:`relaxit.pyro.EstimatorELBO.differentiable_loss`)."""
    return elbo.differentiable_loss(lambda xb: _pyro_model(vae, xb), lambda xb: _pyro_guide(vae, xb), x) / len(x)


def run_vae_pyro(run: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The Bernoulli VAE of ``vae-bernoulli`` written as a Pyro model and guide, trained
    through :class:`relaxit.pyro.EstimatorELBO` with the run's estimator at the latent site
    and ``num_particles = K``.  Same networks, initialisation (same seed), data, optimiser
    and metrics as ``vae-bernoulli``: the difference is that inside Pyro the estimator's
    cost is the whole ELBO integrand ``log p(x|z) + log p(z) - log q(z|x)`` (Pyro's
    Rao-Blackwellised per-example costs), where ``vae-bernoulli`` adds the KL analytically."""
    import pyro

    from relaxit.pyro import EstimatorELBO

    vt = _VAETraining(run, categorical=False, reduce=False)
    model, task = vt.model, vt.task
    bound = "iwae" if run["reduce"] == "logmeanexp" else "elbo"
    elbo = EstimatorELBO(num_particles=run["num_samples"], max_plate_nesting=1, bound=bound)
    store = pyro.get_param_store()
    vt.start(run)

    def grad_variance() -> float:
        # a copy of the model and of the ELBO (sharing the copied estimator), in a scratch
        # param store: the probe changes neither the training state nor Pyro's global store
        probe, probe_elbo = copy.deepcopy((model, elbo))
        params = list(probe.encoder.parameters())
        grads = []
        with store.scope():
            for _ in range(task["variance_draws"]):
                g = torch.autograd.grad(_pyro_loss(probe, probe_elbo, vt.probe_x), params, allow_unused=True)
                grads.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten()
                                        for gi, p in zip(g, params)]))
        return float(torch.stack(grads).var(0, unbiased=True).mean())

    with store.scope():  # estimators' parameters registered by the ELBO stay out of the global store
        vt.record(0, grad_variance)
        _train_model(lambda x: _pyro_loss(model, elbo, x), vt.batches(), vt.opt, (model, elbo), vt.timer,
                     task["steps"], vt.checkpoints, lambda step: vt.record(step, grad_variance), vt.segment,
                     progress)
    return vt.result()


# ------------------------------------------------------------------------- subset
def _subset_data(task: dict[str, Any], device: torch.device):
    """Generated regression data (fixed by the task config, not by the run seed): ``k`` of
    ``features`` standard-normal features carry weights of random sign and size 1..2."""
    g = torch.Generator().manual_seed(12345)
    n, k, N = task["features"], task["k"], task["train_size"]
    truth = torch.randperm(n, generator=g)[:k]
    w = torch.zeros(n)
    w[truth] = (1 + torch.rand(k, generator=g)) * torch.where(torch.rand(k, generator=g) < 0.5, -1.0, 1.0)
    x = torch.randn(2 * N, n, generator=g)
    y = x @ w + task["noise"] * torch.randn(2 * N, generator=g)
    return x[:N].to(device), y[:N].to(device), x[N:].to(device), y[N:].to(device), truth.to(device)


def run_subset(run: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from relaxit_core.diagnostics import gradient_variance

    task, device = run["task"], torch.device(run["device"])
    K = run["num_samples"]
    x, y, x_test, y_test, truth = _subset_data(task, device)
    est = _build(run["estimator"], device)
    logits = torch.zeros(task["features"], device=device, requires_grad=True)
    weights = torch.zeros(task["features"], device=device, requires_grad=True)
    opt = torch.optim.Adam([logits, weights, *est.parameters()], lr=task["lr"])

    def f(z: torch.Tensor) -> torch.Tensor:
        pred = torch.einsum("...n,bn->...b", z * weights, x)
        return (pred - y).pow(2).mean(-1)

    def f_detached(z: torch.Tensor) -> torch.Tensor:
        pred = torch.einsum("...n,bn->...b", z * weights.detach(), x)
        return (pred - y).pow(2).mean(-1)

    def test_mse() -> tuple[float, float]:
        with torch.no_grad():
            chosen = logits.topk(task["k"]).indices
            mask = torch.zeros_like(logits).scatter_(0, chosen, 1.0)
            mse = float((x_test @ (mask * weights) - y_test).pow(2).mean())
            recovered = float(torch.isin(chosen, truth).float().mean())
        return mse, recovered

    timer = _Timer(device)
    checkpoints = set(_checkpoints(task["steps"], task["checkpoints"]))
    curves: dict[str, list[float]] = {"step": [], "time": [], "test_mse": [], "recovered": [], "grad_var": []}

    def record(step: int) -> None:
        with _fork_rng(device):
            var = gradient_variance(
                copy.deepcopy(est), f_detached, {"logits": logits.detach()}, task["variance_draws"], num_samples=K
            )["logits"].total_variance
        mse, recovered = test_mse()
        curves["step"].append(step)
        curves["time"].append(timer.total)
        curves["test_mse"].append(mse)
        curves["recovered"].append(recovered)
        curves["grad_var"].append(float(var))

    _train_logits(est, f, logits, opt, timer, task["steps"], K, checkpoints, record, progress)
    return _result(curves, ("test_mse", "recovered", "grad_var"), timer)


# --------------------------------------------------------------------- L2X digits
class L2X(nn.Module):
    """Learning to explain (Chen et al. 2018, L2X) on 8x8 digits: an explainer MLP maps an
    image to per-pixel logits ``theta``; a ``k``-subset ``z`` of the pixels is drawn by the
    estimator; a predictor MLP sees ``x * z`` and its cross-entropy is the objective.  Both
    networks train together, the estimator giving the explainer its gradient and the
    predictor getting the Monte Carlo gradient of the objective.  The explanation of an
    image is the top-``k`` pixels of ``theta`` (:meth:`accuracy`)."""

    def __init__(self, estimator: nn.Module, k: int, pixels: int = 64, classes: int = 10, hidden: int = 64):
        super().__init__()
        self.estimator, self.k = estimator, k
        self.explainer = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, pixels))
        self.predictor = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def cost(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the predictor on ``x * z``; ``z`` ``[S, B, D]`` -> ``[S, B]``."""
        out = self.predictor(x * z)
        return F.cross_entropy(out.flatten(0, 1), y.repeat(z.shape[0]), reduction="none").view(z.shape[:2])

    def forward(self, x: torch.Tensor, y: torch.Tensor, num_samples: int) -> torch.Tensor:
        """The training loss: the mean of the estimator's surrogate over the batch."""
        out = self.estimator.estimate(lambda z: self.cost(z, x, y), num_samples=num_samples, logits=self.explainer(x))
        return out.surrogate.mean()

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Test accuracy of the predictor on the hard top-``k`` explanation of each image."""
        theta = self.explainer(x)
        mask = torch.zeros_like(theta).scatter_(-1, theta.topk(self.k, dim=-1).indices, 1.0)
        return float((self.predictor(x * mask).argmax(-1) == y).float().mean())


def _explainer_grad_variance(model: L2X, x: torch.Tensor, y: torch.Tensor, num_samples: int, draws: int) -> float:
    """Mean over explainer parameters of the variance of ``draws`` independent estimates of
    the loss gradient on ``(x, y)`` (a copy of the model)."""
    probe = copy.deepcopy(model)
    params = list(probe.explainer.parameters())
    grads = []
    for _ in range(draws):
        g = torch.autograd.grad(probe(x, y, num_samples), params, allow_unused=True)
        grads.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten() for gi, p in zip(g, params)]))
    return float(torch.stack(grads).var(0, unbiased=True).mean())


def run_l2x(run: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """``l2x-digits``: train :class:`L2X` with the run's estimator (Adam, minibatches drawn
    by the run's seed) and report the test accuracy with the hard top-``k`` explanation and
    the explainer-gradient variance at the checkpoints."""
    from relaxit.bench.data import load_digits_labelled

    task, device = run["task"], torch.device(run["device"])
    K = run["num_samples"]
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(a, device=device) for a in load_digits_labelled())
    est = _build(run["estimator"], device)
    model = L2X(est, task["k"], pixels=x_tr.shape[1], hidden=task["hidden"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=task["lr"])
    gen = torch.Generator(device="cpu").manual_seed(run["seed"])
    bs = min(task["batch_size"], len(x_tr))
    probe_x, probe_y = x_tr[:bs], y_tr[:bs]
    timer = _Timer(device)
    checkpoints = set(_checkpoints(task["steps"], task["checkpoints"]))
    curves: dict[str, list[float]] = {"step": [], "time": [], "test_accuracy": [], "grad_var": [], "train_loss": []}
    segment: list[torch.Tensor] = []

    def record(step: int) -> None:
        with _fork_rng(device):
            var = _explainer_grad_variance(model, probe_x, probe_y, K, task["variance_draws"])
        curves["step"].append(step)
        curves["time"].append(timer.total)
        curves["test_accuracy"].append(model.accuracy(x_te, y_te))
        curves["grad_var"].append(var)
        curves["train_loss"].append(float(torch.stack(segment).mean()) if segment else None)
        segment.clear()

    record(0)
    batches = (torch.randint(len(x_tr), (bs,), generator=gen).to(device) for _ in itertools.count())
    _train_model(lambda idx: model(x_tr[idx], y_tr[idx], K), batches, opt, (model,), timer, task["steps"],
                 checkpoints, record, segment, progress)
    return _result(curves, ("test_accuracy", "grad_var", "train_loss"), timer)


def runner(task_name: str) -> Callable[[dict[str, Any], Progress], dict[str, Any]]:
    """The function that runs one run of ``task_name`` (from :data:`relaxit.bench.config.TASKS`)."""
    import importlib

    from relaxit.bench.config import TASKS

    module, _, func = TASKS[task_name].runner.partition(":")
    return getattr(importlib.import_module(module), func)


def run_identity(run: dict[str, Any]) -> dict[str, Any]:
    """The fields that name a run in its result (shared by finished and failed runs)."""
    keys = ("run_id", "label", "estimator", "num_samples", "seed", "reduce")
    return {"task": run["task_id"], "task_name": run["task"]["name"], **{k: run[k] for k in keys}}


def run_task(run: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Execute one run (a :class:`relaxit.bench.selection.Run` as a dict) and return its
    JSON-ready result."""
    import random

    import numpy as np

    progress = progress or (lambda step: None)
    torch.set_num_threads(run["threads"])
    torch.manual_seed(run["seed"])
    random.seed(run["seed"])
    np.random.seed(run["seed"] % 2**32)
    t0, c0 = time.perf_counter(), time.process_time()
    out = runner(run["task"]["name"])(run, progress)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = run.get("steps") or run["task"]["steps"]
    return {
        **run_identity(run),
        "metrics": out["metrics"],
        "curves": out["curves"],
        "timing": {
            "steps": steps,
            "train_s": out["train_s"],
            "ms_per_step": 1000 * out["train_s"] / steps,
            "wall_s": wall,
            "cpu_s": cpu,  # CPU time of this process (one torch thread): independent of the machine's load
        },
    }
