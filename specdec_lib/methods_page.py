"""Notebook page 03b: every speculative method side by side (methods.compare_methods), with the scenario controls.

Thin: the numbers come from `methods.compare_methods`; this module only converts units at the display edge
(GiB, ms, tokens) and draws. The lead moves it into the pages package at merge.
"""
from __future__ import annotations

import html
import math

import ipywidgets as widgets
import plotly.graph_objects as go

from . import display, methods
from . import widgets as ui

CURVE_POINTS = 12


def _cell(value, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "gib":
        return display.format_gib(value, 2)
    if kind == "x":
        return f"{value:.2f}×" if math.isfinite(value) else ("∞" if value > 0 else "–")
    if kind == "count":
        return display.format_count(value)
    if kind == "alpha":
        return f"{value:.2f}"
    if kind == "qps":
        return f"{value:.3g}"
    return html.escape(str(value))


def comparison_table_html(c: methods.MethodComparison) -> str:
    """The comparison as an HTML table; the pick in bold; every acceptance says where it comes from."""
    head = ("method", "drafter", "extra weights / GPU", "KV tokens taken", "max seqs at context", "cost ratio c",
            "α", "acceptance from", "k", "speedup @ batch 1", "speedup @ QPS", "crossover batch", "crossover QPS")
    rows = []
    for r in c.rows:
        if not r.applies:
            cells = [_cell(r.method), f"<i>{_cell(r.why_not)}</i>"] + ["–"] * (len(head) - 2)
        else:
            cells = [_cell(r.method), _cell(r.drafter or "none"), _cell(r.extra_weights_bytes_per_gpu, "gib"),
                     _cell(r.kv_tokens_taken, "count"), _cell(r.max_concurrent_seqs, "count"),
                     _cell(r.cost_ratio, "alpha"), _cell(r.alpha, "alpha"),
                     f"<span title='{html.escape(r.acceptance_origin)}'>{_cell(r.acceptance)}</span>",
                     _cell(r.k), _cell(r.speedup_batch1, "x"), _cell(r.speedup_at_qps, "x"),
                     _cell(r.crossover_batch), _cell(r.crossover_qps, "qps")]
        style = " style='font-weight:bold'" if r.method == c.best else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
    return f"<table class='specdec-methods'>{header}{''.join(rows)}</table>"


def reasons_html(c: methods.MethodComparison) -> str:
    pick = f"<b>Run: {html.escape(c.best)}</b>" if c.best else "<b>Leave speculation off</b>"
    items = "".join(f"<li>{html.escape(x)}</li>" for x in c.reasons)
    return f"<p>{pick} (QPS {c.qps:g})</p><ul>{items}</ul><details><summary>The rule</summary><pre>" \
           f"{html.escape(c.rule)}</pre></details>"


def curves_figure(c: methods.MethodComparison) -> go.Figure:
    fig = go.Figure()
    for method, (xs, ys) in c.curves.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=method))
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    fig.update_layout(title="Predicted speedup vs request rate, per method", xaxis_title="requests per second",
                      yaxis_title="speedup (x)", template="plotly_white", height=380)
    return fig


def methods_compared_page(scenario=None) -> ui.Page:
    """Controls (as on the other pages), the comparison table, the pick with its reasons, speedup vs QPS."""
    base = scenario or ui.default_scenario()
    controls = ui.scenario_controls(base)  # the same controls as the other pages
    message = ui.new_message()
    table, verdict = widgets.HTML(), widgets.HTML()
    figures: dict = {}
    slot = ui.FigureSlot(figures, "speedup_vs_qps")
    outputs: dict = {}

    def slow() -> str | None:
        s = ui.scenario_from_controls(base, controls)
        c = methods.compare_methods(s, curve_points=CURVE_POINTS)
        outputs["comparison"] = c
        table.value = comparison_table_html(c)
        verdict.value = reasons_html(c)
        slot.show(curves_figure(c))
        return None

    refresh = ui._wire(controls, lambda: None, message, slow=slow)
    body = widgets.VBox([ui._grid(controls, list(controls)), message, verdict, table, slot])
    return ui.Page(widget=body, controls=controls, figures=figures, message=message, outputs=outputs,
                   refresh=refresh)
