"""Pyro inference whose discrete guide sites take any relaxit estimator.

:class:`EstimatorELBO` is a :class:`pyro.infer.ELBO` (``loss``, ``loss_and_grads``,
``differentiable_loss``) that :class:`pyro.infer.SVI` takes as it is.  Every
non-reparameterised guide site (``Bernoulli``, ``OneHotCategorical`` or integer
``Categorical``, possibly wrapped by ``to_event``/``expand``) gets its gradient from a
relaxit estimator; reparameterised sites stay pathwise, as under ``Trace_ELBO``::

    def guide(x):
        pyro.sample("z", dist.Bernoulli(logits=enc(x)).to_event(1), infer={"estimator": "disarm"})

    svi = pyro.infer.SVI(model, guide, optim, loss=EstimatorELBO(num_particles=2))

How one step works (with ``P = num_particles``, vectorised over a particle plate):

1. The guide runs once over ``P`` particles.  A site whose estimator builds its surrogate
   from costs at its own samples (``cost_samples == "own"``, e.g. ``disarm``'s antithetic
   pairs) gets its values from :meth:`~relaxit_core.EstimatorBase.draw`; one whose
   estimator takes any i.i.d. draws (``"any"``: ``reinforce``, ``vimco``) keeps the guide's.
   Non-reparameterised values are tagged with Pyro's provenance tracking.
2. The model runs once against that trace.  Each discrete site's cost is, per particle and
   per element of its plates, the sum of the ELBO terms whose provenance contains the site
   (``TraceGraph_ELBO``'s Rao-Blackwellisation: an element in a ``pyro.plate`` is scored
   against its own downstream terms only).
3. Each estimator turns its ``[P, *plates]`` costs into a surrogate
   (:meth:`~relaxit_core.EstimatorBase.from_costs`).  Estimators without a two-phase form
   (``cost_samples is None``: ``rebar``, ``relax``, ``indecater``...) run their own
   :meth:`~relaxit_core.EstimatorBase.estimate` with an objective that re-runs the model
   with the site's values replaced (the other sites held as the guide drew them, sample
   ``r`` paired with particle ``r mod P``), so they may evaluate wherever they need.

Only the estimators' gradient reaches the guide's logits; the model's and the
reparameterised sites' gradients come from the plain ELBO terms, once.  Estimators with
parameters (RELAX's network, REBAR's temperature) are registered with ``pyro.module`` and
receive their variance objective's gradient in the same step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer import ELBO
from pyro.infer.util import is_validation_enabled
from pyro.ops.provenance import detach_provenance, get_provenance, track_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape, warn_if_nan

from relaxit_core import Capability, ConfigError, Draw, EstimatorConfig, ParameterError
from relaxit_core.inference import carried_estimator, estimator_inference
from relaxit_core.registry import registry as _registry

__all__ = ["EstimatorELBO"]

_PARTICLES = "num_particles_vectorized"


# ----------------------------------------------------------------------------- site laws
def _discrete_law(fn: Any) -> tuple[str | None, torch.Tensor | None]:
    """``(kind, logits)`` of a discrete site law: ``kind`` is ``"bernoulli"``, ``"onehot"`` or
    ``"integer"``; ``logits`` are broadcast to the full shape the estimator's law has
    (``batch_shape + event_shape``, plus the class dimension for an integer site)."""
    d = fn
    while isinstance(d, (torch.distributions.Independent, ExpandedDistribution, MaskedDistribution)):
        if isinstance(d, MaskedDistribution):
            return "masked", None
        d = d.base_dist
    full = tuple(fn.batch_shape) + tuple(fn.event_shape)
    if isinstance(d, torch.distributions.Bernoulli):
        return "bernoulli", d.logits.expand(full)
    if isinstance(d, torch.distributions.OneHotCategorical):
        return "onehot", d.logits.expand(full)
    if isinstance(d, torch.distributions.Categorical):
        return "integer", d.logits.expand(full + d.logits.shape[-1:])
    return None, None


def _linear_log_prob(fn: Any, value: torch.Tensor) -> torch.Tensor:
    """``log p(z)`` of a ``OneHotCategorical`` law as the function ``Σ_k z_k log p_k``, linear
    in ``z`` (equal to the PMF at one-hot ``z``; torch's ``log_prob`` reads ``argmax z``, which
    is piecewise constant at relaxed values), summed over the law's extra event dimensions."""
    d, extra = fn, 0
    while isinstance(d, (torch.distributions.Independent, ExpandedDistribution)):
        if isinstance(d, torch.distributions.Independent):
            extra += d.reinterpreted_batch_ndims
        d = d.base_dist
    lp = (value * d.logits.log_softmax(-1)).sum(-1)
    return lp.sum(tuple(range(lp.dim() - extra, lp.dim()))) if extra else lp


def _family(kind: str) -> str:
    return "bernoulli" if kind == "bernoulli" else "categorical"


def _estimators_for(predicate) -> list[str]:
    """Registered estimator names whose class satisfies ``predicate`` (for error messages)."""
    names = []
    for info in _registry.available():
        try:
            cls = _registry.get_class(info.name)
        except Exception:  # pragma: no cover - a broken plugin
            continue
        if predicate(cls, info):
            names.append(info.name)
    return names


def _joint_names() -> str:
    names = _estimators_for(lambda cls, info: getattr(cls, "cost_samples", None) == "any")
    return ", ".join(repr(n) for n in names) or "(none registered)"


def _paired_names() -> str:
    names = _estimators_for(lambda cls, info: getattr(cls, "cost_samples", None) in ("any", "own"))
    return ", ".join(repr(n) for n in names) or "(none registered)"


class _Site:
    """One discrete guide site in one step."""

    __slots__ = ("name", "key", "est", "kind", "logits", "shared", "route", "draw", "value", "event_dim", "frames")

    def __init__(self, **kw: Any):
        for k, v in kw.items():
            setattr(self, k, v)


class _Planner(Messenger):
    """Runs around the (particle-vectorised) guide: resolves each discrete site's estimator,
    puts two-phase draws in as the site's values, tags non-reparameterised values with their
    provenance (as ``TraceGraph_ELBO`` does)."""

    def __init__(self, elbo: EstimatorELBO, inject: bool):
        super().__init__()
        self.elbo = elbo
        self.inject = inject
        self.sites: dict[str, _Site] = {}

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or site_is_subsample(msg):
            return
        name = msg["name"]
        infer = msg.get("infer") or {}
        fn = msg["fn"]
        if infer.get("enumerate"):
            raise ConfigError(
                f"guide site {name!r} is enumerated; EstimatorELBO samples every guide site "
                "(enumerate it with TraceEnum_ELBO, or remove infer['enumerate'])"
            )
        if getattr(fn, "has_rsample", False):
            if "estimator" in infer:
                raise ConfigError(
                    f"guide site {name!r} has a reparameterised law ({type(fn).__name__}), which stays "
                    "pathwise; infer['estimator'] is for non-reparameterised discrete sites"
                )
            return
        kind, logits = _discrete_law(fn)
        if kind is None or kind == "masked":
            what = "a masked law" if kind == "masked" else f"a {type(fn).__name__} law"
            raise ConfigError(
                f"guide site {name!r} is not reparameterised and has {what}; EstimatorELBO's "
                "estimators serve Bernoulli, OneHotCategorical and Categorical guide sites "
                "(possibly with .to_event() or .expand())"
            )
        key, est = self.elbo._estimator_for(name, infer, fn, kind)
        P = self.elbo.num_particles
        parents = {p for p in get_provenance(logits) if p in self.sites}
        if parents and est.cost_samples != "any":
            raise ConfigError(
                f"guide site {name!r} depends on the discrete guide site(s) "
                f"{', '.join(map(repr, sorted(parents)))}; estimator {est.name!r} cannot serve it. "
                f"Dependent discrete sites take estimators that use joint samples: {_joint_names()}"
            )
        logits = detach_provenance(logits)
        shared = logits.shape[0] == 1 or logits.stride(0) == 0
        if est.cost_samples == "any":
            route = "any"
        elif est.cost_samples == "own" and shared:
            route = "own"
        else:
            route = "estimate"
        if P < est.min_num_samples:
            raise ConfigError(
                f"guide site {name!r}: estimator {est.name!r} needs num_particles >= "
                f"{est.min_num_samples}, got {P}"
            )
        draw = None
        if self.inject and route == "own":
            try:
                draw = est.draw(P, logits=logits[0])
            except ParameterError as exc:
                raise ConfigError(f"guide site {name!r}: num_particles={P} does not suit {est.name!r}: {exc}") from exc
            value = draw.samples
            if kind == "integer":
                value = value.argmax(-1)
            msg["value"] = value.long() if kind == "integer" else value
        self.sites[name] = _Site(
            name=name, key=key, est=est, kind=kind, logits=logits, shared=shared, route=route,
            draw=draw, value=None, event_dim=len(fn.event_shape), frames=None,
        )

    def _pyro_post_sample(self, msg: dict) -> None:
        site = self.sites.get(msg["name"])
        if site is None or msg["is_observed"]:
            return
        site.value = msg["value"]
        site.frames = tuple(f for f in msg["cond_indep_stack"] if f.vectorized)
        msg["value"] = track_provenance(msg["value"], frozenset({msg["name"]}))


def _frame_dims(frames) -> set[int]:
    return {f.dim for f in frames if f.vectorized}


def _sum_to(terms, target_dims: set[int], shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Sum ``(frames, tensor)`` terms down to the plates of ``target_dims`` (others summed,
    as Pyro's ``MultiFrameTensor.sum_to``), broadcast to ``shape``."""
    total = None
    for frames, value in terms:
        dims = [f.dim for f in frames if f.vectorized and f.dim not in target_dims
                and value.dim() >= -f.dim and value.shape[f.dim] != 1]
        if dims:
            value = value.sum(dims, keepdim=True)
        total = value if total is None else total + value
    if total is None:  # nothing depends on the site
        return like.new_zeros(shape)
    while total.dim() > len(shape) and total.shape[0] == 1:
        total = total.squeeze(0)
    return total.expand(shape)


class EstimatorELBO(ELBO, torch.nn.Module):
    r"""An ELBO whose non-reparameterised guide sites get their gradients from relaxit estimators.

    Args:
        num_particles: ``P``, the number of particles, vectorised over an outermost plate;
            it is every site's estimator's ``num_samples`` (``disarm``: ``P/2`` antithetic
            pairs).  Default 2.
        max_plate_nesting: as in :class:`pyro.infer.ELBO` (guessed by a first run if omitted).
        estimators: ``{site name: X}``, the estimator of each named site.
        default: the estimator of the other discrete sites; by default
            ``reinforce`` with a ``leave_one_out`` baseline (``moving_average`` when ``P = 1``).
        bound: ``"elbo"`` or ``"iwae"`` (the ``P``-sample importance-weighted bound of Burda
            et al. 2016, eq. 8).  By default ``"iwae"`` when some site's estimator is meant for
            the multi-sample bound (``vimco``), else ``"elbo"``.
        retain_graph: as in :class:`pyro.infer.ELBO`.

    A site's estimator ``X`` comes from, in order: the site's ``infer={"estimator": X}``, the
    estimator its law carries (a law built by ``relaxit.get(...).distribution(...)``),
    ``estimators[name]``, ``default``.  ``X`` is a registry name, a config mapping, an
    :class:`~relaxit_core.EstimatorConfig` or an estimator; for an estimator that serves
    several families, a name or mapping without ``family`` takes the site's (``Bernoulli``:
    ``"bernoulli"``; ``OneHotCategorical`` and ``Categorical``: ``"categorical"``).  The
    estimators live in ``estimators`` (an :class:`torch.nn.ModuleDict` keyed by site),
    so this ELBO's ``state_dict`` holds their buffers; their parameters are registered with
    ``pyro.module("relaxit.<site>", ...)`` and trained by ``svi.step()`` on their own
    variance objective.

    Unbiased estimators give unbiased gradients of the ELBO (of the IWAE bound with
    ``bound="iwae"``).  Discrete sites may depend on reparameterised guide sites; a
    discrete site that depends on another discrete guide site (found by Pyro's provenance
    tracking) needs an estimator that takes joint samples (``cost_samples == "any"``), and
    a site with other guide sites depending on it needs one whose costs are taken at the
    guide's own joint draw (``"any"`` or ``"own"``); anything else raises
    :class:`~relaxit_core.ConfigError` naming the site and the estimators that serve it.
    Estimators that evaluate the model at relaxed values (``rebar``, ``relax``) need a
    ``Bernoulli`` or ``OneHotCategorical`` site and a model differentiable in it (Pyro's
    validation is off for those evaluations only); on an integer ``Categorical`` site they
    raise :class:`~relaxit_core.ConfigError`.
    """

    def __init__(
        self,
        num_particles: int = 2,
        max_plate_nesting: float = float("inf"),
        *,
        estimators: Mapping[str, Any] | None = None,
        default: Any = None,
        bound: str | None = None,
        strict_enumeration_warning: bool = True,
        ignore_jit_warnings: bool = False,
        retain_graph: bool | None = None,
    ):
        torch.nn.Module.__init__(self)
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ConfigError(f"EstimatorELBO: num_particles must be an integer >= 1, got {num_particles!r}")
        if bound not in (None, "elbo", "iwae"):
            raise ConfigError(f"EstimatorELBO: bound must be 'elbo', 'iwae' or None, got {bound!r}")
        ELBO.__init__(
            self,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=False,  # vectorised here, with its own particle plate
            strict_enumeration_warning=strict_enumeration_warning,
            ignore_jit_warnings=ignore_jit_warnings,
            retain_graph=retain_graph,
        )
        self.estimators = torch.nn.ModuleDict()
        self.site_estimators = dict(estimators or {})
        if default is None:
            default = {"name": "reinforce", "baseline": "leave_one_out" if num_particles >= 2 else "moving_average"}
        self.default = default
        self.bound = bound
        self._keys: dict[str, str] = {}
        self._specs: dict[str, Any] = {}

    # ------------------------------------------------------------ estimators
    def _key(self, name: str) -> str:
        key = self._keys.get(name)
        if key is None:
            key = re.sub(r"[^0-9A-Za-z_]", "_", name) or "_"
            while key in self.estimators or key in self._keys.values():
                key = key + "_"
            self._keys[name] = key
        return key

    def _estimator_for(self, name: str, infer: Mapping, fn: Any, kind: str):
        """The site's estimator (built once per site and spec, then kept in ``estimators``)."""
        key = self._key(name)
        spec = infer.get("estimator")
        if spec is None:
            spec = carried_estimator(fn)
        if spec is None:
            spec = self.site_estimators.get(name, self.default)
        if isinstance(spec, torch.nn.Module):
            est = spec
        else:
            sid = _spec_id(spec)
            if key in self.estimators and self._specs.get(key) == sid:
                return key, self.estimators[key]
            est = self._build(spec, name, kind)
            self._specs[key] = sid
        if key not in self.estimators or self.estimators[key] is not est:
            self._check(est, name, kind)
            self.estimators[key] = est
        return key, est

    def _build(self, spec: Any, name: str, kind: str):
        if isinstance(spec, str):
            data: dict[str, Any] = {"name": spec}
        elif isinstance(spec, EstimatorConfig):
            data = spec.model_dump()
        elif isinstance(spec, Mapping):
            data = dict(spec)
        else:
            raise ConfigError(
                f"site {name!r}: an estimator is given as a registry name, a config mapping, an "
                f"EstimatorConfig or an estimator, not {type(spec).__name__}"
            )
        if "name" not in data:
            raise ConfigError(f"site {name!r}: the estimator config {data!r} has no 'name'")
        families = tuple(_registry.describe(data["name"]).families)
        if "family" not in data and len(families) > 1 and _family(kind) in families:
            data["family"] = _family(kind)
        return _registry.build(data)

    @staticmethod
    def _check(est: Any, name: str, kind: str) -> None:
        caps = getattr(est, "capabilities", frozenset())
        if Capability.RSAMPLE in caps:
            raise ConfigError(
                f"site {name!r}: {est.name!r} is a pathwise estimator; put its law in the guide "
                f"(pyro.sample({name!r}, relaxit.get({est.name!r}, ...).distribution(...))), where it stays pathwise"
            )
        family = getattr(est, "family", None)
        if family != _family(kind):
            law = {"bernoulli": "Bernoulli", "onehot": "OneHotCategorical", "integer": "Categorical"}[kind]
            raise ConfigError(
                f"site {name!r} has a {law} law (family {_family(kind)!r}); estimator "
                f"{est.name!r} serves family {family!r}"
            )

    # --------------------------------------------------------------- running
    def _get_trace(self, model, guide, args, kwargs):  # pragma: no cover - ELBO's abstract hook
        raise NotImplementedError("EstimatorELBO runs its own vectorised traces")

    def _particles(self, size: int):
        return pyro.plate(_PARTICLES, size, dim=-(self.max_plate_nesting + 1))

    def _run(self, model, guide, args, kwargs, grads: bool):
        if self.max_plate_nesting == float("inf"):
            with estimator_inference():
                self._guess_max_plate_nesting(model, guide, args, kwargs)
        P = self.num_particles
        planner = _Planner(self, inject=grads)
        with estimator_inference():
            with planner:
                full_guide = poutine.trace(self._particles(P)(guide)).get_trace(*args, **kwargs)
            model_trace = poutine.trace(
                poutine.replay(self._particles(P)(model), trace=full_guide)
            ).get_trace(*args, **kwargs)
        mpn = self.max_plate_nesting + 1
        if is_validation_enabled():
            check_model_guide_match(model_trace, full_guide, mpn)
        guide_trace = prune_subsample_sites(full_guide)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        if is_validation_enabled():
            for tr in (model_trace, guide_trace):
                for site in tr.nodes.values():
                    if site["type"] == "sample":
                        check_site_shape(site, mpn)
        sites = planner.sites
        for site in sites.values():
            est = site.est
            if any(p.requires_grad for p in est.parameters()):
                pyro.module("relaxit." + site.key, est)
        bound = self.bound
        if bound is None:
            bound = "iwae" if any(s.est.preferred_reduce == "logmeanexp" for s in sites.values()) else "elbo"
        if bound == "iwae":
            return self._iwae(model_trace, guide_trace, sites, P, grads)
        return self._elbo(model, args, kwargs, model_trace, guide_trace, full_guide, sites, P, grads)

    def _terms(self, model_trace, guide_trace, sites):
        """Per discrete site, the ``(frames, cost)`` terms that depend on it, and the guide
        sites that depend on it."""
        terms: dict[str, list] = {name: [] for name in sites}
        dependents: dict[str, set] = {name: set() for name in sites}
        downstream: dict[str, set] = {name: set() for name in sites}
        for tr, sign in ((model_trace, -1.0), (guide_trace, 1.0)):
            for name, site in tr.nodes.items():
                if site["type"] != "sample":
                    continue
                lp = site["log_prob"]
                keys = [k for k in get_provenance(lp) if k in sites]
                if not keys:
                    continue
                value = detach_provenance(lp).detach() * sign
                for k in keys:
                    terms[k].append((site["cond_indep_stack"], value))
                    if sign > 0 and k != name:
                        dependents[k].add(name)
                    if sign < 0:
                        downstream[k].add(name)
        return terms, dependents, downstream

    def _elbo(self, model, args, kwargs, model_trace, guide_trace, full_guide, sites, P, grads):
        elbo = 0.0
        surrogate_elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample":
                lp = detach_provenance(site["log_prob_sum"])
                elbo = elbo + lp
                surrogate_elbo = surrogate_elbo + lp
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample":
                elbo = elbo - detach_provenance(site["log_prob_sum"])
                entropy = detach_provenance(site["score_parts"].entropy_term)
                if not (isinstance(entropy, (int, float)) and entropy == 0):
                    surrogate_elbo = surrogate_elbo - entropy.sum()
        loss = -elbo / P
        if not grads:
            return loss, None
        surrogate = -surrogate_elbo / P
        terms, dependents, downstream = self._terms(model_trace, guide_trace, sites)
        for name, site in sites.items():
            self._check_dependents(site, dependents[name], sites)
            shape = site.logits.shape[: site.logits.dim() - site.event_dim - (site.kind == "integer")]
            cost = _sum_to(terms[name], _frame_dims(site.frames), shape, site.logits.detach())
            if site.route == "any":
                out = site.est.from_costs(cost, Draw(self._onehot(site)), reduce="mean", logits=site.logits)
                surrogate = surrogate + (out.surrogate - out.surrogate.detach()).sum()
            elif site.route == "own":
                out = site.est.from_costs(cost, site.draw, reduce="mean", logits=site.logits[0])
                surrogate = surrogate + (out.surrogate - out.surrogate.detach()).sum()
            else:
                surrogate = surrogate + self._estimate(model, args, kwargs, full_guide, site, downstream[name], P)
        return loss, surrogate

    @staticmethod
    def _check_dependents(site: _Site, deps: set, sites: dict) -> None:
        if not deps:
            return
        discrete = sorted(d for d in deps if d in sites)
        if discrete and site.est.cost_samples != "any":
            raise ConfigError(
                f"guide site {site.name!r}: the discrete guide site(s) {', '.join(map(repr, discrete))} "
                f"depend on it; estimator {site.est.name!r} cannot serve it. Dependent discrete sites "
                f"take estimators that use joint samples: {_joint_names()}"
            )
        if site.route == "estimate":
            raise ConfigError(
                f"guide site {site.name!r}: the guide site(s) {', '.join(map(repr, sorted(deps)))} "
                f"depend on it, and estimator {site.est.name!r} evaluates the model at values of its own "
                f"with the other sites held fixed, which is biased here. Estimators whose costs are "
                f"taken at the guide's own joint draw serve it: {_paired_names()}"
            )

    @staticmethod
    def _onehot(site: _Site) -> torch.Tensor:
        value = detach_provenance(site.value)
        if site.kind == "integer":
            return F.one_hot(value.long(), site.logits.shape[-1]).to(site.logits.dtype)
        return value

    def _iwae(self, model_trace, guide_trace, sites, P, grads):
        """The ``P``-sample importance-weighted bound, one per element of the plates that
        every site is in (independent sub-models, e.g. data points with local latents); the
        loss is minus their sum."""
        nodes = [s for tr in (model_trace, guide_trace) for s in tr.nodes.values() if s["type"] == "sample"]
        common = set.intersection(*[_frame_dims(s["cond_indep_stack"]) for s in nodes]) if nodes else set()
        log_w = None
        for tr, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for site in tr.nodes.values():
                if site["type"] == "sample":
                    lp = detach_provenance(site["log_prob"])
                    dims = [d for d in range(-lp.dim(), 0) if d not in common and lp.shape[d] != 1]
                    lp = lp.sum(dims, keepdim=True) if dims else lp
                    log_w = sign * lp if log_w is None else log_w + sign * lp
        bound = log_w.logsumexp(0) - math.log(P)
        loss = -bound.sum()
        if not grads:
            return loss.detach(), None
        surrogate = loss
        for site in sites.values():
            est = site.est
            if est.cost_samples != "any" or "logmeanexp" not in est.reductions:
                raise ConfigError(
                    f"guide site {site.name!r}: with bound='iwae' every discrete site needs an estimator "
                    f"of the multi-sample bound that takes joint samples; {est.name!r} is not one. "
                    f"Joint-sample estimators: {_joint_names()}"
                )
            shape = site.logits.shape[: site.logits.dim() - site.event_dim - (site.kind == "integer")]
            costs = log_w.detach()
            while costs.dim() < len(shape):
                costs = costs.unsqueeze(1)
            costs = costs.expand(shape)
            out = est.from_costs(costs, Draw(self._onehot(site)), reduce="logmeanexp", logits=site.logits)
            # every element of a site sees its sub-model's bound: the sum of the per-element
            # surrogates differentiates the bound once per sub-model
            surrogate = surrogate - (out.surrogate - out.surrogate.detach()).sum()
        return loss.detach(), surrogate

    # ------------------------------------------------- estimators' own estimate()
    def _estimate(self, model, args, kwargs, full_guide, site: _Site, downstream: set, P: int):
        est = site.est
        logits = site.logits[0] if site.shared else site.logits
        leaf = logits.detach().requires_grad_(True)
        n = P if site.shared else max(1, est.min_num_samples)
        objective = self._objective(model, args, kwargs, full_guide, site, downstream, P)
        with torch.enable_grad():
            out = est.estimate(objective, num_samples=n, logits=leaf)
            # read after estimate(): an estimator may create parameters there (RELAX's network)
            learned = [p for p in est.parameters() if p.requires_grad]
            grads = torch.autograd.grad(out.surrogate.sum(), [leaf, *learned], allow_unused=True)
        term = 0.0
        if grads[0] is not None:
            g = grads[0] if site.shared else grads[0] / P
            term = ((logits - logits.detach()) * g).sum()
        for p, g in zip(learned, grads[1:]):
            if g is not None:
                term = term + ((p - p.detach()) * g).sum()
        return term

    def _objective(self, model, args, kwargs, full_guide, site: _Site, downstream: set, P: int):
        """``z -> cost``: the site's downstream ELBO terms per element, with its value replaced
        by ``z`` and the other sites as the guide drew them (row ``r`` with particle ``r mod P``)."""
        name, kind = site.name, site.kind
        target = _frame_dims(site.frames)
        scale = full_guide.nodes[name]["scale"]
        ev = site.event_dim - (kind == "onehot")  # event dims beyond the class dimension
        nb = site.logits.dim() - site.event_dim - (kind == "integer")  # batch dims incl. particles
        inner = tuple(site.logits.shape[1:nb])
        logits0 = site.logits.detach()

        def objective(z: torch.Tensor) -> torch.Tensor:
            R = z.shape[0]
            if site.shared:
                rows = R
                idx = torch.arange(R, device=z.device) % P
                zz = z
                lq_logits = logits0[:1]
            else:
                rows = R * P
                idx = torch.arange(P, device=z.device).repeat(R)
                zz = z.reshape((rows,) + tuple(z.shape[2:]))
                lq_logits = logits0.index_select(0, idx)
            exact = bool(((zz == 0) | (zz == 1)).all())
            if kind == "integer":
                if not exact:
                    raise ConfigError(
                        f"guide site {name!r} is an integer Categorical, which models index with; "
                        f"estimator {est_name!r} evaluates the model at relaxed (non-one-hot) values. "
                        "Use a OneHotCategorical site (a model differentiable in z) or a "
                        "score-function estimator"
                    )
                value = zz.argmax(-1)
            else:
                value = zz
            tr = Trace()
            for n, node in full_guide.nodes.items():
                node = dict(node)
                if n == name:
                    node["value"] = value
                elif node["type"] == "sample" and not site_is_subsample(node) and not node["is_observed"]:
                    v = detach_provenance(node["value"]).detach()
                    if v.dim() > 0 and any(f.name == _PARTICLES for f in node["cond_indep_stack"]):
                        v = v.expand((P,) + tuple(v.shape[1:])) if v.shape[0] == 1 else v
                        v = v.index_select(0, idx)
                    node["value"] = v
                tr.add_node(n, **node)
            with estimator_inference(), pyro.validation_enabled(exact and is_validation_enabled()):
                mt = poutine.trace(poutine.replay(self._particles(rows)(model), trace=tr)).get_trace(*args, **kwargs)
                smooth = kind == "onehot" and not exact and name in mt.nodes
                mt.compute_log_prob(site_filter=lambda n, s: n in downstream and not (smooth and n == name))
            terms = [(mt.nodes[n]["cond_indep_stack"], -mt.nodes[n]["log_prob"])
                     for n in downstream if n in mt.nodes and "log_prob" in mt.nodes[n]]
            if smooth:  # the site's own prior at relaxed values: log p(z) linear in z, not at argmax z
                node = mt.nodes[name]
                terms.append((node["cond_indep_stack"], -_linear_log_prob(node["fn"], value) * node["scale"]))
            if kind == "bernoulli":
                lq = -F.binary_cross_entropy_with_logits(lq_logits.expand(zz.shape), zz, reduction="none")
            elif kind == "onehot":
                lq = (zz * lq_logits.log_softmax(-1)).sum(-1)
            else:
                lq = (zz * lq_logits.log_softmax(-1)).sum(-1)
            if ev > 0 or (kind == "integer" and site.event_dim > 0):
                k = ev if kind != "integer" else site.event_dim
                lq = lq.sum(tuple(range(lq.dim() - k, lq.dim())))
            terms.append((full_guide.nodes[name]["cond_indep_stack"], lq * scale))
            cost = _sum_to(terms, target, torch.Size((rows,) + inner), logits0)
            return cost if site.shared else cost.reshape((R, P) + inner)

        est_name = site.est.name
        return objective

    # ------------------------------------------------------------ ELBO API
    def loss(self, model, guide, *args, **kwargs) -> float:
        """An estimate of the loss (``-ELBO``, or ``-bound`` with ``bound="iwae"``)."""
        with torch.no_grad():
            loss, _ = self._run(model, guide, args, kwargs, grads=False)
        loss = float(loss)
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The loss as a tensor whose gradient is the estimators' gradient estimate."""
        loss, surrogate = self._run(model, guide, args, kwargs, grads=True)
        return loss.detach() + (surrogate - surrogate.detach())

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Computes the loss and puts the gradient estimate into the parameters' ``.grad``."""
        loss, surrogate = self._run(model, guide, args, kwargs, grads=True)
        if isinstance(surrogate, torch.Tensor) and surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        loss = float(loss.detach())
        warn_if_nan(loss, "loss")
        return loss


def _spec_id(spec: Any) -> Any:
    if isinstance(spec, EstimatorConfig):
        return ("config", spec.model_dump_json())
    if isinstance(spec, Mapping):
        return ("mapping", repr(sorted(spec.items(), key=lambda kv: kv[0])))
    return ("name", spec)
