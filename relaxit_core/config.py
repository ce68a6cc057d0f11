"""Pydantic configs of estimators."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Strict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticUndefined

__all__ = ["EstimatorConfig", "require_family"]


class EstimatorConfig(BaseModel):
    """Base class of every estimator's config.

    Configs are frozen, forbid unknown fields and hold hyperparameters only (never
    tensors), so they dump to JSON/YAML and compare with ``==``.  Each estimator declares
    a subclass whose ``name`` field is a ``Literal`` of its registry key, which makes the
    union of all configs a union discriminated by ``name``::

        class Config(EstimatorConfig):
            name: Literal["gumbel_softmax"] = "gumbel_softmax"
            tau: float = Field(1.0, gt=0, description="Temperature of the relaxation.")
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, use_attribute_docstrings=True
    )

    name: str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # No lax coercion of scalar fields: `tau: true` is not 1.0 and `hard: "yes"` is not
        # True (a typo in a YAML file must not pass as a value).  Numbers still widen int -> float.
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for field in cls.model_fields.values():
            if field.annotation in (bool, int, float) and not any(isinstance(m, Strict) for m in field.metadata):
                field.metadata.append(Strict())
                changed = True
        if changed:
            cls.model_rebuild(force=True)

    @model_validator(mode="wrap")
    @classmethod
    def _family_given(cls, data: Any, handler: Any) -> Any:
        # A required ``family`` (estimators serving several families) left out: say which
        # families there are, instead of pydantic's bare "Field required"; other errors kept.
        try:
            return handler(data)
        except ValidationError as exc:
            field = cls.model_fields.get("family")
            errors = exc.errors(include_url=False)
            if field is None or not any(_is_missing_family(e) for e in errors):
                raise
            name = data.get("name", cls.model_fields["name"].default) if isinstance(data, Mapping) else cls.__name__
            choices = ", ".join(repr(f) for f in family_choices(cls))
            message = f"'family' is required: {name!r} serves several families; choose one of {choices}"
            lines = [
                InitErrorDetails(
                    type=PydanticCustomError(
                        "missing_family" if _is_missing_family(e) else e["type"],
                        "{message}",
                        {"message": message if _is_missing_family(e) else e["msg"]},
                    ),
                    loc=tuple(e["loc"]),
                    input=e.get("input"),
                )
                for e in errors
            ]
            raise ValidationError.from_exception_data(cls.__name__, lines) from None

    def replace(self, **changes: Any) -> EstimatorConfig:
        """Return a validated copy with some fields changed.

        Invalid values raise :class:`~relaxit_core.ConfigError` (with pydantic's field-level
        detail), as when the config is built.
        """
        from relaxit_core.errors import ConfigError

        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError.from_validation_error(exc, prefix=self.name) from None

    def non_default_fields(self) -> dict[str, Any]:
        """The fields whose value differs from the field's default, plus every required
        field (such as the ``family`` of a multi-family estimator); ``name`` left out."""
        out = {}
        for key, field in type(self).model_fields.items():
            value = getattr(self, key)
            if key != "name" and (field.is_required() or field.get_default(call_default_factory=True) != value):
                out[key] = value
        return out


def _is_missing_family(error: Mapping[str, Any]) -> bool:
    return error.get("type") == "missing" and tuple(error.get("loc", ())) == ("family",)


def family_choices(config: type[BaseModel]) -> tuple[str, ...]:
    """The values a config's ``family`` field accepts (its ``Literal`` choices)."""
    field = config.model_fields["family"]
    return tuple(str(a) for a in typing.get_args(field.annotation))


def require_family(config: type[BaseModel], families: tuple[str, ...], owner: str) -> None:
    """Make ``config``'s ``family`` field required (no default): the rule of the contract for
    an estimator serving several ``families``.

    Called by :class:`~relaxit_core.EstimatorBase` for every subclass with more than one
    family, so a multi-family estimator cannot silently fall back to one of them.  Raises
    :class:`TypeError` when the config has no ``family`` field or accepts other values.
    """
    field = config.model_fields.get("family")
    if field is None:
        raise TypeError(
            f"{owner} serves several families {families}; its Config needs a required "
            f"field `family: Literal[{', '.join(map(repr, families))}]`"
        )
    choices = family_choices(config)
    if set(choices) != set(families):
        raise TypeError(f"{owner}: Config.family accepts {choices}, but the estimator declares families {families}")
    if not field.is_required():  # declared with a default: take it away
        field.default = PydanticUndefined
        field.default_factory = None
        config.model_rebuild(force=True)
