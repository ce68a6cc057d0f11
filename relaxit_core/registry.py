"""The estimator registry: pluggy plugin manager fed lazily by the ``relaxit`` entry points."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
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
"""Comma-separated plugins to skip, e.g. ``RELAXIT_DISABLE_PLUGINS=mypkg:foo,otherpkg``: each
item a ``distribution:entry_point``, a distribution, a plugin module, or an entry-point name
that only one distribution uses."""


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


def _relaxit_entry_points(group: str) -> list[EntryPoint]:
    """The group's entry points, each once, in a fixed order (entry-point name, distribution)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for ep in entry_points(group=group):
        key = (_dist_name(ep), ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return sorted(out, key=lambda e: (e.name, _dist_name(e), e.value))


def _canonical(name: str) -> str:
    """A distribution name in its normalised form (PEP 503): ``My_Pkg.x`` -> ``my-pkg-x``.

    Metadata spells a name as its build backend wrote it (``relaxit_example_plugin`` or
    ``relaxit-example-plugin``); names are compared in the normalised form, as pip does."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    return str(name) if name else "(unknown distribution)"


def _plugin_id(ep: EntryPoint) -> str:
    """``distribution:entry_point``: a provider is its package and entry point, never the
    entry-point name alone (a third party may reuse a built-in's name)."""
    dist = getattr(ep, "dist", None)
    return f"{_dist_name(ep)}:{ep.name}" if dist is not None else ep.name


def _disabled(eps: list[EntryPoint]) -> set[str]:
    """The plugin ids that :data:`DISABLE_ENV` disables.

    Each comma-separated item is ``distribution:entry_point``, a distribution name (all its
    plugins), a module (``mypkg.plugin``) or an entry-point name; an entry-point name that
    several distributions use is ambiguous: it disables none of them, with a warning.
    """
    items = {s.strip() for s in os.environ.get(DISABLE_ENV, "").split(",") if s.strip()}
    if not items:
        return set()
    # a distribution may be named in any spelling pip accepts (``my_pkg`` for ``my-pkg``)
    items |= {_canonical(i.split(":", 1)[0]) + (":" + i.split(":", 1)[1] if ":" in i else "") for i in items}

    def canonical_id(ep: EntryPoint) -> str:
        return f"{_canonical(_dist_name(ep))}:{ep.name}"

    out: set[str] = set()
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in eps:
        by_name.setdefault(ep.name, []).append(ep)
        if (_plugin_id(ep) in items or canonical_id(ep) in items or _canonical(_dist_name(ep)) in items
                or ep.value in items):
            out.add(_plugin_id(ep))
    for item in items:
        matches = by_name.get(item, [])
        if len(matches) == 1:
            out.add(_plugin_id(matches[0]))
        elif len(matches) > 1:
            ids = ", ".join(_plugin_id(e) for e in matches)
            warnings.warn(
                f"{DISABLE_ENV}: {item!r} is the entry-point name of several plugins ({ids}); "
                "none is disabled: name one as distribution:entry_point",
                PluginWarning, stacklevel=4,
            )
    return out


@contextlib.contextmanager
def _keep_torch_validation():
    """Keep the user's ``torch.distributions`` validation default across plugin loading.

    Importing Pyro (which most plugins do) runs
    ``torch.distributions.Distribution.set_default_validate_args(__debug__)`` as a side effect
    (``pyro/distributions/util.py``), which would silently undo a user's
    ``set_default_validate_args(False)`` (or ``True`` under ``python -O``).  When torch is not
    imported yet there is no user setting to keep (torch's own default is ``__debug__`` too)."""
    torch = sys.modules.get("torch")
    dist_cls = getattr(getattr(torch, "distributions", None), "Distribution", None)
    if dist_cls is None:
        yield
        return
    before = dist_cls._validate_args
    try:
        yield
    finally:
        if dist_cls._validate_args != before:
            dist_cls.set_default_validate_args(before)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (the plugin called sys.exit)"
    return f"{type(exc).__name__}: {exc}"


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
        self._loading = False
        self._registered_now: list[Any] = []
        self._lock = threading.RLock()
        self._adapter_cache: tuple[tuple[str, ...], Any] | None = None

    # ------------------------------------------------------------- loading
    def load(self) -> None:
        """Load the entry points (once; later calls do nothing).

        A load either completes or leaves the registry as if it had never been loaded: a
        :class:`KeyboardInterrupt` (Ctrl-C) during it undoes what it registered and
        propagates, and the next call loads again from scratch.  Any other exception a plugin
        raises, :class:`SystemExit` included, only skips that plugin (with a
        :class:`~relaxit_core.PluginWarning` naming its package).
        """
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:  # a plugin looking the registry up while it loads
                return
            with self._all_or_nothing():
                eps = _relaxit_entry_points(self.group)
                disabled = _disabled(eps)
                for ep in eps:
                    if _plugin_id(ep) in disabled:
                        continue
                    self._load_entry_point(ep)
                self._loaded = True

    @contextlib.contextmanager
    def _all_or_nothing(self):
        """A load that completes or leaves the registry as it was: on any exception escaping
        it (Ctrl-C, or an error of the loader itself) the plugins it registered are
        unregistered and the tables restored, then the exception propagates."""
        self._loading = True
        saved = (dict(self._classes), dict(self._providers),
                 {k: list(v) for k, v in self._conflicts.items()}, dict(self._failed))
        self._registered_now = []
        try:
            with _keep_torch_validation():
                yield
        except BaseException:
            for plugin in self._registered_now:
                with contextlib.suppress(Exception):
                    self.pm.unregister(plugin)
            self._classes, self._providers, self._conflicts, self._failed = saved
            self._adapter_cache = None
            raise
        finally:
            self._loading = False
            self._registered_now = []

    def _load_for(self, name: str) -> None:
        """Load only the plugin that can provide ``name``, when that is safe; else everything.

        Safe: every entry point of the group is declared by one distribution (relaxit itself,
        whose entry-point names are its estimators' names) and exactly one of them is named
        ``name`` and enabled.  Then no other plugin can shadow ``name``, and the first
        ``get()`` imports one plugin module instead of all of them.  With a third-party
        distribution installed, a provider's identity is its distribution and module, not the
        entry-point name, so shadowing can only be detected by loading all: :meth:`load`.
        """
        if self._loaded or name in self._classes:
            return
        with self._lock:
            if self._loaded or self._loading or name in self._classes:
                return
            eps = _relaxit_entry_points(self.group)
            matches = [ep for ep in eps if ep.name == name]
            if (len({_dist_name(ep) for ep in eps}) != 1 or len(matches) != 1
                    or _plugin_id(matches[0]) in _disabled(eps)):
                self.load()
                return
            with self._all_or_nothing():  # Ctrl-C: as if nothing had been loaded
                self._load_entry_point(matches[0])

    def _load_entry_point(self, ep: EntryPoint) -> None:
        pid = _plugin_id(ep)
        provider = f"{pid} ({ep.value})"
        try:
            module = ep.load()
            if self.pm.is_registered(module):  # the same module under another entry point
                return
            self.pm.register(module, name=pid)
            self._registered_now.append(module)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - isolate every plugin, sys.exit() included
            self._fail(pid, f"failed to load: {_describe(exc)}", f" ({ep.value})")
            return
        self._collect(module, provider, pid, f" ({ep.value})")

    def register_plugin(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object (a module or any object with hookimpls) directly."""
        with self._lock:
            self.load()
            name = name or getattr(plugin, "__name__", None) or repr(plugin)
            try:
                self.pm.register(plugin, name=name)
            except Exception as exc:  # noqa: BLE001
                self._fail(name, f"failed to register: {_describe(exc)}")
                return
            self._collect(plugin, name, name)

    def _collect(self, plugin: Any, provider: str, plugin_name: str, where: str = "") -> None:
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
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a hook may raise anything, sys.exit() included
            self.pm.unregister(plugin)
            self._fail(plugin_name, f"returned an invalid estimator: {_describe(exc)}", where)
            return
        for cls in classes:
            self._add(cls, provider)

    def _fail(self, plugin_name: str, why: str, where: str = "") -> None:
        self._failed[plugin_name] = why
        warnings.warn(f"relaxit plugin {plugin_name!r}{where} skipped: {why}", PluginWarning, stacklevel=4)

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
        """Plugins skipped so far, with the reason, keyed by ``distribution:entry_point``."""
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
        self._load_for(name)
        if name not in self._classes:  # unknown, conflicting or not found alone: load everything
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
    """Read a JSON, YAML or TOML file into a mapping.

    Every problem is a :class:`~relaxit_core.ConfigError` naming the file (and, for a syntax
    error, the line): a missing file, a directory, a binary file, bad syntax, a duplicate key
    (YAML and JSON), or a document that is not a mapping.
    """
    path = Path(path)
    where = repr(str(path))
    if not path.exists():
        raise ConfigError(f"config file {where} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {where} is a directory, not a file")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml", ".toml"):
        raise ConfigError(f"config file {where}: unknown format; use .json, .yaml, .yml or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {where} is not a UTF-8 text file (byte {exc.start} is {exc.object[exc.start]:#04x})") from None
    except OSError as exc:
        raise ConfigError(f"config file {where} cannot be read: {exc.strerror or exc}") from None
    if "\x00" in text:
        raise ConfigError(f"config file {where} is a binary file, not {suffix[1:].upper()} text")
    if suffix == ".json":
        data = _load_json(text, where)
    elif suffix in (".yaml", ".yml"):
        data = _load_yaml(text, where)
    else:
        data = _load_toml(text, where)
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {where} must hold a mapping, not {type(data).__name__}")
    return dict(data)


def _load_json(text: str, where: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ConfigError(f"config file {where}: duplicate key {key!r}")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {where}, line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}") from None


def _load_yaml(text: str, where: str) -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("reading YAML needs PyYAML: pip install 'relaxit[yaml]'") from exc

    class _Loader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {where}{line}: invalid YAML: {problem}") from None


def _load_toml(text: str, where: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {where}: invalid TOML: {exc}") from None


registry = Registry()
"""The process-wide registry used by the :mod:`relaxit` facade."""
