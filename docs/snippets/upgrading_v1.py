"""Before and after: a relaxit 1.x hard-concrete gate, unchanged, and the same law through the registry."""

import torch

# --- before: relaxit 1.x code, unchanged (it now runs on the registered law) ---------------
from relaxit.distributions import HardConcrete

alpha = torch.full((4, 10), 2.0, requires_grad=True)  # per-gate parameters, as 1.x allowed
beta, xi, gamma = torch.full((4, 10), 2 / 3), torch.full((4, 10), 1.1), torch.full((4, 10), -0.1)
torch.manual_seed(0)
z_1x = HardConcrete(alpha=alpha, beta=beta, xi=xi, gamma=gamma).rsample()

# --- after: the registry (configs, estimate(), every other estimator a name away) ---------
import relaxit

est = relaxit.get("hard_concrete", beta=2 / 3, gamma=-0.1, zeta=1.1)  # 1.x's xi is zeta
torch.manual_seed(0)
z_new = est.distribution(log_alpha=alpha.log()).rsample()  # 1.x's alpha is exp(log_alpha)
assert torch.equal(z_1x, z_new)  # the same law, the same draws

# per-gate hyper-parameters remain possible: optional tensor arguments override the config
law = est.distribution(log_alpha=alpha.log(), beta=beta, gamma=gamma, zeta=xi)
out = est.estimate(lambda z: (z - 0.3).pow(2).sum(-1), num_samples=8, log_alpha=alpha.log())
out.surrogate.sum().backward()
print("gates:", tuple(z_new.shape), "| alpha.grad:", tuple(alpha.grad.shape))
