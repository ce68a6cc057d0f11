"""The example third-party plugin (``examples/third_party_plugin``): it builds, relaxit finds
it through real entry-point metadata, it passes the conformance kit, and a plugin that
raises on import is skipped with a warning naming it while the others keep working."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

from relaxit_core import PluginWarning
from relaxit_core.registry import Registry
from plugin_sites import on_sys_path as _on_sys_path
from plugin_sites import write_dist_info

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "third_party_plugin"
PACKAGE = "relaxit_example_plugin"
BROKEN = "relaxit_broken_fixture_plugin"


def _declared_entry_points() -> dict[str, str]:
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    return meta["project"]["entry-points"]["relaxit"]


def _build_wheel(dest: Path) -> Path | None:
    """Build the example's wheel with pip (no network, no build isolation); None if this
    environment cannot build (no setuptools)."""
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return None
    src = dest / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(dest / "wheels"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"building the example plugin failed:\n{proc.stdout}\n{proc.stderr}"
    (wheel,) = (dest / "wheels").glob("relaxit_example_plugin-*.whl")
    return wheel


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A directory where the example plugin is installed: its wheel unpacked (a pure-Python
    wheel's install), or — without setuptools — its package plus a ``.dist-info`` carrying
    the entry points declared in its pyproject.toml."""
    root = tmp_path_factory.mktemp("example_plugin")
    site = root / "site"
    site.mkdir()
    wheel = _build_wheel(root)
    if wheel is not None:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    else:
        shutil.copytree(EXAMPLE / PACKAGE, site / PACKAGE)
        write_dist_info(site, "relaxit_example_plugin", _declared_entry_points())
    return site


@pytest.fixture
def broken_site(tmp_path) -> Path:
    """A second installed plugin whose module raises on import."""
    site = tmp_path / "broken_site"
    (site / BROKEN).mkdir(parents=True)
    (site / BROKEN / "__init__.py").write_text('raise RuntimeError("boom: this plugin is broken")\n')
    write_dist_info(site, "relaxit_broken_fixture", {"broken_fixture": BROKEN})
    return site


def on_sys_path(*paths: Path):
    """Put ``paths`` first on ``sys.path`` (as an installation would) and undo it after."""
    return _on_sys_path(*paths, packages=(PACKAGE, BROKEN))


def test_wheel_declares_the_entry_point(site):
    (info,) = site.glob("relaxit_example_plugin-*.dist-info")
    text = (info / "entry_points.txt").read_text()
    for name, value in _declared_entry_points().items():
        assert f"{name} = {value}" in text


def test_discovered_through_entry_point_metadata(site):
    with on_sys_path(site):
        reg = Registry()  # a fresh registry reads the installed entry points
        assert "constant_baseline_reinforce" in reg.names()
        info = reg.describe("constant_baseline_reinforce")
        # the distribution as its metadata spells it (setuptools >= 69 writes the normalised name)
        dist, _, rest = info.provider.partition(":")
        assert dist.replace("-", "_") == "relaxit_example_plugin"
        assert rest == "relaxit_example (relaxit_example_plugin.plugin)"
        assert Path(sys.modules["relaxit_example_plugin.plugin"].__file__).is_relative_to(site)
        assert "reinforce" in reg.names()  # built-ins come through the same group
        est = reg.build({"name": "constant_baseline_reinforce", "baseline": 0.3})
        logits = torch.zeros(4, requires_grad=True)
        out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=8, logits=logits)
        out.surrogate.backward()
        assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
        assert "constant_baseline_reinforce" in str(reg.schema())
    with on_sys_path():
        assert "constant_baseline_reinforce" not in Registry().names()  # uninstalled: gone


def test_broken_plugin_is_isolated(site, broken_site):
    with on_sys_path(site, broken_site):
        reg = Registry()
        with pytest.warns(PluginWarning, match="broken_fixture") as record:
            reg.load()
        assert any("boom" in str(w.message) for w in record)
        assert "boom" in reg.failed_plugins["relaxit_broken_fixture:broken_fixture"]
        names = reg.names()
        assert {"constant_baseline_reinforce", "reinforce", "gumbel_softmax"} <= set(names)
        d = reg.get("constant_baseline_reinforce").distribution(logits=torch.zeros(3))
        assert d.sample().shape == (3,)


def test_broken_plugin_can_be_disabled(broken_site, monkeypatch):
    monkeypatch.setenv("RELAXIT_DISABLE_PLUGINS", "broken_fixture")
    with on_sys_path(broken_site):
        reg = Registry()
        reg.load()  # no warning: the filterwarnings setting would turn one into an error
        assert not any("broken_fixture" in k for k in reg.failed_plugins)


def test_example_passes_its_own_tests_and_the_kit(site):
    """Run the example package's own test suite (the conformance kit via
    parametrize_with_checks, its doctests, its own maths test) against the installed copy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"the example plugin's tests failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and "failed" not in proc.stdout
