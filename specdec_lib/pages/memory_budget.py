"""02 · The memory budget: stacked memory per GPU with and without the draft, the plan's findings, and the
source's quantization table. The plan is `evaluate.plan_memory_for(scenario)`, the function `evaluate` uses."""

from __future__ import annotations

import html

import ipywidgets as widgets

from specdec_lib.pages import render
from specdec_lib.pages.base import (
    Page,
    grid,
    layout,
    message_html,
    new_figure,
    new_message,
    update_figure_in_place,
    wire,
)
from specdec_lib.pages.controls import default_scenario, scenario_controls, scenario_from_controls

CONTROLS = ["target_model", "target_config", "target_precision", "draft_model", "draft_config", "draft_precision",
            "gpu", "num_gpus", "tensor_parallel_size", "gpu_memory_utilization", "context_len"]


def quantization_table_html(gpu: str, num_gpus: int, gpu_memory_utilization: float, context_len: int) -> str:
    """The source's 70B + 8B quantization table, recomputed for this GPU kind and count."""
    from specdec_lib import display, memory

    rows = memory.source_quantization_table(gpu, num_gpus, gpu_memory_utilization=gpu_memory_utilization,
                                            context_len=context_len)
    head = ("<tr><th>target</th><th>draft</th><th>source: weights</th><th>weights</th><th>KV cache (all GPUs)</th>"
            "<th>fits?</th><th>sequences at context</th></tr>")
    body = "".join(
        f"<tr><td>{r.target_precision}</td><td>{r.draft_precision}</td><td>~{r.source_total_gb:g} GB</td>"
        f"<td>{display.format_gb(r.weights_bytes)}</td><td>{display.format_gib(max(0, r.kv_budget_bytes))}</td>"
        f"<td>{'yes' if r.fits else 'no'}</td><td>{r.max_concurrent_seqs:,}</td></tr>" for r in rows)
    return (f"<b>The source's table, recomputed for Llama-3.1-70B + 8B on {num_gpus}× {html.escape(gpu)} "
            f"(TP {num_gpus}, utilization {gpu_memory_utilization:.2f})</b><table>{head}{body}</table>")


def memory_budget_page(scenario=None) -> Page:
    from specdec_lib.evaluate import plan_memory_for

    base = scenario or default_scenario()
    controls = {n: w for n, w in scenario_controls(base).items() if n in CONTROLS}
    fig = new_figure()
    summary, table, message = widgets.HTML(), widgets.HTML(), new_message()
    table_key: list = [None]

    def update() -> str | None:
        plan = plan_memory_for(scenario_from_controls(base, controls))
        update_figure_in_place(fig, render.memory_figure(plan))
        summary.value = render.memory_summary_html(plan)
        return "; ".join(plan.vllm_errors) or None

    def update_table() -> str | None:
        key = (controls["gpu"].value, int(controls["num_gpus"].value),
               float(controls["gpu_memory_utilization"].value), int(controls["context_len"].value))
        if key != table_key[0]:
            table_key[0] = key
            try:
                table.value = quantization_table_html(*key)
            except ValueError as exc:
                table.value = message_html(f"The source's table cannot be recomputed here: {exc}", "info")
        return None

    refresh = wire(controls, update, message, slow=update_table, stale=(summary,))
    widget = layout(grid(controls, CONTROLS), message, fig, summary, table)
    return Page(widget=widget, controls=controls, figures={"memory": fig}, message=message,
                outputs={"summary": summary, "table": table}, refresh=refresh)
