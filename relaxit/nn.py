"""Stochastic layers: ``torch.nn.Module`` s that wrap an estimator for common model shapes.

Each layer is built from an *estimator spec* (a mapping such as ``{"name": "gumbel_softmax",
"tau": 0.5}``, a validated config — e.g. the :data:`relaxit.EstimatorSpec` field of your own
config —, an OmegaConf/Hydra node, a file path, or an estimator instance), so the same model
code runs with any registered estimator of the right family; one of the wrong family is
refused with :class:`EstimatorFamilyError`, which lists the registered estimators that fit.

- :class:`DiscreteLatent`: logits in, a discrete (or relaxed) sample out, with the
  ``kl`` and ``log_prob`` terms of a VAE's ELBO.
- :class:`Gate`: multiplies its input by learned stochastic gates in ``[0, 1]``, with the
  expected ``L0`` norm as a penalty (hard concrete / stochastic gates, for sparsification).
- :class:`SubsetSelector`: logits in, a k-hot sample out (``gumbel_topk``).

**Training with any estimator — the objective pattern.**  A pathwise estimator
(``RSAMPLE``: ``gumbel_softmax``, ``relaxed_bernoulli``...) gives gradients through its
samples, so ``z = layer(logits)`` followed by an ordinary loss trains.  A score-function
estimator (``reinforce``, ``rebar``, ``arm``...) does not: its gradient lives in a
*surrogate* built from the loss of each sample.  Every layer therefore also takes the
downstream loss as a callable, ``layer(logits, objective=loss_fn)``; it then calls the
estimator's :meth:`~relaxit_core.GradientEstimator.estimate` and returns an
:class:`~relaxit_core.Estimate` whose ``surrogate`` is what you backpropagate (its value is
the Monte Carlo loss)::

    def loss_fn(z):                       # z: [S, *batch, *event] samples of the layer
        return decoder_nll(x, z)          # -> [S, batch]: one loss per sample and example

    out = latent(logits, objective=loss_fn, num_samples=2)
    loss = (out.surrogate + latent.kl(logits)).mean()
    loss.backward()                       # decoder, encoder and the estimator's own
                                          # parameters (REBAR's temperature...) all get gradients

Written this way the model is correct for every estimator, pathwise or not, so it is the
pattern to use when the estimator comes from a config.  Sampling without an objective from a
non-pathwise estimator, in training mode and with gradients enabled, raises an error rather
than silently training nothing; under ``torch.no_grad()`` or ``eval()`` it just samples.

The layers' own parameters and the estimator's (a submodule, ``layer.estimator``) are all in
``layer.parameters()``, so one optimizer serves the model.

Example:
    >>> import torch, relaxit.nn
    >>> spec = {"name": "reinforce", "family": "categorical", "baseline": "leave_one_out"}
    >>> latent = relaxit.nn.DiscreteLatent(spec, num_categories=4)
    >>> logits = torch.zeros(5, 3, 4, requires_grad=True)      # 5 examples, 3 latents of 4 categories
    >>> out = latent(logits, objective=lambda z: z[..., 0].sum(-1), num_samples=2)
    >>> out.samples.shape, out.surrogate.shape
    (torch.Size([2, 5, 3, 4]), torch.Size([5]))
    >>> (out.surrogate + latent.kl(logits)).sum().backward()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from relaxit_core import Capability, ConfigError, Estimate, ParameterError
from relaxit_core.config import EstimatorConfig
from relaxit_core.registry import registry

__all__ = ["EstimatorFamilyError", "StochasticLayer", "DiscreteLatent", "Gate", "SubsetSelector", "build_estimator"]


class EstimatorFamilyError(ConfigError):
    """An estimator of a family the layer cannot use (e.g. a categorical one for a gate)."""


def _fitting(families: Sequence[str], params: Sequence[str] | None = None) -> list[str]:
    """Registered estimators serving one of ``families`` (and taking one of ``params``)."""
    out = []
    for info in registry.available():
        if set(info.families) & set(families) and (params is None or set(info.params) & set(params)):
            extra = ""
            if info.family not in families:
                extra = f" (family: {next(f for f in info.families if f in families)})"
            out.append(info.name + extra)
    return out


def build_estimator(
    spec: Any, families: Sequence[str], *, layer: str = "this layer", params: Sequence[str] | None = None
) -> torch.nn.Module:
    """Build the estimator of ``spec`` for a layer that accepts ``families`` (in order of preference).

    An estimator serving several families (``reinforce``, ``relax``...) needs its ``family``
    set in the spec, as everywhere (the layer does not pick one: leaving it out raises
    :class:`EstimatorFamilyError`, which says which family this layer needs).  An estimator
    of another family, or whose tensor arguments include none of ``params``, raises
    :class:`EstimatorFamilyError` naming the registered estimators that fit.
    """
    families = tuple(families)
    if isinstance(spec, torch.nn.Module):
        est = spec
        name = getattr(est, "name", type(est).__name__)
    else:
        try:
            config: EstimatorConfig = registry.validate(spec)
        except ConfigError as exc:
            if any(e.get("type") == "missing_family" for e in exc.errors):
                raise EstimatorFamilyError(
                    f"{str(exc).splitlines()[0]} {layer} needs family "
                    f"{' or '.join(map(repr, families))}: set it in the estimator's config.",
                    exc.errors,
                ) from None
            raise
        name = config.name
        est = registry.get_class(name)(config)
    fam = getattr(est, "family", None)
    if fam not in families:
        served = tuple(getattr(est, "families", ()) or (fam,))
        hint = ""
        usable = [f for f in served if f in families]
        if usable:
            hint = f" (set `family: {usable[0]}` in its config)"
        fitting = _fitting(families, params)
        raise EstimatorFamilyError(
            f"{layer} needs an estimator of family {' or '.join(map(repr, families))}; "
            f"{name!r} is configured for family {fam!r}{hint}. "
            f"Registered estimators that fit: {', '.join(fitting) or '(none)'}."
        )
    if params is not None and not set(params) & set(getattr(est, "params", ())):
        fitting = _fitting(families, params)
        raise EstimatorFamilyError(
            f"{layer} feeds the estimator {' or '.join(map(repr, params))}; {name!r} takes "
            f"{', '.join(map(repr, est.params))}. Registered estimators that fit: {', '.join(fitting) or '(none)'}."
        )
    return est


class StochasticLayer(torch.nn.Module):
    """Base of the layers: holds ``estimator`` (a submodule) and implements the two ways to use it.

    - ``sample``: samples with ``rsample`` for a pathwise estimator; otherwise (score-function
      estimators) with ``sample``, which carries no gradient — allowed under
      ``torch.no_grad()``, in ``eval()`` mode, or when no parameter needs a gradient, and an
      error otherwise (use the objective pattern below).
    - ``estimate``: the objective pattern (see :mod:`relaxit.nn`): calls the estimator's
      ``estimate`` with the downstream loss and returns the :class:`~relaxit_core.Estimate`
      whose ``surrogate`` is to be backpropagated.  It works for every estimator.
    """

    families: ClassVar[tuple[str, ...]] = ()

    def __init__(self, estimator: Any, *, families: Sequence[str] | None = None, params: Sequence[str] | None = None):
        super().__init__()
        self.estimator = build_estimator(
            estimator, families or self.families, layer=type(self).__name__, params=params
        )

    @property
    def pathwise(self) -> bool:
        """Whether samples carry the gradient (the estimator has ``RSAMPLE``)."""
        return Capability.RSAMPLE in self.estimator.capabilities

    def _draw(self, dist: torch.distributions.Distribution, sample_shape: torch.Size, params: dict) -> torch.Tensor:
        if self.pathwise:
            return dist.rsample(sample_shape)
        needs_grad = any(isinstance(p, torch.Tensor) and p.requires_grad for p in params.values())
        if self.training and torch.is_grad_enabled() and needs_grad:
            raise RuntimeError(
                f"{type(self).__name__}: {self.estimator.name!r} is not a pathwise estimator, so its "
                "samples carry no gradient. Pass the downstream loss instead, "
                "`out = layer(..., objective=loss_fn)`, and backpropagate `out.surrogate` "
                "(see relaxit.nn); or sample under torch.no_grad() / in eval() mode."
            )
        return dist.sample(sample_shape)

    def _estimate(
        self,
        objective: Callable[[torch.Tensor], torch.Tensor],
        params: dict[str, torch.Tensor],
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        num_samples: int,
        reduce: str,
        context: torch.Tensor | None = None,
    ) -> Estimate:
        if not callable(objective):
            raise TypeError(f"{type(self).__name__}: objective must be callable, got {type(objective).__name__}")
        if context is not None:  # only estimators that read a context take it (reinforce's learned baseline)
            params = {**params, "context": context}
        if transform is None:
            return self.estimator.estimate(objective, num_samples=num_samples, reduce=reduce, **params)
        out = self.estimator.estimate(
            lambda z: objective(transform(z)), num_samples=num_samples, reduce=reduce, **params
        )
        return Estimate(out.surrogate, out.value, transform(out.samples))

    def extra_repr(self) -> str:
        return ""


class DiscreteLatent(StochasticLayer):
    r"""A discrete latent variable: logits in, sample out, with the KL and log-prob of a VAE.

    Two shapes of latent:

    - ``num_categories=None``: independent binary latents; ``logits`` of shape ``[..., n]``,
      samples ``[..., n]`` in ``{0, 1}`` (or ``[0, 1]`` for a relaxation).  Estimators of
      family ``"bernoulli"``.
    - ``num_categories=K``: ``n`` categorical latents; ``logits`` ``[..., n, K]``, one-hot
      samples ``[..., n, K]`` (or points of the simplex for a relaxation).  Estimators of
      family ``"categorical"``; with ``K = 2`` also those of family ``"bernoulli"`` (``rebar``,
      ``arm``...), fed ``logits[..., 1] - logits[..., 0]``, whose sample ``b`` is returned as
      ``[1 - b, b]`` — the same law, so a model runs unchanged with either family.

    ``latent_dims`` trailing dimensions of the variables (``n``: one by default) form one
    example's latent vector: :meth:`kl` and :meth:`log_prob` sum over them and return one value
    per example, and an objective passed to :meth:`forward` returns one loss per sample and
    example (shape ``[S, *batch]``).

    Args:
        estimator: an estimator spec or instance (see :mod:`relaxit.nn`).
        num_categories: ``K``, or ``None`` for binary latents.
        latent_dims: how many trailing variable dimensions belong to one example.

    Example:
        >>> import torch, relaxit.nn
        >>> latent = relaxit.nn.DiscreteLatent({"name": "gumbel_softmax", "tau": 0.5}, num_categories=3)
        >>> logits = torch.randn(4, 2, 3, requires_grad=True)   # 4 examples, 2 latents
        >>> latent(logits).shape, latent.kl(logits).shape
        (torch.Size([4, 2, 3]), torch.Size([4]))
    """

    def __init__(self, estimator: Any, num_categories: int | None = None, *, latent_dims: int = 1):
        if num_categories is None:
            families: tuple[str, ...] = ("bernoulli",)
        elif isinstance(num_categories, bool) or not isinstance(num_categories, int) or num_categories < 2:
            raise ValueError(f"num_categories must be an integer >= 2 or None, got {num_categories!r}")
        else:
            families = ("categorical", "bernoulli") if num_categories == 2 else ("categorical",)
        if latent_dims < 0:
            raise ValueError(f"latent_dims must be >= 0, got {latent_dims}")
        super().__init__(estimator, families=families, params=("logits",))
        self.num_categories = num_categories
        self.latent_dims = latent_dims
        self.binary_as_categorical = num_categories == 2 and self.estimator.family == "bernoulli"

    def extra_repr(self) -> str:
        return f"num_categories={self.num_categories}, latent_dims={self.latent_dims}"

    # -------------------------------------------------------------- plumbing
    def _check_logits(self, logits: torch.Tensor) -> None:
        if self.num_categories is not None and (logits.dim() < 1 or logits.shape[-1] != self.num_categories):
            raise ParameterError(
                f"DiscreteLatent: logits must end with num_categories={self.num_categories}, got shape {tuple(logits.shape)}"
            )
        # variable dims: [..., n] (binary) or [..., n, K]
        var_dims = logits.dim() - (0 if self.num_categories is None else 1)
        if var_dims < self.latent_dims:
            raise ParameterError(
                f"DiscreteLatent: logits of shape {tuple(logits.shape)} have fewer than latent_dims="
                f"{self.latent_dims} variable dimensions"
            )

    def _params(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check_logits(logits)
        if self.binary_as_categorical:
            return {"logits": logits[..., 1] - logits[..., 0]}
        return {"logits": logits}

    def _out(self, z: torch.Tensor) -> torch.Tensor:
        if self.binary_as_categorical:
            return torch.stack([1 - z, z], dim=-1)
        return z

    def _sum_latent(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(tuple(range(-self.latent_dims, 0))) if self.latent_dims else x

    # ------------------------------------------------------------------ API
    def distribution(self, logits: torch.Tensor) -> torch.distributions.Distribution:
        """The estimator's law for ``logits`` (in the estimator's own parametrisation: with
        ``K = 2`` and a Bernoulli estimator, the law of ``b``, batch shape ``[..., n]``)."""
        return self.estimator.distribution(**self._params(logits))

    def sample(self, logits: torch.Tensor, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Samples of shape ``sample_shape + logits.shape`` (see :class:`StochasticLayer`)."""
        params = self._params(logits)
        dist = self.estimator.distribution(**params)
        return self._out(self._draw(dist, torch.Size(sample_shape), params))

    def forward(
        self,
        logits: torch.Tensor,
        objective: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        num_samples: int = 1,
        reduce: str = "mean",
        context: torch.Tensor | None = None,
    ) -> torch.Tensor | Estimate:
        """One sample (no ``objective``), or the :class:`~relaxit_core.Estimate` of
        ``E[objective(z)]`` with ``num_samples`` samples (``objective`` maps samples
        ``[S, *logits.shape]`` to losses ``[S, *batch]``; backpropagate ``.surrogate``).

        ``context`` (``[*batch, C]``) is passed to estimators that read one: ``reinforce``
        with ``baseline="learned", context_size=C`` (an input-dependent critic, e.g. the
        encoder's input or features of it; detached by the estimator)."""
        if objective is None:
            return self.sample(logits)
        return self._estimate(
            objective, self._params(logits), self._out if self.binary_as_categorical else None, num_samples, reduce,
            context,
        )

    def kl(self, logits: torch.Tensor, prior_logits: torch.Tensor | None = None) -> torch.Tensor:
        """``KL(q(z | logits) || p(z))`` of the discrete laws, summed over each example's latents.

        ``q`` is the Bernoulli / categorical law whose samples the estimator draws (or
        relaxes); ``p`` is uniform (probability 1/2, or 1/K per category) unless
        ``prior_logits`` (broadcastable to ``logits``) is given.  Exact and differentiable in
        both; shape ``logits.shape`` without the category and ``latent_dims`` dimensions.
        """
        self._check_logits(logits)
        if self.num_categories is None:
            q_logits = logits
            p_logits = torch.zeros_like(logits) if prior_logits is None else prior_logits
            q = torch.sigmoid(q_logits)
            # log q(1) = -softplus(-l), log q(0) = -softplus(l)
            kl = q * (F.softplus(-p_logits) - F.softplus(-q_logits)) + (1 - q) * (
                F.softplus(p_logits) - F.softplus(q_logits)
            )
        else:
            log_q = F.log_softmax(logits, dim=-1)
            if prior_logits is None:
                log_p = torch.full_like(log_q, -math.log(self.num_categories))
            else:
                log_p = F.log_softmax(prior_logits, dim=-1).expand_as(log_q)
            kl = (log_q.exp() * (log_q - log_p)).sum(-1)
        return self._sum_latent(kl)

    def log_prob(self, value: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``log q(value | logits)`` under the estimator's law, summed over each example's latents.

        The measure is the contract's for that law: the probability mass function for hard
        samples, a density for relaxed ones.  ``value`` has the shape of the layer's samples
        (with any leading sample dimensions).
        """
        if Capability.LOG_PROB not in self.estimator.capabilities:
            raise NotImplementedError(f"{self.estimator.name!r} does not provide log_prob")
        dist = self.distribution(logits)
        v = value[..., 1] if self.binary_as_categorical else value
        return self._sum_latent(dist.log_prob(v))


class Gate(StochasticLayer):
    r"""Stochastic gates for sparsification: ``y = x * z`` with gates ``z`` in ``[0, 1]`` per feature.

    The layer owns one parameter tensor ``theta`` of shape ``shape`` (the estimator's first
    tensor argument: ``log_alpha`` for ``hard_concrete``, Louizos et al. 2018; ``loc`` for
    ``gaussian_relaxed_bernoulli``, the stochastic gates of Yamada et al. 2020; ``logits`` for
    Bernoulli estimators such as ``relaxed_bernoulli`` or ``reinforce``).  In training mode each
    example gets its own gates (``x`` of shape ``[..., *shape]``); in ``eval()`` mode the gates
    are the deterministic mask ``1[P(z != 0) > 1/2]`` (the selected features).

    :meth:`l0_penalty` is the expected number of open gates, ``Σ_d P(z_d != 0)`` (Louizos et
    al. 2018, eq. 12; Yamada et al. 2020, eq. 6 — the expected ``L0`` norm), differentiable in
    ``theta``; add ``λ · l0_penalty()`` to the loss.  ``P(z != 0)`` is :meth:`open_probability`:

    - laws with exact zeros — hard samples (``HARD``: a probability mass function) and the
      laws with atoms listed in :attr:`atom_laws` (``hard_concrete``,
      ``gaussian_relaxed_bernoulli``) — give ``1 - exp(log_prob(0))``, the mass off the atom
      at 0 (the contract's "Densities" convention);
    - relaxations without atoms (``relaxed_bernoulli`` with ``hard=False``) are never exactly
      0; their penalty is ``Σ sigmoid(logits)``, the probability that the underlying
      Bernoulli gate is on (for the binary Concrete, ``P(z > 1/2)``), a surrogate of ``L0``.

    With a score-function estimator, train through the objective pattern:
    ``out = gate(x, objective=lambda xz: loss(net(xz)))``, where the objective receives the
    gated inputs ``[S, *x.shape]`` and returns per-example losses ``[S, *x.shape[:-len(shape)]]``.

    Args:
        estimator: spec or instance of a ``"bernoulli"``-family estimator.
        shape: the gated feature shape (an int for a vector of features).
        init: initial value of ``theta`` (default: 0 for ``log_alpha`` as in Louizos et al.'s
            drop rate 1/2, 0.5 for ``loc`` as in Yamada et al., 2 for ``logits``).

    Example:
        >>> import torch, relaxit.nn
        >>> gate = relaxit.nn.Gate({"name": "relaxed_bernoulli", "tau": 0.5, "hard": True}, 5)
        >>> y = gate(torch.ones(3, 5)); y.shape
        torch.Size([3, 5])
        >>> gate.l0_penalty().shape
        torch.Size([])
    """

    families: ClassVar[tuple[str, ...]] = ("bernoulli",)
    atom_laws: ClassVar[set[str]] = {"hard_concrete", "gaussian_relaxed_bernoulli"}
    """Estimators whose law has a point mass at 0 with ``log_prob(0)`` its log mass (contract)."""
    default_init: ClassVar[dict[str, float]] = {"log_alpha": 0.0, "loc": 0.5, "logits": 2.0}

    def __init__(self, estimator: Any, shape: int | Sequence[int], *, init: float | None = None):
        super().__init__(estimator)
        est = self.estimator
        self.shape = torch.Size([shape] if isinstance(shape, int) else shape)
        self.param_name = est.params[0]
        grouped = {p for g in getattr(est, "exclusive_params", ()) for p in g if self.param_name in g}
        optional = set(getattr(est, "optional_params", ()))
        other = [p for p in est.params if p != self.param_name and p not in grouped and p not in optional]
        if other:
            raise EstimatorFamilyError(
                f"Gate owns one tensor argument ({self.param_name!r}); {est.name!r} also needs "
                f"{', '.join(map(repr, other))}. Registered gate estimators: "
                f"{', '.join(_fitting(self.families)) or '(none)'}."
            )
        if init is None:
            if self.param_name not in self.default_init:
                raise ValueError(f"Gate: give `init` for {est.name!r}'s argument {self.param_name!r}")
            init = self.default_init[self.param_name]
        self.theta = torch.nn.Parameter(torch.full(self.shape, float(init)))

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}, param={self.param_name!r}"

    def distribution(self, batch_shape: torch.Size | tuple[int, ...] = ()) -> torch.distributions.Distribution:
        """The gates' law, with batch shape ``batch_shape + shape``."""
        theta = self.theta.expand(torch.Size(batch_shape) + self.shape)
        return self.estimator.distribution(**{self.param_name: theta})

    def _batch_shape(self, x: torch.Tensor) -> torch.Size:
        n = len(self.shape)
        if tuple(x.shape[x.dim() - n:]) != tuple(self.shape) or x.dim() < n:
            raise ParameterError(f"Gate: input of shape {tuple(x.shape)} does not end with the gate shape {tuple(self.shape)}")
        return x.shape[: x.dim() - n]

    def sample(self, batch_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Gates of shape ``batch_shape + shape`` (see :class:`StochasticLayer`)."""
        batch_shape = torch.Size(batch_shape)
        return self._draw(self.distribution(batch_shape), torch.Size(), {self.param_name: self.theta})

    def forward(
        self,
        x: torch.Tensor,
        objective: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        num_samples: int = 1,
        reduce: str = "mean",
    ) -> torch.Tensor | Estimate:
        """``x * z``, or with ``objective`` the :class:`~relaxit_core.Estimate` of
        ``E[objective(x * z)]`` (``objective`` maps gated inputs ``[S, *x.shape]`` to losses
        ``[S, *batch]``, ``batch = x.shape[:-len(shape)]``; backpropagate ``.surrogate``)."""
        batch = self._batch_shape(x)
        if objective is not None:
            theta = self.theta.expand(batch + self.shape)
            return self._estimate(objective, {self.param_name: theta}, lambda z: x * z, num_samples, reduce)
        if not self.training:
            return x * self.mask().to(x.dtype)
        return x * self.sample(batch)

    def open_probability(self) -> torch.Tensor:
        """``P(z_d != 0)`` per gate, shape ``shape`` (see the class docstring)."""
        est = self.estimator
        dist = self.distribution()
        if Capability.HARD in est.capabilities or est.name in self.atom_laws:
            if Capability.LOG_PROB not in est.capabilities and est.name not in self.atom_laws:
                raise NotImplementedError(f"Gate: {est.name!r} has no log_prob to read P(z = 0) from")
            return -torch.expm1(dist.log_prob(torch.zeros_like(self.theta)))
        if self.param_name == "logits":
            return torch.sigmoid(self.theta)
        raise NotImplementedError(
            f"Gate: no L0 penalty known for {est.name!r}; add it to Gate.atom_laws if its law has "
            "an atom at 0 whose log mass log_prob(0) returns"
        )

    def l0_penalty(self) -> torch.Tensor:
        """Expected number of open gates ``Σ_d P(z_d != 0)`` (a scalar, differentiable)."""
        return self.open_probability().sum()

    def mask(self) -> torch.Tensor:
        """The deterministic gates of ``eval()`` mode: ``1[P(z != 0) > 1/2]``, shape ``shape``."""
        with torch.no_grad():
            return (self.open_probability() > 0.5).to(self.theta.dtype)


class SubsetSelector(StochasticLayer):
    r"""Select ``k`` of ``n`` items: logits ``[..., n]`` in, a k-hot sample ``[..., n]`` out.

    Built from an estimator of family ``"subset"`` (``gumbel_topk``: Gumbel top-k, Kool et
    al. 2019; relaxed with Xie & Ermon 2019), whose config sets ``k``; pass ``k`` here too to
    have it checked against the config.  Training follows the objective pattern of
    :mod:`relaxit.nn` for estimators without ``RSAMPLE``.

    Args:
        estimator: spec or instance of a ``"subset"``-family estimator.
        k: the expected subset size (checked against the estimator's config), or ``None``.
    """

    families: ClassVar[tuple[str, ...]] = ("subset",)

    def __init__(self, estimator: Any, k: int | None = None):
        super().__init__(estimator, params=("logits",))
        cfg_k = getattr(self.estimator.config, "k", None)
        if k is not None and cfg_k is not None and k != cfg_k:
            raise ConfigError(f"SubsetSelector(k={k}) but the estimator {self.estimator.name!r} is configured with k={cfg_k}")
        self.k = cfg_k if cfg_k is not None else k

    def extra_repr(self) -> str:
        return f"k={self.k}"

    def _params(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.k is not None and logits.shape[-1] < self.k:
            raise ParameterError(f"SubsetSelector: {logits.shape[-1]} items cannot hold a subset of k={self.k}")
        return {"logits": logits}

    def distribution(self, logits: torch.Tensor) -> torch.distributions.Distribution:
        """The estimator's law for ``logits``."""
        return self.estimator.distribution(**self._params(logits))

    def sample(self, logits: torch.Tensor, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """k-hot samples of shape ``sample_shape + logits.shape``."""
        params = self._params(logits)
        return self._draw(self.estimator.distribution(**params), torch.Size(sample_shape), params)

    def forward(
        self,
        logits: torch.Tensor,
        objective: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        num_samples: int = 1,
        reduce: str = "mean",
    ) -> torch.Tensor | Estimate:
        """One k-hot sample, or with ``objective`` the :class:`~relaxit_core.Estimate` of its
        expected loss (backpropagate ``.surrogate``)."""
        if objective is None:
            return self.sample(logits)
        return self._estimate(objective, self._params(logits), None, num_samples, reduce)
