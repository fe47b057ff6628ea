"""Every plotly figure of the workbook: data in, `plotly.graph_objects.Figure` out.

The notebooks wrap these in `FigureWidget`; the memo embeds them with `fig.to_html`. Inputs are in base units
(bytes, seconds, requests/s); conversion to GiB and ms happens here, at the display edge. No function reads files
or talks to a server.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from specdec_lib.display import GIB
from specdec_lib.rules import ALPHA_OFF_BELOW, ALPHA_WIN_ABOVE, RATIO_MAX, RATIO_MIN

MEMORY_COLOURS = {
    "target weights": "#1f4e79",
    "draft weights": "#d9822b",
    "KV cache": "#3a9d5d",
    "reserve": "#8c8c8c",
    "not given to vLLM": "#d9d9d9",
}
BAND_COLOURS = {"off": "rgba(214, 39, 40, 0.10)", "borderline": "rgba(255, 187, 51, 0.15)",
                "win": "rgba(44, 160, 44, 0.10)"}
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), height=380,
              legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1))


def memory_components(plan) -> dict[str, dict[str, int]]:
    """Per-GPU bytes by component, with and without the draft, from a `memory.MemoryPlan`.

    Bars: target weights, draft weights, KV cache (what vLLM allocates), reserve (activation peak, non-torch
    memory, CUDA graphs), and what `gpu_memory_utilization` leaves to other processes.
    """
    reserve = plan.activation_peak_bytes_per_gpu + plan.non_torch_bytes_per_gpu + plan.cudagraph_bytes_per_gpu
    unused = plan.memory_bytes_per_gpu - plan.requested_bytes_per_gpu
    with_draft = {
        "target weights": plan.target_weights_bytes_per_gpu,
        "draft weights": plan.draft_weights_bytes_per_gpu,
        "KV cache": max(0, plan.kv_budget_bytes_per_gpu),
        "reserve": reserve,
        "not given to vLLM": unused,
    }
    kv_without = plan.requested_bytes_per_gpu - plan.target_weights_bytes_per_gpu - reserve
    without = {
        "target weights": plan.target_weights_bytes_per_gpu,
        "draft weights": 0,
        "KV cache": max(0, kv_without),
        "reserve": reserve,
        "not given to vLLM": unused,
    }
    return {"with draft": with_draft, "without draft": without}


def memory_figure(components: Mapping[str, Mapping[str, int]], *, memory_bytes_per_gpu: int | None = None,
                  title: str = "Memory per GPU") -> go.Figure:
    """Stacked horizontal bars (GiB) of each configuration's memory components; a line at the GPU's memory."""
    fig = go.Figure()
    configs = list(components)
    names: list[str] = []
    for config in configs:
        for name in components[config]:
            if name not in names:
                names.append(name)
    for name in names:
        values = [components[c].get(name, 0) / GIB for c in configs]
        fig.add_trace(go.Bar(
            name=name, y=configs, x=values, orientation="h", marker_color=MEMORY_COLOURS.get(name),
            text=[f"{v:.1f}" if v >= 2 else "" for v in values], textposition="inside",
            hovertemplate="%{y}: " + name + " %{x:.2f} GiB<extra></extra>"))
    if memory_bytes_per_gpu:
        fig.add_vline(x=memory_bytes_per_gpu / GIB, line_dash="dot", line_color="black",
                      annotation_text=f"GPU memory {memory_bytes_per_gpu / GIB:.1f} GiB", annotation_position="top")
    fig.update_layout(barmode="stack", title=title, xaxis_title="GiB per GPU", **LAYOUT)
    fig.update_layout(height=260)
    return fig


def speedup_vs_alpha_figure(alphas: Sequence[float], speedups_by_k: Mapping[int, Sequence[float]], *,
                            break_even_by_k: Mapping[int, float] | None = None,
                            marked_alpha: float | None = None, marked_label: str = "this workload",
                            title: str = "Speedup vs per-token acceptance alpha (batch 1)") -> go.Figure:
    """Speedup curves over alpha, one per k; a horizontal line at 1x and vertical break-even lines."""
    fig = go.Figure()
    _alpha_bands(fig, axis="x")
    for k, speedups in speedups_by_k.items():
        fig.add_trace(go.Scatter(x=list(alphas), y=list(speedups), mode="lines", name=f"k = {k}",
                                 hovertemplate="alpha %{x:.2f}: %{y:.2f}x<extra>k=" + str(k) + "</extra>"))
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    for k, alpha in (break_even_by_k or {}).items():
        if alpha is not None and 0 <= alpha <= 1:
            fig.add_vline(x=alpha, line_dash="dash", line_color="grey",
                          annotation_text=f"break-even k={k}: {alpha:.2f}", annotation_position="bottom right")
    if marked_alpha is not None:
        fig.add_vline(x=marked_alpha, line_color="#d62728",
                      annotation_text=f"{marked_label}: {marked_alpha:.2f}", annotation_position="top left")
    fig.update_layout(title=title, xaxis_title="alpha (per-token acceptance probability)",
                      yaxis_title="speedup (x)", xaxis_range=[0, 1], **LAYOUT)
    return fig


def speedup_vs_load_figure(x: Sequence[float], speedups: Mapping[str, Sequence[float]] | Sequence[float], *,
                           x_label: str = "requests per second", crossover: float | None = None,
                           marked_x: float | None = None, marked_label: str = "scenario",
                           log_x: bool = True, saturated_from: float | None = None,
                           title: str = "Predicted speedup vs load") -> go.Figure:
    """Speedup over QPS or batch size (one curve per alpha if a mapping); 1x line; crossover marked.

    None in a curve means "no steady state" (saturated): the curve stops there, and `saturated_from` (the
    deployment's capacity) shades the region beyond it labelled "saturated" rather than drawing 0x."""
    fig = go.Figure()
    series = speedups if isinstance(speedups, Mapping) else {"speedup": speedups}
    for name, ys in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), mode="lines", name=str(name), connectgaps=False,
                                 hovertemplate="%{x:.3g}: %{y:.2f}x<extra>" + str(name) + "</extra>"))
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    # Vertical markers are drawn as traces, not add_vline shapes: a shape's annotation on a log axis is placed at
    # 10**x (plotly takes annotation x in log units there), which stretched the axis to 1e5.
    all_y = [float(v) for ys in series.values() for v in ys if v is not None] + [1.0]
    y_span = (min(all_y), max(all_y))
    if saturated_from is not None and x:
        right = max(max(x), saturated_from * 1.05, (marked_x or 0) * 1.05)
        fig.add_trace(go.Scatter(x=[saturated_from, right, right, saturated_from, saturated_from],
                                 y=[y_span[0], y_span[0], y_span[1], y_span[1], y_span[0]], fill="toself",
                                 mode="lines+text", line=dict(width=0), fillcolor=BAND_COLOURS["off"],
                                 name=f"saturated above {saturated_from:.3g}", text=["", "", "saturated", "", ""],
                                 textposition="bottom left", hovertemplate="saturated<extra></extra>"))
    if crossover is not None:
        fig.add_trace(_vertical_marker(crossover, y_span, f"crossover {crossover:.3g}", "#d62728", "dash"))
    if marked_x is not None:
        fig.add_trace(_vertical_marker(marked_x, y_span, f"{marked_label}: {marked_x:.3g}", "#1f77b4", "dot"))
    fig.update_layout(title=title, xaxis_title=x_label, yaxis_title="speedup (x)", **LAYOUT)
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def _vertical_marker(x: float, y_span: tuple[float, float], label: str, colour: str, dash: str) -> go.Scatter:
    return go.Scatter(x=[x, x], y=list(y_span), mode="lines+text", name=label, text=["", label],
                      textposition="top right", line=dict(color=colour, dash=dash, width=1.5),
                      hovertemplate=label + "<extra></extra>")


def _alpha_bands(fig: go.Figure, axis: str) -> None:
    spans = [(0.0, ALPHA_OFF_BELOW, "off", "leave off"), (ALPHA_OFF_BELOW, ALPHA_WIN_ABOVE, "borderline", "measure"),
             (ALPHA_WIN_ABOVE, 1.0, "win", "likely win")]
    for lo, hi, key, label in spans:
        if axis == "x":
            fig.add_vrect(x0=lo, x1=hi, fillcolor=BAND_COLOURS[key], line_width=0, layer="below",
                          annotation_text=label, annotation_position="top left")
        else:
            fig.add_hrect(y0=lo, y1=hi, fillcolor=BAND_COLOURS[key], line_width=0, layer="below",
                          annotation_text=label, annotation_position="right")


def acceptance_by_temperature_figure(temperatures: Sequence[float], alphas: Sequence[float], *,
                                     v1_rates: Sequence[float | None] | None = None,
                                     production_temperatures: Sequence[float] = (),
                                     title: str = "Acceptance by temperature") -> go.Figure:
    """alpha per temperature over the source's bands (<0.5 off, 0.5-0.65 measure, >0.65 likely win).

    V1 accepted/draft ratios, if given, are drawn too (dotted) to show why they must not meet the bands directly.
    """
    fig = go.Figure()
    _alpha_bands(fig, axis="y")
    fig.add_trace(go.Scatter(x=list(temperatures), y=list(alphas), mode="lines+markers", name="alpha (per token)",
                             hovertemplate="T=%{x}: alpha %{y:.2f}<extra></extra>"))
    if v1_rates is not None:
        fig.add_trace(go.Scatter(x=list(temperatures), y=list(v1_rates), mode="lines+markers",
                                 name="V1 accepted/draft ratio", line_dash="dot",
                                 hovertemplate="T=%{x}: V1 ratio %{y:.2f}<extra></extra>"))
    for t in production_temperatures:
        fig.add_vline(x=t, line_color="#d62728", line_dash="dash", annotation_text=f"production T={t:g}")
    fig.update_layout(title=title, xaxis_title="temperature", yaxis_title="acceptance", yaxis_range=[0, 1], **LAYOUT)
    return fig


def latency_percentiles_figure(with_spec: Mapping[str, float | None], without_spec: Mapping[str, float | None]
                               | None = None, *, labels: tuple[str, str] = ("with speculation", "without"),
                               title: str = "Latency percentiles") -> go.Figure:
    """Grouped bars (ms) of latency percentiles, e.g. {"TTFT p50": 0.12, "TPOT p99": 0.03} (seconds)."""
    fig = go.Figure()
    names = list(with_spec)
    fig.add_trace(go.Bar(name=labels[0], x=names, y=[_ms(with_spec[n]) for n in names], marker_color="#1f77b4",
                         hovertemplate="%{x}: %{y:.1f} ms<extra>" + labels[0] + "</extra>"))
    if without_spec is not None:
        fig.add_trace(go.Bar(name=labels[1], x=names, y=[_ms(without_spec.get(n)) for n in names],
                             marker_color="#8c8c8c",
                             hovertemplate="%{x}: %{y:.1f} ms<extra>" + labels[1] + "</extra>"))
    fig.update_layout(barmode="group", title=title, yaxis_title="ms", **LAYOUT)
    return fig


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def acceptance_histogram_figure(values: Sequence[float], *, value_label: str = "alpha (per token)",
                                nbins: int = 20, title: str = "Per-request acceptance") -> go.Figure:
    """Histogram of per-request acceptance with the 0.5 / 0.65 band edges (the source: watch P10, not the mean)."""
    fig = go.Figure()
    _alpha_bands(fig, axis="x")
    fig.add_trace(go.Histogram(x=list(values), xbins=dict(start=0.0, end=1.0, size=1.0 / nbins), name="requests",
                               marker_color="#1f77b4", hovertemplate="%{x}: %{y} requests<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=value_label, yaxis_title="requests", xaxis_range=[0, 1],
                      bargap=0.05, **LAYOUT)
    return fig


# --- appended by the notebooks (widgets.py): draft selection --------------------------------------------------
SWEET_SPOT_RATIO_BAND = (RATIO_MIN, RATIO_MAX)  # the source: a 1:8 to 1:12 target:draft size ratio


def draft_candidates_figure(names: Sequence[str], size_ratios: Sequence[float], break_even_alphas: Sequence[float],
                            same_family: Sequence[bool], *, selected: str | None = None,
                            title: str = "Draft candidates: size ratio vs the acceptance they need") -> go.Figure:
    """Each candidate draft at (target:draft parameter ratio, break-even α), the source's 1:8-1:12 band shaded.

    A cheaper draft (larger ratio) needs less acceptance to break even but predicts the target less well; a
    larger one is accurate but needs a high α just to pay for itself.
    """
    import math

    fig = go.Figure()
    lo, hi = SWEET_SPOT_RATIO_BAND
    fig.add_vrect(x0=lo, x1=hi, fillcolor=BAND_COLOURS["win"], line_width=0, layer="below")
    # On a log axis an annotation's x is log10 of the value (shapes take the value itself).
    fig.add_annotation(x=math.log10(lo), y=1, yref="paper", text="1:8-1:12", showarrow=False, xanchor="right")
    for family_ok, label, colour in ((True, "same family", "#1f4e79"), (False, "other family", "#d9822b")):
        idx = [i for i, ok in enumerate(same_family) if bool(ok) == family_ok]
        if not idx:
            continue
        fig.add_trace(go.Scatter(
            x=[size_ratios[i] for i in idx], y=[break_even_alphas[i] for i in idx], mode="markers+text",
            name=label, text=[names[i].split("/")[-1] for i in idx], textposition="middle right",
            textfont=dict(size=10),
            marker=dict(size=[16 if names[i] == selected else 9 for i in idx], color=colour),
            hovertemplate="%{text}: 1:%{x:.1f}, break-even alpha %{y:.2f}<extra></extra>"))
    fig.add_hline(y=ALPHA_OFF_BELOW, line_dash="dot", line_color="#d62728",
                  annotation_text="source: below 0.5, turn it off", annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title="target : draft parameters (1:x)", yaxis_title="break-even alpha",
                      yaxis_range=[0, 1], **LAYOUT)
    fig.update_xaxes(type="log")
    return fig


def alpha_marker_trace(alpha: float, speedup: float, label: str = "this workload") -> go.Scatter:
    """One labelled point on a speedup-vs-alpha curve (the notebooks move it without redrawing the curves)."""
    return go.Scatter(x=[alpha], y=[speedup], mode="markers+text", name=label, text=[f"{label}: {speedup:.2f}x"],
                      textposition="top left", marker=dict(size=12, color="#d62728", symbol="diamond"),
                      hovertemplate="alpha %{x:.2f}: %{y:.2f}x<extra>" + label + "</extra>")
