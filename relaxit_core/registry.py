"""The estimator registry: pluggy plugin manager fed lazily by the ``relaxit`` entry points."""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any, Union

import pluggy
from pydantic import Field, TypeAdapter, ValidationError

from relaxit_core import hookspecs
from relaxit_core.capabilities import Capability
from relaxit_core.config import EstimatorConfig
from relaxit_core.errors import (
    ConfigError,
    DuplicateEstimatorError,
    PluginWarning,
    UnknownEstimatorError,
)

__all__ = ["Registry", "EstimatorInfo", "registry", "ENTRY_POINT_GROUP", "DISABLE_ENV"]

ENTRY_POINT_GROUP = "relaxit"
DISABLE_ENV = "RELAXIT_DISABLE_PLUGINS"
"""Comma-separated entry-point names to skip, e.g. ``RELAXIT_DISABLE_PLUGINS=foo,bar``."""


@dataclass(frozen=True)
class EstimatorInfo:
    """What the registry knows of one estimator (see :func:`relaxit.describe`)."""

    name: str
    family: str
    families: tuple[str, ...]
    capabilities: frozenset[Capability]
    params: tuple[str, ...]
    config_schema: dict[str, Any] = field(repr=False)
    summary: str
    reference: str
    provider: str
    cls: type = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (capabilities sorted, class by qualified name)."""
        return {
            "name": self.name,
            "family": self.family,
            "families": list(self.families),
            "capabilities": sorted(c.value for c in self.capabilities),
            "params": list(self.params),
            "summary": self.summary,
            "reference": self.reference,
            "provider": self.provider,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "config_schema": self.config_schema,
        }


def _info(cls: type, provider: str) -> EstimatorInfo:
    families = tuple(getattr(cls, "families", ()) or (cls.family,))
    summary = cls.summary() if hasattr(cls, "summary") else (cls.__doc__ or "").strip().split("\n")[0]
    return EstimatorInfo(
        name=cls.name,
        family=cls.family,
        families=families,
        capabilities=frozenset(cls.capabilities),
        params=tuple(cls.params),
        config_schema=cls.Config.model_json_schema(),
        summary=summary,
        reference=getattr(cls, "reference", ""),
        provider=provider,
        cls=cls,
    )


def _check_estimator_class(obj: Any) -> None:
    """Raise TypeError when ``obj`` is not an estimator class."""
    import torch

    if not isinstance(obj, type) or not issubclass(obj, torch.nn.Module):
        raise TypeError(f"expected an estimator class (a torch.nn.Module subclass), got {obj!r}")
    for attr in ("name", "family", "capabilities", "params", "Config"):
        if not hasattr(obj, attr):
            raise TypeError(f"{obj.__name__} lacks the class attribute {attr!r}")
    if hasattr(obj, "check_declaration"):
        obj.check_declaration()
    elif not (isinstance(obj.Config, type) and issubclass(obj.Config, EstimatorConfig)):
        raise TypeError(f"{obj.__name__}.Config must subclass relaxit_core.EstimatorConfig")


class Registry:
    """Estimators by name.

    Entry points of the group ``relaxit`` are loaded on first use (not at import), one
    ``try`` per plugin: a plugin that fails to import, or whose hook raises or returns
    something that is not an estimator class, is skipped with a :class:`PluginWarning`
    naming it.  Two providers of one name make that name an error
    (:class:`DuplicateEstimatorError`, naming both) while other names keep working.
    """

    def __init__(self, group: str = ENTRY_POINT_GROUP):
        self.group = group
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._classes: dict[str, type] = {}
        self._providers: dict[str, str] = {}
        self._conflicts: dict[str, list[str]] = {}
        self._failed: dict[str, str] = {}
        self._loaded = False
        self._lock = threading.RLock()
        self._adapter_cache: tuple[tuple[str, ...], Any] | None = None

    # ------------------------------------------------------------- loading
    def load(self) -> None:
        """Load the entry points (once; later calls do nothing)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            disabled = {s.strip() for s in os.environ.get(DISABLE_ENV, "").split(",") if s.strip()}
            seen: set[str] = set()
            for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
                if ep.name in disabled or ep.name in seen:
                    continue
                seen.add(ep.name)
                self._load_entry_point(ep)

    def _load_entry_point(self, ep: EntryPoint) -> None:
        provider = f"{ep.name} ({ep.value})"
        try:
            module = ep.load()
            self.pm.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - isolate every plugin
            self._fail(ep.name, f"failed to load: {type(exc).__name__}: {exc}")
            return
        self._collect(module, provider, ep.name)

    def register_plugin(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object (a module or any object with hookimpls) directly."""
        with self._lock:
            self.load()
            name = name or getattr(plugin, "__name__", None) or repr(plugin)
            try:
                self.pm.register(plugin, name=name)
            except Exception as exc:  # noqa: BLE001
                self._fail(name, f"failed to register: {type(exc).__name__}: {exc}")
                return
            self._collect(plugin, name, name)

    def _collect(self, plugin: Any, provider: str, plugin_name: str) -> None:
        impls = [i for i in self.pm.hook.relaxit_estimators.get_hookimpls() if i.plugin is plugin]
        classes: list[type] = []
        try:
            for impl in impls:
                result = impl.function()
                if result is None or isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
                    raise TypeError(f"relaxit_estimators() returned {result!r}, not a list of classes")
                for obj in result:
                    _check_estimator_class(obj)
                    classes.append(obj)
        except Exception as exc:  # noqa: BLE001
            self.pm.unregister(plugin)
            self._fail(plugin_name, f"returned an invalid estimator: {type(exc).__name__}: {exc}")
            return
        for cls in classes:
            self._add(cls, provider)

    def _fail(self, plugin_name: str, why: str) -> None:
        self._failed[plugin_name] = why
        warnings.warn(f"relaxit plugin {plugin_name!r} skipped: {why}", PluginWarning, stacklevel=4)

    def _add(self, cls: type, provider: str) -> None:
        name = cls.name
        if name in self._conflicts:
            self._conflicts[name].append(provider)
        elif name in self._classes and self._classes[name] is not cls:
            self._conflicts[name] = [self._providers.pop(name), provider]
            del self._classes[name]
        else:
            self._classes[name] = cls
            self._providers[name] = provider
        self._adapter_cache = None

    def register(self, cls: type, provider: str | None = None) -> type:
        """Register an estimator class at run time; usable as a decorator."""
        _check_estimator_class(cls)
        with self._lock:
            self.load()
            self._add(cls, provider or f"runtime ({cls.__module__}.{cls.__qualname__})")
            if cls.name in self._conflicts:
                raise DuplicateEstimatorError(self._conflict_message(cls.name))
        return cls

    def unregister(self, name: str) -> None:
        """Forget an estimator registered under ``name`` (mainly for tests)."""
        with self._lock:
            self._classes.pop(name, None)
            self._providers.pop(name, None)
            self._conflicts.pop(name, None)
            self._adapter_cache = None

    @property
    def failed_plugins(self) -> dict[str, str]:
        """Plugins skipped so far, with the reason."""
        self.load()
        return dict(self._failed)

    # ------------------------------------------------------------- look-up
    def _conflict_message(self, name: str) -> str:
        return f"estimator name {name!r} is provided by more than one plugin: " + "; ".join(
            self._conflicts[name]
        ) + f". Uninstall one or set {DISABLE_ENV} to skip it."

    def names(self) -> list[str]:
        self.load()
        return sorted(self._classes)

    def get_class(self, name: str) -> type:
        """The estimator class registered under ``name``."""
        if not isinstance(name, str):
            hint = f" (use its .name, {name.name!r})" if isinstance(getattr(name, "name", None), str) else ""
            raise TypeError(f"an estimator is looked up by its name, a str; got {type(name).__name__}{hint}")
        self.load()
        if name in self._conflicts:
            raise DuplicateEstimatorError(self._conflict_message(name))
        try:
            return self._classes[name]
        except (KeyError, TypeError):
            raise UnknownEstimatorError(name, self._classes) from None

    def describe(self, name: str) -> EstimatorInfo:
        cls = self.get_class(name)
        return _info(cls, self._providers[name])

    def available(self) -> list[EstimatorInfo]:
        self.load()
        for name in self._conflicts:
            warnings.warn(self._conflict_message(name), PluginWarning, stacklevel=2)
        return [_info(self._classes[n], self._providers[n]) for n in sorted(self._classes)]

    # ------------------------------------------------------------- building
    def get(self, name: str, /, **config: Any) -> Any:
        """Instantiate the estimator ``name`` with a validated config."""
        cls = self.get_class(name)
        return cls(**config)

    def validate(self, spec: Any) -> EstimatorConfig:
        """Turn a spec (config instance, mapping, OmegaConf node, or JSON/YAML/TOML file path)
        into the validated config of its estimator."""
        if isinstance(spec, EstimatorConfig):
            cls = self.get_class(spec.name)
            if isinstance(spec, cls.Config):
                return spec
            return cls.validate_config(spec.model_dump())
        data = self._to_mapping(spec)
        if "name" not in data:
            raise ConfigError(
                "an estimator spec needs a 'name' field; registered names: " + ", ".join(self.names())
            )
        name = data["name"]
        cls = self.get_class(name)
        return cls.validate_config(data)

    def build(self, spec: Any) -> Any:
        """Instantiate an estimator from a spec (see :meth:`validate`)."""
        config = self.validate(spec)
        return self.get_class(config.name)(config)

    @staticmethod
    def _to_mapping(spec: Any) -> dict[str, Any]:
        if isinstance(spec, (str, os.PathLike)):
            return load_config_file(spec)
        if type(spec).__module__.startswith("omegaconf"):
            from omegaconf import OmegaConf  # optional dependency, present if spec is a node

            spec = OmegaConf.to_container(spec, resolve=True)
        if isinstance(spec, Mapping):
            return {str(k): v for k, v in spec.items()}
        raise ConfigError(
            "an estimator spec must be an EstimatorConfig, a mapping, an OmegaConf node or a "
            f"path to a JSON/YAML/TOML file; got {type(spec).__name__}"
        )

    # --------------------------------------------------------------- schema
    def config_union(self) -> Any:
        """The discriminated union (by ``name``) of every registered config, as a type."""
        self.load()
        names = tuple(sorted(self._classes))
        if not names:
            raise UnknownEstimatorError("(any)", [])
        configs = tuple(self._classes[n].Config for n in names)
        return Annotated[Union[configs], Field(discriminator="name")]  # type: ignore[valid-type]

    def adapter(self) -> TypeAdapter:
        """A cached :class:`pydantic.TypeAdapter` of :meth:`config_union`."""
        self.load()
        key = tuple(sorted(self._classes))
        if self._adapter_cache is None or self._adapter_cache[0] != key:
            self._adapter_cache = (key, TypeAdapter(self.config_union()))
        return self._adapter_cache[1]

    def schema(self) -> dict[str, Any]:
        """JSON schema of every registered config, discriminated by ``name``."""
        schema = self.adapter().json_schema()
        schema.setdefault("title", "relaxit estimator config")
        return schema

    def validate_union(self, data: Any) -> EstimatorConfig:
        """Validate ``data`` against the discriminated union (pydantic's errors kept)."""
        if isinstance(data, EstimatorConfig):
            return self.validate(data)
        data = self._to_mapping(data)
        try:
            return self.adapter().validate_python(data)
        except ValidationError as exc:
            raise ConfigError.from_validation_error(exc) from None


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON, YAML or TOML file into a mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(text)
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError("reading YAML needs PyYAML: pip install 'relaxit[yaml]'") from exc
        data = yaml.safe_load(text)
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        data = tomllib.loads(text)
    else:
        raise ConfigError(f"config file {str(path)!r}: unknown format; use .json, .yaml, .yml or .toml")
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, not {type(data).__name__}")
    return dict(data)


registry = Registry()
"""The process-wide registry used by the :mod:`relaxit` facade."""
