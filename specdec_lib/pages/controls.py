"""The controls a planner moves, and the `Scenario` they describe: a control changes the scenario, nothing else.

`scenario_controls(scenario)` builds one widget per scenario input (names match Scenario / RequestClass fields);
`scenario_from_controls(base, controls)` returns the scenario they describe; `set_controls_from_scenario` shows a
loaded scenario. Pages then render `evaluate(scenario)`: no page computes from widget values.

A multi-class workload is edited in a scenario file (or page 06): the per-class controls (temperature, alpha,
prompt and output tokens) are then disabled and the scenario's classes are kept as they are.
"""

from __future__ import annotations

import dataclasses

import ipywidgets as widgets

from specdec_lib import rules
from specdec_lib.scenario import SLO_KINDS, Scenario, with_changes

CONTEXT_LENGTHS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
TP_SIZES = (1, 2, 4, 8)
NO_DRAFT = "(none)"
STYLE = {"description_width": "170px"}
WIDE = widgets.Layout(width="460px")
CLASS_CONTROLS = ("temperature", "alpha", "alpha_known", "prompt_tokens", "output_tokens")


def _options_with(names: list[str], value: str | None) -> list[str]:
    """Catalog names, plus the scenario's own spelling (e.g. an "-Instruct" id) so the dropdown can show it."""
    return names if value is None or value in names else [value, *names]


def _int_options(values: tuple[int, ...], current: int) -> list[tuple[str, int]]:
    return [(f"{v:,}", v) for v in sorted(set(values) | {current})]


def scenario_controls(scenario: Scenario) -> dict[str, widgets.Widget]:
    """Every control a planner moves, preset from `scenario`."""
    from specdec_lib import catalog

    model_names = sorted(catalog.models())
    first = scenario.workload[0]
    c = {
        "target_model": widgets.Dropdown(options=_options_with(model_names, scenario.target_model),
                                         value=scenario.target_model, description="Target model"),
        "target_config": widgets.Text(value="", placeholder="…or a path to its config.json",
                                      description="Target config.json"),
        "draft_model": widgets.Dropdown(options=[NO_DRAFT, *_options_with(model_names, scenario.draft_model)],
                                        value=scenario.draft_model or NO_DRAFT, description="Draft model"),
        "draft_config": widgets.Text(value="", placeholder="…or a path to its config.json",
                                     description="Draft config.json"),
        "target_precision": widgets.Dropdown(options=sorted(catalog.precisions()), value=scenario.target_precision,
                                             description="Target precision"),
        "draft_precision": widgets.Dropdown(options=sorted(catalog.precisions()), value=scenario.draft_precision,
                                            description="Draft precision"),
        "gpu": widgets.Dropdown(options=list(catalog.gpus()), value=scenario.gpu, description="GPU"),
        "num_gpus": widgets.BoundedIntText(value=scenario.num_gpus, min=1, max=64, description="GPU count"),
        "tensor_parallel_size": widgets.Dropdown(options=list(TP_SIZES), value=scenario.tensor_parallel_size,
                                                 description="Tensor parallel"),
        "gpu_memory_utilization": widgets.FloatSlider(value=scenario.gpu_memory_utilization, min=0.5, max=0.98,
                                                      step=0.01, description="gpu_memory_utilization",
                                                      readout_format=".2f"),
        "context_len": widgets.SelectionSlider(options=_int_options(CONTEXT_LENGTHS, scenario.context_len),
                                               value=scenario.context_len, description="Context (tokens)"),
        "num_speculative_tokens": widgets.IntSlider(value=scenario.num_speculative_tokens, min=1, max=10,
                                                    description="k (draft tokens)"),
        "qps": widgets.FloatLogSlider(value=scenario.qps, base=10, min=-2, max=2, step=0.05,
                                      description="QPS (all replicas)", readout_format=".2f"),
        "temperature": widgets.FloatSlider(value=first.temperature, min=0.0, max=rules.MAX_TEMPERATURE, step=0.05,
                                           description="Temperature", readout_format=".2f"),
        "prompt_tokens": widgets.BoundedIntText(value=first.prompt_tokens, min=1, max=1_000_000,
                                                description="Prompt tokens"),
        "output_tokens": widgets.BoundedIntText(value=first.output_tokens, min=1, max=1_000_000,
                                                description="Output tokens"),
        "alpha": widgets.FloatSlider(value=first.alpha if first.alpha is not None else 0.7, min=0.0, max=0.99,
                                     step=0.01, description="α (per-token)", readout_format=".2f"),
        "alpha_known": widgets.Checkbox(value=first.alpha is not None, indent=False,
                                        description="I state α (source: assumed)"),
    }
    for w in c.values():
        w.style = STYLE
        if not isinstance(w, widgets.Checkbox):
            w.layout = WIDE
    for name in CLASS_CONTROLS:
        c[name].disabled = len(scenario.workload) > 1
    return c


def decision_controls(scenario: Scenario) -> dict[str, widgets.Widget]:
    """The scenario controls plus the framework's yes/no questions (SLO kind, monitoring, validation)."""
    c = scenario_controls(scenario)
    c["slo"] = widgets.Dropdown(options=list(SLO_KINDS), value=scenario.slo, description="Primary SLO",
                                style=STYLE, layout=WIDE)
    c["monitoring_in_place"] = widgets.Checkbox(value=scenario.monitoring_in_place, indent=False,
                                                description="Acceptance monitoring is in place")
    c["acceptance_validated_at_production_temperature"] = widgets.Checkbox(
        value=scenario.acceptance_validated_at_production_temperature, indent=False,
        description="Acceptance validated at production temperature")
    return c


def _model_name(c: dict, name: str, config: str) -> str | None:
    """The dropdown's model, or the typed config.json path (which `catalog.get_model` reads) when one is typed."""
    from specdec_lib import catalog

    typed = c[config].value.strip() if config in c else ""
    chosen = c[name].value
    if name == "draft_model" and chosen == NO_DRAFT and not typed:
        return None
    if typed:
        catalog.model_from_hf_config(typed)  # a missing or unreadable file is said here, naming the path
    return typed or chosen


def scenario_from_controls(base: Scenario, c: dict[str, widgets.Widget]) -> Scenario:
    """The Scenario the controls describe (validation errors are the Scenario's own ValueErrors).

    Controls a page does not show keep the base scenario's values; the title stays derived unless the user set
    one (`scenario.with_changes`)."""
    changes: dict = {}
    if "target_model" in c:
        changes["target_model"] = _model_name(c, "target_model", "target_config")
    if "draft_model" in c:
        draft = _model_name(c, "draft_model", "draft_config")
        method = base.method
        if draft is None:
            method = "none" if base.method in ("draft_model", "eagle", "eagle3") else base.method
        elif method not in ("draft_model", "eagle", "eagle3"):
            method = "draft_model"
        changes.update(draft_model=draft, method=method)
    for name in ("target_precision", "draft_precision", "gpu", "slo"):
        if name in c:
            changes[name] = c[name].value
    for name in ("num_gpus", "tensor_parallel_size", "context_len", "num_speculative_tokens"):
        if name in c:
            changes[name] = int(c[name].value)
    for name in ("gpu_memory_utilization", "qps"):
        if name in c:
            changes[name] = float(c[name].value)
    for name in ("monitoring_in_place", "acceptance_validated_at_production_temperature"):
        if name in c:
            changes[name] = bool(c[name].value)
    if "tensor_parallel_size" in changes:
        tp = changes["tensor_parallel_size"]
        # vLLM 0.32's draft-model proposer refuses a draft TP other than the target's; a TP-1 draft stays TP 1.
        changes["draft_tensor_parallel_size"] = tp if base.draft_tensor_parallel_size != 1 or tp == 1 else 1
    if len(base.workload) == 1:
        changes["workload"] = (_request_class(base.workload[0], c),)
    return with_changes(base, **changes)


def _request_class(request_class, c: dict):
    changes: dict = {}
    if "temperature" in c:
        changes["temperature"] = float(c["temperature"].value)
    for name in ("prompt_tokens", "output_tokens"):
        if name in c:
            changes[name] = int(c[name].value)
    if "alpha" in c:
        known = c["alpha_known"].value if "alpha_known" in c else True
        changes["alpha"] = float(c["alpha"].value) if known else None
    return dataclasses.replace(request_class, **changes)


def set_controls_from_scenario(c: dict, scenario: Scenario) -> None:
    """Show a loaded scenario in the controls (options grow to hold names the catalog spells differently)."""
    first = scenario.workload[0]
    values = {
        "target_model": scenario.target_model, "draft_model": scenario.draft_model or NO_DRAFT,
        "target_precision": scenario.target_precision, "draft_precision": scenario.draft_precision,
        "gpu": scenario.gpu, "num_gpus": scenario.num_gpus, "tensor_parallel_size": scenario.tensor_parallel_size,
        "gpu_memory_utilization": scenario.gpu_memory_utilization, "context_len": scenario.context_len,
        "temperature": first.temperature, "num_speculative_tokens": scenario.num_speculative_tokens,
        "prompt_tokens": first.prompt_tokens, "output_tokens": first.output_tokens,
        "qps": scenario.qps, "alpha_known": first.alpha is not None, "slo": scenario.slo,
        "monitoring_in_place": scenario.monitoring_in_place,
        "acceptance_validated_at_production_temperature": scenario.acceptance_validated_at_production_temperature,
    }
    if first.alpha is not None:
        values["alpha"] = first.alpha
    for name, value in values.items():
        widget = c.get(name)
        if widget is None:
            continue
        if isinstance(widget, widgets.Dropdown) and value not in [o[1] if isinstance(o, tuple) else o
                                                                  for o in widget.options]:
            widget.options = [value, *widget.options]
        if isinstance(widget, widgets.SelectionSlider) and value not in [o[1] for o in widget.options]:
            widget.options = _int_options(tuple(o[1] for o in widget.options), value)
        widget.value = value
    for name in CLASS_CONTROLS:
        if name in c:
            c[name].disabled = len(scenario.workload) > 1
    for name in ("target_config", "draft_config"):
        if name in c:
            c[name].value = ""


def default_scenario() -> Scenario:
    from specdec_lib.scenario import DEFAULT_SCENARIO

    return DEFAULT_SCENARIO


def text_control(value: str, description: str, placeholder: str = "") -> widgets.Text:
    return widgets.Text(value=value, description=description, placeholder=placeholder, style=STYLE, layout=WIDE)


def int_control(value: int, description: str, low: int, high: int) -> widgets.BoundedIntText:
    return widgets.BoundedIntText(value=value, min=low, max=high, description=description, style=STYLE, layout=WIDE)
