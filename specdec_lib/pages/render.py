"""HTML and figures for the pages, drawn from one `evaluate.Evaluation` (or a memory plan): no arithmetic here.

Every number comes from the Evaluation's records or from `report` (the rows the memo and CLI print), so a
figure reads the same on a page, in the memo and in `specdec plan`.
"""

from __future__ import annotations

import functools
import html

import plotly.graph_objects as go

from specdec_lib import display, plots, report
from specdec_lib.pages.base import rows_html
from specdec_lib.report import verdict_html  # noqa: F401  (the pages' verdict table is the notebook repr's)


def classes_html(ev) -> str:
    """One row per request class: shape, acceptance used (and why others were not), capacity, speedup."""
    head = ("<tr><th>class</th><th>share</th><th>T</th><th>prompt</th><th>output</th><th>α used</th>"
            "<th>also applies</th><th>not used</th><th>capacity (alone)</th><th>speedup</th><th>crossover batch</th>"
            "</tr>")
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row[key]))}</td>" for key in (
            "name", "share", "temperature", "prompt_tokens", "output_tokens", "alpha", "also", "rejected", "capacity",
            "speedup", "crossover_batch")) + "</tr>" for row in report.class_rows(ev))
    return f"<table class='specdec-classes'>{head}{body}</table>"


def summary_html(ev) -> str:
    """The break-even and load rows (`report.speedup_rows`) and the per-class table."""
    return rows_html(report.speedup_rows(ev)) + classes_html(ev)


def command_html(ev) -> str:
    """Today's vLLM command, or that it will not start and why."""
    out = ""
    if not ev.command_will_start:
        refusals = "".join(f"<li>{html.escape(r)}</li>" for r in ev.refusals)
        out += ("<div style='color:#b00020'><b>This command will not start:</b> vLLM refuses this configuration."
                f"<ul>{refusals}</ul></div>")
    if ev.command is None:
        return out + f"<p>No serve command: {html.escape(ev.command_error or '')}</p>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in ev.command.notes)
    return (out + f"<b>Serve command ({html.escape(ev.command.applies_to.label())})</b>"
            f"<pre style='white-space:pre-wrap'>{html.escape(ev.command.shell())}</pre><ul>{notes}</ul>")


def memory_figure(plan) -> go.Figure:
    title = f"Memory per GPU, {plan.num_gpus}× {plan.gpu}, TP {plan.tp}"
    return plots.memory_figure(plots.memory_components(plan), memory_bytes_per_gpu=plan.memory_bytes_per_gpu,
                               title=title)


def memory_summary_html(plan) -> str:
    """The memory plan's key numbers and its findings, in GiB and tokens."""
    rows = [
        ("Target weights per GPU", display.format_gib(plan.target_weights_bytes_per_gpu)),
        ("Draft weights per GPU", display.format_gib(plan.draft_weights_bytes_per_gpu) if plan.draft else "no draft"),
        ("KV cache per GPU", display.format_gib(max(0, plan.kv_budget_bytes_per_gpu))),
        ("KV cache size (vLLM's startup line)", f"{plan.kv_capacity_tokens:,} tokens"),
        (f"Sequences of {plan.context_len:,} tokens at once, per replica",
         f"{plan.max_concurrent_seqs:,} with the draft, {plan.max_concurrent_seqs_without_draft:,} without"),
        ("Replicas (num_gpus // TP)", str(plan.replicas)),
    ]
    items = "".join(f"<li>{html.escape(f)}</li>" for f in plan.findings)
    errors = "".join(f"<li style='color:#b00020'>{html.escape(e)}</li>" for e in plan.vllm_errors)
    return rows_html(rows) + f"<ul>{items}{errors}</ul>"


@functools.lru_cache(maxsize=64)
def _alpha_curves_json(c_ratio: float, k: int, break_even: float | None) -> dict:
    """The alpha chart's curves (they depend only on c and k): built once per (c, k), as plotly JSON."""
    from specdec_lib import speculation

    alphas = [i / 100 for i in range(100)]
    ks = sorted({max(1, k - 2), k, k + 2})
    fig = plots.speedup_vs_alpha_figure(
        alphas, {kk: [speculation.speedup(a, kk, c_ratio) for a in alphas] for kk in ks},
        break_even_by_k={k: break_even} if break_even is not None else {},
        title=f"Speedup vs α at batch 1 (draft cost c = {c_ratio:.3f} of a target step)")
    return {"data": [t.to_plotly_json() for t in fig.data], "layout": fig.layout.to_plotly_json()}


def alpha_figure(ev) -> dict:
    """Speedup vs alpha (Leviathan et al. Thm 3.8) for the evaluation's c and k, with the alpha it used marked
    (labelled with that alpha's source). Plotly JSON, for `update_figure_in_place`."""
    f, k = ev.load, ev.scenario.num_speculative_tokens
    if f is None or ev.scenario.method == "none":
        return {"data": [], "layout": {"title": {"text": "No speculation: no speedup curve"}}}
    base = _alpha_curves_json(round(f.cost_ratio, 12), k, f.break_even_alpha)
    alpha, source = ev.workload_alpha
    data = list(base["data"])
    if alpha is not None:
        data.append(plots.alpha_marker_trace(alpha, ev.speedup_at_batch1(alpha), f"{source} α").to_plotly_json())
    return {"data": data, "layout": base["layout"]}


def qps_figure(ev) -> go.Figure:
    """Speedup vs request rate (whole deployment) with the crossover, the scenario's QPS and the saturated region."""
    f = ev.load
    return plots.speedup_vs_load_figure(
        f.curve_x, {(f"α = {f.alpha:.2f}, k = {f.k}" if f.alpha is not None else name): ys
                    for name, ys in f.curves.items()},
        x_label="requests per second (all replicas)", crossover=f.crossover_qps, marked_x=ev.scenario.qps,
        marked_label="scenario QPS", saturated_from=f.capacity_qps, log_x=True,
        title=f"Predicted speedup vs load ({f.prompt_tokens} in, {f.output_tokens} out per request, "
              f"{f.replicas} replica(s))")
