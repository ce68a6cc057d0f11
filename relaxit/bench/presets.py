"""Named bench configs: ``default`` (its measured run time is in the README), ``paper``
(larger, several seeds), ``card`` (the longer gradient card behind the docs' chooser page)
``shi2022`` (the comparison of Shi, Zhou, Hwang, Titsias & Mackey 2022, Table 1) and
``pyro`` (the same estimators on the Bernoulli VAE outside and inside Pyro) and ``l2x``
(learning to explain on the digits with every subset estimator) and ``anneal`` (fixed
against annealed Gumbel-Softmax temperatures, and REINFORCE's group baselines).

Each preset is a plain mapping, the same thing a ``--config`` file holds.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PRESETS", "preset"]

# The default suite must stay within about three minutes on 2 CPU cores with every built-in
# estimator: short training, and variants only of the fields that change the method's kind
# (straight-through or not, the REINFORCE baseline).
_DEFAULT_VARIANTS = ["hard", "baseline"]
# The gradient card (about half of the default's time): 3 seeds, so that every figure has a
# standard error over seeds; small draws for the VAEs (their gradients have 4 x 12 or
# 4 x 32 coordinates) and a short warm-up of the estimators' own state.
_CARD = {"name": "gradient-card", "seeds": [0, 1, 2], "budget": 12, "warmup": 50, "variant_fields": _DEFAULT_VARIANTS}
_DEFAULT_CARD = [
    {**_CARD, "model": "toy", "draws": 512},
    {**_CARD, "model": "toy-categorical", "draws": 512},
    {**_CARD, "model": "poly", "draws": 256},
    {**_CARD, "model": "vae-bernoulli", "draws": 256, "batch": 4, "train_steps": 100},
    {**_CARD, "model": "vae-categorical", "draws": 256, "batch": 4, "train_steps": 100},
]
_DEFAULT: dict[str, Any] = {
    "preset": "default",
    "seeds": [0],
    "workers": 2,
    "tasks": [
        *_DEFAULT_CARD,
        {"name": "toy", "steps": 200, "num_samples": [2], "checkpoints": 4, "variant_fields": _DEFAULT_VARIANTS},
        {"name": "toy-categorical", "steps": 200, "num_samples": [2], "checkpoints": 4,
         "variant_fields": _DEFAULT_VARIANTS},
        {
            "name": "vae-bernoulli",
            "steps": 300,
            "num_samples": [2],
            "latents": 16,
            "encoder": [128],
            "decoder": [128],
            "checkpoints": 3,
            "variance_draws": 8,
            "eval_samples": 32,
            "variant_fields": _DEFAULT_VARIANTS,
        },
        {
            "name": "vae-categorical",
            "steps": 300,
            "num_samples": [2],
            "latents": 8,
            "categories": 8,
            "encoder": [128],
            "decoder": [128],
            "checkpoints": 3,
            "variance_draws": 8,
            "eval_samples": 32,
            "variant_fields": _DEFAULT_VARIANTS,
        },
        {"name": "subset", "steps": 300, "num_samples": [2], "checkpoints": 4, "variant_fields": _DEFAULT_VARIANTS},
    ],
}

_PAPER: dict[str, Any] = {
    "preset": "paper",
    "seeds": [0, 1, 2],
    "tasks": [
        {"name": "toy", "steps": 2000, "num_samples": [1, 2], "checkpoints": 20, "bias_draws": 100000},
        {
            "name": "toy",
            "label": "toy-t0.499",
            "target": 0.499,
            "steps": 2000,
            "num_samples": [1, 2],
            "checkpoints": 20,
            "bias_draws": 100000,
        },
        {"name": "toy-categorical", "steps": 2000, "num_samples": [1, 2], "checkpoints": 20, "bias_draws": 100000},
        {
            "name": "vae-bernoulli",
            "steps": 10000,
            "num_samples": [1, 2],
            "latents": 64,
            "encoder": [256, 256],
            "decoder": [256, 256],
            "checkpoints": 20,
            "variance_draws": 32,
            "eval_samples": 256,
        },
        {
            # Jang et al. (2017) use 20 ten-way categorical latents.
            "name": "vae-categorical",
            "steps": 10000,
            "num_samples": [1, 2],
            "latents": 20,
            "categories": 10,
            "encoder": [256, 256],
            "decoder": [256, 256],
            "checkpoints": 20,
            "variance_draws": 32,
            "eval_samples": 256,
        },
        {"name": "subset", "steps": 2000, "num_samples": [2, 4], "features": 50, "k": 5, "checkpoints": 20},
    ],
}

_SHI2022_ESTIMATORS = [
    {"estimator": {"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"}, "label": "rloo", "optional": True},
    {"estimator": {"name": "disarm"}, "label": "disarm", "optional": True},
    {"estimator": {"name": "arms"}, "label": "arms", "optional": True},
    {"estimator": {"name": "double_cv"}, "label": "double_cv", "optional": True},
    {"estimator": {"name": "relax", "family": "bernoulli"}, "label": "relax", "optional": True},
    {"estimator": {"name": "rodeo"}, "label": "rodeo", "optional": True},
]

_SHI2022: dict[str, Any] = {
    # Shi, Zhou, Hwang, Titsias & Mackey (2022), Gradient Estimation with Discrete Stein
    # Operators, NeurIPS, Table 1: VAE with 200 Bernoulli latents, encoder 784-200-200-200,
    # decoder 200-200-784, batch 100, Adam 1e-3, K = 2 and 3.  On the embedded 8x8 digits the
    # input has 64 pixels instead of 784; --data PATH trains on a local binarised MNIST.
    "preset": "shi2022",
    "seeds": [0, 1, 2],
    "tasks": [
        {
            "name": "vae-bernoulli",
            "steps": 5000,
            "num_samples": [2, 3],
            "latents": 200,
            "encoder": [200, 200],
            "decoder": [200],
            "activation": "leaky_relu",
            "batch_size": 100,
            "lr": 1e-3,
            "checkpoints": 10,
            "variance_draws": 16,
            "eval_samples": 100,
            "test_size": 1000,
            "estimators": _SHI2022_ESTIMATORS,
        }
    ],
}

# The longer gradient card behind the docs' "Which estimator for my problem?" page: two
# budgets (2 and 12 objective evaluations per gradient), 5 seeds, a longer warm-up.
_CARD_SIZES = {
    "toy": {"draws": 1024},
    "toy-categorical": {"draws": 1024},
    "poly": {"draws": 256},
    "vae-bernoulli": {"draws": 128, "batch": 4, "train_steps": 100},
    "vae-categorical": {"draws": 128, "batch": 4, "train_steps": 100},
}
_CARD_LONG: dict[str, Any] = {
    "preset": "card",
    "seeds": [0, 1, 2, 3, 4],
    "workers": 2,
    "output": "bench-card",
    "tasks": [
        {"name": "gradient-card", "model": model, "label": f"card-{model}-e{budget}", "budget": budget,
         "warmup": 50, "variant_fields": _DEFAULT_VARIANTS, **sizes}
        for budget in (2, 12)
        for model, sizes in _CARD_SIZES.items()
    ],
}

# The same estimators on the same Bernoulli VAE outside Pyro (vae-bernoulli: the estimator's
# cost is -log p(x|z), the KL analytic) and inside it (vae-pyro: a Pyro model and guide
# trained through relaxit.pyro.EstimatorELBO, the cost is the whole ELBO integrand), at equal
# particles K = 2, same networks, seeds, data and optimiser.
_PYRO_ESTIMATORS = [
    {"estimator": {"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"}, "label": "rloo"},
    {"estimator": {"name": "disarm"}, "label": "disarm", "optional": True},
    {"estimator": {"name": "rebar"}, "label": "rebar", "optional": True},
    {"estimator": {"name": "relax", "family": "bernoulli"}, "label": "relax", "optional": True},
]
_PYRO_VAE = {"steps": 1000, "num_samples": [2], "latents": 16, "encoder": [128], "decoder": [128], "checkpoints": 5,
             "variance_draws": 8, "eval_samples": 32, "estimators": _PYRO_ESTIMATORS}
_PYRO: dict[str, Any] = {
    "preset": "pyro",
    "seeds": [0, 1, 2],
    "workers": 2,
    "output": "bench-pyro",
    "tasks": [{"name": "vae-bernoulli", **_PYRO_VAE}, {"name": "vae-pyro", **_PYRO_VAE}],
}

# Learning to explain on the 8x8 digits (Chen et al. 2018, as used by the SIMPLE and SFESS
# papers): every subset estimator at the same k, steps, batch and K.
_L2X_ESTIMATORS = [
    {"estimator": {"name": "simple"}, "label": "simple", "optional": True},
    {"estimator": {"name": "sfess"}, "label": "sfess", "optional": True},
    {"estimator": {"name": "imle", "family": "subset"}, "label": "imle", "optional": True},
    {"estimator": {"name": "aimle", "family": "subset"}, "label": "aimle", "optional": True},
    {"estimator": {"name": "perturbed", "family": "subset", "sigma": 0.5}, "label": "perturbed", "optional": True},
    {"estimator": {"name": "gumbel_topk", "hard": True, "tau": 0.5}, "label": "gumbel_topk(ST)", "optional": True},
    {"estimator": {"name": "gumbel_topk", "tau": 0.5}, "label": "gumbel_topk(soft)", "optional": True},
]
_L2X: dict[str, Any] = {
    "preset": "l2x",
    "seeds": [0, 1, 2],
    "workers": 2,
    "output": "bench-l2x",
    "tasks": [{"name": "l2x-digits", "steps": 600, "num_samples": [4], "k": 8, "batch_size": 64, "checkpoints": 6,
               "variance_draws": 16, "estimators": _L2X_ESTIMATORS}],
}

# Temperature annealing on the categorical VAE: Gumbel-Softmax at a fixed tau 1.0, at 0.5,
# and annealed from 1.0 to 0.5 by Jang et al. (2017)'s exponential schedule (tau =
# max(0.5, exp(-r t)), t rounded down to a multiple of 100 steps; r = 5e-4 reaches 0.5 at
# step 1400 of 2000), against REINFORCE with its group baselines, every run at K = 4.
_ANNEAL_TAU = {"schedule": "exponential", "start": 1.0, "end": 0.5, "rate": 5e-4, "every": 100}
_ANNEAL_ESTIMATORS = [
    {"estimator": {"name": "gumbel_softmax", "tau": 1.0}, "label": "gumbel_softmax(tau=1)"},
    {"estimator": {"name": "gumbel_softmax", "tau": 0.5}, "label": "gumbel_softmax(tau=0.5)"},
    {"estimator": {"name": "gumbel_softmax", "tau": _ANNEAL_TAU}, "label": "gumbel_softmax(tau=exp 1->0.5)"},
    {"estimator": {"name": "reinforce", "family": "categorical", "baseline": "leave_one_out"}, "label": "rloo"},
    {"estimator": {"name": "reinforce", "family": "categorical", "baseline": "group_mean"}, "label": "reinforce(group_mean)"},
    {"estimator": {"name": "reinforce", "family": "categorical", "baseline": "group_normalized"},
     "label": "reinforce(group_normalized)"},
]
_ANNEAL: dict[str, Any] = {
    "preset": "anneal",
    "seeds": [0, 1, 2],
    "workers": 2,
    "output": "bench-anneal",
    "tasks": [{"name": "vae-categorical", "steps": 2000, "num_samples": [4], "latents": 8, "categories": 8,
               "encoder": [128], "decoder": [128], "checkpoints": 10, "variance_draws": 8, "eval_samples": 32,
               "estimators": _ANNEAL_ESTIMATORS}],
}

PRESETS: dict[str, dict[str, Any]] = {
    "default": _DEFAULT,
    "paper": _PAPER,
    "shi2022": _SHI2022,
    "card": _CARD_LONG,
    "pyro": _PYRO,
    "l2x": _L2X,
    "anneal": _ANNEAL,
}


def preset(name: str) -> dict[str, Any]:
    """A deep copy of the preset ``name``."""
    try:
        return copy.deepcopy(PRESETS[name])
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
