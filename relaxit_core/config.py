"""Pydantic configs of estimators."""

from __future__ import annotations

import ast
import inspect
import linecache
import sys
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Strict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticUndefined

__all__ = ["EstimatorConfig", "require_family", "attribute_docstrings", "fill_attribute_docstrings"]

# Configs (and schedules) are built lazily: ``defer_build`` leaves pydantic's validator and
# schema to the first validation (or schema request), so that importing a plugin module does
# not pay for a schema it may never use, and the field changes made right after the class
# is created (strict scalars, a required ``family``) need no second build.  Field
# descriptions come from attribute docstrings (``attribute_docstrings``), found without
# pydantic's ``use_attribute_docstrings`` frame search (which maps every loaded module to
# its file: slow once torch is imported).
MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", defer_build=True)


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

    model_config: ClassVar[ConfigDict] = ConfigDict(MODEL_CONFIG, validate_default=True)

    name: str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # No lax coercion of scalar fields: `tau: true` is not 1.0 and `hard: "yes"` is not
        # True (a typo in a YAML file must not pass as a value).  Numbers still widen int -> float.
        super().__pydantic_init_subclass__(**kwargs)
        changed = fill_attribute_docstrings(cls)
        for field in cls.model_fields.values():
            if field.annotation in (bool, int, float) and not any(isinstance(m, Strict) for m in field.metadata):
                field.metadata.append(Strict())
                changed = True
        if changed and cls.__pydantic_complete__:  # built already (``defer_build`` turned off)
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
        if config.__pydantic_complete__:  # else the deferred build sees the change
            config.model_rebuild(force=True)


def _docstrings_of(tree: ast.AST) -> dict[str, str]:
    """A string statement right after an annotated assignment ``x: T [= v]`` documents ``x``.

    pydantic's rule for ``use_attribute_docstrings`` kept exactly: the nodes are visited in
    the order of :class:`ast.NodeVisitor` (children of an annotated assignment or of an
    expression statement not visited, nor the bodies of nested classes and functions, whose
    attributes are not the class's: pydantic >= 2.14 skips them too, 2.13 read a method's
    annotated locals), and "right after" means that the node visited last before the
    string statement was the annotated assignment.
    """
    attrs: dict[str, str] = {}
    target: str | None = None
    previous: type | None = None
    nested = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

    def visit(node: ast.AST) -> None:
        nonlocal target, previous
        if node is not tree and isinstance(node, nested):
            pass
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name):
                target = node.target.id
        elif isinstance(node, ast.Expr):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and previous is ast.AnnAssign:
                if target:
                    attrs[target] = inspect.cleandoc(value.value)
                target = None
        else:
            for child in ast.iter_child_nodes(node):
                visit(child)
        previous = type(node)

    visit(tree)
    return attrs


def _parse_class(block: list[str], name: str) -> ast.ClassDef | None:
    """The class statement ``block`` if it parses as one defining ``name``."""
    source = textwrap.dedent("".join(block))
    if source.startswith((" ", "\t")):  # a string dedented below the class: wrap it
        source = "def _wrapper():\n" + source
    try:
        stmt = ast.parse(source).body[0]
    except (SyntaxError, IndexError, ValueError):
        return None
    if isinstance(stmt, ast.FunctionDef) and stmt.name == "_wrapper":
        stmt = stmt.body[0]
    return stmt if isinstance(stmt, ast.ClassDef) and stmt.name == name else None


def _class_at(lines: list[str], lineno: int, name: str) -> ast.ClassDef | None:
    """The class statement ``class name`` starting at line ``lineno`` (1-based) of ``lines``."""
    if not 0 < lineno <= len(lines) or not lines[lineno - 1].lstrip().startswith(("class", "@")):
        return None
    # The block by indentation (blank and comment lines skipped): the class line and the
    # lines indented deeper.  A source it cuts short (a string or a bracket continued at a
    # lower indentation, a decorator, a header over several lines) does not parse as the
    # class: then the tokenizer decides (``inspect.getblock``), as pydantic does.
    first = lines[lineno - 1]
    base = len(first) - len(first.lstrip())
    end = lineno
    while end < len(lines):
        text = lines[end].lstrip()
        if text and not text.startswith("#") and len(lines[end]) - len(text) <= base:
            break
        end += 1
    tree = _parse_class(lines[lineno - 1:end], name)
    if tree is None:
        try:
            tree = _parse_class(inspect.getblock(lines[lineno - 1:]), name)
        except Exception:  # noqa: BLE001 - a tokenizer error: no source
            return None
    return tree


def _method_lineno(cls: type, lines: list[str], filename: str) -> int:
    """The line of ``class <name>`` above the first function of the class body (0: none)."""
    firsts = []
    for value in vars(cls).values():
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        code = getattr(value, "__code__", None) if isinstance(value, types.FunctionType) else None
        if code is not None and code.co_filename == filename:
            firsts.append(code.co_firstlineno)
    if not firsts:
        return 0
    head = ("class " + cls.__name__, "class\t" + cls.__name__)
    for i in range(min(firsts) - 1, -1, -1):
        text = lines[i].lstrip() if i < len(lines) else ""
        if text.startswith(head) and text[len(head[0]):len(head[0]) + 1] in ("(", ":", " ", "\t"):
            return i + 1
    return 0


def attribute_docstrings(cls: type) -> dict[str, str]:
    """The attribute docstrings in the body of ``cls`` itself (not its bases): what pydantic's
    ``use_attribute_docstrings`` reads, found cheaply.

    While the class is being created, its ``class`` statement is the current line of a
    frame of its module (found by the module's name, with no scan of ``sys.modules``);
    after, it is the ``class`` line above the class's first method; else
    :func:`inspect.getsourcelines` finds it.  ``{}`` when there is no source.
    """
    tree = None
    module = sys.modules.get(cls.__module__)
    frame = sys._getframe(1)
    while frame is not None and tree is None:
        if frame.f_globals.get("__name__") == cls.__module__:
            lines = linecache.getlines(frame.f_code.co_filename, frame.f_globals)
            tree = _class_at(lines, frame.f_lineno, cls.__name__)
        frame = frame.f_back
    filename = getattr(module, "__file__", None)
    if tree is None and filename:
        lines = linecache.getlines(filename, vars(module))
        tree = _class_at(lines, _method_lineno(cls, lines, filename), cls.__name__)
    if tree is None:
        try:
            tree = _parse_class(inspect.getsourcelines(cls)[0], cls.__name__)
        except (OSError, TypeError):
            return {}
    return {} if tree is None else _docstrings_of(tree)


def fill_attribute_docstrings(cls: type[BaseModel]) -> bool:
    """Give each field of ``cls`` without a ``description`` the attribute docstring written
    under it in the class body (as ``use_attribute_docstrings`` would); whether any changed."""
    fields = cls.__pydantic_fields__
    if not any(f.description is None for f in fields.values()):
        return False
    docs = attribute_docstrings(cls)
    changed = False
    for key, field in fields.items():
        if field.description is None and key in docs:
            field.description = docs[key]
            changed = True
    return changed
