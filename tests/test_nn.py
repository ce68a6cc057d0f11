"""relaxit.nn: stochastic layers built from estimator specs, trained with pathwise and
score-function estimators.

Training tests learn only what flows through the estimator (the decoder or regression weights
are frozen), so a loss that goes down proves that the estimator's gradient reached the
optimizer.  Expected losses are computed exactly by enumeration where the law is discrete
(no evaluation noise), otherwise by Monte Carlo with a threshold of 5 standard errors.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import relaxit
import relaxit.nn as rnn
from relaxit_core import Capability, ConfigError

INFOS = relaxit.available()
GATE_NAMES = sorted(i.name for i in INFOS if i.name in rnn.Gate.atom_laws)  # picked up when registered
SUBSET_NAMES = sorted(i.name for i in INFOS if "subset" in i.families)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is many times faster than several on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PATHWISE_CAT = {"name": "gumbel_softmax", "tau": 0.5}
SCORE_CAT = {"name": "reinforce", "family": "categorical", "baseline": "leave_one_out"}
PATHWISE_BIN = {"name": "relaxed_bernoulli", "tau": 0.5}
SCORE_BIN = {"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"}


# ------------------------------------------------------------------------ building
def test_lazy_import_keeps_import_relaxit_light():
    code = (
        "import sys, relaxit; "
        "assert 'relaxit.nn' not in sys.modules; "
        "assert not [m for m in sys.modules if m.startswith('relaxit_plugins.')], 'plugin imported'; "
        "assert relaxit.nn.DiscreteLatent is sys.modules['relaxit.nn'].DiscreteLatent; "
        "assert not [m for m in sys.modules if m.startswith('relaxit_plugins.')], 'plugin imported by relaxit.nn'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_specs_of_every_form_build_the_same_layer(tmp_path):
    config = relaxit.validate(PATHWISE_CAT)
    path = tmp_path / "est.json"
    path.write_text('{"name": "gumbel_softmax", "tau": 0.5}')
    for spec in (PATHWISE_CAT, config, str(path), relaxit.build(PATHWISE_CAT)):
        layer = rnn.DiscreteLatent(spec, num_categories=3)
        assert layer.estimator.config == config
    omegaconf = pytest.importorskip("omegaconf")
    layer = rnn.DiscreteLatent(omegaconf.OmegaConf.create(PATHWISE_CAT), num_categories=3)
    assert layer.estimator.config == config


def test_estimator_is_a_submodule():
    layer = rnn.DiscreteLatent({"name": "reinforce", "family": "categorical", "baseline": "moving_average"}, num_categories=3)
    assert dict(layer.named_buffers()).keys() >= {"estimator.running_mean", "estimator.num_updates"}


def test_wrong_family_is_refused_with_the_fitting_names():
    with pytest.raises(rnn.EstimatorFamilyError) as info:
        rnn.DiscreteLatent(PATHWISE_BIN, num_categories=3)
    msg = str(info.value)
    assert "DiscreteLatent needs an estimator of family 'categorical'" in msg
    assert "'relaxed_bernoulli' is configured for family 'bernoulli'" in msg
    assert "gumbel_softmax" in msg and "reinforce (family: categorical)" in msg
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)

    with pytest.raises(rnn.EstimatorFamilyError, match=r"Gate needs an estimator of family 'bernoulli'; 'gumbel_softmax'"):
        rnn.Gate(PATHWISE_CAT, 4)
    with pytest.raises(rnn.EstimatorFamilyError, match=r"SubsetSelector needs an estimator of family 'subset'"):
        rnn.SubsetSelector(PATHWISE_CAT)
    with pytest.raises(rnn.EstimatorFamilyError, match=r"DiscreteLatent needs an estimator of family 'bernoulli'"):
        rnn.DiscreteLatent(PATHWISE_CAT)


def test_multi_family_estimator_needs_its_family_in_a_layer_too():
    """Contract: a multi-family estimator's ``family`` is required; the layer does not pick one."""
    with pytest.raises(rnn.EstimatorFamilyError, match=r"'family' is required.*'bernoulli', 'categorical'") as info:
        rnn.DiscreteLatent({"name": "reinforce"}, num_categories=3)
    assert "DiscreteLatent needs family 'categorical'" in str(info.value)
    assert info.value.errors[0]["loc"] == ("reinforce", "family")
    with pytest.raises(rnn.EstimatorFamilyError, match=r"Gate needs family 'bernoulli'"):
        rnn.Gate({"name": "relax"}, 3)
    assert rnn.DiscreteLatent({"name": "reinforce", "family": "categorical"}, num_categories=3).estimator.family == "categorical"
    with pytest.raises(rnn.EstimatorFamilyError, match=r"set `family: categorical` in its config"):
        rnn.DiscreteLatent({"name": "reinforce", "family": "bernoulli"}, num_categories=3)
    # the same through a user's config field: EstimatorSpec refuses the spec already
    import pydantic

    class UserConfig(pydantic.BaseModel):
        estimator: relaxit.EstimatorSpec

    with pytest.raises(pydantic.ValidationError, match=r"'family' is required"):
        UserConfig.model_validate({"estimator": {"name": "reinforce"}})
    user = UserConfig.model_validate({"estimator": {"name": "reinforce", "family": "categorical"}})
    assert rnn.DiscreteLatent(user.estimator, num_categories=3).estimator.family == "categorical"
    # an explicit family that fits is kept
    layer = rnn.DiscreteLatent({"name": "reinforce", "family": "bernoulli"}, num_categories=2)
    assert layer.estimator.family == "bernoulli" and layer.binary_as_categorical


def test_bad_spec_errors_are_config_errors():
    with pytest.raises(ConfigError, match=r"gumbel_softmax\.tau"):
        rnn.DiscreteLatent({"name": "gumbel_softmax", "tau": -1}, num_categories=3)
    with pytest.raises(relaxit.UnknownEstimatorError, match="Did you mean 'gumbel_softmax'"):
        rnn.DiscreteLatent({"name": "gumbel_softmx"}, num_categories=3)


# ---------------------------------------------------------------- DiscreteLatent
def test_shapes_and_score_function_guard():
    logits = torch.randn(5, 2, 3, requires_grad=True)
    sf = rnn.DiscreteLatent(SCORE_CAT, num_categories=3)
    with pytest.raises(RuntimeError, match="objective=loss_fn"):
        sf(logits)
    with torch.no_grad():
        z = sf(logits)
    assert z.shape == (5, 2, 3) and torch.all(z.sum(-1) == 1)
    sf.eval()
    assert sf.sample(logits, (4,)).shape == (4, 5, 2, 3)
    pw = rnn.DiscreteLatent(PATHWISE_CAT, num_categories=3)
    z = pw(logits)
    assert z.requires_grad and z.shape == (5, 2, 3)
    with pytest.raises(relaxit.ParameterError, match="num_categories=3"):
        pw(torch.zeros(5, 2, 4))


def _enumerated_one_hot(n: int, k: int) -> torch.Tensor:
    """Every joint value of ``n`` one-hot variables of ``k`` categories: ``[k**n, n, k]``."""
    idx = torch.tensor(list(itertools.product(range(k), repeat=n)))
    return F.one_hot(idx, k).float()


def _exact_expected_loss(logits: torch.Tensor, loss, num_categories: int | None) -> torch.Tensor:
    """``E_q[loss(z)]`` per example by enumeration; ``logits`` ``[B, n(, K)]``."""
    if num_categories is None:
        values = _enumerated_one_hot(logits.shape[-1], 2)  # [N, n, 2]
        log_q = (values.unsqueeze(1) * torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], -1).unsqueeze(0)).sum((-1, -2))
        values = values[..., 1]
    else:
        values = _enumerated_one_hot(logits.shape[-2], num_categories)
        log_q = (values.unsqueeze(1) * F.log_softmax(logits, -1).unsqueeze(0)).sum((-1, -2))  # [N, B]
    z = values.unsqueeze(1).expand(values.shape[0], *logits.shape)
    return (log_q.exp() * loss(z)).sum(0)


def test_kl_and_log_prob_against_torch():
    logits = torch.randn(4, 3, 5)
    prior = torch.randn(3, 5)
    layer = rnn.DiscreteLatent(SCORE_CAT, num_categories=5)
    q, p = torch.distributions.Categorical(logits=logits), torch.distributions.Categorical(logits=prior)
    torch.testing.assert_close(layer.kl(logits, prior), torch.distributions.kl_divergence(q, p).sum(-1))
    uniform = torch.distributions.Categorical(logits=torch.zeros(5))
    torch.testing.assert_close(layer.kl(logits), torch.distributions.kl_divergence(q, uniform).sum(-1))
    with torch.no_grad():
        z = layer(logits)
    torch.testing.assert_close(layer.log_prob(z, logits), q.log_prob(z.argmax(-1)).sum(-1))

    bl = torch.randn(4, 6)
    binary = rnn.DiscreteLatent(SCORE_BIN)
    qb, pb = torch.distributions.Bernoulli(logits=bl), torch.distributions.Bernoulli(logits=torch.zeros(4, 6))
    torch.testing.assert_close(binary.kl(bl), torch.distributions.kl_divergence(qb, pb).sum(-1))


def test_two_categories_with_a_bernoulli_estimator_is_the_same_law():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 2)
    as_bin = rnn.DiscreteLatent({"name": "relaxed_bernoulli", "hard": True}, num_categories=2)
    as_cat = rnn.DiscreteLatent({"name": "gumbel_softmax", "hard": True}, num_categories=2)
    assert as_bin.binary_as_categorical and not as_cat.binary_as_categorical
    torch.testing.assert_close(as_bin.kl(logits), as_cat.kl(logits))
    n = 20000
    with torch.no_grad():
        z = as_bin.sample(logits, (n,))
    assert z.shape == (n, 3, 4, 2) and torch.all(z.sum(-1) == 1)
    # P(category 1) = softmax(logits)[..., 1]; 5 standard errors of a binomial frequency
    p = torch.softmax(logits, -1)[..., 1]
    freq = z[..., 1].mean(0)
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-12)
    torch.testing.assert_close(as_bin.log_prob(z[:3], logits), as_cat.log_prob(z[:3], logits))


@pytest.mark.parametrize(
    "spec, num_categories",
    [
        pytest.param(PATHWISE_CAT, 3, id="gumbel_softmax"),
        pytest.param(SCORE_CAT, 3, id="reinforce-categorical"),
        pytest.param(PATHWISE_BIN, None, id="relaxed_bernoulli"),
        pytest.param(SCORE_BIN, None, id="reinforce-bernoulli"),
    ],
)
def test_discrete_latent_training_lowers_the_loss(spec, num_categories):
    """A tiny autoencoder with a frozen linear decoder: only the encoder learns, through the layer."""
    torch.manual_seed(0)
    n, d, b = (2, 8, 32) if num_categories else (4, 8, 32)
    width = n * (num_categories or 1)
    decoder = torch.randn(width, d)
    true_z = (
        F.one_hot(torch.randint(num_categories, (b, n)), num_categories).float()
        if num_categories
        else torch.randint(2, (b, n)).float()
    )
    x = true_z.flatten(1) @ decoder
    encoder = torch.nn.Linear(d, width)
    layer = rnn.DiscreteLatent(spec, num_categories=num_categories)

    def logits_of(x):
        out = encoder(x)
        return out.view(b, n, num_categories) if num_categories else out

    def loss(z):  # [S, b, n(, K)] -> [S, b]
        return ((z.flatten(-2) if num_categories else z) @ decoder - x).pow(2).sum(-1)

    def expected():
        with torch.no_grad():
            return _exact_expected_loss(logits_of(x), loss, num_categories).mean().item()

    before = expected()
    opt = torch.optim.Adam([*encoder.parameters(), *layer.parameters()], lr=0.05)
    for _ in range(150):
        out = layer(logits_of(x), objective=loss, num_samples=4)
        opt.zero_grad()
        out.surrogate.mean().backward()
        opt.step()
    after = expected()
    # Exact evaluation (no noise): with the decoder frozen, the loss only falls if the
    # estimator's gradient reaches the encoder; demand that it more than halves.
    assert after < 0.5 * before, (before, after)


def test_objective_parameters_get_gradients_with_a_score_function_estimator():
    decoder = torch.nn.Linear(6, 3)
    layer = rnn.DiscreteLatent(SCORE_CAT, num_categories=3)
    logits = torch.randn(4, 2, 3, requires_grad=True)
    out = layer(logits, objective=lambda z: decoder(z.flatten(-2)).pow(2).sum(-1), num_samples=3)
    out.surrogate.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert decoder.weight.grad is not None and decoder.weight.grad.abs().sum() > 0


# -------------------------------------------------------------------------- Gate
GATE_SPECS = [
    pytest.param({"name": "relaxed_bernoulli", "tau": 0.5, "hard": True}, id="relaxed_bernoulli-hard"),
    pytest.param({"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"}, id="reinforce"),
    *[pytest.param({"name": name}, id=name) for name in GATE_NAMES],
]


def test_gate_open_probability_of_hard_laws_is_the_bernoulli_probability():
    gate = rnn.Gate({"name": "relaxed_bernoulli", "hard": True}, 4, init=0.3)
    torch.testing.assert_close(gate.open_probability(), torch.sigmoid(torch.full((4,), 0.3)))
    soft = rnn.Gate({"name": "relaxed_bernoulli"}, 4, init=0.3)
    torch.testing.assert_close(soft.open_probability(), torch.sigmoid(torch.full((4,), 0.3)))
    assert gate.l0_penalty().requires_grad


@pytest.mark.parametrize("name", GATE_NAMES)
def test_gate_open_probability_matches_the_sampled_frequency(name):
    gate = rnn.Gate({"name": name}, 3)
    with torch.no_grad():
        gate.theta.copy_(torch.tensor([-1.0, 0.0, 1.5]) if gate.param_name != "loc" else torch.tensor([-0.2, 0.3, 0.8]))
        n = 20000
        z = gate.sample((n,))
        p = gate.open_probability()
    freq = (z != 0).float().mean(0)
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-6), (freq, p)


def test_gate_modes_and_shapes():
    gate = rnn.Gate({"name": "relaxed_bernoulli", "tau": 0.5, "hard": True}, (2, 3), init=0.0)
    x = torch.ones(4, 2, 3)
    y = gate(x)
    assert y.shape == (4, 2, 3) and set(y.unique().tolist()) <= {0.0, 1.0}
    with torch.no_grad():
        gate.theta.copy_(torch.tensor([[-2.0, 2.0, -2.0], [2.0, 2.0, -2.0]]))
    gate.eval()
    torch.testing.assert_close(gate(x), x * torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
    with pytest.raises(relaxit.ParameterError, match="gate shape"):
        gate(torch.ones(4, 3))
    gate.train()
    sf = rnn.Gate({"name": "reinforce", "family": "bernoulli"}, 3)
    with pytest.raises(RuntimeError, match="objective="):
        sf(torch.ones(2, 3))


def _gate_objective(gate, x, y, weights, lam, n):
    """Monte Carlo mean and standard error of ``mse(z) + lam * ||z||_0`` over ``n`` gate draws."""
    with torch.no_grad():
        z = gate.sample((n,))  # [n, d]: one gate vector per draw, shared by the batch
        mse = ((x.unsqueeze(0) * z.unsqueeze(1)) @ weights - y).pow(2).mean(-1)  # [n]
        total = mse + lam * (z != 0).float().sum(-1)
    return total.mean().item(), total.std().item() / math.sqrt(n)


@pytest.mark.parametrize("spec", GATE_SPECS)
def test_gate_training_lowers_the_penalised_loss(spec):
    """Sparse regression with frozen weights: the gates learn to close the irrelevant features."""
    torch.manual_seed(0)
    d, b, lam = 6, 64, 0.5
    weights = torch.tensor([2.0, -3.0, 1.5, 0.7, -0.6, 0.4])
    relevant = torch.tensor([True, True, True, False, False, False])
    x = torch.randn(b, d)
    y = x[:, relevant] @ weights[relevant]
    gate = rnn.Gate(spec, d)
    before = _gate_objective(gate, x, y, weights, lam, 4000)
    opt = torch.optim.Adam(gate.parameters(), lr=0.05)
    for _ in range(200):
        out = gate(x, objective=lambda xz: ((xz @ weights) - y).pow(2), num_samples=2)
        loss = out.surrogate.mean() + lam * gate.l0_penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _gate_objective(gate, x, y, weights, lam, 4000)
    se = math.hypot(before[1], after[1])
    assert before[0] - after[0] > 5 * se, (before, after)
    p = gate.open_probability().detach()
    assert p[relevant].min() > p[~relevant].max(), p


# ---------------------------------------------------------------- SubsetSelector
@pytest.mark.parametrize("name", SUBSET_NAMES)
def test_subset_selector_training_picks_the_cheapest_items(name):
    torch.manual_seed(0)
    cost = torch.tensor([0.5, -1.0, 2.0, -0.5, 1.0, 0.0])
    k = 2
    has_k = "k" in relaxit.describe(name).config_schema.get("properties", {})
    layer = rnn.SubsetSelector({"name": name, **({"k": k} if has_k else {})}, k=k if has_k else None)
    k = layer.k
    logits = torch.zeros(6, requires_grad=True)

    def evaluate(n=4000):
        with torch.no_grad():
            z = layer.distribution(logits).sample((n,))
            f = (z * cost).sum(-1)
        return f.mean().item(), f.std().item() / math.sqrt(n)

    before = evaluate()
    opt = torch.optim.Adam([logits, *layer.parameters()], lr=0.1)
    for _ in range(150):
        out = layer(logits, objective=lambda z: (z * cost).sum(-1), num_samples=4)
        opt.zero_grad()
        out.surrogate.backward()
        opt.step()
    after = evaluate()
    assert before[0] - after[0] > 5 * math.hypot(before[1], after[1]), (before, after)
    with torch.no_grad():
        z = layer.sample(logits)
    assert z.shape == (6,)
    if k is not None and Capability.HARD in layer.estimator.capabilities:
        assert z.sum().item() == k


def test_subset_selector_checks_k():
    if not SUBSET_NAMES:
        pytest.skip("no estimator of family 'subset' is registered")
    with_k = [n for n in SUBSET_NAMES if "k" in relaxit.describe(n).config_schema.get("properties", {})]
    if not with_k:
        pytest.skip("no subset estimator with a `k` field is registered")
    with pytest.raises(ConfigError, match="k=3"):
        rnn.SubsetSelector({"name": with_k[0], "k": 2}, k=3)
