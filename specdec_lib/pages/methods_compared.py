"""03b · Which method: every speculative method that applies to the target side by side, and the pick.

The numbers are `Evaluation.methods` (`methods_compare.compare_methods`, computed once per scenario); the table,
the pick and its reasons are `report`'s rows, the ones the memo and `specdec plan` print. This page only draws.
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go

from specdec_lib import report
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

CONTROLS = ["target_model", "target_config", "draft_model", "draft_config", "target_precision", "draft_precision",
            "gpu", "num_gpus", "tensor_parallel_size", "gpu_memory_utilization", "context_len",
            "num_speculative_tokens", "qps", "temperature", "prompt_tokens", "output_tokens", "alpha", "alpha_known"]


def curves_figure(comparison) -> go.Figure:
    """Predicted speedup vs request rate per method (the forecast's curves; gaps past saturation)."""
    fig = go.Figure()
    for method, (xs, ys) in comparison.curves.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=method))
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    fig.update_layout(title="Predicted speedup vs request rate, per method", xaxis_title="requests per second",
                      yaxis_title="speedup (x)", xaxis_type="log", template="plotly_white", height=380)
    return fig


def methods_compared_page(scenario=None) -> Page:
    """The scenario controls, the comparison table with the pick and its reasons, speedup vs QPS per method."""
    base = scenario or default_scenario()
    controls = {n: w for n, w in scenario_controls(base).items() if n in CONTROLS}
    fig, table, message = new_figure(), widgets.HTML(), new_message()
    state = {"scenario": base, "evaluation": None}

    def update() -> str | None:
        s = scenario_from_controls(base, controls)
        ev = evaluation(s)
        comparison = ev.methods
        state.update(scenario=s, evaluation=ev, comparison=comparison)
        table.value = report.methods_html(comparison)
        update_figure_in_place(fig, curves_figure(comparison))
        return None

    refresh = wire(controls, update, message, wait_s=SLOW_WAIT_S, stale=(table,))
    widget = layout(grid(controls, CONTROLS), message, table, fig)
    return Page(widget=widget, controls=controls, figures={"speedup_vs_qps": fig}, message=message,
                outputs={"table": table, "state": state}, refresh=refresh)
