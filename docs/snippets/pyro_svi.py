"""A discrete-latent model in Pyro: a two-component mixture whose one-hot assignments are
`pyro.sample` sites with relaxit laws in the guide, fitted by SVI."""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import relaxit

K = 2
torch.manual_seed(0)
true_z = torch.randint(K, (60,))
x = torch.tensor([-2.0, 2.0])[true_z] + 0.5 * torch.randn(60)


def model(x):
    mu = pyro.param("mu", torch.tensor([-0.5, 0.5]))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(K)))  # one-hot, [N, K]
        pyro.sample("x", dist.Normal((z * mu).sum(-1), 0.5), obs=x)


def fit(spec, steps=100):
    """Fit the mixture with the estimator ``spec``'s law at the guide's latent site."""
    est = relaxit.build(spec)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)

    def guide(x):
        logits = pyro.param("assign_logits", torch.zeros(len(x), K))
        with pyro.plate("data", len(x)):
            pyro.sample("z", est.distribution(logits=logits))

    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(steps):
        loss = svi.step(x)
    assign = pyro.param("assign_logits").argmax(-1)
    return loss, (assign == true_z).float().mean().item(), pyro.param("mu").detach()


# Straight-through Gumbel-softmax: forward samples exactly one-hot (so the model's
# OneHotCategorical scores them), gradients pathwise through the relaxed sample.
# Score-function REINFORCE: no rsample, so Pyro forms the score-function gradient itself
# (Rao-Blackwellised over the data plate).
results = {}
for spec in ({"name": "gumbel_softmax", "tau": 0.5, "hard": True},
             {"name": "reinforce", "family": "categorical"}):
    loss, accuracy, mu = fit(spec)
    results[spec["name"]] = accuracy
    print(f"{spec['name']:>15}: final loss {loss:7.2f}, accuracy {accuracy:.2f}, mu {mu.tolist()}")
