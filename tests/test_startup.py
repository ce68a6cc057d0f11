"""Start-up cost (issue 23): what the cheap paths skip must not change what they give.

- configs and schedules are built lazily (pydantic's ``defer_build``) and read their field
  descriptions from attribute docstrings without pydantic's frame search: the descriptions
  and schemas are those pydantic's own ``use_attribute_docstrings`` gives;
- the entry-point scan parses each distribution's metadata once.

Timings are in ``benchmarks/startup.py``, never asserted here.
"""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pydantic._internal._docs_extraction import extract_docstrings_from_cls

import relaxit
from relaxit_core import ConfigError, EstimatorConfig
from relaxit_core.config import attribute_docstrings
from relaxit_core.schedules import ConstantSchedule, CosineSchedule, ExponentialSchedule, LinearSchedule, ScheduleBase

SCHEDULES = (ScheduleBase, ConstantSchedule, LinearSchedule, ExponentialSchedule, CosineSchedule)


def _config_classes() -> list[type]:
    out = []
    for info in relaxit.available():
        out += [c for c in info.cls.Config.__mro__ if isinstance(c, type) and issubclass(c, EstimatorConfig)]
    return list(dict.fromkeys(out))


@pytest.mark.parametrize("cls", [*SCHEDULES, *_config_classes()], ids=lambda c: c.__qualname__)
def test_attribute_docstrings_are_pydantics(cls):
    """Our cheap reader finds what pydantic's reader finds, and every field left without a
    description by its declaration got the docstring written under it."""
    expected = extract_docstrings_from_cls(cls, use_inspect=True)
    assert attribute_docstrings(cls) == expected
    for name, doc in expected.items():
        field = cls.model_fields.get(name)
        if field is not None and name in cls.__annotations__:
            assert field.description is not None


def _make(defer: bool):
    class Probe(EstimatorConfig):
        model_config = ConfigDict(defer_build=defer)

        name: Literal["probe"] = "probe"
        tau: float = Field(1.0, gt=0)
        """Temperature
        of the probe."""
        hard: bool = False
        """Forward one-hot."""
        family: Literal["bernoulli", "categorical"] = "bernoulli"

    return Probe


@pytest.mark.parametrize("defer", [True, False])
def test_config_built_now_or_later_is_the_same(defer):
    """A config built lazily (the default) or at once (a plugin turning ``defer_build`` off)
    gets the same descriptions, strict scalars and a family made required afterwards."""
    from relaxit_core.config import require_family

    Probe = _make(defer)
    assert Probe.model_fields["tau"].description == "Temperature\nof the probe."
    assert Probe.model_fields["hard"].description == "Forward one-hot."
    require_family(Probe, ("bernoulli", "categorical"), "Probe")
    with pytest.raises(Exception, match="family"):
        Probe()
    with pytest.raises(Exception, match="boolean"):
        Probe(family="bernoulli", hard="yes")  # strict: no lax coercion of a string
    assert Probe(family="bernoulli", tau=2).tau == 2.0
    schema = Probe.model_json_schema()
    assert schema["properties"]["hard"]["description"] == "Forward one-hot."
    assert "family" in schema["required"]


def test_docstrings_of_a_class_made_in_a_function_and_a_model_outside_relaxit():
    """Classes defined in a function body (frames other than a module's) and a plain
    pydantic model read the same docstrings as pydantic."""

    class Plain(BaseModel):
        a: int = 1
        """The a."""
        # a comment between fields, at any indentation
        b: str = "x"
        """The b."""

    assert attribute_docstrings(Plain) == extract_docstrings_from_cls(Plain, use_inspect=True) == {
        "a": "The a.", "b": "The b."}


def test_deferred_config_errors_are_config_errors():
    with pytest.raises(ConfigError, match="tau"):
        relaxit.get("gumbel_softmax", tau=0)


def test_distribution_metadata_is_parsed_once_per_distribution(monkeypatch):
    import relaxit_core.registry as reg

    reg._DIST_NAMES.clear()
    eps = reg._relaxit_entry_points(reg.ENTRY_POINT_GROUP)
    dists = {id(ep.dist) for ep in eps}
    assert len(reg._DIST_NAMES) == len(dists)
    assert [reg._dist_name(ep) for ep in eps] == [ep.dist.name for ep in eps]
