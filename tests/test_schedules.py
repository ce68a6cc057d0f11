"""Temperature schedules: formulas, config/JSON-schema integration, state, pickling, compile."""

from __future__ import annotations

import io
import json
import math
import pickle

import pytest
import torch

import relaxit
from relaxit import schedules
from relaxit_core import ConfigError
from relaxit_core.registry import registry

JANG = {"schedule": "exponential", "start": 1.0, "end": 0.5, "rate": 1e-4, "every": 1000}

# one schedule of each kind, with the formula written out independently
FORMULAS = [
    ({"schedule": "constant", "start": 0.7}, lambda t: 0.7),
    ({"schedule": "linear", "start": 2.0, "end": 0.5, "steps": 300},
     lambda t: 2.0 + (0.5 - 2.0) * min(t / 300, 1.0)),
    ({"schedule": "linear", "start": 0.5, "end": 2.0, "steps": 7, "every": 3},
     lambda t: 0.5 + 1.5 * min((t // 3 * 3) / 7, 1.0)),
    (JANG, lambda t: max(0.5, math.exp(-1e-4 * (t // 1000 * 1000)))),
    ({"schedule": "exponential", "start": 2.0, "end": 0.1, "rate": 0.01},
     lambda t: max(0.1, 2.0 * math.exp(-0.01 * t))),
    ({"schedule": "cosine", "start": 1.0, "end": 0.2, "steps": 100, "every": 10},
     lambda t: 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * min((t // 10 * 10) / 100, 1.0)))),
]
STEPS = [0, 1, 2, 3, 6, 7, 9, 10, 99, 100, 101, 150, 999, 1000, 1500, 7000, 10**6]


@pytest.mark.parametrize("spec,formula", FORMULAS, ids=[f"{s['schedule']}{i}" for i, (s, _) in enumerate(FORMULAS)])
def test_value_at_step_t_is_the_formula(spec, formula):
    sched = relaxit.get("gumbel_softmax", tau=spec).config.tau
    steps = torch.tensor(STEPS)
    for t in STEPS:
        assert sched.value(t) == pytest.approx(formula(t), rel=1e-12, abs=0)
    # the tensor path (what distribution()/estimate() use) agrees with the float path
    tensor_values = torch.stack([sched.tensor(s) for s in steps])
    torch.testing.assert_close(tensor_values, torch.tensor([formula(t) for t in STEPS], dtype=torch.float64))


def test_estimator_tau_follows_its_step_count():
    est = relaxit.get("gumbel_softmax", hard=True, tau=JANG)
    assert est.tau == 1.0 and isinstance(est.tau, float)
    est.step(999)
    assert est.tau == 1.0  # every=1000: unchanged until step 1000
    est.step()
    assert est.tau == pytest.approx(math.exp(-0.1))
    est.step(10**5)
    assert est.tau == 0.5
    assert int(est.schedule_step) == 101_000


def test_unscheduled_estimator_keeps_its_number_and_no_state():
    est = relaxit.get("gumbel_softmax", tau=0.3)
    est.step(10)
    assert est.tau == 0.3 and est.current_temperature("tau") == 0.3
    assert dict(est.state_dict()) == {}


def _temperature_estimators():
    out = []
    for info in relaxit.available():
        cls = registry.get_class(info.name)
        for field in cls.temperature_fields:
            out.append((info.name, field))
    return out


TEMPERATURE_FIELDS = _temperature_estimators()


def test_every_temperature_field_of_the_built_ins_is_schedulable():
    names = {n for n, _ in TEMPERATURE_FIELDS}
    assert {"gumbel_softmax", "relaxed_bernoulli", "correlated_relaxed_bernoulli", "gumbel_topk",
            "invertible_gaussian", "decoupled_st_gumbel_softmax", "generalized_gumbel_softmax",
            "rebar", "gumbel_rao", "reinmax"} <= names
    assert ("decoupled_st_gumbel_softmax", "tau_backward") in TEMPERATURE_FIELDS


def _objective(z):
    return z.reshape(z.shape[0], 3, -1).to(torch.get_default_dtype()).pow(2).sum(-1)


@pytest.mark.parametrize("name,field", TEMPERATURE_FIELDS)
def test_scheduled_estimator_equals_fixed_temperature_at_that_step(name, field):
    spec = {"schedule": "linear", "start": 2.0, "end": 0.25, "steps": 10}
    scheduled = relaxit.get(name, **{field: spec})
    scheduled.step(6)
    value = 2.0 + (0.25 - 2.0) * 0.6
    assert getattr(scheduled, field) == pytest.approx(value)
    fixed = relaxit.get(name, **{field: value})
    params = scheduled.example_params((3,), generator=torch.Generator().manual_seed(0))
    params = {k: v.requires_grad_() if v.is_floating_point() else v for k, v in params.items()}
    k = max(2, scheduled.min_num_samples)
    results = []
    for est in (scheduled, fixed):
        torch.manual_seed(3)
        out = est.estimate(_objective, num_samples=k, **params)
        grads = torch.autograd.grad(out.surrogate.sum(), [v for v in params.values() if v.requires_grad])
        law = est.distribution(**params)
        torch.manual_seed(4)
        x = law.rsample((2,)) if law.has_rsample else law.sample((2,))
        lp = law.log_prob(x) if hasattr(law, "log_prob") and est.capabilities & {relaxit.Capability.LOG_PROB} else None
        results.append((out.value, out.samples, grads, x, lp))
    for a, b in zip(*results):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_and_pickling():
    est = relaxit.get("gumbel_softmax", hard=True, tau=JANG)
    est.step(2500)
    fresh = relaxit.build(est.config.model_dump())
    assert fresh.config == est.config and fresh.tau == 1.0
    fresh.load_state_dict(est.state_dict())
    assert fresh.tau == est.tau == pytest.approx(math.exp(-0.2))
    clone = pickle.loads(pickle.dumps(est))
    assert clone.tau == est.tau and clone.config == est.config
    buf = io.BytesIO()
    torch.save(est, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded.tau == est.tau
    loaded.step(500)  # the step count is the loaded one, not a shared one
    assert loaded.tau == pytest.approx(math.exp(-0.3)) and est.tau == pytest.approx(math.exp(-0.2))


def test_step_advances_every_estimator_in_a_module_tree_once():
    a = relaxit.get("gumbel_softmax", tau={"schedule": "linear", "start": 1.0, "end": 0.5, "steps": 10})
    b = relaxit.get("relaxed_bernoulli", tau={"schedule": "cosine", "start": 1.0, "end": 0.5, "steps": 10})
    c = relaxit.get("reinforce", family="bernoulli")  # nothing scheduled: ignored
    tree = torch.nn.ModuleDict({"a": a, "inner": torch.nn.Sequential(b, c), "again": a})
    schedules.step(tree)
    schedules.step(tree, 4)
    assert int(a.schedule_step) == 5 and int(b.schedule_step) == 5
    assert a.tau == pytest.approx(0.75) and b.tau == pytest.approx(0.75)


def test_learned_temperatures_cannot_be_scheduled():
    with pytest.raises(ConfigError, match=r"relax\.tau: .*learns its temperature"):
        relaxit.get("relax", family="bernoulli", tau=JANG)
    with pytest.raises(ConfigError, match="learn=True learns its temperature"):
        relaxit.get("rebar", learn=True, tau=JANG)
    est = relaxit.get("rebar", tau=JANG)  # not learned: schedulable
    est.step(1000)
    assert est.tau == pytest.approx(math.exp(-0.1))


@pytest.mark.parametrize("bad,where", [
    ({"schedule": "linear", "start": 1.0}, "gumbel_softmax.tau.linear.end: Field required"),
    ({"schedule": "exponential", "start": 1.0, "end": 2.0, "rate": 0.1}, "end (2.0) must be <= start"),
    ({"schedule": "cosine", "start": 1.0, "end": 0.0, "steps": 3}, "gumbel_softmax.tau.cosine.end: Input should be greater than 0"),
    ({"schedule": "linear", "start": 1.0, "end": 0.5, "steps": 3, "every": 0}, "every: Input should be greater than or equal to 1"),
    ({"schedule": "step", "start": 1.0}, "does not match any of the expected tags"),
    ({"schedule": "constant", "start": 1.0, "rate": 2}, "rate: Extra inputs are not permitted"),
    (0, "gumbel_softmax.tau: Input should be greater than 0"),
])
def test_bad_schedules_are_config_errors_naming_the_field(bad, where):
    with pytest.raises(ConfigError) as err:
        relaxit.get("gumbel_softmax", tau=bad)
    assert where in str(err.value)


def test_schedules_are_in_the_json_schema_and_dump_to_json_and_yaml(tmp_path):
    yaml = pytest.importorskip("yaml")
    text = json.dumps(relaxit.schema())
    for kind in ("ConstantSchedule", "LinearSchedule", "ExponentialSchedule", "CosineSchedule"):
        assert kind in text
    props = relaxit.describe("gumbel_softmax").config_schema["properties"]["tau"]
    assert "anyOf" in props and props["anyOf"][0]["type"] == "number"
    est = relaxit.get("decoupled_st_gumbel_softmax", tau_backward=JANG, tau_forward=1.5)
    assert relaxit.build(json.loads(est.config.model_dump_json())).config == est.config
    path = tmp_path / "est.yaml"
    path.write_text(
        "name: gumbel_softmax\nhard: true\ntau:\n  schedule: exponential\n  start: 1.0\n"
        "  end: 0.5\n  rate: 1.0e-4\n  every: 1000\n"
    )
    built = relaxit.build(str(path))
    assert built.config.tau == relaxit.get("gumbel_softmax", tau=JANG).config.tau
    assert yaml.safe_load(yaml.safe_dump(built.config.model_dump())) == built.config.model_dump()


def test_compiled_step_does_not_recompile_as_the_temperature_changes():
    prev = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    torch._dynamo.reset()
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    try:
        est = relaxit.get("gumbel_softmax", hard=True,
                          tau={"schedule": "exponential", "start": 1.0, "end": 0.5, "rate": 0.1})
        logits = torch.randn(4, 5, requires_grad=True)

        def train_step(logits):
            return est.estimate(_objective_4, num_samples=3, logits=logits).surrogate.sum()

        compiled = torch.compile(train_step, backend=backend, fullgraph=True)
        for _ in range(5):
            torch.manual_seed(0)
            eager = train_step(logits)
            torch.manual_seed(0)
            got = compiled(logits)
            torch.testing.assert_close(got, eager)
            est.step()
        assert est.tau == pytest.approx(math.exp(-0.5))
        assert len(graphs) == 1, f"recompiled {len(graphs) - 1} times"
    finally:
        torch._dynamo.reset()
        torch.distributions.Distribution.set_default_validate_args(prev)


def _objective_4(z):
    return z.pow(2).sum(-1) * torch.arange(z.shape[-1], dtype=z.dtype).sum()


def test_relaxit_nn_layers_take_scheduled_estimators():
    latent = relaxit.nn.DiscreteLatent(
        {"name": "gumbel_softmax", "hard": True, "tau": {"schedule": "linear", "start": 1.0, "end": 0.5, "steps": 2}},
        num_categories=3,
    )
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Unflatten(-1, (2, 3)), latent)
    z = model(torch.randn(5, 4))
    assert z.shape == (5, 2, 3)
    relaxit.schedules.step(model)
    assert latent.estimator.tau == pytest.approx(0.75)
    assert "estimator.schedule_step" in {k.split("2.", 1)[-1] for k in model.state_dict()}
