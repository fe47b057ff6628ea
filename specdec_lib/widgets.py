"""Interactive controls for the notebooks: every `if` a notebook would need lives here, where tests reach it.

Each notebook calls one `*_page()` function and displays `page.widget`. A `Page` keeps its controls, its plotly
`FigureWidget`s and its message line by name, so a test can set `page.controls["temperature"].value` and read
`page.figures["speedup"].data` without a browser.

Design choices:
- Figures are built once and updated in place (`fig.batch_update()`): the front end restyles the plot rather than
  re-rendering the output, so nothing flickers.
- Sliders report while dragged; each page's figure update goes through a `Debouncer` (the first change runs at
  once, a burst is coalesced into one trailing run on the kernel's event loop) and its slow part (the verdict,
  crossovers, tables) through a trailing-only one, so the charts follow the hand and the text follows the release.
  Pages that simulate use `continuous_update=False`; anything that talks to an endpoint sits behind a button.
- Errors never reach the notebook as a traceback: the library's `ValueError` text (or "nothing answers at URL")
  goes into the page's message widget.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import html
import os
from dataclasses import dataclass
from typing import Callable

import ipywidgets as widgets
import plotly.graph_objects as go

DEFAULT_ENDPOINT_URL = "http://127.0.0.1:8000"
LOCAL_DEMO_COMMAND = "python -m specdec_lib.localserver demo"
DEBOUNCE_S = 0.08


# ---------------------------------------------------------------------------------------------------------------
# Small building blocks
# ---------------------------------------------------------------------------------------------------------------
class Debouncer:
    """Rate-limit `fn` while a slider is dragged: at most one call per `wait_s`, and always one after the last event.

    leading=True (the default, for figures): a change after a quiet period runs at once, so a single click answers
    without delay; changes arriving within `wait_s` of a run are coalesced into one trailing run. leading=False (for
    slow work such as the verdict): only the trailing run, `wait_s` after the last change.

    Inside a running kernel, comm handlers run on an asyncio loop, so trailing runs are scheduled there with
    `call_later`; with no running loop (headless execution, tests) every call runs at once.
    """

    def __init__(self, fn: Callable[[], None], wait_s: float = DEBOUNCE_S, leading: bool = True):
        self._fn = fn
        self._wait_s = wait_s
        self._leading = leading
        self._handle: asyncio.TimerHandle | None = None
        self._last_run = -float("inf")

    def __call__(self, *_args) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._wait_s <= 0:
            self._run()
            return
        now = loop.time()
        if self._leading and self._handle is None and now - self._last_run >= self._wait_s:
            self._last_run = now
            self._run()
            return
        if self._handle is not None:
            if self._leading:
                return  # a trailing run is already due; it will see the latest values
            self._handle.cancel()
        delay = self._wait_s if not self._leading else max(0.0, self._last_run + self._wait_s - now)
        self._handle = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        try:
            self._last_run = asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        self._run()

    def _run(self) -> None:
        self._fn()

    def flush(self) -> None:
        """Run a pending call now (used by tests that drive a live kernel)."""
        if self._handle is not None:
            self._handle.cancel()
            self._fire()


def endpoint_url_default() -> str:
    """The live notebooks' endpoint: env SPECDEC_ENDPOINT, else a local server on port 8000."""
    return os.environ.get("SPECDEC_ENDPOINT", "").strip() or DEFAULT_ENDPOINT_URL


def autorun_requested() -> bool:
    """True when env SPECDEC_AUTORUN=1: the live notebooks press their run button themselves (headless tests)."""
    return os.environ.get("SPECDEC_AUTORUN", "").strip() in {"1", "true", "yes"}


def _changed(old: dict, new: dict) -> dict:
    """Top-level keys of `new` that differ from `old`, and keys `old` had that `new` lacks (set to None)."""
    out = {k: v for k, v in new.items() if k not in old or not _same(old[k], v)}
    out.update({k: None for k in old if k not in new})
    return out


def _same(a, b) -> bool:
    """Equal values; anything that cannot be compared simply (numpy arrays) counts as changed and is resent."""
    try:
        return bool(a == b)
    except ValueError:
        return False


def update_figure_in_place(fig_widget: go.FigureWidget, new_fig: go.Figure | dict) -> None:
    """Copy what changed in `new_fig` (a Figure, or its JSON: {"data": [...], "layout": {...}}) into `fig_widget`
    inside one batch update.

    With the same number and types of traces, only the changed properties of each trace are set (a restyle in the
    browser); otherwise the trace list is replaced. Only changed layout keys are sent (the template, for one, is
    sent once). Either way the output cell is never re-rendered.
    """
    if isinstance(new_fig, dict):
        new_traces, new_layout = list(new_fig["data"]), new_fig["layout"]
    else:
        new_traces = [t.to_plotly_json() for t in new_fig.data]
        new_layout = new_fig.layout.to_plotly_json()
    last_traces = getattr(fig_widget, "_specdec_traces", None)
    last_layout = getattr(fig_widget, "_specdec_layout", None)
    same_shape = last_traces is not None and len(new_traces) == len(fig_widget.data) and all(
        old.type == new.get("type") for old, new in zip(fig_widget.data, new_traces))
    with fig_widget.batch_update():
        if same_shape:
            for old, before, after in zip(fig_widget.data, last_traces, new_traces):
                changes = _changed(before, after)
                changes.pop("type", None)
                if changes:
                    old.update(changes, overwrite=True)
        else:
            fig_widget.data = ()
            fig_widget.add_traces(new_traces)
        layout_changes = new_layout if last_layout is None else _changed(last_layout, new_layout)
        if layout_changes:
            fig_widget.layout.update(layout_changes, overwrite=True)
    fig_widget._specdec_traces = new_traces
    fig_widget._specdec_layout = new_layout


def message_html(text: str, kind: str = "error") -> str:
    """One line for the page's message widget; `kind` is "error", "warning", "info" or "ok"."""
    colours = {"error": "#b00020", "warning": "#8a5a00", "info": "#1f4e79", "ok": "#1b5e20"}
    if not text:
        return ""
    return f'<div style="color:{colours[kind]};white-space:pre-wrap">{html.escape(text)}</div>'


def error_text(exc: BaseException) -> str:
    """What the user reads for an exception: the library's ValueError text as is, others with their type."""
    if isinstance(exc, ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Page:
    """One notebook page: what to display, and its parts by name for tests and benchmarks."""
    widget: widgets.Widget
    controls: dict
    figures: dict
    message: widgets.HTML
    outputs: dict
    refresh: Callable[[], None]


def _guarded(update: Callable[[], str | None], message: widgets.HTML, clear: bool = True) -> Callable[[], None]:
    """Run `update`; show any error in `message` instead of a traceback.

    `update` may return a warning line to show; returning None clears the message (unless clear=False).
    """

    def run() -> None:
        try:
            note = update()
        except Exception as exc:  # noqa: BLE001 - the UI edge: every failure becomes a readable message
            message.value = message_html(error_text(exc), "error")
        else:
            if note:
                message.value = message_html(note, "warning")
            elif clear:
                message.value = ""

    return run


def new_message() -> widgets.HTML:
    """The page's message line (errors and warnings); tests find it by its CSS class."""
    message = widgets.HTML(value="")
    message.add_class("specdec-message")
    return message


SLOW_WAIT_S = 0.3


def _wire(controls: dict, update: Callable[[], str | None], message: widgets.HTML, wait_s: float = DEBOUNCE_S,
          slow: Callable[[], str | None] | None = None) -> Callable[[], None]:
    """Observe every control's value: `update` (figures) through a leading-edge debouncer, `slow` (verdicts,
    crossovers) through a trailing one, so figures answer at once and slow text follows when dragging stops.
    Runs both once now; returns a function that refreshes both at once."""
    fast_ok = [True]

    def update_and_note() -> str | None:
        fast_ok[0] = False
        note = update()
        fast_ok[0] = True
        return note

    def slow_if_fast_ok() -> str | None:
        return slow() if fast_ok[0] else None  # the figures' error stays on screen

    fast = _guarded(update_and_note, message)
    later = _guarded(slow_if_fast_ok, message, clear=False) if slow is not None else None
    fast_debounced = Debouncer(fast, wait_s)
    slow_debounced = Debouncer(later, SLOW_WAIT_S, leading=False) if later is not None else None

    def changed(_change) -> None:
        fast_debounced()
        if slow_debounced is not None:
            slow_debounced()

    for control in controls.values():
        control.observe(changed, names="value")

    def refresh() -> None:
        fast()
        if later is not None:
            later()

    refresh()
    return refresh


class FigureSlot(widgets.VBox):
    """A place for a chart that appears only when there are results (the live pages).

    The first result creates the FigureWidget from the complete figure (its initial state), later results update
    it in place. Creating it empty and filling it while the kernel is busy with a long measurement sometimes left the
    browser's view blank; building it whole avoids that path. `figures[name]` always points at the current widget.
    """

    def __init__(self, figures: dict, name: str):
        super().__init__()
        self._figures = figures
        self._name = name

    def show(self, fig: go.Figure) -> None:
        current = self._figures.get(self._name)
        if current is None:
            current = go.FigureWidget(layout=go.Layout(template="plotly_white"))
            update_figure_in_place(current, fig)
            self._figures[self._name] = current
            self.children = (current,)
        else:
            update_figure_in_place(current, fig)


def _new_figure() -> go.FigureWidget:
    return go.FigureWidget(layout=go.Layout(height=380, template="plotly_white"))


def _grid(controls: dict, names: list[str], columns: int = 2) -> widgets.Widget:
    chosen = [controls[n] for n in names]
    per_column = -(-len(chosen) // columns)
    return widgets.HBox([widgets.VBox(chosen[i:i + per_column]) for i in range(0, len(chosen), per_column)])


# ---------------------------------------------------------------------------------------------------------------
# Scenario controls: one widget per Scenario input, and the Scenario they describe
# ---------------------------------------------------------------------------------------------------------------
CONTEXT_LENGTHS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
TP_SIZES = (1, 2, 4, 8)
_STYLE = {"description_width": "170px"}
_WIDE = widgets.Layout(width="460px")


def _options_with(names: list[str], value: str | None) -> list[str]:
    """Catalog names, plus the scenario's own spelling (e.g. an "-Instruct" id) so the dropdown can show it."""
    return names if value is None or value in names else [value, *names]


def scenario_controls(scenario) -> dict[str, widgets.Widget]:
    """Every control a planner moves, preset from `scenario` (names match Scenario fields where one exists)."""
    from specdec_lib import catalog

    model_names = sorted(catalog.models())
    first = scenario.workload[0]
    c = {
        "target_model": widgets.Dropdown(options=_options_with(model_names, scenario.target_model),
                                         value=scenario.target_model, description="Target model"),
        "target_config": widgets.Text(value="", placeholder="…or a path to its config.json",
                                      description="Target config.json"),
        "draft_model": widgets.Dropdown(options=["(none)", *_options_with(model_names, scenario.draft_model)],
                                        value=scenario.draft_model or "(none)", description="Draft model"),
        "draft_config": widgets.Text(value="", placeholder="…or a path to its config.json",
                                     description="Draft config.json"),
        "target_precision": widgets.Dropdown(options=sorted(catalog.precisions()), value=scenario.target_precision,
                                             description="Target precision"),
        "draft_precision": widgets.Dropdown(options=sorted(catalog.precisions()), value=scenario.draft_precision,
                                            description="Draft precision"),
        "gpu": widgets.Dropdown(options=list(catalog.gpus()), value=scenario.gpu, description="GPU"),
        "num_gpus": widgets.BoundedIntText(value=scenario.num_gpus, min=1, max=64, description="GPU count"),
        "tensor_parallel_size": widgets.Dropdown(options=list(TP_SIZES), value=scenario.tensor_parallel_size,
                                                 description="Tensor parallel"),
        "gpu_memory_utilization": widgets.FloatSlider(value=scenario.gpu_memory_utilization, min=0.5, max=0.98,
                                                      step=0.01, description="gpu_memory_utilization",
                                                      readout_format=".2f"),
        "context_len": widgets.SelectionSlider(options=_int_options(CONTEXT_LENGTHS, scenario.context_len),
                                               value=scenario.context_len, description="Context (tokens)"),
        "temperature": widgets.FloatSlider(value=first.temperature, min=0.0, max=2.0, step=0.05,
                                           description="Temperature", readout_format=".2f",
                                           disabled=len(scenario.workload) > 1,
                                           tooltip="one request class; edit a mixed workload in 06"),
        "num_speculative_tokens": widgets.IntSlider(value=scenario.num_speculative_tokens, min=1, max=10,
                                                    description="k (draft tokens)"),
        "qps": widgets.FloatLogSlider(value=scenario.qps, base=10, min=-1, max=2, step=0.05,
                                      description="QPS", readout_format=".2f"),
        "alpha": widgets.FloatSlider(value=first.alpha if first.alpha is not None else 0.7, min=0.0, max=0.99,
                                     step=0.01, description="α (per-token)", readout_format=".2f"),
        "alpha_measured": widgets.Checkbox(value=first.alpha is not None, description="α is measured",
                                           indent=False),
    }
    for w in c.values():
        w.style = _STYLE
        if not isinstance(w, widgets.Checkbox):
            w.layout = _WIDE
    return c


def _int_options(values: tuple[int, ...], current: int) -> list[tuple[str, int]]:
    return [(f"{v:,}", v) for v in sorted(set(values) | {current})]


def resolve_model(name: str | None, config_path: str = ""):
    """The ModelSpec for a dropdown choice, or for a config.json path when one is typed (it wins)."""
    from specdec_lib import catalog

    if config_path.strip():
        return catalog.model_from_hf_config(config_path.strip())
    if name is None:
        return None
    return catalog.get_model(name)


def scenario_from_controls(base, c: dict[str, widgets.Widget]):
    """The Scenario the controls describe (validation errors are the Scenario's own ValueErrors)."""
    draft = c["draft_model"].value
    draft = None if draft == "(none)" else draft
    target_name = c["target_model"].value
    if c["target_config"].value.strip():
        target_name = resolve_model(None, c["target_config"].value).name
    if draft is not None and c["draft_config"].value.strip():
        draft = resolve_model(None, c["draft_config"].value).name
    method = base.method
    if draft is None:
        method = "none" if base.method in ("draft_model", "eagle", "eagle3") else base.method
    elif method not in ("draft_model", "eagle", "eagle3"):
        method = "draft_model"
    tp = int(c["tensor_parallel_size"].value)
    workload = base.workload
    alpha = float(c["alpha"].value) if c["alpha_measured"].value else None
    if len(workload) == 1:
        workload = (dataclasses.replace(workload[0], temperature=float(c["temperature"].value), alpha=alpha),)
    return dataclasses.replace(
        base,
        target_model=target_name, draft_model=draft, method=method,
        target_precision=c["target_precision"].value, draft_precision=c["draft_precision"].value,
        gpu=c["gpu"].value, num_gpus=int(c["num_gpus"].value), tensor_parallel_size=tp,
        # vLLM 0.32's draft-model proposer refuses a draft TP other than the target's.
        draft_tensor_parallel_size=tp if base.draft_tensor_parallel_size != 1 or tp == 1 else 1,
        gpu_memory_utilization=float(c["gpu_memory_utilization"].value),
        context_len=int(c["context_len"].value),
        num_speculative_tokens=int(c["num_speculative_tokens"].value),
        qps=float(c["qps"].value), workload=workload,
    )


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces of the offline pages
# ---------------------------------------------------------------------------------------------------------------
def default_scenario():
    from specdec_lib.scenario import DEFAULT_SCENARIO

    return DEFAULT_SCENARIO


def models_from_controls(c: dict):
    """(target ModelSpec, draft ModelSpec or None) from the dropdowns or typed config.json paths."""
    target = resolve_model(c["target_model"].value, c["target_config"].value)
    draft_name = c["draft_model"].value
    draft_path = c["draft_config"].value if "draft_config" in c else ""
    if draft_name == "(none)" and not draft_path.strip():
        return target, None
    return target, resolve_model(None if draft_name == "(none)" else draft_name, draft_path)


def plan_from_controls(base, c: dict):
    """`memory.plan_memory` for what the controls say (models may come from config.json files)."""
    from specdec_lib import memory

    target, draft = models_from_controls(c)
    tp = int(c["tensor_parallel_size"].value)
    return memory.plan_memory(
        target, draft, gpu=c["gpu"].value, num_gpus=int(c["num_gpus"].value), tp=tp,
        draft_tp=1 if base.draft_tensor_parallel_size == 1 else None,
        target_precision=c["target_precision"].value, draft_precision=c["draft_precision"].value,
        gpu_memory_utilization=float(c["gpu_memory_utilization"].value), kv_cache_dtype=base.kv_cache_dtype,
        context_len=int(c["context_len"].value))


def memory_figure_for(plan) -> go.Figure:
    from specdec_lib import plots

    title = f"Memory per GPU, {plan.num_gpus}× {plan.gpu}, TP {plan.tp}"
    return plots.memory_figure(plots.memory_components(plan), memory_bytes_per_gpu=plan.memory_bytes_per_gpu,
                               title=title)


def _rows_html(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td style='padding-right:1em'>{html.escape(k)}</td><td><b>{html.escape(v)}</b></td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def memory_summary_html(plan) -> str:
    """The memory plan's key numbers and its findings, in GiB and tokens."""
    from specdec_lib import display

    rows = [
        ("Target weights per GPU", display.format_gib(plan.target_weights_bytes_per_gpu)),
        ("Draft weights per GPU", display.format_gib(plan.draft_weights_bytes_per_gpu) if plan.draft else "no draft"),
        ("KV cache per GPU", display.format_gib(max(0, plan.kv_budget_bytes_per_gpu))),
        ("KV cache size (vLLM's startup line)", f"{plan.kv_capacity_tokens:,} tokens"),
        (f"Sequences of {plan.context_len:,} tokens at once, per replica",
         f"{plan.max_concurrent_seqs:,} with the draft, {plan.max_concurrent_seqs_without_draft:,} without"),
    ]
    items = "".join(f"<li>{html.escape(f)}</li>" for f in plan.findings)
    errors = "".join(f"<li style='color:#b00020'>{html.escape(e)}</li>" for e in plan.vllm_errors)
    return _rows_html(rows) + f"<ul>{items}{errors}</ul>"


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


def decision_html(decision) -> str:
    """The verdict and every reason, as the source's framework groups them."""
    colour = {"use": "#1b5e20", "measure more": "#8a5a00", "leave off": "#b00020"}[decision.verdict]
    mark = {"passed": "✓", "failed": "✗", "unknown": "?"}
    rows = []
    for r in decision.reasons:
        value = "" if r.value is None else (f"{r.value:.3g}" if isinstance(r.value, float) else str(r.value))
        rows.append(f"<tr><td>{mark[r.status]}</td><td>{html.escape(r.group)}</td><td>{html.escape(r.statement)}</td>"
                    f"<td>{html.escape(value)}</td><td>{html.escape(r.threshold)}</td><td>{html.escape(r.source)}</td></tr>")
    return (f"<h3 style='color:{colour}'>Verdict: {html.escape(decision.verdict)}</h3>"
            "<table><tr><th></th><th>group</th><th>condition</th><th>value</th><th>passes when</th><th>source</th></tr>"
            + "".join(rows) + "</table>")


def _layout(*parts: widgets.Widget) -> widgets.VBox:
    return widgets.VBox(list(parts))


# ---------------------------------------------------------------------------------------------------------------
# 02 memory budget
# ---------------------------------------------------------------------------------------------------------------
MEMORY_CONTROLS = ["target_model", "target_config", "target_precision", "draft_model", "draft_config",
                   "draft_precision", "gpu", "num_gpus", "tensor_parallel_size", "gpu_memory_utilization",
                   "context_len"]


def memory_budget_page(scenario=None) -> Page:
    """Stacked memory bar with and without the draft, the plan's findings, and the source's quantization table."""
    base = scenario or default_scenario()
    controls = {n: w for n, w in scenario_controls(base).items() if n in MEMORY_CONTROLS}
    fig = _new_figure()
    summary, table, message = widgets.HTML(), widgets.HTML(), new_message()
    table_key: list = [None]

    def update() -> str | None:
        plan = plan_from_controls(base, controls)
        update_figure_in_place(fig, memory_figure_for(plan))
        summary.value = memory_summary_html(plan)
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

    refresh = _wire(controls, update, message, slow=update_table)
    widget = _layout(_grid(controls, MEMORY_CONTROLS), message, fig, summary, table)
    return Page(widget=widget, controls=controls, figures={"memory": fig}, message=message,
                outputs={"summary": summary, "table": table}, refresh=refresh)


# ---------------------------------------------------------------------------------------------------------------
# 06 mixed workload (simulation)
# ---------------------------------------------------------------------------------------------------------------
def _heavy_slider(kind, **kwargs) -> widgets.Widget:
    """A slider that reports only on release: these drive a simulation, not a formula."""
    w = kind(continuous_update=False, style=_STYLE, layout=_WIDE, **kwargs)
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


def simulate_mix(values: dict):
    """Run the with/without comparison for the control values; returns (Comparison, weighted mean α)."""
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
    comparison = sim.compare(requests, example.step_time, example.speculation,
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


def mixed_workload_summary_html(comparison, mean_alpha: float) -> str:
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
    return _rows_html(rows) + f"<p><b>{html.escape(verdict)}</b> (negative = faster with speculation; " \
        "simulated, step times from the source's 70B INT8 + 8B BF16 on 2× H100, see simulate.py)</p>"


def mixed_workload_page() -> Page:
    """P50 and P99 with and without speculation for a two-class mix (continuous-batching simulation)."""
    from specdec_lib import plots

    controls = mixed_workload_controls()
    tpot_fig, e2e_fig = _new_figure(), _new_figure()
    summary, message = widgets.HTML(), new_message()

    def update() -> str | None:
        comparison, mean_alpha = simulate_mix({n: w.value for n, w in controls.items()})
        for metric, fig in (("tpot", tpot_fig), ("e2e", e2e_fig)):
            update_figure_in_place(fig, plots.latency_percentiles_figure(
                mix_percentiles(comparison.speculative, metric), mix_percentiles(comparison.baseline, metric),
                title=f"Simulated {metric.upper()} at {comparison.qps:.2f} QPS: whole mix and by class"))
        summary.value = mixed_workload_summary_html(comparison, mean_alpha)
        return None

    refresh = _wire(controls, update, message, wait_s=0.0)
    widget = _layout(_grid(controls, list(controls)), message, summary, tpot_fig, e2e_fig)
    return Page(widget=widget, controls=controls, figures={"tpot": tpot_fig, "e2e": e2e_fig},
                message=message, outputs={"summary": summary}, refresh=refresh)


# ---------------------------------------------------------------------------------------------------------------
# Speed: the load model (pure) for the controls
# ---------------------------------------------------------------------------------------------------------------
QPS_GRID_POINTS = 25


def deployment_from_controls(c: dict, draft_override=None):
    """A `load.Deployment` for the controls (draft at the target's TP, as vLLM 0.32 requires)."""
    from specdec_lib import catalog, load

    target, draft = models_from_controls(c)
    if draft_override is not None:
        draft = draft_override
    tp = int(c["tensor_parallel_size"].value)
    return load.Deployment(
        target=target, target_precision=catalog.get_precision(c["target_precision"].value),
        gpu=catalog.get_gpu(c["gpu"].value), tp=tp, method="draft_model" if draft is not None else "none",
        draft=draft, draft_precision=catalog.get_precision(c["draft_precision"].value) if draft else None,
        draft_tp=tp)


@functools.lru_cache(maxsize=64)
def _speedup_curves_json(c_ratio: float, k: int) -> dict:
    """Speedup over α at batch 1 for k − 2, k, k + 2 with the break-even α at k, as plotly JSON (memoised)."""
    from specdec_lib import plots, speculation

    alphas = [i / 100 for i in range(0, 100)]
    ks = sorted({max(1, k - 2), k, k + 2})
    curves = {kk: [speculation.speedup(a, kk, c_ratio) for a in alphas] for kk in ks}
    break_even = {k: speculation.break_even_alpha(k, c_ratio)} if c_ratio < 1 else {}
    fig = plots.speedup_vs_alpha_figure(
        alphas, curves, break_even_by_k=break_even,
        title=f"Speedup vs α at batch 1 (draft cost c = {c_ratio:.3f} of a target step)")
    return {"data": [t.to_plotly_json() for t in fig.data], "layout": fig.layout.to_plotly_json()}


def speedup_alpha_figure(c_ratio: float, k: int, alpha: float | None, label: str = "assumed α") -> dict:
    """The α chart (Leviathan et al. Theorem 3.8) with the current α as a point on the k curve.

    The curves depend only on c and k, so they are built once; moving α moves one point.
    """
    from specdec_lib import plots, speculation

    base = _speedup_curves_json(c_ratio, k)
    data = list(base["data"])
    if alpha is not None:
        data.append(plots.alpha_marker_trace(alpha, speculation.speedup(alpha, k, c_ratio), label).to_plotly_json())
    return {"data": data, "layout": base["layout"]}


def qps_curve(dep, workload, alpha: float, k: int, qps_max: float) -> tuple[list[float], list[float]]:
    """Predicted speedup over an even grid of request rates up to `qps_max` (below the baseline's capacity)."""
    from specdec_lib import load

    xs = [qps_max * (i + 1) / QPS_GRID_POINTS for i in range(QPS_GRID_POINTS)]
    return xs, [load.speedup_at_qps(dep, q, workload, alpha, k).speedup for q in xs]


@functools.lru_cache(maxsize=64)
def _baseline_capacity_qps(dep, workload) -> float:
    from specdec_lib import load

    return load.batch_from_qps(dep, 1e-6, workload, speculative=False).capacity_qps


def load_prediction(dep, workload, alpha: float, k: int, qps: float, context_len: int) -> dict:
    """Page 03's quick numbers: c, break-even α, speedup at batch 1 and at QPS, capacity, the QPS curve."""
    from specdec_lib import load, speculation

    c_ratio = _cost_ratio(dep, context_len)
    capacity = _baseline_capacity_qps(dep, workload)
    xs, ys = qps_curve(dep, workload, alpha, k, 0.98 * capacity)
    return {
        "c": c_ratio,
        "break_even_alpha": speculation.break_even_alpha(k, c_ratio) if c_ratio < 1 else None,
        "speedup_batch1": load.speedup_vs_batch(dep, alpha, k, 1, context_len).speedup,
        "speedup_at_qps": load.speedup_at_qps(dep, qps, workload, alpha, k),
        "baseline_capacity_qps": capacity,
        "v1_rate": speculation.v1_rate_from_alpha(alpha, k),
        "qps_x": xs, "qps_speedup": ys,
    }


def crossovers(dep, workload, alpha: float, k: int, context_len: int) -> dict:
    """Page 03's slow numbers: where speculation stops paying, in QPS and in running batch size."""
    from specdec_lib import load

    return {"crossover_qps": load.crossover_qps(dep, workload, alpha, k),
            "crossover_batch": load.crossover_batch(dep, alpha, k, context_len)}


def _fmt_opt(value, fmt: str, none: str) -> str:
    return none if value is None else format(value, fmt)


def load_summary_html(p: dict, alpha: float, k: int, qps: float) -> str:
    at_qps = p["speedup_at_qps"]
    rows = [
        ("Draft cost c (one draft step / one target step, batch 1)", f"{p['c']:.3f}"),
        (f"Break-even α at k = {k}", _fmt_opt(p["break_even_alpha"], ".2f", "never (c ≥ 1)")),
        (f"What vLLM V1 would report for α = {alpha:.2f} (accepted / draft tokens)", f"{p['v1_rate']:.2f}"),
        ("Predicted speedup at batch 1", f"{p['speedup_batch1']:.2f}×"),
        (f"Predicted speedup at {qps:.2f} QPS (running batch {at_qps.baseline.batch_size:.1f})",
         f"{at_qps.speedup:.2f}×"),
        ("Baseline capacity", f"{p['baseline_capacity_qps']:.1f} QPS"),
    ]
    if "crossover_qps" in p:
        rows.append(("Speculation stops paying above",
                     _fmt_opt(p["crossover_qps"], ".2f", "never below capacity") + " QPS, "
                     + _fmt_opt(p["crossover_batch"], "", "no") + " sequences in a batch"))
    return _rows_html(rows) + ("<p>Roofline model with calibration factors (load.py); the α here is per-token "
                               "acceptance, the quantity the source's 0.5 / 0.65 thresholds describe.</p>")


# ---------------------------------------------------------------------------------------------------------------
# 03 break-even and load
# ---------------------------------------------------------------------------------------------------------------
BREAK_EVEN_CONTROLS = ["alpha", "num_speculative_tokens", "qps", "target_model", "target_config", "target_precision",
                       "draft_model", "draft_config", "draft_precision", "gpu", "tensor_parallel_size", "context_len"]


def _workload_for(base):
    from specdec_lib import load

    first = base.workload[0]
    return load.Workload(prompt_tokens=first.prompt_tokens, output_tokens=first.output_tokens)


def break_even_page(scenario=None) -> Page:
    """Speedup vs α with the break-even line, and speedup vs QPS with the crossover, for one deployment."""
    from specdec_lib import plots

    base = scenario or default_scenario()
    controls = {n: w for n, w in scenario_controls(base).items() if n in BREAK_EVEN_CONTROLS}
    alpha_fig, qps_fig = _new_figure(), _new_figure()
    summary, message = widgets.HTML(), new_message()
    workload = _workload_for(base)

    state: dict = {}

    def inputs():
        dep = deployment_from_controls(controls)
        if dep.draft is None:
            raise ValueError("draft_model='(none)': choose a draft model to compare speculation with the baseline")
        return (dep, float(controls["alpha"].value), int(controls["num_speculative_tokens"].value),
                float(controls["qps"].value), int(controls["context_len"].value))

    def qps_figure(p: dict, alpha: float, k: int, qps: float, crossover: float | None) -> go.Figure:
        return plots.speedup_vs_load_figure(
            p["qps_x"], {f"α = {alpha:.2f}, k = {k}": p["qps_speedup"]}, crossover=crossover, marked_x=qps,
            log_x=True,
            title=f"Predicted speedup vs load ({workload.prompt_tokens} in, {workload.output_tokens} out per request)")

    def update() -> str | None:
        dep, alpha, k, qps, context_len = inputs()
        p = load_prediction(dep, workload, alpha, k, qps, context_len)
        state.update(p=p, key=(dep, alpha, k, qps, context_len))
        update_figure_in_place(alpha_fig, speedup_alpha_figure(p["c"], k, alpha))
        update_figure_in_place(qps_fig, qps_figure(p, alpha, k, qps, None))
        summary.value = load_summary_html(p, alpha, k, qps)
        return None

    def update_crossovers() -> str | None:
        dep, alpha, k, qps, context_len = state["key"]
        p = {**state["p"], **crossovers(dep, workload, alpha, k, context_len)}
        update_figure_in_place(qps_fig, qps_figure(p, alpha, k, qps, p["crossover_qps"]))
        summary.value = load_summary_html(p, alpha, k, qps)
        return None

    refresh = _wire(controls, update, message, slow=update_crossovers)
    widget = _layout(_grid(controls, BREAK_EVEN_CONTROLS), message, alpha_fig, qps_fig, summary)
    return Page(widget=widget, controls=controls, figures={"alpha": alpha_fig, "qps": qps_fig}, message=message,
                outputs={"summary": summary}, refresh=refresh)


# ---------------------------------------------------------------------------------------------------------------
# 00 start here
# ---------------------------------------------------------------------------------------------------------------
START_CONTROLS = ["target_model", "target_precision", "draft_model", "draft_precision", "gpu", "num_gpus",
                  "tensor_parallel_size", "gpu_memory_utilization", "context_len", "temperature",
                  "num_speculative_tokens", "qps", "alpha", "alpha_measured", "target_config", "draft_config"]


def decide_scenario(scenario, plan=None):
    """The source's verdict for a scenario: memory plan, load prediction (when α is known), decision."""
    return decide_with_evidence(scenario, plan)[0]


def decide_with_evidence(scenario, plan=None):
    """(Decision, Evidence): the evidence carries the load model's crossover batch for the k schedule."""
    from specdec_lib import decision

    plan = plan if plan is not None else decision.plan_memory_for(scenario)
    evidence = decision.evidence_for(scenario, memory_plan=plan)
    alpha, _ = decision.workload_alpha(scenario, evidence)
    predict = getattr(decision, "predict_load", None)
    if predict is not None and scenario.speculative:
        evidence = decision.with_load(evidence, predict(scenario, alpha=alpha, memory_plan=plan))
    return decision.decide(scenario, evidence), evidence


def command_html(scenario, crossover_batch: float | None) -> str:
    """The vLLM command line (today's --speculative-config) for the scenario, with its notes."""
    from specdec_lib import vllm_command

    cmd = vllm_command.serve_command(scenario, crossover_batch=crossover_batch)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in cmd.notes)
    return (f"<b>Serve command ({html.escape(cmd.applies_to.label())})</b>"
            f"<pre style='white-space:pre-wrap'>{html.escape(cmd.shell())}</pre><ul>{notes}</ul>")


def start_here_page(scenario=None) -> Page:
    """Every control of the scenario; the memory bar, the speedup curve, and the verdict with its reasons."""
    from specdec_lib import load

    base = scenario or default_scenario()
    controls = scenario_controls(base)
    memory_fig, alpha_fig = _new_figure(), _new_figure()
    summary, verdict, message = widgets.HTML(), widgets.HTML(), new_message()
    state = {"scenario": base}

    def update() -> str | None:
        s = scenario_from_controls(base, controls)
        state["scenario"] = s
        plan = plan_from_controls(base, controls)
        update_figure_in_place(memory_fig, memory_figure_for(plan))
        dep = deployment_from_controls(controls)
        alpha = float(controls["alpha"].value)
        k = int(controls["num_speculative_tokens"].value)
        rows = [("KV cache per GPU / sequences at context",
                 f"{max(0, plan.kv_budget_bytes_per_gpu) / 2**30:.1f} GiB / {plan.max_concurrent_seqs:,} "
                 f"(without the draft: {plan.max_concurrent_seqs_without_draft:,})")]
        if dep.draft is not None:
            c_ratio = load.cost_ratio(dep, 1, s.context_len)
            label = "measured α" if controls["alpha_measured"].value else "assumed α"
            update_figure_in_place(alpha_fig, speedup_alpha_figure(c_ratio, k, alpha, label))
            at_qps = load.speedup_at_qps(dep, s.qps, _workload_for(s), alpha, k)
            rows.append((f"Predicted speedup at {s.qps:.2f} QPS with {label} {alpha:.2f}", f"{at_qps.speedup:.2f}×"))
        summary.value = _rows_html(rows)
        return "; ".join(plan.vllm_errors) or None

    def update_verdict() -> str | None:
        try:
            verdict.value = decision_html(decide_scenario(state["scenario"]))
        except ValueError as exc:
            verdict.value = message_html(f"No verdict: {exc}", "warning")
        return None

    refresh = _wire(controls, update, message, slow=update_verdict)
    widget = _layout(_grid(controls, START_CONTROLS), message, summary, memory_fig, alpha_fig,
                     verdict)
    return Page(widget=widget, controls=controls, figures={"memory": memory_fig, "alpha": alpha_fig},
                message=message, outputs={"summary": summary, "verdict": verdict, "state": state}, refresh=refresh)


# ---------------------------------------------------------------------------------------------------------------
# 01 draft selection
# ---------------------------------------------------------------------------------------------------------------
DRAFT_CONTROLS = ["target_model", "target_config", "target_precision", "draft_model", "draft_precision", "gpu",
                  "tensor_parallel_size", "num_speculative_tokens", "alpha", "context_len"]


@dataclass(frozen=True)
class DraftCandidate:
    name: str
    ratio: float                # target params / draft params
    band: str                   # the source's reading of the ratio
    same_family: bool
    same_tokenizer: bool
    same_vocab_size: bool
    tp_ok: bool                 # the draft's attention heads divide by the TP it must run at
    weights_bytes_per_gpu: int
    cost_ratio: float | None    # c at batch 1 (None when it cannot run at this TP)
    break_even_alpha: float | None
    speedup_at_alpha: float | None


@functools.lru_cache(maxsize=256)
def _cost_ratio(dep, context_len: int) -> float:
    """`load.cost_ratio` at batch 1, memoised: k and α sliders do not change it."""
    from specdec_lib import load

    return load.cost_ratio(dep, 1, context_len)


def draft_candidates(target, c: dict) -> list[DraftCandidate]:
    """Every catalog model smaller than the target, scored against the source's checklist at this k and α."""
    from specdec_lib import catalog, memory, speculation

    tp = int(c["tensor_parallel_size"].value)
    k = int(c["num_speculative_tokens"].value)
    alpha = float(c["alpha"].value)
    precision = catalog.get_precision(c["draft_precision"].value)
    out = []
    for name, spec in sorted(catalog.models().items(), key=lambda kv: -kv[1].params):
        if spec.params >= target.params:
            continue
        pair = catalog.pairing(spec, target)
        try:
            memory.check_tp(spec, tp)
            tp_ok = True
        except ValueError:
            tp_ok = False
        c_ratio = be = gain = None
        if tp_ok:
            c_ratio = _cost_ratio(deployment_from_controls(c, draft_override=spec), int(c["context_len"].value))
            if c_ratio < 1:  # a draft as slow as the target never breaks even
                be = speculation.break_even_alpha(k, c_ratio)
            gain = speculation.speedup(alpha, k, c_ratio)
        out.append(DraftCandidate(
            name=name, ratio=pair.ratio, band=pair.verdict, same_family=pair.same_family,
            same_tokenizer=pair.same_tokenizer, same_vocab_size=pair.same_vocab_size, tp_ok=tp_ok,
            weights_bytes_per_gpu=memory.weight_bytes(spec, precision, tp if tp_ok else 1),
            cost_ratio=c_ratio, break_even_alpha=be, speedup_at_alpha=gain))
    return out


def draft_table_html(candidates: list[DraftCandidate], selected: str | None, alpha: float, k: int) -> str:
    def yes(flag: bool) -> str:
        return "✓" if flag else "<span style='color:#b00020'>✗</span>"

    head = ("<tr><th>draft</th><th>ratio</th><th>source's reading</th><th>family</th><th>tokenizer</th>"
            "<th>vocab</th><th>TP ok</th><th>weights/GPU</th><th>c</th><th>break-even α</th>"
            f"<th>speedup at α={alpha:.2f}, k={k}</th></tr>")
    rows = []
    for d in candidates:
        style = " style='background:#fff3cd'" if d.name == selected else ""
        rows.append(
            f"<tr{style}><td>{html.escape(d.name)}</td><td>1:{d.ratio:.1f}</td><td>{html.escape(d.band)}</td>"
            f"<td>{yes(d.same_family)}</td><td>{yes(d.same_tokenizer)}</td><td>{yes(d.same_vocab_size)}</td>"
            f"<td>{yes(d.tp_ok)}</td><td>{d.weights_bytes_per_gpu / 2**30:.1f} GiB</td>"
            f"<td>{_fmt_opt(d.cost_ratio, '.3f', '–')}</td>"
            f"<td>{_fmt_opt(d.break_even_alpha, '.2f', 'never' if d.cost_ratio else '–')}</td>"
            f"<td>{_fmt_opt(d.speedup_at_alpha, '.2f', '–')}{'×' if d.speedup_at_alpha else ''}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def draft_selection_page(scenario=None) -> Page:
    """Every smaller catalog model as a draft for the chosen target: ratio, checklist, c, break-even α."""
    from specdec_lib import plots

    base = scenario or default_scenario()
    controls = {n: w for n, w in scenario_controls(base).items() if n in DRAFT_CONTROLS}
    fig, alpha_fig = _new_figure(), _new_figure()
    table, message = widgets.HTML(), new_message()

    def update() -> str | None:
        target, draft = models_from_controls(controls)
        candidates = draft_candidates(target, controls)
        if not candidates:
            raise ValueError(f"target_model={target.name!r}: the catalog has no smaller model to draft with")
        selected = draft.name if draft is not None else None
        usable = [d for d in candidates if d.break_even_alpha is not None]
        update_figure_in_place(fig, plots.draft_candidates_figure(
            [d.name for d in usable], [d.ratio for d in usable], [d.break_even_alpha for d in usable],
            [d.same_family for d in usable], selected=selected,
            title=f"Drafts for {target.name}: size ratio vs the α they need (k = "
                  f"{controls['num_speculative_tokens'].value})"))
        chosen = next((d for d in usable if d.name == selected), None)
        if chosen is not None:
            update_figure_in_place(alpha_fig, speedup_alpha_figure(
                chosen.cost_ratio, int(controls["num_speculative_tokens"].value), float(controls["alpha"].value)))
        table.value = draft_table_html(candidates, selected, float(controls["alpha"].value),
                                       int(controls["num_speculative_tokens"].value))
        if draft is not None and chosen is None:
            return f"draft_model={draft.name!r} cannot be used with this target at TP {controls['tensor_parallel_size'].value}"
        return None

    refresh = _wire(controls, update, message)
    widget = _layout(_grid(controls, DRAFT_CONTROLS), message, fig, alpha_fig, table)
    return Page(widget=widget, controls=controls, figures={"candidates": fig, "alpha": alpha_fig},
                message=message, outputs={"table": table}, refresh=refresh)


# ---------------------------------------------------------------------------------------------------------------
# Live pages (04, 05): endpoint calls only behind a button
# ---------------------------------------------------------------------------------------------------------------
BASELINE_DEMO_COMMAND = "python -m specdec_lib.localserver demo --port 8001 --spec none"


def baseline_url_default() -> str:
    """Page 05's baseline server (no speculation): env SPECDEC_BASELINE_ENDPOINT, else empty (compare nothing)."""
    return os.environ.get("SPECDEC_BASELINE_ENDPOINT", "").strip()


def requests_default(default: int) -> int:
    """Env SPECDEC_REQUESTS overrides the live pages' request counts (small numbers for headless tests)."""
    value = os.environ.get("SPECDEC_REQUESTS", "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"SPECDEC_REQUESTS={value!r} is not accepted: a whole number >= 1")
    return int(value)


def _requests_or_note(default: int, notes: list[str]) -> int:
    try:
        return requests_default(default)
    except ValueError as exc:
        notes.append(f"{exc}; using {default}")
        return default


def parse_float_list(text: str, field_name: str, low: float, high: float) -> list[float]:
    """'0, 0.4, 0.8' -> [0.0, 0.4, 0.8]; ValueError naming the field and the range otherwise."""
    try:
        values = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{field_name}={text!r} is not accepted: numbers separated by commas") from None
    if not values or any(not low <= v <= high for v in values):
        raise ValueError(f"{field_name}={text!r} is not accepted: at least one number, each in [{low:g}, {high:g}]")
    return values


def unreachable_text(url: str, exc: BaseException, demo_command: str = LOCAL_DEMO_COMMAND) -> str:
    return (f"Nothing usable answers at {url}: {getattr(exc, 'detail', exc)}\n"
            f"To try this page on this machine, start a tiny real vLLM server (CPU) in a terminal:\n"
            f"    {demo_command}\n"
            f"then press the button again (or set SPECDEC_ENDPOINT before starting JupyterLab).")


def _discover(url: str):
    """(client, ServerInfo) for a URL, or an EndpointError explaining what answered (or did not)."""
    from specdec_lib.endpoint import EndpointClient

    client = EndpointClient(url.strip())
    return client, client.discover()


def _text_control(value: str, description: str, placeholder: str = "") -> widgets.Text:
    return widgets.Text(value=value, description=description, placeholder=placeholder, style=_STYLE, layout=_WIDE)


def _int_control(value: int, description: str, low: int, high: int) -> widgets.BoundedIntText:
    return widgets.BoundedIntText(value=value, min=low, max=high, description=description, style=_STYLE,
                                  layout=_WIDE)


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
        f"<tr><td>{r.temperature:g}</td><td>{r.succeeded}/{r.requests}</td><td>{_fmt_opt(r.v1_rate, '.2f', '–')}</td>"
        f"<td>{_fmt_opt(r.alpha, '.2f', '–')}</td><td>{_fmt_opt(r.mean_acceptance_length, '.2f', '–')}</td>"
        f"<td>{_fmt_opt(r.per_request_p10, '.2f', '–')} / {_fmt_opt(r.per_request_p50, '.2f', '–')} / "
        f"{_fmt_opt(r.per_request_p90, '.2f', '–')}</td><td>{html.escape(r.band or '–')}</td>"
        f"<td>{html.escape(r.status)}</td></tr>" for r in results)
    return f"<table>{head}{rows}</table>"


def sweep_text(results) -> str:
    """One line per temperature, printed in autorun mode so headless runs show the result in the cell output."""
    return "\n".join(f"T={r.temperature:g}: ok {r.succeeded}/{r.requests}, accepted {r.accepted_tokens} of "
                     f"{r.draft_tokens} draft tokens, vLLM rate "
                     f"{_fmt_opt(r.v1_rate, '.3f', 'none')}, alpha {_fmt_opt(r.alpha, '.3f', 'none')}, "
                     f"status {r.status}" for r in results)


def live_acceptance_page(scenario=None) -> Page:
    """Sweep temperatures against a real endpoint; acceptance by temperature over the source's bands."""
    from specdec_lib import loadtest, plots
    from specdec_lib.endpoint import EndpointError

    base = scenario or default_scenario()
    notes: list[str] = []
    controls = {
        "endpoint_url": _text_control(endpoint_url_default(), "Endpoint URL", DEFAULT_ENDPOINT_URL),
        "temperatures": _text_control(", ".join(f"{t:g}" for t in loadtest.DEFAULT_TEMPERATURES), "Temperatures"),
        "requests_per_temperature": _int_control(_requests_or_note(20, notes), "Requests per temperature", 1, 1000),
        "max_tokens": _int_control(128, "max_tokens", 1, 4096),
        "concurrency": _int_control(4, "Concurrency", 1, 256),
        "histogram_temperature": widgets.Dropdown(options=[], description="Histogram at T", style=_STYLE),
    }
    run_button = widgets.Button(description="Run the sweep", button_style="primary", icon="play")
    check_button = widgets.Button(description="Check the endpoint", icon="plug")
    status, table, message = widgets.HTML(), widgets.HTML(), new_message()
    figures: dict = {}
    temp_slot, hist_slot = FigureSlot(figures, "temperature"), FigureSlot(figures, "histogram")
    state: dict = {"sweep": None}
    production_temperatures = sorted({c.temperature for c in base.workload})

    def check() -> str | None:
        url = controls["endpoint_url"].value
        try:
            _, info = _discover(url)
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

    def run() -> str | None:
        note = check()
        if note:
            return note
        temperatures = parse_float_list(controls["temperatures"].value, "temperatures", 0.0, 2.0)
        n = int(controls["requests_per_temperature"].value)
        status.value = message_html(f"Running {n} requests at each of {len(temperatures)} temperatures…", "info")
        client, _ = _discover(controls["endpoint_url"].value)
        try:
            sweep = loadtest.run_temperature_sweep(
                client, temperatures=temperatures, requests_per_temperature=n,
                max_tokens=int(controls["max_tokens"].value), concurrency=int(controls["concurrency"].value),
                progress=False)
        except EndpointError as exc:
            raise ValueError(unreachable_text(controls["endpoint_url"].value, exc)) from None
        state["sweep"] = sweep
        results = sweep.temperatures
        temp_slot.show(plots.acceptance_by_temperature_figure(
            [r.temperature for r in results], [r.alpha for r in results], v1_rates=[r.v1_rate for r in results],
            production_temperatures=production_temperatures,
            title=f"Acceptance by temperature: {sweep.server.get('served_model', '')}"))
        table.value = sweep_table_html(results)
        status.value = message_html(f"Done: run folder {sweep.run_path}", "ok")
        controls["histogram_temperature"].options = [(f"{r.temperature:g}", r.temperature) for r in results]
        controls["histogram_temperature"].value = results[-1].temperature
        draw_histogram()
        if autorun_requested():
            print(sweep_text(results))
        return "the sweep was interrupted; the run folder holds what finished" if sweep.interrupted else None

    guarded_run, guarded_check = _guarded(run, message), _guarded(check, message)
    run_button.on_click(lambda _b: guarded_run())
    check_button.on_click(lambda _b: guarded_check())
    controls["histogram_temperature"].observe(lambda _c: _guarded(draw_histogram, message)(), names="value")
    status.value = message_html(
        f"Nothing is sent until you press a button. No server? Start one with: {LOCAL_DEMO_COMMAND}", "info")
    widget = _layout(_grid(controls, list(controls)), widgets.HBox([run_button, check_button]), status, message,
                     temp_slot, hist_slot, table)
    message.value = message_html("; ".join(notes), "warning") if notes else ""
    page = Page(widget=widget, controls=controls, figures=figures,
                message=message, outputs={"status": status, "table": table, "state": state,
                                          "run_button": run_button, "check_button": check_button},
                refresh=guarded_run)
    if autorun_requested():
        run_button.click()
    return page


LATENCY_KEYS = (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E", "e2e"))


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
                         f"{_fmt_opt(lat.get('tpot_p50_s'), '.4f', 'none')} s, p99 "
                         f"{_fmt_opt(lat.get('tpot_p99_s'), '.4f', 'none')} s")
    return "\n".join(lines)


def comparison_html(rows) -> str:
    head = ("<tr><th>level</th><th>metric</th><th>P50 base → spec</th><th>change</th><th>P99 base → spec</th>"
            "<th>change</th><th>P50 better, P99 worse?</th></tr>")

    def ms(v):
        return _fmt_opt(None if v is None else v * 1000, ".1f", "–")

    def pct(v):
        return _fmt_opt(None if v is None else v * 100, "+.0f", "–") + (" %" if v is not None else "")

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
        "endpoint_url": _text_control(endpoint_url_default(), "URL with speculation", DEFAULT_ENDPOINT_URL),
        "baseline_url": _text_control(baseline_url_default(), "URL without (optional)", "http://127.0.0.1:8001"),
        "concurrency_levels": _text_control("1, 4", "Concurrency levels"),
        "requests_per_level": _int_control(_requests_or_note(16, notes), "Requests per level", 1, 5000),
        "max_tokens": _int_control(128, "max_tokens", 1, 4096),
        "temperature": widgets.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.05, description="Temperature",
                                           continuous_update=False, style=_STYLE, layout=_WIDE),
        "level": widgets.Dropdown(options=[], description="Chart level", style=_STYLE),
    }
    run_button = widgets.Button(description="Run the load test", button_style="primary", icon="play")
    status, table, message = widgets.HTML(), widgets.HTML(), new_message()
    figures: dict = {}
    tpot_slot, ttft_slot = FigureSlot(figures, "tpot"), FigureSlot(figures, "ttft")
    state: dict = {"spec": None, "base": None}

    def run_one(url: str, levels: list[int]):
        try:
            client, _ = _discover(url)
            return loadtest.run_load_test(
                client, concurrency_levels=levels, requests_per_level=int(controls["requests_per_level"].value),
                temperatures=(float(controls["temperature"].value),), max_tokens=int(controls["max_tokens"].value),
                progress=False)
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
        for slot, metrics, title in ((tpot_slot, ("tpot", "itl"), "TPOT and ITL"), (ttft_slot, ("ttft", "e2e"),
                                                                                   "TTFT and E2E")):
            slot.show(plots.latency_percentiles_figure(
                level_percentiles(s_level.latency, metrics),
                level_percentiles(b_level.latency, metrics) if b_level else None,
                title=f"{title} at {label}"))
        return None

    def run() -> str | None:
        levels = [int(v) for v in parse_float_list(controls["concurrency_levels"].value, "concurrency_levels", 1, 1024)]
        status.value = message_html(f"Load test at concurrency {levels} against {controls['endpoint_url'].value}…",
                                    "info")
        spec = run_one(controls["endpoint_url"].value, levels)
        base = None
        if controls["baseline_url"].value.strip():
            status.value = message_html(f"Baseline at {controls['baseline_url'].value}…", "info")
            base = run_one(controls["baseline_url"].value, levels)
        state.update(spec=spec, base=base)
        controls["level"].options = [lv.label for lv in spec.levels]
        controls["level"].value = spec.levels[-1].label
        draw()
        table.value = comparison_html(loadtest.compare_load_tests(base, spec)) if base else ""
        status.value = message_html(f"Done: {spec.run_path}" + (f" and {base.run_path}" if base else ""), "ok")
        if autorun_requested():
            print(load_test_text(spec, base))
        if base is None:
            return ("no baseline URL: the chart shows speculation alone. Start one without speculation with: "
                    + BASELINE_DEMO_COMMAND)
        return None

    guarded_run = _guarded(run, message)
    run_button.on_click(lambda _b: guarded_run())
    controls["level"].observe(lambda _c: _guarded(draw, message)(), names="value")
    status.value = message_html(f"Nothing is sent until you press the button. No server? {LOCAL_DEMO_COMMAND} "
                                f"(and, for the baseline, {BASELINE_DEMO_COMMAND})", "info")
    widget = _layout(_grid(controls, list(controls)), run_button, status, message, tpot_slot, ttft_slot,
                     table)
    message.value = message_html("; ".join(notes), "warning") if notes else ""
    page = Page(widget=widget, controls=controls, figures=figures, message=message,
                outputs={"status": status, "table": table, "state": state, "run_button": run_button},
                refresh=guarded_run)
    if autorun_requested():
        run_button.click()
    return page


# ---------------------------------------------------------------------------------------------------------------
# 07 decision memo; scenario files
# ---------------------------------------------------------------------------------------------------------------
MEMO_CONTROLS = ["target_model", "target_precision", "draft_model", "draft_precision", "gpu", "num_gpus",
                 "tensor_parallel_size", "gpu_memory_utilization", "context_len", "temperature",
                 "num_speculative_tokens", "qps", "alpha", "alpha_measured", "slo", "monitoring_in_place",
                 "acceptance_validated_at_production_temperature"]


def decision_controls(scenario) -> dict[str, widgets.Widget]:
    """The scenario controls plus the framework's yes/no questions (SLO kind, monitoring, validation)."""
    from specdec_lib import scenario as scenario_module

    c = scenario_controls(scenario)
    c["slo"] = widgets.Dropdown(options=list(scenario_module.SLO_KINDS), value=scenario.slo,
                                description="Primary SLO", style=_STYLE, layout=_WIDE)
    c["monitoring_in_place"] = widgets.Checkbox(value=scenario.monitoring_in_place, indent=False,
                                                description="Acceptance monitoring is in place")
    c["acceptance_validated_at_production_temperature"] = widgets.Checkbox(
        value=scenario.acceptance_validated_at_production_temperature, indent=False,
        description="Acceptance validated at production temperature")
    return c


def decision_scenario_from_controls(base, c: dict):
    return dataclasses.replace(
        scenario_from_controls(base, c), slo=c["slo"].value, monitoring_in_place=bool(c["monitoring_in_place"].value),
        acceptance_validated_at_production_temperature=bool(c["acceptance_validated_at_production_temperature"].value))


def set_controls_from_scenario(c: dict, scenario) -> None:
    """Show a loaded scenario in the controls (options grow to hold names the catalog spells differently)."""
    first = scenario.workload[0]
    values = {
        "target_model": scenario.target_model, "draft_model": scenario.draft_model or "(none)",
        "target_precision": scenario.target_precision, "draft_precision": scenario.draft_precision,
        "gpu": scenario.gpu, "num_gpus": scenario.num_gpus, "tensor_parallel_size": scenario.tensor_parallel_size,
        "gpu_memory_utilization": scenario.gpu_memory_utilization, "context_len": scenario.context_len,
        "temperature": first.temperature, "num_speculative_tokens": scenario.num_speculative_tokens,
        "qps": scenario.qps, "alpha_measured": first.alpha is not None, "slo": scenario.slo,
        "monitoring_in_place": scenario.monitoring_in_place,
        "acceptance_validated_at_production_temperature": scenario.acceptance_validated_at_production_temperature,
    }
    if first.alpha is not None:
        values["alpha"] = first.alpha
    for name, value in values.items():
        widget = c.get(name)
        if widget is None:
            continue
        if isinstance(widget, widgets.Dropdown) and value not in [o[1] if isinstance(o, tuple) else o
                                                                  for o in widget.options]:
            widget.options = [value, *widget.options]
        if isinstance(widget, widgets.SelectionSlider) and value not in [o[1] for o in widget.options]:
            widget.options = _int_options(tuple(o[1] for o in widget.options), value)
        widget.value = value
    c["temperature"].disabled = len(scenario.workload) > 1


def decision_memo_page(scenario=None) -> Page:
    """The verdict with its reasons, one-click HTML memo, and scenario files (TOML) to save and load."""
    from specdec_lib import memo
    from specdec_lib import scenario as scenario_module

    state = {"base": scenario or default_scenario()}
    controls = decision_controls(state["base"])
    files = {
        "scenario_path": _text_control("scenario.toml", "Scenario file (TOML)"),
        "run_dir": _text_control("", "Measurement run folder", "optional: runs/<time>-sweep"),
        "baseline_run_dir": _text_control("", "Baseline run folder", "optional: runs/<time>-load"),
        "memo_path": _text_control("decision-memo.html", "Memo file"),
    }
    buttons = {
        "export": widgets.Button(description="Export the memo", button_style="primary", icon="file"),
        "save": widgets.Button(description="Save scenario", icon="save"),
        "load": widgets.Button(description="Load scenario", icon="folder-open"),
    }
    verdict, command, status, message = widgets.HTML(), widgets.HTML(), widgets.HTML(), new_message()
    fig = _new_figure()

    def current():
        return decision_scenario_from_controls(state["base"], controls)

    def update() -> str | None:
        plan = plan_from_controls(current(), controls)
        update_figure_in_place(fig, memory_figure_for(plan))
        return "; ".join(plan.vllm_errors) or None

    def update_verdict() -> str | None:
        s = current()
        decision, evidence = decide_with_evidence(s)
        verdict.value = decision_html(decision)
        try:
            command.value = command_html(s, evidence.crossover_batch)
        except ValueError as exc:
            command.value = message_html(f"No serve command: {exc}", "warning")
        return None

    def export() -> str | None:
        s = current()
        path = memo.write_memo(s, files["memo_path"].value.strip() or "decision-memo.html",
                               run_dir=files["run_dir"].value.strip() or None,
                               baseline_run_dir=files["baseline_run_dir"].value.strip() or None)
        status.value = (f"<div style='color:#1b5e20'>Memo written: <a href='{html.escape(path.name)}' "
                        f"target='_blank'>{html.escape(str(path.resolve()))}</a> (self-contained HTML, opens "
                        "offline)</div>")
        return None

    def save() -> str | None:
        path = scenario_module.save_scenario(current(), files["scenario_path"].value.strip())
        status.value = message_html(f"Scenario saved: {path.resolve()}", "ok")
        return None

    def load_file() -> str | None:
        loaded = scenario_module.load_scenario(files["scenario_path"].value.strip())
        state["base"] = loaded
        set_controls_from_scenario(controls, loaded)
        refresh()
        status.value = message_html(f"Scenario loaded: {loaded.title}", "ok")
        return None

    refresh = _wire(controls, update, message, slow=update_verdict)
    for name, fn in (("export", export), ("save", save), ("load", load_file)):
        guarded = _guarded(fn, message)
        buttons[name].on_click(lambda _b, g=guarded: g())
    widget = _layout(_grid(controls, MEMO_CONTROLS), message, verdict, fig, command,
                     widgets.VBox(list(files.values())), widgets.HBox(list(buttons.values())), status)
    return Page(widget=widget, controls={**controls, **files}, figures={"memory": fig}, message=message,
                outputs={"verdict": verdict, "command": command, "status": status, "buttons": buttons,
                         "state": state},
                refresh=refresh)
