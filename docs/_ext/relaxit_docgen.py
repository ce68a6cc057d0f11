"""Sphinx extension: the pages that are generated from relaxit's registry at build time.

On ``builder-inited`` it asks the registry (:func:`relaxit.available`) for every estimator
and writes, under ``docs/generated/``:

- ``methods/<name>.rst``: one page per estimator — summary, facts (family, parameters,
  capabilities per config, reference, provider), when to use it, the class docstring (the
  maths) through autodoc, the config table rendered from the pydantic JSON schema, and an
  example that is *run during the build* (its output is shown; a failure fails the build);
- ``methods/index.rst``: the list of methods;
- ``capabilities.rst``: the capability matrix (estimator x family and capabilities);
- ``api/plugins/<module>.rst``: the API of each plugin module (its laws and helpers).

So a method that is registered (built in or installed as a third-party plugin) gets its
page and its row without anyone editing the docs.  The ``render_*`` functions do not
import Sphinx, so that the test suite can check them without it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
import traceback
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GENERATED_DIR = "generated"

_CAP_DESCRIPTIONS = {
    "rsample": "reparameterised samples (pathwise gradients)",
    "score_function": "score-function (REINFORCE-type) gradients",
    "log_prob": "``log_prob`` (usable as an ELBO site)",
    "kl": "``kl_divergence`` registered",
    "enumerate_support": "finite support, ``enumerate_support``",
    "unbiased": "unbiased gradient of the discrete objective",
    "hard": "forward samples exactly discrete",
}


# ------------------------------------------------------------------------- helpers
def _capability_order() -> list[str]:
    from relaxit_core import Capability

    return [c.value for c in Capability]


def rst_escape(text: str) -> str:
    """Escape inline markup characters so that free text renders literally in reST."""
    return re.sub(r"([\\`*_|])", r"\\\1", str(text))


def _indent(text: str, n: int) -> str:
    return textwrap.indent(text, " " * n)


def _instances(cls: type) -> list[Any]:
    """Instances under the default config and each conformance config (duplicates dropped)."""
    out, seen = [], set()
    for cfg in ({}, *getattr(cls, "conformance_configs", ())):  # {} fails where family is required
        try:
            est = cls(dict(cfg))
        except Exception:  # noqa: BLE001 - a bad conformance config is the kit's business
            continue
        key = est.config.model_dump_json()
        if key not in seen:
            seen.add(key)
            out.append(est)
    return out


def _config_diff(est: Any) -> str:
    diff = est.config.non_default_fields()
    return ", ".join(f"{k}={v!r}" for k, v in diff.items()) or "default"


def _default_instance(cls: type) -> Any:
    """The estimator under its default config; one serving several families (whose
    ``family`` is required) under its first family."""
    field = cls.Config.model_fields.get("family")
    if field is not None and field.is_required():
        return cls(family=cls.families[0])
    return cls()


def _default_capabilities(cls: type) -> frozenset[str]:
    try:
        return frozenset(c.value for c in _default_instance(cls).capabilities)
    except Exception:  # noqa: BLE001
        return frozenset(c.value for c in cls.capabilities)


def _json_type(spec: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in spec:
        ref = spec["$ref"].rsplit("/", 1)[-1]
        return _json_type(defs.get(ref, {}), defs) if ref in defs else ref
    if "const" in spec:
        return json.dumps(spec["const"])
    if "enum" in spec:
        return " | ".join(json.dumps(v) for v in spec["enum"])
    for key in ("anyOf", "oneOf"):
        if key in spec:
            return " | ".join(_json_type(s, defs) for s in spec[key])
    kind = spec.get("type")
    if kind == "array":
        return f"array of {_json_type(spec.get('items', {}), defs)}"
    if isinstance(kind, list):
        return " | ".join(kind)
    return kind or "any"


_BOUNDS = (
    ("exclusiveMinimum", ">"),
    ("minimum", "≥"),
    ("exclusiveMaximum", "<"),
    ("maximum", "≤"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
)


def config_rows(schema: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """``(field, type, default, bounds, description)`` for each config field but ``name``."""
    defs = schema.get("$defs", {})
    rows = []
    for field, spec in schema.get("properties", {}).items():
        if field == "name":
            continue
        merged = dict(spec)
        for sub in spec.get("allOf", ()):  # pydantic wraps $ref + default in allOf
            merged.update(sub)
        bounds = ", ".join(f"{sym} {merged[k]}" for k, sym in _BOUNDS if k in merged)
        default = json.dumps(merged["default"]) if "default" in merged else "(required)"
        rows.append((field, _json_type(merged, defs), default, bounds, merged.get("description", "")))
    return rows


def _list_table(header: Iterable[str], rows: Iterable[Iterable[str]], *, widths: str = "auto", title: str = "") -> str:
    lines = [f".. list-table:: {title}".rstrip(), "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [list(header), *map(list, rows)]:
        first = True
        for cell in row:
            cell = str(cell) if str(cell).strip() else " "
            lines.append(("   * - " if first else "     - ") + cell)
            first = False
    return "\n".join(lines) + "\n"


def _doc_name(info: Any) -> str:
    return f"methods/{info.name}"


def _params_text(cls: type) -> str:
    groups = [tuple(g) for g in getattr(cls, "exclusive_params", ())]
    grouped = {p for g in groups for p in g}
    optional = set(getattr(cls, "optional_params", ()))
    parts = [" or ".join(f"``{p}``" for p in g) for g in groups]
    parts += [f"``{p}``" + (" (optional)" if p in optional else "") for p in cls.params if p not in grouped]
    return ", ".join(parts)


def when_to_use(info: Any) -> list[str]:
    """Advice derived from the declared capabilities (so it holds for every method)."""
    caps = {c.value for c in info.capabilities}
    cls = info.cls
    tips = []
    if "unbiased" in caps:
        tips.append(
            "**Unbiased**: on average the estimate equals the exact gradient of the discrete "
            "objective, so stochastic optimisation converges to the right optimum; pay for it in "
            "variance (use several ``num_samples``)."
        )
    elif "rsample" in caps:
        tips.append(
            "**Biased, pathwise**: low variance and one differentiable objective evaluation per "
            "sample, but the gradient is that of a relaxed (or straight-through) objective; the "
            "objective must be differentiable in ``z``."
        )
    if "score_function" in caps:
        tips.append(
            "**Score function**: needs only the objective's values, so the objective may be "
            "non-differentiable or a black box; variance grows with the number of variables."
        )
    if "rsample" in caps and "score_function" not in caps:
        tips.append("Needs an objective that is differentiable in the samples ``z``.")
    if "hard" in caps:
        tips.append("Forward samples can be exactly discrete: the model never sees a relaxed value.")
    else:
        tips.append(
            "Forward samples are continuous: the objective must accept values between the "
            "discrete states."
        )
    if "log_prob" in caps:
        tips.append("Has ``log_prob``: usable as a latent ``pyro.sample`` site of an ELBO (see :doc:`/guides/pyro`).")
    else:
        tips.append(
            "No ``log_prob``: it serves :meth:`~relaxit_core.EstimatorBase.estimate` and ``rsample``, "
            "but cannot be a latent site of a Pyro ELBO."
        )
    try:
        k = max(int(getattr(est, "min_num_samples", 1)) for est in _instances(cls))
    except ValueError:
        k = 1
    if k >= 2:
        tips.append(f"Needs ``num_samples >= {k}`` (under some configs).")
    return tips


# ------------------------------------------------------------------------- example
def example_code(info: Any) -> str:
    """A runnable example of ``estimate`` for any registered estimator."""
    cls = info.cls
    est = _default_instance(cls)
    config = est.config.model_dump(mode="json")
    num_samples = max(4, int(getattr(est, "min_num_samples", 1)))
    return textwrap.dedent(
        f"""\
        import torch
        import relaxit

        est = relaxit.build({config!r})
        # example tensor arguments for a batch of 3
        params = {{
            k: v.detach().requires_grad_(v.is_floating_point())
            for k, v in est.example_params((3,), generator=torch.Generator().manual_seed(0)).items()
        }}


        def objective(z):  # samples [S, 3, *event] -> one loss per sample, [S]
            return (z - 0.45).pow(2).flatten(1).sum(-1)


        out = est.estimate(objective, num_samples={num_samples}, **params)
        out.surrogate.backward()  # the gradient estimate lands in params[...].grad
        print("samples:", tuple(out.samples.shape), "value:", round(out.value.item(), 4))
        for k, v in params.items():
            if v.grad is not None:
                print(f"d value / d {{k}}:", v.grad.shape == v.shape and bool(torch.isfinite(v.grad).all()))

        law = est.distribution(**params)  # a Pyro TorchDistribution
        print("law:", type(law).__name__, "batch", tuple(law.batch_shape), "event", tuple(law.event_shape))
        """
    )


def run_example(code: str) -> str:
    """Run ``code`` with a fixed seed and return what it printed (raises on failure)."""
    import torch

    buf = io.StringIO()
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<relaxit docs example>", "exec"), {"__name__": "__docs_example__"})
    finally:
        torch.random.set_rng_state(state)
    return buf.getvalue()


# ------------------------------------------------------------------------- pages
def render_method_page(info: Any, *, run: bool = True) -> str:
    """The reST page of one registered estimator."""
    cls = info.cls
    qual = f"{cls.__module__}.{cls.__qualname__}"
    title = info.name
    out = [f".. _method-{info.name}:", "", title, "=" * len(title), ""]
    out += [info.summary or "(no summary)", ""]
    facts = [
        ("Families", ", ".join(f"``{f}``" for f in info.families)),
        ("Parameters", _params_text(cls)),
        ("Capabilities", ", ".join(f"``{c}``" for c in _capability_order() if c in {x.value for x in info.capabilities})),
        ("Reference", rst_escape(info.reference) or "**missing**"),
        ("Class", f":class:`{qual}`"),
        ("Module", f":mod:`{cls.__module__}`"),
        ("Provided by", f"``{info.provider}``"),
    ]
    out += [".. list-table::", "   :stub-columns: 1", "   :widths: 1 4", ""]
    for k, v in facts:
        out += [f"   * - {k}", f"     - {v}"]
    out.append("")

    instances = _instances(cls)
    if len({e.capabilities for e in instances}) > 1:
        out += ["Capabilities by config", "----------------------", ""]
        out.append(
            _list_table(
                ["config", "capabilities"],
                [
                    (f"``{_config_diff(e)}``", ", ".join(f"``{c}``" for c in _capability_order() if c in {x.value for x in e.capabilities}))
                    for e in instances
                ],
                widths="2 5",
            )
        )

    out += ["When to use it", "--------------", ""]
    out += [f"- {tip}" for tip in when_to_use(info)] + [""]

    out += ["The method", "----------", ""]
    out += [f".. autoclass:: {qual}", "   :no-members:", "   :no-special-members:", ""]

    out += ["Configuration", "-------------", ""]
    rows = config_rows(info.config_schema)
    if rows:
        out.append(
            "Fields of the config (rendered from its JSON schema; ``name`` is "
            f"``\"{info.name}\"``). Unknown fields and out-of-bounds values raise "
            ":class:`~relaxit_core.ConfigError`."
        )
        out.append("")
        out.append(
            _list_table(
                ["field", "type", "default", "bounds", "description"],
                [(f"``{f}``", rst_escape(t), f"``{d}``", rst_escape(b), rst_escape(desc)) for f, t, d, b, desc in rows],
                widths="2 3 2 2 6",
            )
        )
    else:
        out += ["This estimator has no config fields besides ``name``.", ""]
    dumped = _default_instance(cls).config.model_dump(mode="json")
    several = len(info.families) > 1
    out += [
        "As YAML (the default config" + (", with ``family`` set to the first family: it is required" if several else "") + "):",
        "", ".. code-block:: yaml", "",
    ]
    out += [f"   {k}: {json.dumps(v)}" for k, v in dumped.items()] + [""]

    out += ["Example", "-------", ""]
    code = example_code(info)
    out += [".. code-block:: python", "", _indent(code, 3), ""]
    if run:
        printed = run_example(code)
        out += ["Output (run when these docs were built):", "", ".. code-block:: text", "", _indent(printed.rstrip() or "(nothing)", 3), ""]
    return "\n".join(out).rstrip() + "\n"


def render_methods_index(infos: list[Any]) -> str:
    out = ["Methods", "=======", ""]
    out.append(
        "Every registered estimator, generated from the registry when these docs were built "
        "(third-party plugins installed at that time included). See the "
        ":doc:`capability matrix </generated/capabilities>` to compare them."
    )
    if not infos:
        return "\n".join(out + ["", "**No estimator is registered in the environment that built these docs.**", ""])
    out += ["", ".. toctree::", "   :hidden:", ""]
    out += [f"   {info.name}" for info in infos] + [""]
    out.append(
        _list_table(
            ["method", "families", "summary"],
            [(f":doc:`{info.name}`", ", ".join(info.families), info.summary) for info in infos],
            widths="2 2 6",
        )
    )
    return "\n".join(out)


def render_matrix(infos: list[Any]) -> str:
    """The capability matrix: one row per estimator, families and capabilities as columns."""
    from relaxit_core import FAMILIES

    caps = _capability_order()
    out = [".. _capability-matrix:", "", "Capability matrix", "=================", ""]
    out.append(
        "Generated from the registry when these docs were built. ``✓``: the estimator has the "
        "capability under its default config; ``(✓)``: only under some configs (e.g. "
        "``hard=True``); blank: never. Family columns mark the discrete targets it serves "
        "(``●`` its first family; an estimator serving several takes a required ``family``). Capabilities:"
    )
    out.append("")
    out += [f"- ``{c}``: {_CAP_DESCRIPTIONS.get(c, '')}" for c in caps]
    out.append("")
    rows = []
    for info in infos:
        default_caps = _default_capabilities(info.cls)
        class_caps = {c.value for c in info.capabilities}
        row = [f":doc:`{info.name} <methods/{info.name}>`"]
        row += ["●" if fam == info.family else ("○" if fam in info.families else "") for fam in FAMILIES]
        row += ["✓" if c in default_caps else ("(✓)" if c in class_caps else "") for c in caps]
        rows.append(row)
    if rows:
        out.append(_list_table(["estimator", *FAMILIES, *caps], rows))
    return "\n".join(out)


def render_plugin_module(module: str, estimator_classes: list[type]) -> str:
    """API page of one plugin module: its docstring, laws and helpers (estimator classes are
    documented on their method pages)."""
    title = f"``{module}``"
    out = [title, "=" * len(title), ""]
    links = ", ".join(f":class:`{c.__qualname__} <{c.__module__}.{c.__qualname__}>`" for c in estimator_classes)
    out += [f".. automodule:: {module}", "   :members:"]
    out += [f"   :exclude-members: {', '.join(c.__qualname__ for c in estimator_classes)}", ""]
    out += [f"Estimators of this module (documented on their method pages): {links}.", ""]
    return "\n".join(out)


def render_plugins_index(modules: list[str]) -> str:
    out = ["Plugin modules", "==============", ""]
    out.append("The modules that provide the registered estimators: their laws and helpers.")
    out += ["", ".. toctree::", "   :maxdepth: 1", ""]
    out += [f"   {m}" for m in modules] + [""]
    return "\n".join(out)


def render_checks() -> str:
    """The kit's checks with the capabilities each requires (included by ``api/testing``)."""
    from relaxit_core.testing import CHECKS

    rows = [
        (f"``{c.name}``", ", ".join(f"``{r.value}``" for r in sorted(c.requires, key=lambda r: r.value)) or "(always)", rst_escape(c.description))
        for c in CHECKS
    ]
    return _list_table(["check", "requires", "what it checks"], rows, widths="2 2 6")


def generate(*, run: bool = True) -> dict[str, str]:
    """Every generated page, as ``{relative path: content}`` (paths under ``generated/``)."""
    import relaxit

    infos = relaxit.available()
    pages = {
        "methods/index.rst": render_methods_index(infos),
        "capabilities.rst": render_matrix(infos),
        "checks.inc": render_checks(),
    }
    modules: dict[str, list[type]] = {}
    for info in infos:
        pages[f"methods/{info.name}.rst"] = render_method_page(info, run=run)
        modules.setdefault(info.cls.__module__, []).append(info.cls)
    for module, classes in sorted(modules.items()):
        pages[f"api/plugins/{module}.rst"] = render_plugin_module(module, classes)
    pages["api/plugins/index.rst"] = render_plugins_index(sorted(modules))
    return pages


def write_pages(root: Path, pages: dict[str, str]) -> list[Path]:
    """Write ``pages`` under ``root``, touching only files whose content changed, and remove
    stale ``.rst`` files (an estimator that is no longer registered)."""
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for rel, text in pages.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    keep = {(root / rel).resolve() for rel in pages}
    for path in root.rglob("*.rst"):
        if path.resolve() not in keep:
            path.unlink()
    return written


# ------------------------------------------------------------------------- sphinx
def _on_builder_inited(app: Any) -> None:
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    log = logging.getLogger(__name__)
    from relaxit_core.registry import registry

    with warnings.catch_warnings():  # reported below as Sphinx warnings (errors under -W)
        warnings.simplefilter("ignore")
        failed = registry.failed_plugins
    for plugin, why in sorted(failed.items()):
        log.warning("relaxit_docgen: plugin %r is missing from these docs: %s", plugin, why)
    try:
        pages = generate(run=app.config.relaxit_docgen_run_examples)
    except Exception as exc:  # noqa: BLE001 - fail the build with the example's traceback
        raise ExtensionError(f"relaxit_docgen: generating the registry pages failed:\n{traceback.format_exc()}") from exc
    written = write_pages(Path(app.srcdir) / GENERATED_DIR, pages)
    log.info("relaxit_docgen: %d generated pages (%d changed)", len(pages), len(written))


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("relaxit_docgen_run_examples", True, "env")
    app.connect("builder-inited", _on_builder_inited)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
