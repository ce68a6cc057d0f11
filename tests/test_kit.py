"""The conformance kit catches broken estimators: each deliberately broken subclass fails its check."""

from __future__ import annotations

import pytest
import torch

from relaxit_core import Capability as C
from relaxit_core.testing import CHECKS, check_estimator, checks_for, instances
from relaxit_plugins.gumbel_softmax import GumbelSoftmaxEstimator, StraightThroughGumbelSoftmax
from relaxit_plugins.relaxed_bernoulli import RelaxedBernoulli, RelaxedBernoulliEstimator
from relaxit_plugins.rebar import RebarEstimator
from relaxit_plugins.reinforce import ReinforceEstimator

CHECK = {c.name: c for c in CHECKS}


class SelfBaselineReinforce(ReinforceEstimator):
    """REINFORCE with a baseline that uses the sample's own value (biased; Williams 1992)."""

    def baseline(self, f):
        return 0.5 * f  # depends on z_s: halves the score-function term


class SharedNoiseRelaxed(RelaxedBernoulli):
    def rsample(self, sample_shape=torch.Size()):
        u = torch.rand((), dtype=self.logits.dtype).clamp(1e-6, 1 - 1e-6)
        noise = (u.log() - (-u).log1p()).expand(self._extended(sample_shape))
        return torch.sigmoid((self.logits + noise) / self.temperature).clamp(1e-6, 1 - 1e-6)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)


class SharedNoiseEstimator(RelaxedBernoulliEstimator):
    """Relaxed Bernoulli with one noise value for the whole batch (upstream's STG bug)."""

    conformance_configs = ({},)

    def build_distribution(self, logits=None, probs=None):
        return SharedNoiseRelaxed(probs=probs, logits=logits, temperature=self.config.tau)


class NoNoiseST(StraightThroughGumbelSoftmax):
    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape=torch.Size()):  # argmax of the logits: not the categorical law
        soft = (self.logits / self.temperature).softmax(-1).expand(self._extended(sample_shape))
        hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
        return hard + (soft - soft.detach())


class WrongLawEstimator(GumbelSoftmaxEstimator):
    """Straight-through Gumbel-softmax whose forward sample forgets the Gumbel noise."""

    conformance_configs = ({"hard": True},)

    def build_distribution(self, logits=None, probs=None):
        return NoNoiseST(probs=probs, logits=logits, temperature=self.config.tau)


class LeakyEstimator(GumbelSoftmaxEstimator):
    """Gumbel-softmax whose surrogate double-counts the objective's own parameters."""

    conformance_configs = ({},)

    def estimate(self, objective, *, num_samples=1, reduce="mean", **params):
        out = super().estimate(objective, num_samples=num_samples, reduce=reduce, **params)
        return out._replace(surrogate=2 * out.surrogate - out.surrogate.detach())


class UndercountingRebar(RebarEstimator):
    """REBAR that declares one evaluation per sample although it evaluates three."""

    def evaluations_per_sample(self, *, batch_ndim=0, **params):
        return 1


@pytest.mark.parametrize(
    ("cls", "config", "check"),
    [
        (SelfBaselineReinforce, {"family": "bernoulli"}, "unbiased"),
        (SelfBaselineReinforce, {"family": "categorical"}, "unbiased"),
        (SharedNoiseEstimator, {}, "noise_independent"),
        (WrongLawEstimator, {"hard": True}, "sample_law"),
        (LeakyEstimator, {}, "estimate_contract"),
        (UndercountingRebar, {}, "evaluations"),
    ],
)
def test_kit_catches_broken_estimators(cls, config, check):
    est = cls(config)
    with pytest.raises(AssertionError):
        CHECK[check](est)
    # and the genuine parent passes the same check
    parent = cls.__mro__[1]
    while parent.__name__.startswith(("SelfBaseline", "SharedNoise", "WrongLaw", "Leaky", "Undercounting")):
        parent = parent.__mro__[1]
    CHECK[check](parent(config))


def test_check_estimator_reports_every_failure():
    with pytest.raises(AssertionError, match="unbiased"):
        check_estimator(SelfBaselineReinforce({"family": "bernoulli", "baseline": "none"}))


def test_checks_follow_capabilities():
    soft = GumbelSoftmaxEstimator()
    names = {c.name for c in checks_for(soft)}
    assert "rsample_gradients_finite" in names and "sample_law" not in names and "unbiased" not in names
    hard = GumbelSoftmaxEstimator(hard=True)
    assert {"sample_law", "enumerate_support", "kl"} <= {c.name for c in checks_for(hard)}
    assert "unbiased" in {c.name for c in checks_for(ReinforceEstimator(family="bernoulli"))}
    assert len(instances(ReinforceEstimator)) == len(ReinforceEstimator.conformance_configs) >= 6
    assert C.UNBIASED not in soft.capabilities
