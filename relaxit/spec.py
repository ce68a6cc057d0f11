"""``EstimatorSpec``: a pydantic field type for "any registered estimator config".

A user's own config names the discrete part of a model in one block::

    class VAEConfig(pydantic.BaseModel):
        estimator: relaxit.EstimatorSpec

The block is validated against the estimators registered *when it is validated* (third-party
plugins included), as the union of their configs discriminated by ``name``; no string is
ever imported or evaluated.  Errors keep pydantic's field-level locations, prefixed by the
field and the estimator, e.g. ``estimator.gumbel_softmax.tau: Input should be greater than 0``
(:func:`format_errors` renders them one per line).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from relaxit_core.config import EstimatorConfig
from relaxit_core.errors import ConfigError, RelaxitError, UnknownEstimatorError
from relaxit_core.registry import registry

__all__ = ["EstimatorSpec", "format_errors"]

_TITLE = "EstimatorSpec"


def _custom(kind: str, message: str, loc: tuple[Any, ...], value: Any) -> ValidationError:
    # A ValidationError raised inside a validator keeps its line errors (and their locations,
    # which pydantic prefixes with the field's own location).
    error = InitErrorDetails(type=PydanticCustomError(kind, "{message}", {"message": message}), loc=loc, input=value)
    return ValidationError.from_exception_data(_TITLE, [error])


def _validate(value: Any) -> EstimatorConfig:
    if isinstance(value, EstimatorConfig):
        # keep which fields were set (layers fill in an unset `family`, see relaxit.nn)
        value = {**value.model_dump(exclude_unset=True), "name": value.name}
    elif type(value).__module__.startswith("omegaconf"):  # a Hydra/OmegaConf node
        try:
            value = registry._to_mapping(value)
        except ConfigError as exc:
            raise _custom("estimator_spec", str(exc), (), repr(value)) from None
    if not isinstance(value, Mapping):
        raise _custom(
            "estimator_spec",
            f"an estimator spec must be a mapping with a 'name' field, not {type(value).__name__}",
            (),
            value,
        )
    try:
        names = registry.names()
        name = value.get("name")
        if name is None:
            raise _custom(
                "missing_estimator_name",
                "an estimator spec needs a 'name' field; registered: " + ", ".join(names),
                ("name",),
                dict(value),
            )
        if not isinstance(name, str) or name not in names:
            # The registry's message suggests the closest registered names.
            raise _custom("unknown_estimator", str(UnknownEstimatorError(name, names)), ("name",), name)
        registry.get_class(name)  # a name provided twice raises DuplicateEstimatorError here
        return registry.adapter().validate_python(dict(value))
    except RelaxitError as exc:
        raise _custom("estimator_spec", str(exc), (), dict(value)) from None


class _EstimatorSpecSchema:
    """Pydantic hooks of :data:`EstimatorSpec` (validation against the live registry)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.model_dump(mode="json"), when_used="always"
            ),
        )

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return handler(registry.adapter().core_schema)

    def __repr__(self) -> str:
        return "EstimatorSpec"


EstimatorSpec = Annotated[EstimatorConfig, _EstimatorSpecSchema()]
"""Any registered estimator config, as a field of a user's pydantic model.

Validated, at validation time, against the union of every registered config
(third-party plugins included), discriminated by ``name``; the value is that
estimator's own (frozen) config, ready for :func:`relaxit.build`.  It accepts a mapping,
an :class:`~relaxit_core.EstimatorConfig` or an OmegaConf/Hydra node, and dumps to the
plain mapping (``model_dump()`` / ``model_dump_json()`` round-trip).

Example:
    >>> import pydantic, relaxit
    >>> class VAEConfig(pydantic.BaseModel):
    ...     estimator: relaxit.EstimatorSpec
    >>> cfg = VAEConfig.model_validate({"estimator": {"name": "gumbel_softmax", "tau": 0.5}})
    >>> relaxit.build(cfg.estimator).config.tau
    0.5
    >>> try:
    ...     VAEConfig.model_validate({"estimator": {"name": "gumbel_softmax", "tau": 0}})
    ... except pydantic.ValidationError as exc:
    ...     print(format_errors(exc))
    estimator.gumbel_softmax.tau: Input should be greater than 0

The JSON schema of a model with such a field holds the discriminated union of the
registered configs (``relaxit schema --output relaxit.schema.json`` writes the union alone,
for YAML editors).
"""


def format_errors(exc: ValidationError | ConfigError) -> str:
    """Render a :class:`pydantic.ValidationError` (or a :class:`~relaxit_core.ConfigError`) one
    error per line, as ``location: message`` (``estimator.gumbel_softmax.tau: Input should be
    greater than 0``)."""
    if isinstance(exc, ConfigError):
        errors = exc.errors
    else:
        errors = exc.errors(include_url=False)
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        lines.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
    return "\n".join(lines) if lines else str(exc)
