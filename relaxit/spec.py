"""``EstimatorSpec``: a pydantic field type for "any registered estimator config"."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from relaxit_core.config import EstimatorConfig
from relaxit_core.errors import RelaxitError
from relaxit_core.registry import registry

__all__ = ["EstimatorSpec"]


def _validate(value: Any) -> EstimatorConfig:
    from pydantic import ValidationError

    if isinstance(value, EstimatorConfig):
        value = value.model_dump()
    try:
        return registry.adapter().validate_python(value)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors(include_url=False)
        )
        raise PydanticCustomError("estimator_spec", "invalid estimator spec: {details}", {"details": details}) from None
    except RelaxitError as exc:
        raise PydanticCustomError("estimator_spec", "{error}", {"error": str(exc)}) from None


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
estimator's own config, ready for :func:`relaxit.build`::

    class VAEConfig(pydantic.BaseModel):
        estimator: relaxit.EstimatorSpec

    cfg = VAEConfig.model_validate({"estimator": {"name": "gumbel_softmax", "tau": 0.5}})
    est = relaxit.build(cfg.estimator)

Errors name the estimator and the field (``gumbel_softmax.tau: ...``).  The JSON schema
is the discriminated union of the registered configs.
"""
