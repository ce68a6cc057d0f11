"""A Bernoulli VAE written as a Pyro model, trained by SVI with relaxit's EstimatorELBO.

Data: scikit-learn's bundled 8x8 digits (no download), binarised.  Model: ``L`` binary
latents with a uniform prior and an MLP decoder giving Bernoulli pixel logits; guide: an
MLP encoder giving the latents' logits.  Which estimator trains the encoder is one word::

    python examples/pyro_vae.py --estimator disarm
    python examples/pyro_vae.py --estimator rebar
    python examples/pyro_vae.py --estimator reinforce     # leave-one-out baseline (RLOO)

(any registered estimator that serves Bernoulli latents works: ``arm``, ``relax``,
``vimco``, ``double_cv``...; a multi-family one gets the site's family).  The guide names it
at the site, ``infer={"estimator": ...}``; nothing else changes.  The test negative ELBO is
measured with Pyro's own ``Trace_ELBO`` on held-out digits, the same for every estimator.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from relaxit.pyro import EstimatorELBO

ESTIMATORS: dict[str, Any] = {
    "disarm": "disarm",
    "rebar": "rebar",
    "reinforce": {"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"},
}
"""The three estimators of the example (a name or any config mapping works as well)."""


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Binarised 8x8 digits (pixel > 8 of 16), shuffled and split into train and test."""
    from sklearn.datasets import load_digits as sk_load_digits

    images = torch.as_tensor(sk_load_digits().data, dtype=torch.float32)
    x = (images > 8).to(torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x = x[perm]
    n_test = int(len(x) * test_fraction)
    return x[n_test:], x[:n_test]


def mlp(*sizes: int) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


class PyroVAE(torch.nn.Module):
    """``z ~ Bernoulli(1/2)^L``, ``x | z ~ Bernoulli(decoder(z))``; ``q(z | x) = Bernoulli(encoder(x))``."""

    def __init__(self, latent: int = 16, hidden: int = 64, pixels: int = 64, estimator: Any = "disarm"):
        super().__init__()
        self.latent = latent
        self.encoder = mlp(pixels, hidden, latent)
        self.decoder = mlp(latent, hidden, pixels)
        self.estimator = estimator

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        prior = torch.zeros(self.latent, dtype=x.dtype, device=x.device)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=prior).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z",
                dist.Bernoulli(logits=self.encoder(x)).to_event(1),
                infer={"estimator": self.estimator},  # <- the one word that changes
            )


def test_nelbo(vae: PyroVAE, x: torch.Tensor, num_particles: int = 16) -> float:
    """Per-digit negative ELBO on ``x``, by Pyro's ``Trace_ELBO`` (estimator-independent)."""
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return elbo.loss(vae.model, vae.guide, x) / len(x)


def train(
    estimator: Any = "disarm",
    *,
    steps: int = 2000,
    batch_size: int = 100,
    num_particles: int = 2,
    latent: int = 16,
    hidden: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    log: Any = print,
    log_every: int = 500,
    eval_particles: int = 16,
) -> dict[str, Any]:
    """Train the VAE with ``estimator`` (a key of :data:`ESTIMATORS`, a registry name or a
    config mapping) and return the test negative ELBO, the time per step and the model."""
    spec = ESTIMATORS.get(estimator, estimator) if isinstance(estimator, str) else estimator
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    x_train, x_test = load_digits(seed)
    vae = PyroVAE(latent, hidden, x_train.shape[1], estimator=spec)
    elbo = EstimatorELBO(num_particles=num_particles, max_plate_nesting=1)
    svi = SVI(vae.model, vae.guide, Adam({"lr": lr}), loss=elbo)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(len(x_train), (batch_size,), generator=gen)
        loss = svi.step(x_train[idx])
        if log is not None and (step % log_every == 0 or step == steps):
            log(f"step {step:5d}  train -ELBO/digit {loss / batch_size:7.3f}")
    seconds = (time.perf_counter() - start) / max(steps, 1)
    result = {
        "estimator": spec,
        "test_nelbo": test_nelbo(vae, x_test, eval_particles),
        "seconds_per_step": seconds,
        "vae": vae,
        "elbo": elbo,
    }
    if log is not None:
        log(f"{spec}: test -ELBO/digit {result['test_nelbo']:.3f} ({1e3 * seconds:.1f} ms/step)")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", default="disarm", help="disarm, rebar, reinforce, or any registered Bernoulli estimator")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--particles", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return train(args.estimator, steps=args.steps, num_particles=args.particles, batch_size=args.batch_size, seed=args.seed)


if __name__ == "__main__":
    main()
