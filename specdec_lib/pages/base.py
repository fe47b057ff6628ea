"""The pages' mechanics: `Page`, debounced wiring of controls, figures updated in place, the message line.

Each notebook calls one `*_page()` function (one module per page in this package) and displays `page.widget`.
A `Page` keeps its controls, its plotly `FigureWidget`s and its message line by name, so a test can set
`page.controls["temperature"].value` and read `page.figures["speedup"].data` without a browser.

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
import functools
import html
from dataclasses import dataclass
from typing import Callable

import ipywidgets as widgets
import plotly.graph_objects as go

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


def guarded(update: Callable[[], str | None], message: widgets.HTML, clear: bool = True,
            stale: tuple = ()) -> Callable[[], None]:
    """Run `update`; show any error in `message` instead of a traceback, and mark the `stale` outputs (HTML
    widgets) as the previous result, so nothing on screen passes for the answer to the failed change.

    `update` may return a warning line to show; returning None clears the message (unless clear=False).
    """

    def run() -> None:
        try:
            note = update()
        except Exception as exc:  # noqa: BLE001 - the UI edge: every failure becomes a readable message
            mark_stale(message, list(stale), error_text(exc))
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


def wire(controls: dict, update: Callable[[], str | None], message: widgets.HTML, wait_s: float = DEBOUNCE_S,
         slow: Callable[[], str | None] | None = None, stale: tuple = ()) -> Callable[[], None]:
    """Observe every control's value: `update` (figures) through a leading-edge debouncer, `slow` (verdicts,
    crossovers) through a trailing one, so figures answer at once and slow text follows when dragging stops.
    Runs both once now; returns a function that refreshes both at once. While `refresh.hold[0]` is True (a
    scenario being loaded into the controls) changes are not acted on; call `refresh()` after."""
    fast_ok = [True]

    def update_and_note() -> str | None:
        fast_ok[0] = False
        note = update()
        fast_ok[0] = True
        return note

    def slow_if_fast_ok() -> str | None:
        return slow() if fast_ok[0] else None  # the figures' error stays on screen

    fast = guarded(update_and_note, message, stale=stale)
    later = guarded(slow_if_fast_ok, message, clear=False, stale=stale) if slow is not None else None
    fast_debounced = Debouncer(fast, wait_s)
    slow_debounced = Debouncer(later, SLOW_WAIT_S, leading=False) if later is not None else None

    hold = [False]

    def changed(_change) -> None:
        if hold[0]:
            return
        fast_debounced()
        if slow_debounced is not None:
            slow_debounced()

    for control in controls.values():
        control.observe(changed, names="value")

    def refresh() -> None:
        fast()
        if later is not None:
            later()

    refresh.hold = hold
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


def new_figure() -> go.FigureWidget:
    return go.FigureWidget(layout=go.Layout(height=380, template="plotly_white"))


def grid(controls: dict, names: list[str], columns: int = 2) -> widgets.Widget:
    chosen = [controls[n] for n in names]
    per_column = -(-len(chosen) // columns)
    return widgets.HBox([widgets.VBox(chosen[i:i + per_column]) for i in range(0, len(chosen), per_column)])




def layout(*parts: widgets.Widget) -> widgets.VBox:
    return widgets.VBox(list(parts))


def rows_html(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td style='padding-right:1em'>{html.escape(k)}</td><td><b>{html.escape(v)}</b></td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def mark_stale(message: widgets.HTML, outputs: list[widgets.HTML], why: str) -> None:
    """A failed update: say so, and grey out what is on screen so old results are not read as current."""
    message.value = message_html(why, "error")
    for out in outputs:
        if out.value and "specdec-stale" not in out.value[:60]:
            out.value = (f"<div class='specdec-stale' style='opacity:0.45'><i>stale: the last change failed; "
                         f"this is the previous result</i>{out.value}</div>")


@functools.lru_cache(maxsize=32)
def evaluation(scenario, curves: bool = True, estimates: tuple = ()):
    """`evaluate(scenario)` for the pages, memoised on the (frozen, hashable) scenario and estimates: moving a
    control back and forth does not recompute. The scenario's own `prediction_runs` and `calibration` are resolved
    here (`inputs.resolve`), as `specdec plan` resolves them; `estimates` (a tuple) are added. Pages never compute
    beside it; pages that draw no speedup-vs-QPS chart skip its curves (curves=False), which changes no other
    figure."""
    from specdec_lib import inputs
    from specdec_lib.evaluate import evaluate

    resolved = inputs.resolve(scenario)
    kw = dict(estimates=tuple(estimates) + resolved.estimates, calibration=resolved.step_factors)
    return evaluate(scenario, **kw) if curves else evaluate(scenario, curve_points=0, **kw)


def with_file_inputs(scenario, prediction_runs_text: str, calibration_text: str):
    """The scenario with the page's "prediction run folders" (comma-separated) and "calibration file" controls;
    an empty control keeps the scenario's own value."""
    import dataclasses

    runs = tuple(p.strip() for p in prediction_runs_text.split(",") if p.strip())
    return dataclasses.replace(scenario, prediction_runs=runs or scenario.prediction_runs,
                               calibration=calibration_text.strip() or scenario.calibration)
