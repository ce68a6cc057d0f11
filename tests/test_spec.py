"""relaxit.EstimatorSpec inside users' configs; OmegaConf nodes; `relaxit schema --output`."""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, Literal, Optional

import pydantic
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import relaxit
from relaxit.spec import format_errors
from relaxit_core import EstimatorBase, EstimatorConfig
from relaxit_core.registry import registry

NAMES = [info.name for info in relaxit.available()]


class UserConfig(pydantic.BaseModel):
    """A user's own config embedding an estimator block."""

    model_config = pydantic.ConfigDict(extra="forbid")
    width: int = 8
    estimator: relaxit.EstimatorSpec
    baseline_estimator: Optional[relaxit.EstimatorSpec] = None  # noqa: UP007 - optional fields work too


# ------------------------------------------------------------- configs from the schema
def _field_strategy(spec: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy | None:
    """A strategy for one property of a config's JSON schema (None: leave the default)."""
    if "$ref" in spec:
        return _field_strategy(defs[spec["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in spec:
        return st.just(spec["const"])
    if "enum" in spec:
        return st.sampled_from(spec["enum"])
    if "anyOf" in spec:
        parts = [_field_strategy(s, defs) for s in spec["anyOf"]]
        parts = [p for p in parts if p is not None]
        return st.one_of(parts) if parts else None
    kind = spec.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo = spec.get("minimum", spec.get("exclusiveMinimum", -(10**6) - 1) + 1)
        hi = spec.get("maximum", spec.get("exclusiveMaximum", 10**6 + 1) - 1)
        return st.integers(min_value=lo, max_value=min(hi, lo + 10**6))
    if kind == "number":
        lo = spec.get("minimum", spec.get("exclusiveMinimum"))
        hi = spec.get("maximum", spec.get("exclusiveMaximum"))
        return st.floats(
            min_value=lo,
            max_value=hi,
            exclude_min="exclusiveMinimum" in spec,
            exclude_max="exclusiveMaximum" in spec,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        return st.text(max_size=8)
    return None


@st.composite
def registered_configs(draw) -> EstimatorConfig:
    """A valid config of any registered estimator, with fields drawn within their declared bounds."""
    name = draw(st.sampled_from(NAMES))
    cls = registry.get_class(name)
    schema = cls.Config.model_json_schema()
    defs = schema.get("$defs", {})
    data: dict[str, Any] = {"name": name}
    for field, spec in schema.get("properties", {}).items():
        if field == "name":
            continue
        strategy = _field_strategy(spec, defs)
        if strategy is not None and draw(st.booleans()):
            data[field] = draw(strategy)
    try:
        return cls.Config.model_validate(data)
    except pydantic.ValidationError:  # a cross-field constraint the schema does not state
        reject()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=registered_configs())
def test_dump_validate_build_roundtrip(config):
    dumped = config.model_dump(mode="json")
    user = UserConfig.model_validate({"estimator": dumped})
    assert type(user.estimator) is type(config)
    assert user.estimator == config
    est = relaxit.build(user.estimator)
    assert isinstance(est, EstimatorBase)
    assert est.config == config
    # the user's model dumps to JSON and back unchanged
    again = UserConfig.model_validate_json(user.model_dump_json())
    assert again == user and again.estimator == config
    # a config instance is accepted as well
    assert UserConfig(estimator=config).estimator == config


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_default_validates(name):
    families = relaxit.describe(name).families
    required = {"family": families[0]} if len(families) > 1 else {}  # required where several
    user = UserConfig.model_validate({"estimator": {"name": name, **required}})
    assert user.estimator == relaxit.get(name, **required).config


# ----------------------------------------------------------------------------- errors
def _errors(data: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    with pytest.raises(pydantic.ValidationError) as info:
        UserConfig.model_validate(data)
    return info.value.errors(include_url=False), format_errors(info.value)


def test_bad_field_error_names_estimator_and_field():
    errors, text = _errors({"estimator": {"name": "gumbel_softmax", "tau": 0}})
    assert [e["loc"] for e in errors] == [("estimator", "gumbel_softmax", "tau")]
    assert errors[0]["type"] == "greater_than"
    assert text == "estimator.gumbel_softmax.tau: Input should be greater than 0"


def test_several_bad_fields_are_all_reported():
    errors, text = _errors({"estimator": {"name": "reinforce", "family": "bernoulli", "baseline": "nope", "decay": 2.0, "extra": 1}})
    locs = {e["loc"] for e in errors}
    assert locs == {
        ("estimator", "reinforce", "baseline"),
        ("estimator", "reinforce", "decay"),
        ("estimator", "reinforce", "extra"),
    }
    assert "estimator.reinforce.extra: Extra inputs are not permitted" in text.splitlines()


def test_nested_optional_field_location():
    errors, _ = _errors({"estimator": {"name": "reinforce", "family": "bernoulli"}, "baseline_estimator": {"name": "relaxed_bernoulli", "tau": -1}})
    assert [e["loc"] for e in errors] == [("baseline_estimator", "relaxed_bernoulli", "tau")]


def test_unknown_name_suggests_close_names():
    errors, text = _errors({"estimator": {"name": "gumbel_softmx"}})
    assert [e["loc"] for e in errors] == [("estimator", "name")]
    assert errors[0]["type"] == "unknown_estimator"
    assert "Did you mean 'gumbel_softmax'" in text  # the closest name comes first
    assert text.startswith("estimator.name: no estimator named 'gumbel_softmx' is registered")


def test_names_with_braces_are_rendered_verbatim():
    _, text = _errors({"estimator": {"name": "{weird}"}})
    assert text.startswith("estimator.name: no estimator named '{weird}' is registered")


def test_missing_name_and_wrong_type():
    errors, text = _errors({"estimator": {"tau": 0.5}})
    assert [e["loc"] for e in errors] == [("estimator", "name")]
    assert "needs a 'name' field" in text
    errors, text = _errors({"estimator": "gumbel_softmax"})
    assert [e["loc"] for e in errors] == [("estimator",)]
    assert "must be a mapping" in text


def test_errors_in_user_fields_and_spec_together():
    errors, _ = _errors({"width": "wide", "estimator": {"name": "gumbel_softmax", "hard": "maybe"}})
    assert {e["loc"] for e in errors} == {("width",), ("estimator", "gumbel_softmax", "hard")}


class _Late(EstimatorBase):
    """A late estimator (test only)."""

    name: ClassVar[str] = "late_estimator_for_spec_test"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits",)

    class Config(EstimatorConfig):
        name: Literal["late_estimator_for_spec_test"] = "late_estimator_for_spec_test"
        alpha: float = pydantic.Field(1.0, gt=0, description="A hyperparameter.")


def test_spec_sees_estimators_registered_later():
    _errors({"estimator": {"name": "late_estimator_for_spec_test"}})  # unknown before
    relaxit.register(_Late)
    try:
        user = UserConfig.model_validate({"estimator": {"name": "late_estimator_for_spec_test", "alpha": 2}})
        assert user.estimator.alpha == 2.0
        errors, text = _errors({"estimator": {"name": "late_estimator_for_spec_test", "alpha": 0}})
        assert text == "estimator.late_estimator_for_spec_test.alpha: Input should be greater than 0"
        schema = UserConfig.model_json_schema()
        assert "late_estimator_for_spec_test" in json.dumps(schema)
    finally:
        registry.unregister("late_estimator_for_spec_test")


# ----------------------------------------------------------------------------- schema
def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_user_model_json_schema_holds_the_union():
    schema = UserConfig.model_json_schema()
    json.dumps(schema)  # serialisable
    est = _resolve(schema, schema["properties"]["estimator"])
    assert est["discriminator"]["propertyName"] == "name"
    assert set(est["discriminator"]["mapping"]) == set(NAMES)
    for name in NAMES:
        sub = _resolve(schema, {"$ref": est["discriminator"]["mapping"][name]})
        assert sub["properties"]["name"]["const"] == name
        assert sub.get("additionalProperties") is False
    # a JSON-schema validator accepts a good block and rejects a bad one
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate({"estimator": {"name": "gumbel_softmax", "tau": 0.5}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"estimator": {"name": "gumbel_softmax", "tau": -1}}, schema)


def test_cli_schema_output(tmp_path, capsys):
    from relaxit.cli import main

    out = tmp_path / "relaxit.schema.json"
    assert main(["schema", "--output", str(out)]) == 0
    assert str(out) in capsys.readouterr().err
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(relaxit.schema()))
    assert set(written["discriminator"]["mapping"]) == set(NAMES)
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == written


# --------------------------------------------------------------------- OmegaConf/Hydra
def test_omegaconf_node_builds_and_validates(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(
        {"model": {"tau": 0.25}, "estimator": {"name": "gumbel_softmax", "tau": "${model.tau}", "hard": True}}
    )
    est = relaxit.build(cfg.estimator)  # interpolations resolved
    assert est.config == relaxit.get("gumbel_softmax", tau=0.25, hard=True).config
    assert relaxit.validate(cfg.estimator) == est.config
    # the node inside a user's pydantic model, directly or as a container
    assert UserConfig(estimator=cfg.estimator).estimator == est.config
    container = omegaconf.OmegaConf.to_container(cfg, resolve=True)
    assert UserConfig.model_validate({"estimator": container["estimator"]}).estimator == est.config
    # a YAML file loaded by OmegaConf (what Hydra hands to the app)
    path = tmp_path / "conf.yaml"
    path.write_text("estimator:\n  name: reinforce\n  family: bernoulli\n  baseline: leave_one_out\n")
    node = omegaconf.OmegaConf.load(path)
    assert relaxit.build(node.estimator).config.baseline == "leave_one_out"
    bad = omegaconf.OmegaConf.create({"name": "reinforce", "family": "bernoulli", "decay": 3})
    with pytest.raises(relaxit.ConfigError, match=r"reinforce\.decay"):
        relaxit.build(bad)


def test_format_errors_of_config_error():
    with pytest.raises(relaxit.ConfigError) as info:
        relaxit.build({"name": "gumbel_softmax", "tau": math.inf})
    assert format_errors(info.value).startswith("gumbel_softmax.tau: ")
