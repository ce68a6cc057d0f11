"""Hardening (issue 16): no silent wrong answer on any input.

One section per defect of the issue; each test names the defect it pins.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pydantic
import pytest
import torch
from pydantic import Field

import relaxit
import relaxit_core
from relaxit_core import Capability as C
from relaxit_core import ConfigError

INFOS = relaxit.available()
MULTI = sorted(i.name for i in INFOS if len(i.families) > 1)


# ------------------------------------------------------------ 6. explicit families
def test_the_multi_family_estimators_are_those_of_the_contract():
    assert {"reinforce", "relax", "vimco", "indecater"} <= set(MULTI)


@pytest.mark.parametrize("name", MULTI)
def test_multi_family_estimator_without_family_is_a_config_error_listing_the_families(name):
    """Defect 6: `relaxit.get("reinforce", ...)` silently read categorical logits as bits."""
    info = relaxit.describe(name)
    for make in (lambda: relaxit.get(name), lambda: relaxit.build({"name": name}), lambda: relaxit.validate({"name": name})):
        with pytest.raises(ConfigError) as err:
            make()
        msg = str(err.value)
        assert f"{name}.family" in msg and "required" in msg
        assert all(repr(f) in msg for f in info.families), msg
        assert err.value.errors[0]["loc"] == (name, "family")
    assert "family" in info.config_schema["required"]
    assert "default" not in info.config_schema["properties"]["family"]
    for fam in info.families:
        est = relaxit.get(name, family=fam)
        assert est.family == fam and relaxit.build(est.config.model_dump()).config == est.config


def test_missing_family_is_reported_with_the_other_errors():
    with pytest.raises(ConfigError) as err:
        relaxit.build({"name": "reinforce", "baseline": "nope", "extra": 1})
    locs = {e["loc"] for e in err.value.errors}
    assert locs == {("reinforce", "family"), ("reinforce", "baseline"), ("reinforce", "extra")}


def test_the_issue_case_raises_instead_of_reading_categorical_logits_as_bits():
    with pytest.raises(ConfigError, match=r"'bernoulli', 'categorical'"):
        relaxit.get("reinforce", baseline="leave_one_out")


def test_estimator_spec_field_requires_family():
    class UserConfig(pydantic.BaseModel):
        estimator: relaxit.EstimatorSpec

    with pytest.raises(pydantic.ValidationError, match=r"'family' is required.*'bernoulli', 'categorical'"):
        UserConfig.model_validate({"estimator": {"name": "vimco"}})
    assert UserConfig.model_validate({"estimator": {"name": "vimco", "family": "categorical"}}).estimator.family == "categorical"
    defs = relaxit.schema()["$defs"]
    for name in MULTI:
        (config,) = [d for k, d in defs.items() if d["properties"]["name"].get("const") == name]
        assert "family" in config["required"]


def test_a_future_multi_family_estimator_gets_the_rule_for_free():
    """The core takes away a default `family` of any estimator with several families."""

    class TwoConfig(relaxit_core.EstimatorConfig):
        name: Literal["hardening_two_families"] = "hardening_two_families"
        family: Literal["bernoulli", "categorical"] = Field("bernoulli", description="the law")

    class TwoFamilies(relaxit_core.EstimatorBase):
        """A future estimator serving two families, declared with a default family."""

        name: ClassVar[str] = "hardening_two_families"
        family: ClassVar[str] = "bernoulli"
        families: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical")
        params: ClassVar[tuple[str, ...]] = ("logits",)
        capabilities: ClassVar[frozenset] = frozenset({C.SCORE_FUNCTION, C.LOG_PROB, C.HARD})
        Config = TwoConfig

    with pytest.raises(ConfigError, match=r"'bernoulli', 'categorical'"):
        TwoFamilies()
    assert TwoFamilies(family="categorical").family == "categorical"
    assert TwoFamilies.conformance_configs == ({"family": "bernoulli"}, {"family": "categorical"})
    TwoFamilies.check_declaration()


def test_a_multi_family_estimator_without_a_family_field_is_refused():
    class NoFieldConfig(relaxit_core.EstimatorConfig):
        name: Literal["hardening_no_field"] = "hardening_no_field"

    class NoField(relaxit_core.EstimatorBase):
        """Serves two families but has no family field."""

        name: ClassVar[str] = "hardening_no_field"
        family: ClassVar[str] = "bernoulli"
        families: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical")
        params: ClassVar[tuple[str, ...]] = ("logits",)
        capabilities: ClassVar[frozenset] = frozenset({C.SCORE_FUNCTION})
        Config = NoFieldConfig

    with pytest.raises(TypeError, match=r"needs a required field `family"):
        NoField.check_declaration()
    with pytest.raises(TypeError, match="needs a required field"):
        relaxit_core.Registry(group="relaxit_hardening_none").register(NoField)


def test_config_replace_raises_config_error():
    """Defect 9 (part): `config.replace(tau=-1)` raised raw pydantic errors."""
    cfg = relaxit.get("gumbel_softmax").config
    with pytest.raises(ConfigError, match=r"gumbel_softmax\.tau"):
        cfg.replace(tau=-1)
