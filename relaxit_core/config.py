"""Pydantic configs of estimators."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = ["EstimatorConfig"]


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

    def replace(self, **changes: Any) -> EstimatorConfig:
        """Return a validated copy with some fields changed."""
        return type(self).model_validate({**self.model_dump(), **changes})
