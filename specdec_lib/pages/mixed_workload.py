"""06 · Mixed workloads: P50 and P99 with and without speculation for a two-class mix, simulated offline
(continuous batching, `specdec_lib.simulate`; this page uses only its public names)."""

from __future__ import annotations

import dataclasses
import html

import ipywidgets as widgets

from specdec_lib.pages.base import Page, grid, layout, new_figure, new_message, rows_html, update_figure_in_place, wire
from specdec_lib.pages.controls import STYLE, WIDE


def _heavy_slider(kind, **kwargs) -> widgets.Widget:
    """A slider that reports only on release: these drive a simulation, not a formula."""
    w = kind(continuous_update=False, style=STYLE, layout=WIDE, **kwargs)
    return w


def mixed_workload_controls() -> dict[str, widgets.Widget]:
    """The source's 60/40 example as the starting point: structured at 0.82, creative at 0.38, QPS 1, k = 5."""
    return {
        "structured_share": _heavy_slider(widgets.FloatSlider, value=0.6, min=0.05, max=0.95, step=0.05,
                                          description="structured share", readout_format=".2f"),
        "structured_alpha": _heavy_slider(widgets.FloatSlider, value=0.82, min=0.0, max=0.99, step=0.01,
                                          description="structured α", readout_format=".2f"),
        "creative_alpha": _heavy_slider(widgets.FloatSlider, value=0.38, min=0.0, max=0.99, step=0.01,
                                        description="creative α", readout_format=".2f"),
        "qps": _heavy_slider(widgets.FloatLogSlider, value=1.0, base=10, min=-1, max=1.3, step=0.05,
                             description="QPS", readout_format=".2f"),
        "num_speculative_tokens": _heavy_slider(widgets.IntSlider, value=5, min=1, max=10,
                                                description="k (draft tokens)"),
        "draft_cost_scale": _heavy_slider(widgets.FloatSlider, value=1.0, min=0.1, max=2.0, step=0.05,
                                          description="draft cost × (1 = 8B draft)", readout_format=".2f"),
        "num_requests": _heavy_slider(widgets.IntSlider, value=600, min=200, max=3000, step=100,
                                      description="requests simulated"),
    }


def simulate_mix(values: dict, step_time=None):
    """Run the with/without comparison for the control values; returns (Comparison, weighted mean α).
    `step_time`: a calibration's `AffineStepTime` (`calibrate.load_calibration(f).step_time`) instead of the
    source's H100 example (the "draft cost ×" control then scales nothing: the calibration's draft terms apply)."""
    from specdec_lib import simulate as sim

    example = sim.source_mixed_example(num_speculative_tokens=int(values["num_speculative_tokens"]),
                                       draft_cost_scale=float(values["draft_cost_scale"]))
    structured, creative = example.workload.classes
    share = float(values["structured_share"])
    workload = sim.Workload((
        dataclasses.replace(structured, share=share, alpha=float(values["structured_alpha"])),
        dataclasses.replace(creative, share=round(1.0 - share, 10), alpha=float(values["creative_alpha"])),
    ))
    qps = float(values["qps"])
    requests = sim.make_requests(workload, num_requests=int(values["num_requests"]), qps=qps, seed=0)
    comparison = sim.compare(requests, step_time or example.step_time, example.speculation,
                             baseline_server=example.baseline_server, speculative_server=example.speculative_server,
                             qps=qps, seed=0)
    mean_alpha = share * float(values["structured_alpha"]) + (1 - share) * float(values["creative_alpha"])
    return comparison, mean_alpha


def mix_percentiles(summary, metric: str) -> dict[str, float]:
    """{"all P50": s, "all P99": s, "<class> P50": s, ...} for one latency metric of a simulate.Summary."""
    out = {f"all {s.upper()}": getattr(getattr(summary.overall, metric), s) for s in ("p50", "p99")}
    for name, latency in summary.by_class.items():
        out.update({f"{name} {s.upper()}": getattr(getattr(latency, metric), s) for s in ("p50", "p99")})
    return out


def mixed_workload_summary_html(comparison, mean_alpha: float, calibration_source: str | None = None) -> str:
    def change(metric: str, stat: str, cls: str | None = None) -> str:
        r = comparison.ratio(metric, stat, cls)
        return f"{(r - 1) * 100:+.0f} %"

    rows = [("Weighted mean α of the mix", f"{mean_alpha:.2f}"),
            ("End-to-end latency with speculation, P50 / P99", f"{change('e2e', 'p50')} / {change('e2e', 'p99')}"),
            ("TPOT with speculation, P50 / P99", f"{change('tpot', 'p50')} / {change('tpot', 'p99')}")]
    for name in comparison.baseline.by_class:
        rows.append((f"  {name}: TPOT P50 / P99", f"{change('tpot', 'p50', name)} / {change('tpot', 'p99', name)}"))
    p50_better = comparison.ratio("e2e", "p50") < 1
    p99_worse = comparison.ratio("e2e", "p99") > 1
    if p50_better and p99_worse:
        verdict = ("P50 improves while P99 regresses: the source's mixed-workload signature. "
                   "The average hides the regression.")
    elif p50_better:
        verdict = "Both P50 and P99 improve for this mix and load."
    elif p99_worse:
        verdict = "Speculation slows this mix at P50 and P99: leave it off at this load."
    else:
        verdict = "P50 is slower, P99 is not: look at the per-class rows."
    steps = ("the source's 70B INT8 + 8B BF16 on 2× H100, see simulate.py" if calibration_source is None
             else f"calibration {calibration_source} (per-request API overhead not included)")
    return rows_html(rows) + f"<p><b>{html.escape(verdict)}</b> (negative = faster with speculation; " \
        f"simulated, step times from {html.escape(steps)})</p>"


def mixed_workload_page(calibration=None) -> Page:
    """P50 and P99 with and without speculation for a two-class mix (continuous-batching simulation).
    `calibration`: a calibration file path (`specdec calibrate`) or an `EndpointCalibration`: its simulator step
    time replaces the source's H100 example, and the page says which file it used."""
    from specdec_lib import plots

    if isinstance(calibration, (str, bytes)) or hasattr(calibration, "__fspath__"):
        from specdec_lib.calibrate import load_calibration

        calibration = load_calibration(calibration)
    if calibration is not None and calibration.step_time is None:
        raise ValueError(f"calibration {calibration.source}: has no simulator step time (a GPU factors file)")
    step_time = None if calibration is None else calibration.step_time
    cal_source = None if calibration is None else calibration.source

    controls = mixed_workload_controls()
    tpot_fig, e2e_fig = new_figure(), new_figure()
    summary, message = widgets.HTML(), new_message()

    def update() -> str | None:
        comparison, mean_alpha = simulate_mix({n: w.value for n, w in controls.items()}, step_time)
        for metric, fig in (("tpot", tpot_fig), ("e2e", e2e_fig)):
            update_figure_in_place(fig, plots.latency_percentiles_figure(
                mix_percentiles(comparison.speculative, metric), mix_percentiles(comparison.baseline, metric),
                title=f"Simulated {metric.upper()} at {comparison.qps:.2f} QPS: whole mix and by class"))
        summary.value = mixed_workload_summary_html(comparison, mean_alpha, cal_source)
        return None

    refresh = wire(controls, update, message, wait_s=0.0)
    widget = layout(grid(controls, list(controls)), message, summary, tpot_fig, e2e_fig)
    return Page(widget=widget, controls=controls, figures={"tpot": tpot_fig, "e2e": e2e_fig},
                message=message, outputs={"summary": summary}, refresh=refresh)
