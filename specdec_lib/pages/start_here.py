"""00 · Start here: every control of the scenario; the memory bar, the speedup curve and the verdict, all drawn
from one `evaluate(scenario)`."""

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
from specdec_lib.pages.controls import default_scenario, scenario_controls, scenario_from_controls

CONTROLS = ["target_model", "target_precision", "draft_model", "draft_precision", "gpu", "num_gpus",
            "tensor_parallel_size", "gpu_memory_utilization", "context_len", "temperature", "prompt_tokens",
            "output_tokens", "num_speculative_tokens", "qps", "alpha", "alpha_known", "target_config", "draft_config"]


def start_here_page(scenario=None, estimates=()) -> Page:
    """The whole chain for one scenario: memory, speedup vs alpha, load numbers, verdict with reasons.
    `estimates`: AcceptanceEstimates (e.g. `load_prediction(run).estimates()`) added to the scenario's own."""
    base = scenario or default_scenario()
    controls = {n: w for n, w in scenario_controls(base).items() if n in CONTROLS}
    memory_fig, alpha_fig = new_figure(), new_figure()
    summary, verdict, command, message = widgets.HTML(), widgets.HTML(), widgets.HTML(), new_message()
    state = {"scenario": base, "evaluation": None}

    def update() -> str | None:
        s = scenario_from_controls(base, controls)
        ev = evaluation(s, curves=False, estimates=tuple(estimates))
        state.update(scenario=s, evaluation=ev)
        if ev.memory is not None:
            update_figure_in_place(memory_fig, render.memory_figure(ev.memory))
        update_figure_in_place(alpha_fig, render.alpha_figure(ev))
        summary.value = render.summary_html(ev)
        verdict.value = render.verdict_html(ev)
        command.value = render.command_html(ev)
        problems = [e for e in (ev.memory_error, ev.load_error) if e] + list(ev.refusals)
        return "; ".join(dict.fromkeys(problems)) or None

    refresh = wire(controls, update, message, wait_s=SLOW_WAIT_S, stale=(summary, verdict, command))
    widget = layout(grid(controls, CONTROLS), message, verdict, summary, memory_fig, alpha_fig, command)
    return Page(widget=widget, controls=controls, figures={"memory": memory_fig, "alpha": alpha_fig},
                message=message, outputs={"summary": summary, "verdict": verdict, "command": command, "state": state},
                refresh=refresh)
