"""Config-driven building: files, an estimator inside your own config, and errors."""

from pathlib import Path

import pydantic
import yaml

import relaxit

HERE = Path(__file__).parent

# 1. One estimator from a file: JSON, YAML (.yaml/.yml) or TOML, chosen by the suffix.
est = relaxit.build(HERE / "estimator.yaml")
assert est.name == "gumbel_softmax" and est.config.hard is True


# 2. An estimator as one field of your own (validated) config.
class ModelConfig(pydantic.BaseModel):
    hidden: int = 64
    estimator: relaxit.EstimatorSpec  # any registered estimator's config, chosen by "name"


cfg = ModelConfig.model_validate(yaml.safe_load((HERE / "model.yaml").read_text()))
est = relaxit.build(cfg.estimator)
print(est)  # ReinforceEstimator(family='bernoulli', baseline='leave_one_out', decay=0.9)

# 3. Configs round-trip: dump, store, rebuild an equal estimator.
assert relaxit.build(est.config.model_dump()).config == est.config

# 4. Errors name the estimator and the field.
try:
    relaxit.build({"name": "gumbel_softmax", "tau": -1.0, "temperature": 2})
except relaxit.ConfigError as exc:
    print(exc)
