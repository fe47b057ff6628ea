"""07 · The decision and the memo: the verdict with its reasons, the command, a one-click memo and scenario files.
The page, the memo it exports and `specdec plan` render the same `evaluate(scenario)`."""

from __future__ import annotations

import html

import ipywidgets as widgets

from specdec_lib.pages import render
from specdec_lib.pages.base import (
    SLOW_WAIT_S,
    Page,
    evaluation,
    grid,
    guarded,
    layout,
    message_html,
    new_figure,
    new_message,
    update_figure_in_place,
    wire,
    with_file_inputs,
)
from specdec_lib.pages.controls import (
    decision_controls,
    default_scenario,
    scenario_from_controls,
    set_controls_from_scenario,
    text_control,
)

CONTROLS = ["target_model", "target_precision", "draft_model", "draft_precision", "gpu", "num_gpus",
            "tensor_parallel_size", "gpu_memory_utilization", "context_len", "temperature", "prompt_tokens",
            "output_tokens", "num_speculative_tokens", "qps", "alpha", "alpha_known", "slo", "monitoring_in_place",
            "acceptance_validated_at_production_temperature"]


def decision_memo_page(scenario=None, estimates=()) -> Page:
    """`estimates`: AcceptanceEstimates added to the scenario's own (its prediction_runs, its typed alpha)."""
    from specdec_lib import inputs, memo, runs
    from specdec_lib import scenario as scenario_module
    from specdec_lib.evaluate import evaluate

    state = {"base": scenario or default_scenario(), "scenario": None, "evaluation": None}
    controls = {n: w for n, w in decision_controls(state["base"]).items() if n in CONTROLS}
    files = {
        "scenario_path": text_control("scenario.toml", "Scenario file (TOML)"),
        "run_dir": text_control("", "Measurement run folder", "optional: runs/<time>-sweep"),
        "baseline_run_dir": text_control("", "Baseline run folder", "optional: runs/<time>-load"),
        "prediction_runs": text_control(",".join(state["base"].prediction_runs), "Prediction run folders",
                                        "optional, comma-separated: runs/<time>-predict"),
        "calibration": text_control(state["base"].calibration or "", "Calibration file",
                                    "optional: data/calibration/<file>.json (specdec calibrate)"),
        "memo_path": text_control("decision-memo.html", "Memo file"),
    }
    buttons = {
        "export": widgets.Button(description="Export the memo", button_style="primary", icon="file"),
        "save": widgets.Button(description="Save scenario", icon="save"),
        "load": widgets.Button(description="Load scenario", icon="folder-open"),
    }
    title, verdict, command, status, message = (widgets.HTML(), widgets.HTML(), widgets.HTML(), widgets.HTML(),
                                                new_message())
    fig = new_figure()

    def current():
        return with_file_inputs(scenario_from_controls(state["base"], controls), files["prediction_runs"].value,
                                files["calibration"].value)

    def update() -> str | None:
        s = current()
        ev = evaluation(s, curves=False, estimates=tuple(estimates))
        state.update(scenario=s, evaluation=ev)
        title.value = f"<h2>{html.escape(ev.title)}</h2>"
        if ev.memory is not None:
            update_figure_in_place(fig, render.memory_figure(ev.memory))
        verdict.value = render.verdict_html(ev)
        command.value = render.command_html(ev)
        problems = [e for e in (ev.memory_error, ev.load_error) if e] + list(ev.refusals)
        return "; ".join(dict.fromkeys(problems)) or None

    def export() -> str | None:
        status.value = ""
        run_dir, base_dir = files["run_dir"].value.strip(), files["baseline_run_dir"].value.strip()
        run = runs.load_run(run_dir) if run_dir else None
        baseline = runs.load_run(base_dir) if base_dir else None
        s = current()
        if run is not None:
            resolved = inputs.resolve(s)
            ev = evaluate(s, run=run, estimates=tuple(estimates) + resolved.estimates,
                          calibration=resolved.step_factors)
        else:
            ev = evaluation(s, estimates=tuple(estimates))
        path = memo.write_memo_html(ev, files["memo_path"].value.strip() or "decision-memo.html",
                                    baseline_run=baseline)
        status.value = (f"<div style='color:#1b5e20'>Memo written: <a href='{html.escape(path.name)}' "
                        f"target='_blank'>{html.escape(str(path.resolve()))}</a> (self-contained HTML, opens "
                        "offline)</div>")
        return None

    def save() -> str | None:
        status.value = ""
        path = scenario_module.save_scenario(current(), files["scenario_path"].value.strip())
        status.value = message_html(f"Scenario saved: {path.resolve()}", "ok")
        return None

    def load_file() -> str | None:
        status.value = ""
        loaded = scenario_module.load_scenario(files["scenario_path"].value.strip())
        state["base"] = loaded
        refresh.hold[0] = True
        try:
            set_controls_from_scenario(controls, loaded)
            files["prediction_runs"].value = ",".join(loaded.prediction_runs)
            files["calibration"].value = loaded.calibration or ""
        finally:
            refresh.hold[0] = False
        refresh()
        status.value = message_html(f"Scenario loaded: {loaded.display_title}", "ok")
        return None

    refresh = wire(controls, update, message, wait_s=SLOW_WAIT_S, stale=(verdict, command))
    evidence_changed = guarded(update, message, stale=(verdict, command))
    for name in ("prediction_runs", "calibration"):
        files[name].observe(lambda _c: None if refresh.hold[0] else evidence_changed(), names="value")
    for name, fn in (("export", export), ("save", save), ("load", load_file)):
        action = guarded(fn, message, stale=(status,))
        buttons[name].on_click(lambda _b, g=action: g())
    widget = layout(grid(controls, CONTROLS), message, title, verdict, fig, command,
                    widgets.VBox(list(files.values())), widgets.HBox(list(buttons.values())), status)
    return Page(widget=widget, controls={**controls, **files}, figures={"memory": fig}, message=message,
                outputs={"title": title, "verdict": verdict, "command": command, "status": status,
                         "buttons": buttons, "state": state},
                refresh=refresh)
