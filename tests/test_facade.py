"""The facade and the registry: names, configs, errors, schema, runtime registration, plugin isolation."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar, Literal

import pydantic
import pytest
import torch

import relaxit
import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def test_get_and_build_agree():
    a = relaxit.get("gumbel_softmax", tau=0.5)
    b = relaxit.build({"name": "gumbel_softmax", "tau": 0.5})
    assert a.config == b.config
    assert a.config.tau == 0.5 and a.config.hard is False
    c = relaxit.build(a.config)
    assert c.config == a.config
    assert relaxit.build(a.config.model_dump()).config == a.config
    rl = relaxit.build({"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"})
    assert rl.config.baseline == "leave_one_out" and rl.min_num_samples == 2


def test_instance_family_and_capabilities_follow_config():
    cat = relaxit.get("reinforce", family="categorical")
    assert cat.family == "categorical" and type(cat).family == "bernoulli"
    soft, hard = relaxit.get("gumbel_softmax"), relaxit.get("gumbel_softmax", hard=True)
    assert C.HARD not in soft.capabilities and C.HARD in hard.capabilities
    assert C.HARD in type(soft).capabilities
    assert soft.distribution(logits=torch.zeros(3)).has_enumerate_support is False
    assert hard.distribution(logits=torch.zeros(3)).has_enumerate_support is True


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_build_from_file(tmp_path, suffix):
    path = tmp_path / f"est{suffix}"
    text = {
        ".json": json.dumps({"name": "relaxed_bernoulli", "tau": 0.3, "hard": True}),
        ".yaml": "name: relaxed_bernoulli\ntau: 0.3\nhard: true\n",
        ".toml": 'name = "relaxed_bernoulli"\ntau = 0.3\nhard = true\n',
    }[suffix]
    path.write_text(text)
    est = relaxit.build(path)
    assert est.config == relaxit.get("relaxed_bernoulli", tau=0.3, hard=True).config
    assert relaxit.build(str(path)).config == est.config


def test_build_from_omegaconf_node():
    omegaconf = pytest.importorskip("omegaconf")
    node = omegaconf.OmegaConf.create({"name": "reinforce", "family": "categorical", "baseline": "moving_average"})
    assert relaxit.build(node).config.family == "categorical"


def test_unknown_name_suggests_close_names():
    with pytest.raises(relaxit.UnknownEstimatorError) as info:
        relaxit.get("gumbel_sofmax")
    assert isinstance(info.value, KeyError) and isinstance(info.value, LookupError)
    assert "'gumbel_softmax'" in str(info.value) and "Did you mean" in str(info.value)
    with pytest.raises(KeyError):
        relaxit.build({"name": "nope"})


def test_lookup_by_non_string_says_what_is_expected():
    info = relaxit.describe("arm")
    with pytest.raises(TypeError, match=r"by its name, a str; got EstimatorInfo \(use its .name, 'arm'\)"):
        relaxit.get(info)
    with pytest.raises(TypeError, match="got int"):
        relaxit.describe(3)


def test_config_errors_keep_field_paths():
    with pytest.raises(relaxit.ConfigError) as info:
        relaxit.get("gumbel_softmax", tau=0)
    err = info.value
    assert isinstance(err, ValueError)
    assert "gumbel_softmax.tau: Input should be greater than 0" in str(err)
    assert err.errors[0]["loc"] == ("gumbel_softmax", "tau")
    with pytest.raises(relaxit.ConfigError, match="bogus"):
        relaxit.get("reinforce", family="bernoulli", bogus=1)
    with pytest.raises(relaxit.ConfigError, match="baseline"):
        relaxit.build({"name": "reinforce", "family": "bernoulli", "baseline": "average"})
    with pytest.raises(relaxit.ConfigError, match="needs a 'name'"):
        relaxit.build({"tau": 1.0})
    with pytest.raises(relaxit.ConfigError, match="does not exist"):
        relaxit.build("/no/such/file.yaml")


def test_configs_are_frozen_and_hold_no_code():
    cfg = relaxit.get("gumbel_softmax").config
    with pytest.raises(pydantic.ValidationError):
        cfg.tau = 2.0  # type: ignore[misc]
    with pytest.raises(relaxit.ConfigError):  # strings are never imported or evaluated
        relaxit.build({"name": "gumbel_softmax", "tau": "__import__('os').system('true')"})


def test_parameter_errors_name_what_is_allowed():
    est = relaxit.get("gumbel_softmax")
    x = torch.zeros(2, 3)
    with pytest.raises(relaxit.ParameterError, match="logits or probs"):
        est.distribution(loc=x)
    with pytest.raises(relaxit.ParameterError, match="both"):
        est.distribution(logits=x, probs=x.softmax(-1))
    with pytest.raises(relaxit.ParameterError, match="neither"):
        est.distribution()
    with pytest.raises(relaxit.ParameterError, match="num_samples"):
        relaxit.get("reinforce", family="categorical", baseline="leave_one_out").estimate(lambda z: z.sum(-1), num_samples=1, logits=x)
    with pytest.raises(ValueError, match=r"expected \[S, \*B\]"):
        est.estimate(lambda z: z.sum(), logits=x)
    with pytest.raises(relaxit.ParameterError, match="reduce"):
        est.estimate(lambda z: z.sum(-1), reduce="median", logits=x)
    with torch.distributions.Distribution.set_default_validate_args(True) or _validation():
        with pytest.raises(ValueError):
            est.distribution(logits=torch.tensor([0.0, float("nan")]))


class _validation:
    def __enter__(self):
        self.prev = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(True)

    def __exit__(self, *exc):
        torch.distributions.Distribution.set_default_validate_args(self.prev)


def test_schema_is_a_discriminated_union():
    schema = relaxit.schema()
    assert schema["discriminator"]["propertyName"] == "name"
    names = set(schema["discriminator"]["mapping"])
    assert {"gumbel_softmax", "reinforce", "relaxed_bernoulli"} <= names
    assert names == {i.name for i in relaxit.available()}


def test_available_and_describe():
    infos = relaxit.available()
    assert [i.name for i in infos] == sorted(i.name for i in infos)
    info = relaxit.describe("reinforce")
    assert info.families == ("bernoulli", "categorical")
    assert C.UNBIASED in info.capabilities and info.params == ("logits", "probs")
    assert "Williams" in info.reference and info.summary
    assert info.config_schema["properties"]["baseline"]["enum"] == [
        "none", "moving_average", "leave_one_out", "group_mean", "group_normalized", "learned"
    ]
    json.dumps(info.to_dict())


def _toy_class(name: str):
    class Toy(relaxit_core.EstimatorBase):
        """A toy estimator (REINFORCE on Bernoulli; Williams 1992)."""

        family: ClassVar[str] = "bernoulli"
        params: ClassVar[tuple[str, ...]] = ("logits", "probs")
        capabilities: ClassVar[frozenset] = frozenset({C.SCORE_FUNCTION, C.LOG_PROB, C.HARD})
        reference: ClassVar[str] = "Williams (1992)"

        Config = pydantic.create_model(  # noqa: N815
            f"Config_{name}", __base__=relaxit_core.EstimatorConfig, name=(Literal[name], name)
        )

        def build_distribution(self, logits=None, probs=None):
            import pyro.distributions as dist

            return dist.Bernoulli(logits=logits, probs=probs)

    Toy.name = name
    Toy.__name__ = Toy.__qualname__ = f"Toy_{name}"
    return Toy


def test_runtime_register_and_duplicates():
    reg = Registry(group="relaxit.test.none")
    toy = reg.register(_toy_class("toy_one"))
    assert reg.get("toy_one").config.name == "toy_one"
    assert reg.names() == ["toy_one"]
    with pytest.raises(relaxit_core.DuplicateEstimatorError, match="toy_one"):
        reg.register(_toy_class("toy_one"))
    with pytest.raises(relaxit_core.DuplicateEstimatorError):
        reg.get("toy_one")
    assert toy.name == "toy_one"
    reg.register(_toy_class("toy_two"))
    assert reg.get("toy_two").name == "toy_two"


def test_register_rejects_non_estimators():
    reg = Registry(group="relaxit.test.none")
    with pytest.raises(TypeError):
        reg.register(int)


def _fake_entry_points(monkeypatch, eps):
    import relaxit_core.registry as mod

    monkeypatch.setattr(mod, "entry_points", lambda group: [e for e in eps if e.group == group])


def test_plugin_isolation_and_disable(monkeypatch, tmp_path):
    good = tmp_path / "good_plugin_mod.py"
    good.write_text(
        "import relaxit_core\n"
        "from relaxit_plugins.reinforce import ReinforceEstimator\n"
        "class Copy(ReinforceEstimator):\n"
        "    name = 'copy_of_reinforce'\n"
        "    class Config(ReinforceEstimator.Config):\n"
        "        name: __import__('typing').Literal['copy_of_reinforce'] = 'copy_of_reinforce'\n"
        "@relaxit_core.hookimpl\n"
        "def relaxit_estimators():\n"
        "    return [Copy]\n"
    )
    (tmp_path / "bad_plugin_mod.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "garbage_plugin_mod.py").write_text(
        "import relaxit_core\n@relaxit_core.hookimpl\ndef relaxit_estimators():\n    return [42]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    group = "relaxit.test"
    eps = [
        EntryPoint("good", "good_plugin_mod", group),
        EntryPoint("bad", "bad_plugin_mod", group),
        EntryPoint("garbage", "garbage_plugin_mod", group),
    ]
    _fake_entry_points(monkeypatch, eps)
    reg = Registry(group=group)
    with pytest.warns(relaxit_core.PluginWarning) as rec:
        names = reg.names()
    messages = " | ".join(str(w.message) for w in rec)
    assert "'bad'" in messages and "boom at import" in messages
    assert "'garbage'" in messages
    assert names == ["copy_of_reinforce"]
    assert set(reg.failed_plugins) == {"bad", "garbage"}

    monkeypatch.setenv("RELAXIT_DISABLE_PLUGINS", "bad, garbage")
    reg2 = Registry(group=group)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reg2.names() == ["copy_of_reinforce"]


def test_two_providers_of_one_name(monkeypatch, tmp_path):
    for mod in ("dup_a_mod", "dup_b_mod"):
        (tmp_path / f"{mod}.py").write_text(
            "import relaxit_core\n"
            "from relaxit_plugins.reinforce import ReinforceEstimator\n"
            "class Dup(ReinforceEstimator):\n    pass\n"
            "@relaxit_core.hookimpl\ndef relaxit_estimators():\n    return [Dup]\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    group = "relaxit.test.dup"
    _fake_entry_points(monkeypatch, [EntryPoint("a", "dup_a_mod", group), EntryPoint("b", "dup_b_mod", group)])
    reg = Registry(group=group)
    with pytest.raises(relaxit_core.DuplicateEstimatorError) as info:
        reg.get_class("reinforce")
    assert "dup_a_mod" in str(info.value) and "dup_b_mod" in str(info.value)


def test_every_plugin_module_is_declared():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["relaxit"]
    modules = {p.stem for p in (ROOT / "relaxit_plugins").glob("*.py") if not p.stem.startswith("_")}
    declared_modules = {v.split(":")[0].removeprefix("relaxit_plugins.") for v in declared.values()}
    helpers = {m for m in modules if m.startswith("common") or m.endswith("_common")}
    assert modules - helpers <= declared_modules, f"undeclared plugin modules: {sorted(modules - helpers - declared_modules)}"
    assert declared_modules <= modules


def test_import_is_lazy():
    code = (
        "import sys, relaxit\n"
        "assert not [m for m in sys.modules if m.startswith('relaxit_plugins.')], 'plugin imported'\n"
        "import relaxit_core.registry as r\n"
        "assert not r.registry._loaded, 'entry points scanned at import'\n"
        "relaxit.available()\n"
        "assert r.registry._loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entry_points_are_real_metadata():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="relaxit")}
    assert {"gumbel_softmax", "reinforce", "relaxed_bernoulli"} <= names


def test_estimator_spec_in_user_config():
    class ModelConfig(pydantic.BaseModel):
        estimator: relaxit.EstimatorSpec

    cfg = ModelConfig.model_validate({"estimator": {"name": "gumbel_softmax", "tau": 0.5}})
    assert relaxit.build(cfg.estimator).config.tau == 0.5
    assert ModelConfig.model_validate(cfg.model_dump()) == cfg
    with pytest.raises(pydantic.ValidationError, match=r"gumbel_softmax\.tau"):
        ModelConfig.model_validate({"estimator": {"name": "gumbel_softmax", "tau": -1}})
    schema = ModelConfig.model_json_schema()
    assert "estimator" in schema["properties"]


def test_cli(tmp_path):
    from relaxit.cli import main

    assert main(["list"]) == 0
    assert main(["describe", "gumbel_softmax"]) == 0
    out = tmp_path / "schema.json"
    assert main(["schema", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["discriminator"]["propertyName"] == "name"
    assert main(["describe", "gumbel_sofmax"]) == 2
    proc = subprocess.run([sys.executable, "-m", "relaxit", "list", "--json"], capture_output=True, text=True, check=True)
    assert {"gumbel_softmax", "reinforce"} <= {row["name"] for row in json.loads(proc.stdout)}
