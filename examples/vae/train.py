"""A discrete VAE whose architecture, estimator, optimizer and training length live in one YAML file.

    python examples/vae/train.py --config examples/vae/gumbel.yaml
    python examples/vae/train.py --config examples/vae/reinforce.yaml
    python examples/vae/train.py --config examples/vae/rebar.yaml      # when a plugin provides rebar
    python examples/vae/train.py --config examples/vae/gumbel.yaml --set training.epochs=2 estimator.tau=1.0

The configs differ only in their ``estimator:`` block.  The whole file is validated (a
pydantic model whose ``estimator`` field is :data:`relaxit.EstimatorSpec`) before anything is
built, so a typo fails at once with the field named (``estimator.gumbel_softmax.tau: ...``)
and an estimator that no installed plugin provides is reported as such.

Data: scikit-learn's bundled 8x8 digits (no download), binarised.  Model: an MLP encoder
gives the logits of ``num_latents`` categorical latents with ``num_categories`` categories,
:class:`relaxit.nn.DiscreteLatent` samples them, an MLP decoder gives Bernoulli pixel logits;
uniform prior.  The loss goes through the layer's objective pattern, so the same code trains
with pathwise (``gumbel_softmax``) and score-function (``reinforce``, ``rebar``) estimators::

    out = latent(logits, objective=reconstruction_nll, num_samples=S)
    loss = (out.surrogate + latent.kl(logits)).mean()

Editors validate and complete the files with a JSON schema: ``python examples/vae/train.py
--schema vae.schema.json`` writes the schema of the whole file (``relaxit schema --output
relaxit.schema.json`` that of an estimator block alone, for your own configs); with the YAML
language server, put ``# yaml-language-server: $schema=vae.schema.json`` at the top of a file.

The reported test metric, the negative ELBO in nats per image, is estimated with samples of
the *discrete* posterior whatever the estimator, so runs are comparable.

Hydra users get the same from their own config tree: the estimator node goes straight to
:func:`relaxit.build` (or through the same pydantic model)::

    @hydra.main(config_path=".", config_name="gumbel", version_base=None)
    def app(cfg: omegaconf.DictConfig):
        latent = relaxit.nn.DiscreteLatent(cfg.estimator, num_categories=cfg.model.num_categories)
        # or: relaxit.build(cfg.estimator); or VAEConfig.model_validate(OmegaConf.to_container(cfg))
"""

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

import relaxit
import relaxit.nn
from relaxit.spec import format_errors


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Block):
    threshold: float = Field(8.0, ge=0, lt=16, description="A pixel (0..16) is on when its intensity exceeds this.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the images held out for evaluation.")


class ModelConfig(_Block):
    num_latents: int = Field(16, ge=1, description="Number of latent variables.")
    num_categories: int = Field(2, ge=2, description="Categories per latent (2 also admits Bernoulli estimators).")
    hidden: list[int] = Field([128], description="Hidden widths of the encoder MLP (the decoder mirrors them).")


class OptimizerConfig(_Block):
    name: Literal["adam", "sgd"] = Field("adam", description="torch.optim optimizer.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")


class TrainingConfig(_Block):
    epochs: int = Field(30, ge=1, description="Passes over the training images.")
    batch_size: int = Field(64, ge=1, description="Images per step.")
    num_samples: int = Field(1, ge=1, description="Latent samples per image and step.")
    eval_samples: int = Field(16, ge=1, description="Latent samples per test image for the negative ELBO.")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cut epochs short (smoke tests).")


class VAEConfig(_Block):
    """The whole experiment."""

    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    estimator: relaxit.EstimatorSpec
    optimizer: OptimizerConfig = OptimizerConfig()
    training: TrainingConfig = TrainingConfig()


# --------------------------------------------------------------------------- config
def _set(tree: dict[str, Any], dotted: str) -> None:
    """Apply one ``a.b.c=value`` override (the value is parsed as YAML)."""
    import yaml

    key, sep, raw = dotted.partition("=")
    if not sep:
        raise SystemExit(f"--set expects KEY=VALUE, got {dotted!r}")
    *parents, leaf = key.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(raw)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> VAEConfig:
    """Read and validate the YAML file; raise SystemExit with readable errors."""
    import yaml

    tree = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides:
        _set(tree, item)
    try:
        return VAEConfig.model_validate(tree)
    except pydantic.ValidationError as exc:
        hint = ""
        if any(e["type"] == "unknown_estimator" for e in exc.errors()):
            hint = "\n(is the plugin that provides it installed? `relaxit list` shows the registered estimators)"
        raise SystemExit(f"{path}: invalid config:\n{format_errors(exc)}{hint}") from None


# ---------------------------------------------------------------------------- model
def mlp(sizes: Sequence[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class DiscreteVAE(torch.nn.Module):
    """Encoder -> :class:`relaxit.nn.DiscreteLatent` -> decoder, with a uniform prior."""

    def __init__(self, cfg: ModelConfig, estimator: Any, num_pixels: int = 64):
        super().__init__()
        self.n, self.k = cfg.num_latents, cfg.num_categories
        self.encoder = mlp([num_pixels, *cfg.hidden, self.n * self.k])
        self.decoder = mlp([self.n * self.k, *reversed(cfg.hidden), num_pixels])
        self.latent = relaxit.nn.DiscreteLatent(estimator, num_categories=self.k)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).view(*x.shape[:-1], self.n, self.k)

    def reconstruction_nll(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``-log p(x | z)`` for samples ``z`` ``[S, B, n, K]`` -> ``[S, B]``."""
        pixel_logits = self.decoder(z.flatten(-2))
        return F.binary_cross_entropy_with_logits(pixel_logits, x.expand_as(pixel_logits), reduction="none").sum(-1)

    def loss(self, x: torch.Tensor, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss to backpropagate, its value: the negative ELBO per image), both scalars."""
        logits = self.logits(x)
        out = self.latent(logits, objective=lambda z: self.reconstruction_nll(x, z), num_samples=num_samples)
        kl = self.latent.kl(logits)
        return (out.surrogate + kl).mean(), (out.value + kl).mean().detach()

    @torch.no_grad()
    def negative_elbo(self, x: torch.Tensor, num_samples: int) -> float:
        """Negative ELBO (nats per image) with samples of the discrete posterior."""
        logits = self.logits(x)
        z = torch.distributions.OneHotCategorical(logits=logits).sample((num_samples,))
        return float((self.reconstruction_nll(x, z).mean(0) + self.latent.kl(logits)).mean())


# ----------------------------------------------------------------------------- data
def load_digits(cfg: DataConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binarised 8x8 digits (bundled with scikit-learn), split into train and test."""
    from sklearn.datasets import load_digits as sk_load_digits

    images = torch.as_tensor(sk_load_digits().data, dtype=torch.float32)
    x = (images > cfg.threshold).float()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(cfg.test_fraction * len(x))))
    return x[perm[n_test:]], x[perm[:n_test]]


# ---------------------------------------------------------------------------- train
def train(cfg: VAEConfig, *, log: Any = print) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    x_train, x_test = load_digits(cfg.data, cfg.seed)
    model = DiscreteVAE(cfg.model, cfg.estimator, num_pixels=x_train.shape[-1])
    opt_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer.name]
    optimizer = opt_cls(model.parameters(), lr=cfg.optimizer.lr)
    t = cfg.training
    eval_gen_seed = cfg.seed + 1

    def evaluate() -> float:
        state = torch.random.get_rng_state()
        torch.manual_seed(eval_gen_seed)  # the same noise before and after training
        try:
            return model.negative_elbo(x_test, t.eval_samples)
        finally:
            torch.random.set_rng_state(state)

    history = {"estimator": cfg.estimator.model_dump(mode="json"), "test_neg_elbo_initial": evaluate(), "epochs": []}
    log(json.dumps({"epoch": 0, "test_neg_elbo": round(history["test_neg_elbo_initial"], 4)}))
    steps_per_epoch = math.ceil(len(x_train) / t.batch_size)
    if t.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
    for epoch in range(1, t.epochs + 1):
        model.train()
        perm = torch.randperm(len(x_train))
        total = 0.0
        for step in range(steps_per_epoch):
            x = x_train[perm[step * t.batch_size : (step + 1) * t.batch_size]]
            loss, value = model.loss(x, t.num_samples)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(value)
        model.eval()
        record = {"epoch": epoch, "train_neg_elbo": total / steps_per_epoch, "test_neg_elbo": evaluate()}
        history["epochs"].append(record)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
    history["test_neg_elbo_final"] = history["epochs"][-1]["test_neg_elbo"]
    return history


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="YAML file (see gumbel.yaml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override entries, e.g. training.epochs=2")
    parser.add_argument("--output", type=Path, help="write the history as JSON here")
    parser.add_argument(
        "--schema", type=Path, metavar="PATH",
        help="write the JSON schema of the whole config file (for YAML editors) and exit",
    )
    args = parser.parse_args(argv)
    if args.schema:
        args.schema.write_text(json.dumps(VAEConfig.model_json_schema(), indent=2) + "\n")
        print(f"wrote {args.schema}", file=sys.stderr)
        return {}
    if args.config is None:
        parser.error("--config is required")
    cfg = load_config(args.config, args.set)
    print(f"estimator: {cfg.estimator!r}", file=sys.stderr)
    history = train(cfg)
    if args.output:
        args.output.write_text(json.dumps(history, indent=2) + "\n")
    return history


if __name__ == "__main__":
    main()
