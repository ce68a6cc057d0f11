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


def maths_section(cls: type) -> str:
    """The ``Maths:`` section of ``cls``'s docstring (:func:`relaxit_core.text.maths_section`)."""
    from relaxit_core.text import maths_section as read

    return read(cls)

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


def _json_type(spec: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in spec:
        ref = spec["$ref"].rsplit("/", 1)[-1]
        target = defs.get(ref)
        if target is None:
            return ref
        # a model (e.g. a temperature schedule) is named by its title, not "object"
        return target.get("title", ref) if target.get("type") == "object" else _json_type(target, defs)
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


# ------------------------------------------------------------------------- maths
MATHS_ENTRIES = ("Law", "Estimator", "Gradient", "Cost")
"""The entries of an estimator's ``Maths:`` docstring section (see guides/plugins)."""

# A citation of the paper's equation, section, theorem or algorithm; or the explicit admission
# "equation number not checked here" (shown on the page as written, so a reader knows).
_CITATION = re.compile(r"\b(eqs?\.|Eqs?\.|Sec\.|Secs\.|Section|Theorem|Thm\.|Prop\.|Proposition|Lemma|Alg\.|Algorithm|App\.|Appendix)|equation\s+number\s+not\s+checked\s+here")


def maths_entries(cls: type) -> dict[str, str]:
    """``{entry: reST}`` of the ``Maths:`` section's field list (``:Law:``, ``:Estimator:``...)."""
    out: dict[str, str] = {}
    current = None
    for line in maths_section(cls).splitlines():
        m = re.match(r"^:([^:]+):\s*(.*)$", line)
        if m:
            current = m.group(1).strip()
            out[current] = m.group(2)
        elif current is not None:
            out[current] += "\n" + line
    return {k: v.strip() for k, v in out.items()}


def maths_problems(cls: type) -> list[str]:
    """What the ``Maths:`` section of ``cls`` lacks under the convention (empty: complete)."""
    entries = maths_entries(cls)
    if not entries:
        return ["no 'Maths:' section with :Law:, :Estimator:, :Gradient:, :Cost: entries in the class docstring"]
    problems = [f"missing entry :{e}:" for e in MATHS_ENTRIES if e not in entries]
    for e in MATHS_ENTRIES[:3]:
        text = entries.get(e, "")
        if text and ":math:" not in text and ".. math::" not in text:
            problems.append(f":{e}: has no LaTeX (a :math: role or a .. math:: block)")
    if entries.get("Estimator") and not _CITATION.search(entries["Estimator"]):
        problems.append(":Estimator: cites no equation of the paper (eq. N, Sec. N, Theorem N, Alg. N...)")
    return problems


# ------------------------------------------------------------------------- example
def example_config(cls: type) -> dict[str, Any]:
    """The config of the generated example: the class's ``example_config`` (its typical use,
    e.g. ``k=3`` of a subset), else its default config (with its first family where
    ``family`` is required), else its first conformance config that builds."""
    candidates = [getattr(cls, "example_config", None), None, *getattr(cls, "conformance_configs", ())]
    for cfg in candidates:
        try:
            est = _default_instance(cls) if cfg is None else cls(dict(cfg))
            return est.config.model_dump(mode="json")
        except Exception:  # noqa: BLE001 - try the next candidate
            continue
    return _default_instance(cls).config.model_dump(mode="json")  # raises the config's own error


def _minimal_config(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the fields at their default (``name`` and ``family`` always kept)."""
    from pydantic_core import to_jsonable_python

    fields = cls.Config.model_fields
    out = {}
    for key, value in config.items():
        field = fields.get(key)
        if key in ("name", "family") or field is None or field.is_required():
            out[key] = value
            continue
        default = to_jsonable_python(field.get_default(call_default_factory=True))
        if default != value:
            out[key] = value
    return out


def example_code(info: Any) -> str:
    """A runnable example of ``estimate`` for any registered estimator."""
    cls = info.cls
    full = example_config(cls)
    est = cls(dict(full))
    config = _minimal_config(cls, full)
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

    entries = maths_entries(cls)
    if entries:
        out += ["Maths", "-----", ""]
        out += [
            ":math:`f` is the objective, :math:`S` is ``num_samples``; the equations are those of "
            "the papers cited (from the class docstring's ``Maths:`` section).",
            "",
        ]
        for label, text in entries.items():
            first, _, rest = text.partition("\n")
            body = first.strip() + ("\n" + textwrap.dedent(rest) if rest.strip() else "")
            out += [f"**{label}**", _indent(body.strip(), 3), ""]

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
    if not entries:
        out += [
            ".. note::",
            "",
            "   The docstring of this estimator gives no ``Maths:`` section (law, estimator, gradient "
            "and cost in LaTeX; see :ref:`maths-convention`).",
            "",
        ]
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
                [(f"``{f}``", rst_escape(t), f"``{d}``", rst_escape(b), desc) for f, t, d, b, desc in rows],
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


_CAP_SHORT = {
    "rsample": "rsample",
    "score_function": "score",
    "log_prob": "log_prob",
    "kl": "KL",
    "enumerate_support": "enum",
    "unbiased": "unbiased",
    "hard": "hard",
}
"""Column headers of the capability matrix (the legend above it spells each one out)."""


def _family_capabilities(cls: type, family: str) -> frozenset[str]:
    """Capabilities under the default config for ``family`` (``family=`` set when the
    config has that field); the class-level set when no such instance can be built."""
    fields = getattr(getattr(cls, "Config", None), "model_fields", {})
    try:
        est = cls({"family": family}) if "family" in fields else cls()
        return frozenset(c.value for c in est.capabilities)
    except Exception:  # noqa: BLE001
        return frozenset(c.value for c in cls.capabilities)


def render_matrix(infos: list[Any]) -> str:
    """The capability matrix: one table per family (the estimators that serve it), one
    column per capability, short headers spelled out in the legend."""
    from relaxit_core import FAMILIES

    caps = _capability_order()
    out = [".. _capability-matrix:", "", "Capability matrix", "=================", ""]
    out.append(
        "Generated from the registry when these docs were built: one table per discrete family, "
        "listing every estimator that serves it (an estimator that serves several families, such "
        "as ``reinforce``, appears in each; its config requires ``family``)."
    )
    out += ["", ".. rubric:: Legend", ""]
    out += [
        "- **✓** the estimator has the capability under its default config;",
        "- **(✓)** only under some configs (e.g. ``hard=True``; the method's page lists them);",
        "- blank: never.",
        "",
        "Columns:",
        "",
    ]
    out += [f"- **{_CAP_SHORT.get(c, c)}** (``{c}``): {_CAP_DESCRIPTIONS.get(c, '')}" for c in caps]
    out.append("")
    families = list(FAMILIES) + sorted({f for i in infos for f in i.families} - set(FAMILIES))
    for fam in families:
        members = [i for i in infos if fam in i.families]
        if not members:
            continue
        title = f"{fam} ({len(members)})"
        out += [title, "-" * len(title), ""]
        rows = []
        for info in members:
            default_caps = _family_capabilities(info.cls, fam)
            class_caps = {c.value for c in info.capabilities}
            row = [f":doc:`{info.name} <methods/{info.name}>`"]
            row += ["✓" if c in default_caps else ("(✓)" if c in class_caps else "") for c in caps]
            rows.append(row)
        table = _list_table(["estimator", *(_CAP_SHORT.get(c, c) for c in caps)], rows,
                            widths=" ".join(["8"] + ["2"] * len(caps)))
        out.append(table.replace("   :header-rows: 1\n", "   :header-rows: 1\n   :class: capability-matrix\n", 1))
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
        (f"``{c.name}``", ", ".join(f"``{r.value}``" for r in sorted(c.requires, key=lambda r: r.value)) or "(always)", c.description)
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


def strip_maths_section(lines: list[str]) -> None:
    """Remove the ``Maths:`` section from docstring ``lines`` in place (the method page shows
    it in its own section)."""
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == "Maths:")
    except StopIteration:
        return
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][:1].isspace()):
        end += 1
    del lines[start:end]


def _on_process_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    docname = getattr(app.env, "docname", "") or ""
    if what == "class" and docname.startswith(f"{GENERATED_DIR}/methods/"):
        strip_maths_section(lines)


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("relaxit_docgen_run_examples", True, "env")
    app.connect("builder-inited", _on_builder_inited)
    # before napoleon (priority 500), which would render the section in the class docstring
    app.connect("autodoc-process-docstring", _on_process_docstring, priority=400)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
