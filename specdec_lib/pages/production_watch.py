"""Notebook page 08 · production watch: a live chart of ``watch`` behind Start / Stop buttons (widgets).

Thin over ``specdec_lib.watch``: the page only collects the controls into a ``monitoring.WatchPlan`` and a source,
runs ``watch.watch`` in a background thread, and appends each record's window figures to the chart. Everything
goes to the run folder as it is read (the same folder ``specdec watch`` writes), so Stop, a kernel restart or a
crash keeps what was measured; ``watch.load_watch(path)`` gives it back as a DataFrame.
"""

from __future__ import annotations

import html
import os
import threading
from dataclasses import dataclass
from typing import Callable

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from specdec_lib import decision, monitoring, watch

DEFAULT_ENDPOINT_URL = "http://127.0.0.1:8000"
MESSAGE_CLASS = "specdec-message"  # where pages show errors (the notebook tests read it)


@dataclass
class WatchPage:
    """The page and its parts by name (for tests): ``start()``/``stop()`` are what the buttons call."""

    widget: widgets.Widget
    controls: dict
    figures: dict
    message: widgets.HTML
    start: Callable[[], None]
    stop: Callable[[], None]
    state: dict  # "thread", "run_path", "records", "status"


def _figure(plan: monitoring.WatchPlan) -> go.FigureWidget:
    fig = go.FigureWidget(make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                                        subplot_titles=("Acceptance over the rolling window (alpha, per-token)",
                                                        "P99 latency over the rolling window (ms)")))
    fig.add_scatter(x=[], y=[], mode="lines+markers", name="alpha (all engines)", row=1, col=1)
    fig.add_scatter(x=[], y=[], mode="lines+markers", name="P99 TPOT (ms)", row=2, col=1)
    fig.add_scatter(x=[], y=[], mode="lines+markers", name="P99 TTFT (ms)", row=2, col=1)
    for alpha, label in ((decision.ALPHA_OFF_BELOW, "off below"), (decision.ALPHA_WIN_ABOVE, "win above")):
        fig.add_hline(y=alpha, line_dash="dot", annotation_text=f"{label} {alpha}", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="alpha", row=1, col=1)
    fig.update_yaxes(title_text="ms", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="seconds since start", row=2, col=1)
    fig.update_layout(height=520, margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h"))
    return fig


def _append(fig: go.FigureWidget, rec: dict) -> None:
    if rec.get("kind") != "tick":
        return
    w = rec["window"]
    acc = w.get("acceptance") or {}
    lat = w.get("latency") or {}
    ms = lambda key: None if (lat.get(key) or {}).get("p99") is None else lat[key]["p99"] * 1e3  # noqa: E731
    with fig.batch_update():
        for trace, y in zip(fig.data[:3], (acc.get("alpha"), ms("tpot_s"), ms("ttft_s"))):
            trace.x = tuple(trace.x) + (rec["elapsed_s"],)
            trace.y = tuple(trace.y) + (y,)


def production_watch_page(k: int = 4) -> WatchPage:
    """Start / Stop a watch on an endpoint's /metrics or a Prometheus server; the chart follows as records arrive."""
    style = {"description_width": "180px"}
    wide = widgets.Layout(width="520px")
    controls = {
        "source": widgets.ToggleButtons(options=[("vLLM /metrics", "endpoint"), ("Prometheus", "prometheus")],
                                        value="endpoint", description="Read from", style=style),
        "url": widgets.Text(value=os.environ.get("SPECDEC_ENDPOINT", "").strip() or DEFAULT_ENDPOINT_URL,
                            description="URL", style=style, layout=wide),
        "k": widgets.BoundedIntText(value=k, min=1, max=32, description="Planned k", style=style, layout=wide),
        "interval_s": widgets.BoundedFloatText(value=5.0, min=0.2, max=600, description="Read every (s)",
                                               style=style, layout=wide),
        "window_s": widgets.BoundedFloatText(value=60.0, min=0.2, max=86400, description="Rolling window (s)",
                                             style=style, layout=wide),
        "duration_s": widgets.BoundedFloatText(value=600.0, min=1, max=86400, description="Stop after (s)",
                                               style=style, layout=wide),
        "p99_tpot_ms": widgets.FloatText(value=0.0, description="Plan P99 TPOT (ms, 0: none)", style=style,
                                         layout=wide),
        "p99_ttft_ms": widgets.FloatText(value=0.0, description="Plan P99 TTFT (ms, 0: none)", style=style,
                                         layout=wide),
        "runs_dir": widgets.Text(value="data/runs", description="Run folders in", style=style, layout=wide),
        "start": widgets.Button(description="Start", button_style="success", icon="play"),
        "stop": widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True),
    }
    message = widgets.HTML()
    message.add_class(MESSAGE_CLASS)
    flags = widgets.HTML()
    plan0 = monitoring.WatchPlan(k)
    fig = _figure(plan0)
    state: dict = {"thread": None, "run_path": None, "records": 0, "status": None, "stop_event": None}

    def show(text: str, error: bool = False) -> None:
        color = "#b00020" if error else "#333"
        message.value = f'<div style="color:{color}">{html.escape(text)}</div>'

    def on_record(rec: dict) -> None:
        state["records"] += 1
        _append(fig, rec)
        if rec.get("kind") == "error":
            show(f"read failed (the watch goes on): {rec['detail']}", error=True)
        flags.value = ("<b>Flags:</b> " + html.escape("; ".join(rec["flags"]))) if rec.get("flags") else ""

    def run(source, plan, c) -> None:
        try:
            res = watch.watch(source, plan, runs_dir=c["runs_dir"].value, duration_s=c["duration_s"].value,
                              interval_s=c["interval_s"].value, window_s=c["window_s"].value,
                              stop_event=state["stop_event"], on_record=on_record)
            state.update(run_path=res.run_path, status=res.status)
            show(f"{res.status}: {res.records} records in {res.run_path} (watch.load_watch loads them)")
        except Exception as exc:  # shown on the page, not as a traceback in a thread
            state["status"] = "failed"
            show(f"watch stopped: {type(exc).__name__}: {exc}", error=True)
        finally:
            controls["start"].disabled, controls["stop"].disabled = False, True

    def start() -> None:
        if state["thread"] is not None and state["thread"].is_alive():
            return
        c = controls
        try:
            ms = lambda v: v / 1e3 if v > 0 else None  # noqa: E731 - ms at the edge
            plan = monitoring.WatchPlan(c["k"].value, p99_tpot_s=ms(c["p99_tpot_ms"].value),
                                        p99_ttft_s=ms(c["p99_ttft_ms"].value))
            if c["source"].value == "endpoint":
                from specdec_lib.endpoint import EndpointClient

                source = watch.EndpointSource(EndpointClient(c["url"].value.strip()))
            else:
                source = watch.PrometheusSource(c["url"].value.strip())
            if c["window_s"].value < c["interval_s"].value:
                raise ValueError("the rolling window must be at least one read interval")
        except ValueError as exc:
            show(str(exc), error=True)
            return
        with fig.batch_update():
            for trace in fig.data[:3]:
                trace.x, trace.y = (), ()
        state.update(records=0, status="running", run_path=None, stop_event=threading.Event())
        c["start"].disabled, c["stop"].disabled = True, False
        show(f"watching {source.description} every {c['interval_s'].value:g} s ...")
        state["thread"] = threading.Thread(target=run, args=(source, plan, c), daemon=True)
        state["thread"].start()

    def stop() -> None:
        if state["stop_event"] is not None:
            state["stop_event"].set()

    controls["start"].on_click(lambda _b: start())
    controls["stop"].on_click(lambda _b: stop())
    form = widgets.VBox([controls[n] for n in ("source", "url", "k", "interval_s", "window_s", "duration_s",
                                               "p99_tpot_ms", "p99_ttft_ms", "runs_dir")]
                        + [widgets.HBox([controls["start"], controls["stop"]]), message, flags])
    page = widgets.VBox([form, fig])
    return WatchPage(widget=page, controls=controls, figures={"watch": fig}, message=message, start=start,
                     stop=stop, state=state)
