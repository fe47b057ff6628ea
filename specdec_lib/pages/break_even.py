"""03 · Break-even and load: speedup vs alpha with the break-even line, and speedup vs request rate with the
crossover, capacity and the saturated region, for the scenario's request shape and replicas (`evaluate`)."""

from __future__ import annotations

import ipywidgets as widgets

from specdec_lib.pages import render
from specdec_lib.pages.base import (
    SLOW_WAIT_S,
    Page,
    evaluation,
    grid,
    layout,
    new_figure,
    new_message,
    update_figure_in_place,
    wire,
)
from specdec_lib.pages.controls import NO_DRAFT, default_scenario, scenario_controls, scenario_from_controls

CONTROLS = ["alpha", "alpha_known", "num_speculative_tokens", "qps", "prompt_tokens", "output_tokens", "target_model",
            "target_config", "target_precision", "draft_model", "draft_config", "draft_precision", "gpu", "num_gpus",
            "tensor_parallel_size", "context_len"]


def break_even_page(scenario=None) -> Page:
    """Speedup vs alpha and vs QPS for one deployment; "saturated" past its capacity, never a 0x curve."""
    base = scenario or default_scenario()
    controls = {n: w for n, w in scenario_controls(base).items() if n in CONTROLS}
    alpha_fig, qps_fig = new_figure(), new_figure()
    summary, message = widgets.HTML(), new_message()
    state = {"scenario": base, "evaluation": None}

    def update() -> str | None:
        if controls["draft_model"].value == NO_DRAFT and base.method in ("draft_model", "eagle", "eagle3"):
            raise ValueError("draft_model='(none)': choose a draft model to compare speculation with the baseline")
        s = scenario_from_controls(base, controls)
        ev = evaluation(s)
        state.update(scenario=s, evaluation=ev)
        if ev.load is None:
            raise ValueError(ev.load_error or "the load model could not run for this scenario")
        update_figure_in_place(alpha_fig, render.alpha_figure(ev))
        update_figure_in_place(qps_fig, render.qps_figure(ev))
        summary.value = render.summary_html(ev)
        if ev.load.saturated:
            return (f"saturated: {s.qps:g} requests/s exceeds the deployment's capacity "
                    f"({ev.load.capacity_qps:.3g} requests/s); {ev.load.replicas_needed} replicas needed")
        return None

    refresh = wire(controls, update, message, wait_s=SLOW_WAIT_S, stale=(summary,))
    widget = layout(grid(controls, CONTROLS), message, alpha_fig, qps_fig, summary)
    return Page(widget=widget, controls=controls, figures={"alpha": alpha_fig, "qps": qps_fig}, message=message,
                outputs={"summary": summary, "state": state}, refresh=refresh)
