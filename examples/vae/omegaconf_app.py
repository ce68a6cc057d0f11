"""The VAE example driven by OmegaConf, as a Hydra app would be (Hydra hands you the same node).

    python examples/vae/omegaconf_app.py examples/vae/gumbel.yaml training.epochs=2 estimator.tau=1.0

Hydra users write the same with ``@hydra.main`` (Hydra is not needed here)::

    @hydra.main(config_path=".", config_name="gumbel", version_base=None)
    def app(cfg: DictConfig) -> None:
        estimator = relaxit.build(cfg.estimator)          # a node is a spec: no _target_, no import
        ...

The estimator node is looked up in relaxit's registry by its ``name``, never imported or
evaluated (unlike Hydra's ``_target_``).  Interpolations (``tau: ${schedule.tau}``) are
resolved first.  For validation of the whole tree with field-level errors, hand the
container to the example's pydantic model (``VAEConfig``) as below.
"""

import importlib.util
import sys
from pathlib import Path

from omegaconf import OmegaConf

import relaxit

# the example next to this file (loaded by path, so that nothing named `train` is imported)
_spec = importlib.util.spec_from_file_location("relaxit_example_vae_train", Path(__file__).with_name("train.py"))
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit(__doc__.split("\n\n")[1])
    cfg = OmegaConf.merge(OmegaConf.load(argv[0]), OmegaConf.from_dotlist(list(argv[1:])))
    try:
        estimator = relaxit.build(cfg.estimator)  # the node goes straight to relaxit
    except (relaxit.ConfigError, relaxit.UnknownEstimatorError) as exc:
        raise SystemExit(f"estimator: {exc}") from None
    print(f"estimator from the node: {estimator!r}", file=sys.stderr)
    try:
        config = train.VAEConfig.model_validate(OmegaConf.to_container(cfg, resolve=True))
    except Exception as exc:  # pydantic.ValidationError: show the fields
        raise SystemExit(f"invalid config:\n{relaxit.spec.format_errors(exc)}") from None
    return train.train(config)


if __name__ == "__main__":
    main()
