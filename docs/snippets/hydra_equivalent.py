"""What a Hydra app receives is an OmegaConf node: pass the node to relaxit.build."""

from omegaconf import OmegaConf

import relaxit

# conf/config.yaml of a Hydra app, and a command-line override `estimator.baseline=moving_average`
cfg = OmegaConf.create({"lr": 1e-3, "estimator": {"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"}})
cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["estimator.baseline=moving_average"]))

est = relaxit.build(cfg.estimator)  # looked up by name in the registry, validated by pydantic
assert est.config.baseline == "moving_average"
print(est)
