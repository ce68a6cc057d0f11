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

    class Odd(BaseModel):
        c: int = 1
        d: int = 2

        """Not c's: a blank line does not separate, a statement does (pydantic's rule)."""
        if True:
            e: int = 3
        else:
            """The e, as pydantic reads it."""

        def f(self) -> None:
            g: int = 4
            """A local's, which pydantic reads too."""
            del g

        h: str = """Dedented
continuation."""
        """The h."""

    # the fields' docstrings, which are what a config reads, agree with every pydantic >= 2.6;
    # a method's annotated local is not the class's (pydantic >= 2.14 agrees; 2.13 read it)
    ours, theirs = attribute_docstrings(Odd), extract_docstrings_from_cls(Odd, use_inspect=True)
    assert {k: ours.get(k) for k in Odd.model_fields} == {k: theirs.get(k) for k in Odd.model_fields}
    assert ours["d"].startswith("Not c's") and ours["h"] == "The h." and "g" not in ours


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


# ----------------------------------------------------------------- no torch where none is needed
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def _fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})


_CLI_PROBE = (
    "import sys, json\n"
    "from relaxit.cli import main\n"  # what the console script `relaxit` runs
    "argv = sys.argv[1:]\n"
    "try:\n"
    "    rc = main(argv)\n"
    "except SystemExit as exc:\n"
    "    rc = exc.code\n"
    "heavy = sorted(m for m in ('torch', 'pyro', 'relaxit_core.registry', 'relaxit_core.estimator') if m in sys.modules)\n"
    "plugins = sorted(m for m in sys.modules if m.startswith('relaxit_plugins.'))\n"
    "sys.stderr.write('\\nPROBE ' + json.dumps({'rc': rc, 'heavy': heavy, 'plugins': plugins}) + '\\n')\n"
)


def _cli_probe(*argv: str, env: dict[str, str] | None = None) -> tuple[dict, str]:
    import os

    proc = subprocess.run([sys.executable, "-c", _CLI_PROBE, *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    probe = json.loads(proc.stderr.rsplit("PROBE ", 1)[1])
    return probe, proc.stdout


def test_import_relaxit_imports_no_torch():
    out = _fresh(
        "import sys, relaxit\n"
        "assert 'torch' not in sys.modules and 'pydantic' not in sys.modules, 'heavy import'\n"
        "relaxit.EstimatorBase\n"  # the re-exported names are imported on first access
        "assert 'torch' in sys.modules\n"
        "print(sorted(set(relaxit.__all__) - set(dir(relaxit))))\n"
    )
    assert out.stdout.strip() == "[]"


def test_help_and_list_import_no_torch():
    """`relaxit --help`, `relaxit list` (text, --json, --family) and a family typo import
    neither torch nor any plugin: the rows come from the shipped catalog."""
    probe, out = _cli_probe("--help")
    assert probe == {"rc": 0, "heavy": [], "plugins": []} and "list" in out
    for argv in (["list"], ["list", "--json"], ["list", "--family", "subset"]):
        probe, out = _cli_probe(*argv)
        assert probe == {"rc": 0, "heavy": [], "plugins": []}, argv
        assert "gumbel" in out
    probe, _ = _cli_probe("list", "--family", "categorial")
    assert probe == {"rc": 2, "heavy": [], "plugins": []}


def test_list_from_the_catalog_is_what_the_registry_gives():
    """The same output, byte for byte, from the catalog (fresh process) and from the loaded
    registry, with and without a plugin disabled."""
    live = (
        "import sys, relaxit\n"
        "relaxit.available()\n"
        "from relaxit.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for env in ({}, {"RELAXIT_DISABLE_PLUGINS": "relaxit:gumbel_softmax, reinforce"}):
        for argv in (["list", "--json"], ["list", "--family", "categorical"]):
            probe, fast = _cli_probe(*argv, env=env)
            assert probe["heavy"] == [], (argv, env)
            import os

            slow = subprocess.run([sys.executable, "-c", live, *argv], capture_output=True, text=True,
                                  check=True, env={**os.environ, **env}).stdout
            assert fast == slow, (argv, env)
    rows = json.loads(_cli_probe("list", "--json", env={"RELAXIT_DISABLE_PLUGINS": "gumbel_softmax"})[1])
    assert "gumbel_softmax" not in {r["name"] for r in rows} and "reinforce" in {r["name"] for r in rows}


def test_catalog_equals_the_live_registry():
    """The shipped catalog is what ``python -m relaxit.catalog`` writes from the registry
    now: a changed or added plugin without a regenerated catalog fails here."""
    from relaxit.catalog import build_catalog, load_catalog

    assert load_catalog() == build_catalog(), "catalog.json is stale: run python -m relaxit.catalog"


def test_a_plugin_outside_the_catalog_makes_list_use_the_registry(tmp_path):
    """A third party's plugin is not in the catalog: `relaxit list` imports the plugins
    (torch included) and lists it with the built-ins."""
    from plugin_sites import write_dist_info

    (tmp_path / "thirdparty_probe_mod.py").write_text(
        "import relaxit_core\n"
        "from relaxit_plugins.reinforce import ReinforceEstimator\n"
        "class Probe(ReinforceEstimator):\n"
        "    name = 'thirdparty_probe'\n"
        "    class Config(ReinforceEstimator.Config):\n"
        "        name: __import__('typing').Literal['thirdparty_probe'] = 'thirdparty_probe'\n"
        "@relaxit_core.hookimpl\n"
        "def relaxit_estimators():\n"
        "    return [Probe]\n"
    )
    write_dist_info(tmp_path, "thirdparty_probe", {"thirdparty_probe": "thirdparty_probe_mod"})
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    probe, out = _cli_probe("list", "--json", env=env)
    names = {r["name"]: r["provider"] for r in json.loads(out)}
    assert probe["rc"] == 0 and "torch" in probe["heavy"]
    assert names["thirdparty_probe"] == "thirdparty_probe:thirdparty_probe (thirdparty_probe_mod)"
    assert "gumbel_softmax" in names


@pytest.mark.parametrize("group", ["relaxit", "console_scripts", "pytest11", "no.such.group"])
def test_entry_point_scan_equals_importlib_metadata(group):
    """The scan that parses only the distributions naming the group finds what
    ``importlib.metadata.entry_points`` finds, in the same order."""
    from importlib import metadata

    from relaxit_core.plugins import entry_points

    assert entry_points(group=group) == list(metadata.entry_points(group=group))
