"""04 · Live: acceptance by temperature against a real endpoint, over the source's bands; runs in the background
with progress and Cancel (`live.BackgroundRun`). The result also says whether it applies to the page's scenario
(`acceptance.mismatch`): a sweep of another model or k is shown, never silently used as its evidence."""

from __future__ import annotations

import html

import ipywidgets as widgets

from specdec_lib import rules
from specdec_lib.pages.base import FigureSlot, Page, grid, guarded, layout, message_html, new_message
from specdec_lib.pages.controls import STYLE, default_scenario, int_control, text_control
from specdec_lib.pages.live import (
    DEFAULT_ENDPOINT_URL,
    LOCAL_DEMO_COMMAND,
    BackgroundRun,
    autorun_requested,
    discover,
    endpoint_url_default,
    parse_float_list,
    requests_or_note,
    unreachable_text,
)

RUNS_DIR = "runs"


def _opt(value, fmt: str, none: str = "–") -> str:
    return none if value is None else format(value, fmt)


def per_request_alphas(run_path, label: str, k: int | None) -> list[float]:
    """Per-request α (from each request's V1 acceptance rate and k) for one group of a run folder."""
    from specdec_lib import runs, speculation

    if not k:
        return []
    alphas = []
    for record in runs.load_run(run_path).records:
        rate = record.get("acceptance_rate")
        if record["label"] != label or record.get("error") is not None or rate is None:
            continue
        alphas.append(speculation.alpha_from_v1_rate(min(max(rate, 0.0), 1.0), k))
    return alphas


def sweep_table_html(results) -> str:
    head = ("<tr><th>T</th><th>requests ok</th><th>vLLM rate (accepted/draft)</th><th>α per token</th>"
            "<th>mean acceptance length</th><th>per-request P10 / P50 / P90 (V1 rate)</th><th>band</th>"
            "<th>status</th></tr>")
    rows = "".join(
        f"<tr><td>{r.temperature:g}</td><td>{r.succeeded}/{r.requests}</td><td>{_opt(r.v1_rate, '.2f')}</td>"
        f"<td>{_opt(r.alpha, '.2f')}</td><td>{_opt(r.mean_acceptance_length, '.2f')}</td>"
        f"<td>{_opt(r.per_request_p10, '.2f')} / {_opt(r.per_request_p50, '.2f')} / "
        f"{_opt(r.per_request_p90, '.2f')}</td><td>{html.escape(r.band or '–')}</td>"
        f"<td>{html.escape(r.status)}</td></tr>" for r in results)
    return f"<table>{head}{rows}</table>"


def sweep_text(results) -> str:
    """One line per temperature, printed in autorun mode so headless runs show the result in the cell output."""
    return "\n".join(f"T={r.temperature:g}: ok {r.succeeded}/{r.requests}, accepted {r.accepted_tokens} of "
                     f"{r.draft_tokens} draft tokens, vLLM rate {_opt(r.v1_rate, '.3f', 'none')}, alpha "
                     f"{_opt(r.alpha, '.3f', 'none')}, status {r.status}" for r in results)


def applies_html(run_path, scenario) -> str:
    """Whether the sweep is evidence for the page's scenario, class by class (`evaluate`'s own rule)."""
    from specdec_lib import acceptance, runs

    estimates = acceptance.estimates_from_run(runs.load_run(run_path))
    lines = []
    for c in scenario.workload:
        whys = [acceptance.mismatch(e, scenario, c.temperature) for e in estimates]
        used = [e for e, why in zip(estimates, whys) if why is None]
        lines.append(f"<li>{html.escape(c.name)} (T = {c.temperature:g}): " + (
            f"measured α {used[0].alpha:.3f} applies" if used else
            "not evidence for this scenario: " + html.escape("; ".join(dict.fromkeys(w for w in whys if w))
                                                            or "no temperature measured")) + "</li>")
    return f"<p>For the scenario <i>{html.escape(scenario.display_title)}</i>:</p><ul>{''.join(lines)}</ul>"


def live_acceptance_page(scenario=None) -> Page:
    """Sweep temperatures against a real endpoint; acceptance by temperature over the source's bands."""
    from specdec_lib import loadtest, plots
    from specdec_lib.endpoint import EndpointError

    base = scenario or default_scenario()
    notes: list[str] = []
    controls = {
        "endpoint_url": text_control(endpoint_url_default(), "Endpoint URL", DEFAULT_ENDPOINT_URL),
        "temperatures": text_control(", ".join(f"{t:g}" for t in loadtest.DEFAULT_TEMPERATURES), "Temperatures"),
        "requests_per_temperature": int_control(requests_or_note(20, notes), "Requests per temperature", 1, 1000),
        "max_tokens": int_control(128, "max_tokens", 1, 4096),
        "concurrency": int_control(4, "Concurrency", 1, 256),
        "histogram_temperature": widgets.Dropdown(options=[], description="Histogram at T", style=STYLE),
    }
    run_button = widgets.Button(description="Run the sweep", button_style="primary", icon="play")
    check_button = widgets.Button(description="Check the endpoint", icon="plug")
    status, table, applies, message = widgets.HTML(), widgets.HTML(), widgets.HTML(), new_message()
    figures: dict = {}
    temp_slot, hist_slot = FigureSlot(figures, "temperature"), FigureSlot(figures, "histogram")
    state: dict = {"sweep": None}
    background = BackgroundRun(message, stale=(table, applies))
    production_temperatures = sorted({c.temperature for c in base.workload})

    def check() -> str | None:
        url = controls["endpoint_url"].value
        try:
            _, info = discover(url)
        except EndpointError as exc:
            raise ValueError(unreachable_text(url, exc)) from None
        status.value = message_html(
            f"{url} answers: vLLM {info.vllm_version or '?'}, model {info.served_model!r}, speculation: "
            f"{info.num_speculative_tokens or 'not detected'} draft tokens per step", "ok")
        if not info.num_speculative_tokens:
            return "this server does not report speculative decoding: its acceptance cannot be measured"
        return None

    def draw_histogram() -> str | None:
        sweep = state["sweep"]
        if sweep is None or controls["histogram_temperature"].value is None:
            return None
        result = next(r for r in sweep.temperatures if r.temperature == controls["histogram_temperature"].value)
        alphas = per_request_alphas(sweep.run_path, result.label, result.num_speculative_tokens)
        hist_slot.show(plots.acceptance_histogram_figure(
            alphas, title=f"Per-request α at T = {result.temperature:g} ({len(alphas)} requests)"))
        return None

    def show(sweep) -> str | None:
        state["sweep"] = sweep
        results = sweep.temperatures
        temp_slot.show(plots.acceptance_by_temperature_figure(
            [r.temperature for r in results], [r.alpha for r in results], v1_rates=[r.v1_rate for r in results],
            production_temperatures=production_temperatures,
            title=f"Acceptance by temperature: {sweep.server.get('served_model', '')}"))
        table.value = sweep_table_html(results)
        applies.value = applies_html(sweep.run_path, base)
        status.value = message_html(f"Done: run folder {sweep.run_path}", "ok")
        controls["histogram_temperature"].options = [(f"{r.temperature:g}", r.temperature) for r in results]
        controls["histogram_temperature"].value = results[-1].temperature
        draw_histogram()
        if autorun_requested():
            print(sweep_text(results))
        return "the sweep was interrupted; the run folder holds what finished" if sweep.interrupted else None

    def run() -> str | None:
        note = check()
        if note:
            return note
        temperatures = parse_float_list(controls["temperatures"].value, "temperatures", 0.0, rules.MAX_TEMPERATURE)
        n = int(controls["requests_per_temperature"].value)
        url = controls["endpoint_url"].value
        client, _ = discover(url)
        status.value = message_html(f"Running {n} requests at each of {len(temperatures)} temperatures…", "info")

        def work(stop_event):
            try:
                return loadtest.run_temperature_sweep(
                    client, temperatures=temperatures, requests_per_temperature=n, runs_dir=RUNS_DIR,
                    max_tokens=int(controls["max_tokens"].value), concurrency=int(controls["concurrency"].value),
                    stop_event=stop_event, progress=False)
            except EndpointError as exc:
                raise ValueError(unreachable_text(url, exc)) from None

        background.start(work, n * len(temperatures), RUNS_DIR, show)
        return None

    guarded_run = guarded(run, message, clear=False, stale=(table, applies))
    run_button.on_click(lambda _b: guarded_run())
    check_button.on_click(lambda _b: guarded(check, message)())
    controls["histogram_temperature"].observe(lambda _c: guarded(draw_histogram, message)(), names="value")
    status.value = message_html(
        f"Nothing is sent until you press a button. No server? Start one with: {LOCAL_DEMO_COMMAND}", "info")
    widget = layout(grid(controls, list(controls)), widgets.HBox([run_button, check_button, background.cancel_button]),
                    background.progress, status, message, temp_slot, hist_slot, table, applies)
    message.value = message_html("; ".join(notes), "warning") if notes else ""
    page = Page(widget=widget, controls=controls, figures=figures, message=message,
                outputs={"status": status, "table": table, "applies": applies, "state": state,
                         "run_button": run_button, "check_button": check_button, "background": background},
                refresh=guarded_run)
    if autorun_requested():
        run_button.click()
    return page
