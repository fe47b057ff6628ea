"""05 · Load test with and without speculation: closed-loop concurrency levels against one or two endpoints,
percentiles side by side; runs in the background with progress and Cancel (`live.BackgroundRun`)."""

from __future__ import annotations

import html

import ipywidgets as widgets

from specdec_lib import rules
from specdec_lib.pages.base import FigureSlot, Page, grid, guarded, layout, message_html, new_message
from specdec_lib.pages.controls import STYLE, WIDE, int_control, text_control
from specdec_lib.pages.live import (
    BASELINE_DEMO_COMMAND,
    DEFAULT_ENDPOINT_URL,
    LOCAL_DEMO_COMMAND,
    BackgroundRun,
    autorun_requested,
    baseline_url_default,
    discover,
    endpoint_url_default,
    parse_float_list,
    requests_or_note,
    unreachable_text,
)

LATENCY_KEYS = (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E", "e2e"))
RUNS_DIR = "runs"


def _opt(value, fmt: str, none: str = "–") -> str:
    return none if value is None else format(value, fmt)


def level_percentiles(latency: dict, metrics: tuple[str, ...]) -> dict[str, float | None]:
    """{"TPOT p50": s, "TPOT p99": s, ...} from a runs.latency_summary dict."""
    return {f"{label} p{q}": latency.get(f"{key}_p{q}_s") for label, key in LATENCY_KEYS if key in metrics
            for q in (50, 99)}


def load_test_text(spec_result, base_result) -> str:
    lines = []
    for name, result in (("with speculation", spec_result), ("baseline", base_result)):
        if result is None:
            continue
        for level in result.levels:
            lat = level.latency
            lines.append(f"{name} {level.label}: ok {lat['succeeded']}/{lat['requests']}, TPOT p50 "
                         f"{_opt(lat.get('tpot_p50_s'), '.4f', 'none')} s, p99 "
                         f"{_opt(lat.get('tpot_p99_s'), '.4f', 'none')} s")
    return "\n".join(lines)


def comparison_html(rows) -> str:
    """Milliseconds and percent change, as the CLI prints them."""
    head = ("<tr><th>level</th><th>metric</th><th>P50 base → spec</th><th>change</th><th>P99 base → spec</th>"
            "<th>change</th><th>P50 better, P99 worse?</th></tr>")

    def ms(v):
        return _opt(None if v is None else v * 1000, ".1f")

    def pct(v):
        return _opt(None if v is None else v * 100, "+.0f") + (" %" if v is not None else "")

    body = "".join(
        f"<tr><td>{html.escape(r.label)}</td><td>{r.metric.upper()}</td><td>{ms(r.baseline_p50_s)} → "
        f"{ms(r.speculative_p50_s)} ms</td><td>{pct(r.p50_change)}</td><td>{ms(r.baseline_p99_s)} → "
        f"{ms(r.speculative_p99_s)} ms</td><td>{pct(r.p99_change)}</td>"
        f"<td>{'<b>yes</b>' if r.p50_improves_p99_regresses else 'no'}</td></tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def load_test_page() -> Page:
    """Closed-loop load test at several concurrency levels, with and without speculation, percentiles side by side."""
    from specdec_lib import loadtest, plots
    from specdec_lib.endpoint import EndpointError

    notes: list[str] = []
    controls = {
        "endpoint_url": text_control(endpoint_url_default(), "URL with speculation", DEFAULT_ENDPOINT_URL),
        "baseline_url": text_control(baseline_url_default(), "URL without (optional)", "http://127.0.0.1:8001"),
        "concurrency_levels": text_control("1, 4", "Concurrency levels"),
        "requests_per_level": int_control(requests_or_note(16, notes), "Requests per level", 1, 5000),
        "max_tokens": int_control(128, "max_tokens", 1, 4096),
        "temperature": widgets.FloatSlider(value=0.0, min=0.0, max=rules.MAX_TEMPERATURE, step=0.05,
                                           description="Temperature", continuous_update=False, style=STYLE,
                                           layout=WIDE),
        "level": widgets.Dropdown(options=[], description="Chart level", style=STYLE),
    }
    run_button = widgets.Button(description="Run the load test", button_style="primary", icon="play")
    status, table, message = widgets.HTML(), widgets.HTML(), new_message()
    figures: dict = {}
    tpot_slot, ttft_slot = FigureSlot(figures, "tpot"), FigureSlot(figures, "ttft")
    state: dict = {"spec": None, "base": None}
    background = BackgroundRun(message, stale=(table,))

    def run_one(url: str, levels: list[int], stop_event):
        try:
            client, _ = discover(url)
            return loadtest.run_load_test(
                client, concurrency_levels=levels, requests_per_level=int(controls["requests_per_level"].value),
                temperatures=(float(controls["temperature"].value),), max_tokens=int(controls["max_tokens"].value),
                runs_dir=RUNS_DIR, stop_event=stop_event, progress=False)
        except EndpointError as exc:
            demo = LOCAL_DEMO_COMMAND if url == controls["endpoint_url"].value else BASELINE_DEMO_COMMAND
            raise ValueError(unreachable_text(url, exc, demo)) from None

    def draw() -> str | None:
        spec, base = state["spec"], state["base"]
        label = controls["level"].value
        if spec is None or label is None:
            return None
        s_level = next(lv for lv in spec.levels if lv.label == label)
        b_level = next((lv for lv in base.levels if lv.label == label), None) if base else None
        for slot, metrics, title in ((tpot_slot, ("tpot", "itl"), "TPOT and ITL"),
                                     (ttft_slot, ("ttft", "e2e"), "TTFT and E2E")):
            slot.show(plots.latency_percentiles_figure(
                level_percentiles(s_level.latency, metrics),
                level_percentiles(b_level.latency, metrics) if b_level else None,
                title=f"{title} at {label}"))
        return None

    def show(results) -> str | None:
        spec, base = results
        state.update(spec=spec, base=base)
        controls["level"].options = [lv.label for lv in spec.levels]
        controls["level"].value = spec.levels[-1].label
        draw()
        table.value = comparison_html(loadtest.compare_load_tests(base, spec)) if base else ""
        status.value = message_html(f"Done: {spec.run_path}" + (f" and {base.run_path}" if base else ""), "ok")
        if autorun_requested():
            print(load_test_text(spec, base))
        if spec.interrupted or (base is not None and base.interrupted):
            return "the load test was interrupted; the run folders hold what finished"
        if base is None:
            return ("no baseline URL: the chart shows speculation alone. Start one without speculation with: "
                    + BASELINE_DEMO_COMMAND)
        return None

    def run() -> str | None:
        levels = [int(v) for v in parse_float_list(controls["concurrency_levels"].value, "concurrency_levels", 1, 1024)]
        spec_url, base_url = controls["endpoint_url"].value, controls["baseline_url"].value.strip()
        for url, demo in ((spec_url, LOCAL_DEMO_COMMAND), (base_url, BASELINE_DEMO_COMMAND)):
            if url:
                try:
                    discover(url)  # say now, before anything starts, when a server does not answer
                except EndpointError as exc:
                    raise ValueError(unreachable_text(url, exc, demo)) from None
        status.value = message_html(f"Load test at concurrency {levels} against {spec_url}"
                                    + (f", then the baseline at {base_url}" if base_url else "") + "…", "info")

        def work(stop_event):
            spec = run_one(spec_url, levels, stop_event)
            base = None if not base_url or stop_event.is_set() else run_one(base_url, levels, stop_event)
            return spec, base

        per_server = len(levels) * int(controls["requests_per_level"].value)
        background.start(work, per_server * (2 if base_url else 1), RUNS_DIR, show)
        return None

    guarded_run = guarded(run, message, clear=False, stale=(table,))
    run_button.on_click(lambda _b: guarded_run())
    controls["level"].observe(lambda _c: guarded(draw, message)(), names="value")
    status.value = message_html(f"Nothing is sent until you press the button. No server? {LOCAL_DEMO_COMMAND} "
                                f"(and, for the baseline, {BASELINE_DEMO_COMMAND})", "info")
    widget = layout(grid(controls, list(controls)), widgets.HBox([run_button, background.cancel_button]),
                    background.progress, status, message, tpot_slot, ttft_slot, table)
    message.value = message_html("; ".join(notes), "warning") if notes else ""
    page = Page(widget=widget, controls=controls, figures=figures, message=message,
                outputs={"status": status, "table": table, "state": state, "run_button": run_button,
                         "background": background},
                refresh=guarded_run)
    if autorun_requested():
        run_button.click()
    return page
