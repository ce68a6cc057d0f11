"""The plugin loader under hostile plugins (issue 16, defects 1 and 2, and the loader fuzz test).

Each plugin is an *installed package*: a package directory plus a ``.dist-info`` carrying its
``[relaxit]`` entry points, put on ``sys.path`` as an installation would (the third-party
example's tests do the same).  Broken, slow, exiting, garbage, duplicate and shadowing
plugins are each isolated with a :class:`~relaxit_core.PluginWarning` naming the package; two
providers of one name raise :class:`~relaxit_core.DuplicateEstimatorError` naming both
packages; an interrupted load leaves the registry as if never loaded.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaxit_core import DuplicateEstimatorError, PluginWarning, UnknownEstimatorError
from relaxit_core.registry import Registry
from plugin_sites import on_sys_path, write_dist_info

_GOOD_MODULE = '''
from typing import ClassVar, Literal
import relaxit_core
from relaxit_plugins.reinforce import ReinforceEstimator

class Good(ReinforceEstimator):
    """A working third-party estimator (a REINFORCE subclass)."""
    name: ClassVar[str] = {name!r}

    class Config(ReinforceEstimator.Config):
        name: Literal[{name!r}] = {name!r}

@relaxit_core.hookimpl
def relaxit_estimators():
    {before}
    return [Good]
'''

_SHADOW_MODULE = '''
from typing import ClassVar, Literal
import relaxit_core
from relaxit_plugins.gumbel_topk import GumbelTopKEstimator

class Shadow(GumbelTopKEstimator):
    """Claims the built-in name gumbel_topk."""
    name: ClassVar[str] = "gumbel_topk"

@relaxit_core.hookimpl
def relaxit_estimators():
    return [Shadow]
'''

#: name -> (distribution, entry point name, module source)
PLUGINS = {
    "good": ("fuzz_good_pkg", "fuzz_good", _GOOD_MODULE.format(name="fuzz_good", before="pass")),
    "slow": ("fuzz_slow_pkg", "fuzz_slow", "import time\ntime.sleep(0.2)\n"
             + _GOOD_MODULE.format(name="fuzz_slow", before="pass")),
    "broken": ("fuzz_broken_pkg", "fuzz_broken", "raise RuntimeError('boom at import')\n"),
    "exiting": ("fuzz_exiting_pkg", "fuzz_exiting", "import sys\nsys.exit(3)\n"),
    "exiting_hook": ("fuzz_exiting_hook_pkg", "fuzz_exiting_hook",
                     _GOOD_MODULE.format(name="fuzz_exiting_hook", before="import sys; sys.exit(4)")),
    "garbage": ("fuzz_garbage_pkg", "fuzz_garbage",
                "import relaxit_core\n@relaxit_core.hookimpl\ndef relaxit_estimators():\n    return [42]\n"),
    "dup_a": ("fuzz_dup_a_pkg", "fuzz_dup", _GOOD_MODULE.format(name="fuzz_dup", before="pass")),
    "dup_b": ("fuzz_dup_b_pkg", "fuzz_dup", _GOOD_MODULE.format(name="fuzz_dup", before="pass")),
    "shadow": ("fuzz_shadow_pkg", "gumbel_topk", _SHADOW_MODULE),
}
BAD = {"broken", "exiting", "exiting_hook", "garbage"}
WORKING = {"good": "fuzz_good", "slow": "fuzz_slow"}


def install(site: Path, dist: str, ep_name: str, source: str) -> None:
    """Install package ``dist`` (module ``dist.plugin``) with one ``relaxit`` entry point."""
    pkg = site / dist
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(source)
    write_dist_info(site, dist, {ep_name: f"{dist}.plugin"})


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugin_sites")
    out = {}
    for key, (dist, ep_name, source) in PLUGINS.items():
        out[key] = root / key
        install(out[key], dist, ep_name, source)
    return out


def installed(*paths: Path):
    return on_sys_path(*paths, prefix="fuzz_")


def _load(reg: Registry) -> list[str]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        reg.load()
    return [str(w.message) for w in rec if issubclass(w.category, PluginWarning)]


# ------------------------------------------------------------------- 1. shadowing
def test_a_plugin_cannot_silently_shadow_a_built_in(sites, monkeypatch):
    """Defect 1: an entry point named `gumbel_topk` replaced the built-in by discovery order."""
    with installed(sites["shadow"]):
        reg = Registry()
        _load(reg)
        with pytest.raises(DuplicateEstimatorError) as err:
            reg.get_class("gumbel_topk")
        msg = str(err.value)
        assert "relaxit:gumbel_topk (relaxit_plugins.gumbel_topk)" in msg
        assert "fuzz_shadow_pkg:gumbel_topk (fuzz_shadow_pkg.plugin)" in msg
        assert "gumbel_softmax" in reg.names()  # other names keep working
        # a bare entry-point name is ambiguous now: it disables neither (with a warning)
        monkeypatch.setenv("RELAXIT_DISABLE_PLUGINS", "gumbel_topk")
        reg = Registry()
        assert any("several plugins" in m for m in _load(reg))
        with pytest.raises(DuplicateEstimatorError):
            reg.get_class("gumbel_topk")
        # the shadowing package disabled by its distribution name: the built-in is back
        monkeypatch.setenv("RELAXIT_DISABLE_PLUGINS", "fuzz_shadow_pkg")
        reg = Registry()
        _load(reg)
        assert reg.describe("gumbel_topk").provider == "relaxit:gumbel_topk (relaxit_plugins.gumbel_topk)"
        monkeypatch.setenv("RELAXIT_DISABLE_PLUGINS", "fuzz_shadow_pkg:gumbel_topk")
        reg = Registry()
        _load(reg)
        assert reg.describe("gumbel_topk").cls.__module__ == "relaxit_plugins.gumbel_topk"
        # any spelling pip accepts for the distribution (PEP 503 normalisation)
        for spelling in ("Fuzz-Shadow-Pkg", "fuzz.shadow-pkg:gumbel_topk"):
            monkeypatch.setenv("RELAXIT_DISABLE_PLUGINS", spelling)
            reg = Registry()
            _load(reg)
            assert reg.describe("gumbel_topk").cls.__module__ == "relaxit_plugins.gumbel_topk", spelling


def test_two_packages_providing_one_name_are_named(sites):
    with installed(sites["dup_a"], sites["dup_b"]):
        reg = Registry()
        _load(reg)
        with pytest.raises(DuplicateEstimatorError, match="fuzz_dup_a_pkg") as err:
            reg.get_class("fuzz_dup")
        assert "fuzz_dup_b_pkg" in str(err.value)


# ------------------------------------------------------------------- 2. interrupted loads
def test_an_interrupted_load_leaves_the_registry_unloaded(tmp_path):
    """Defect 2: Ctrl-C during the first load left a partial registry for the whole process."""
    flag = tmp_path / "interrupt_once"
    flag.write_text("")
    source = (f"import pathlib\nflag = pathlib.Path({str(flag)!r})\n"
              "if flag.exists():\n    flag.unlink()\n    raise KeyboardInterrupt\n"
              + _GOOD_MODULE.format(name="fuzz_interrupt", before="pass"))
    # the entry-point name sorts after most built-ins: the interrupt comes mid-load
    install(tmp_path / "site", "fuzz_interrupt_pkg", "m_fuzz_interrupt", source)
    with installed(tmp_path / "site"):
        reg = Registry()
        with pytest.raises(KeyboardInterrupt):
            reg.load()
        assert not reg._loaded and not reg._classes and not reg._providers
        assert not reg.pm.get_plugins(), "every plugin of the interrupted load is unregistered"
        names = reg.names()  # loads again, from scratch, completely
        assert "fuzz_interrupt" in names and "gumbel_topk" in names and "reinforce" in names
        assert len(names) == len(Registry().names())


def test_sys_exit_in_a_plugin_is_isolated(sites):
    """Defect 2: a plugin calling sys.exit at import killed `relaxit list` with no message."""
    with installed(sites["exiting"], sites["exiting_hook"], sites["good"]):
        reg = Registry()
        messages = _load(reg)
        assert any("fuzz_exiting_pkg" in m and "sys.exit" in m for m in messages)
        assert any("fuzz_exiting_hook_pkg" in m and "sys.exit" in m for m in messages)
        assert "fuzz_good" in reg.names() and "fuzz_exiting_hook" not in reg.names()


def test_a_plugin_that_looks_the_registry_up_while_loading(tmp_path):
    source = ("from relaxit_core.registry import registry\nregistry.names()\n"
              + _GOOD_MODULE.format(name="fuzz_reentrant", before="pass"))
    install(tmp_path / "site", "fuzz_reentrant_pkg", "fuzz_reentrant", source)
    with installed(tmp_path / "site"):
        from relaxit_core.registry import registry

        reg = Registry()
        reg.load()
        assert "fuzz_reentrant" in reg.names()
        registry.names()  # the process-wide one is unharmed


# ------------------------------------------------------------------- 3. torch's validation setting
@pytest.mark.parametrize("user_setting", [False, True])
def test_plugin_loading_keeps_the_users_validation_setting(tmp_path, user_setting):
    """Importing Pyro sets torch's validation default to ``__debug__``; a plugin (or its import
    of Pyro) must not change the user's choice.  Here a plugin sets the opposite at import."""
    import torch

    source = (f"import torch\ntorch.distributions.Distribution.set_default_validate_args({not user_setting})\n"
              + _GOOD_MODULE.format(name="fuzz_flipper", before="pass"))
    install(tmp_path / "site", "fuzz_flipper_pkg", "fuzz_flipper", source)
    prev = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(user_setting)
    try:
        with installed(tmp_path / "site"):
            reg = Registry()
            assert "fuzz_flipper" in reg.names()
            assert torch.distributions.Distribution._validate_args is user_setting
    finally:
        torch.distributions.Distribution.set_default_validate_args(prev)


def test_first_get_keeps_validation_off_in_a_fresh_process():
    """The real case: a fresh process turns validation off, then relaxit's first ``get()``
    imports Pyro (which runs ``set_default_validate_args(__debug__)``)."""
    import subprocess

    code = ("import sys, torch\n"
            "torch.distributions.Distribution.set_default_validate_args(False)\n"
            "import relaxit\n"
            "assert 'pyro' not in sys.modules\n"
            "relaxit.get('reinforce', family='bernoulli')\n"
            "assert 'pyro' in sys.modules\n"
            "relaxit.available()\n"
            "print(torch.distributions.Distribution._validate_args)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------- fuzz
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.lists(st.sampled_from(sorted(PLUGINS)), unique=True, max_size=len(PLUGINS)), data=st.data())
def test_loader_fuzz(sites, chosen, data):
    """Any mix of installed plugins, in any sys.path order: working ones work, each bad one is
    skipped with a PluginWarning naming its package, conflicts name both packages, and the
    built-ins that are not shadowed keep working."""
    order = data.draw(st.permutations(chosen))
    with installed(*(sites[k] for k in order)):
        reg = Registry()
        messages = _load(reg)
        names = set(reg.names())
        for key in chosen:
            dist = PLUGINS[key][0]
            if key in BAD:
                assert any(dist in m for m in messages), (key, messages)
            if key in WORKING:
                assert WORKING[key] in names
                reg.get(WORKING[key], family="bernoulli")
        if {"dup_a", "dup_b"} <= set(chosen):
            with pytest.raises(DuplicateEstimatorError, match="fuzz_dup_a_pkg.*fuzz_dup_b_pkg"):
                reg.get_class("fuzz_dup")
        elif {"dup_a", "dup_b"} & set(chosen):
            assert "fuzz_dup" in names
        else:
            with pytest.raises(UnknownEstimatorError):
                reg.get_class("fuzz_dup")
        if "shadow" in chosen:
            with pytest.raises(DuplicateEstimatorError, match="fuzz_shadow_pkg"):
                reg.get_class("gumbel_topk")
        else:
            assert reg.describe("gumbel_topk").cls.__module__ == "relaxit_plugins.gumbel_topk"
        assert {"reinforce", "gumbel_softmax", "relaxed_bernoulli"} <= names


def test_relaxit_list_survives_an_exiting_plugin(sites):
    """Defect 2: a plugin calling sys.exit at import killed `relaxit list` (exit 3, no message)."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(sites["exiting"]), str(sites["broken"]),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "relaxit", "list"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "gumbel_softmax" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("relaxit: warning: relaxit plugin") for line in lines), proc.stderr
    assert "fuzz_exiting_pkg" in proc.stderr and "fuzz_broken_pkg" in proc.stderr and "Traceback" not in proc.stderr
