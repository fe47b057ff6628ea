"""Notebook page 01b: predict acceptance before deploying (widgets over ``oracle_client`` and ``prediction``).

Thin: the controls map one to one onto ``oracle_client.run_prediction``'s arguments; the numbers are
``Prediction.ranking`` / ``to_frame``. Nothing is sent until **Predict** is pressed; the run happens in a
background thread with a progress bar, and **Cancel** stops it between requests (the run folder keeps what
finished and can be resumed from code). With ``SPECDEC_AUTORUN=1`` (headless tests) the button runs in the
foreground and a summary is printed.

Environment defaults: ``SPECDEC_ENDPOINT`` (target), ``SPECDEC_DRAFT_ENDPOINT`` (comma-separated drafts),
``SPECDEC_REQUESTS`` (prompts per temperature).
"""

from __future__ import annotations

import html
import os
import threading
from dataclasses import dataclass

import ipywidgets as widgets

from specdec_lib import oracle, oracle_client, suffix_replay
from specdec_lib.loadtest import BUILTIN_PROMPT_SETS

DEFAULT_TARGET_URL = "http://127.0.0.1:8000"
_STYLE = {"description_width": "170px"}
_LAYOUT = widgets.Layout(width="520px")


@dataclass(frozen=True)
class PredictPage:
    widget: widgets.Widget
    controls: dict
    outputs: dict
    state: dict


def _autorun() -> bool:
    return os.environ.get("SPECDEC_AUTORUN", "").strip() in {"1", "true", "yes"}


def _floats(text: str, name: str, cast=float) -> list:
    try:
        values = [cast(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise ValueError(f"{name}: give at least one value")
    return values


def _message(text: str, kind: str) -> str:
    color = {"ok": "#1b5e20", "error": "#b00020", "info": "#333"}[kind]
    return f'<div class="specdec-message" style="color:{color}">{html.escape(text)}</div>'


def predict_page() -> PredictPage:
    """The page: endpoints, prompts, temperatures, k, draft sampling; Predict / Cancel; ranked table."""
    requests_default = int(os.environ.get("SPECDEC_REQUESTS", "8") or 8)
    text = lambda value, label: widgets.Text(value=value, description=label, style=_STYLE, layout=_LAYOUT)  # noqa
    controls = {
        "target_url": text(os.environ.get("SPECDEC_ENDPOINT", DEFAULT_TARGET_URL), "Target URL (no spec.)"),
        "draft_urls": text(os.environ.get("SPECDEC_DRAFT_ENDPOINT", ""), "Draft URLs (comma-sep.)"),
        "prompts": widgets.SelectMultiple(options=BUILTIN_PROMPT_SETS, value=BUILTIN_PROMPT_SETS,
                                          description="Prompt sets", style=_STYLE),
        "prompts_file": text("", "or a JSONL file"),
        "n_prompts": widgets.BoundedIntText(value=requests_default, min=1, max=1000, description="Prompts",
                                            style=_STYLE),
        "temperatures": text("0, 0.5, 1", "Temperatures"),
        "ks": text("1, 2, 3, 4, 5, 6, 7, 8", "k values"),
        "methods": widgets.SelectMultiple(options=oracle.DRAFT_SAMPLE_METHODS, value=oracle.DRAFT_SAMPLE_METHODS,
                                          description="Draft sampling", style=_STYLE),
        "max_tokens": widgets.BoundedIntText(value=64, min=2, max=4096, description="max_tokens", style=_STYLE),
        "logprobs": widgets.BoundedIntText(value=oracle_client.DEFAULT_LOGPROBS, min=1, max=100000,
                                           description="top-N logprobs", style=_STYLE),
        "top_k": widgets.BoundedIntText(value=0, min=0, max=100000, description="top_k (0: off)", style=_STYLE),
        "top_p": widgets.BoundedFloatText(value=1.0, min=0.01, max=1.0, step=0.05, description="top_p (1: off)",
                                          style=_STYLE),
        "ngram": widgets.Checkbox(value=True, description="also replay n-gram (2..4)", style=_STYLE),
        "suffix": widgets.Checkbox(value=False, description="also replay suffix decoding (needs arctic-inference)",
                                   style=_STYLE),
        "ranking_k": widgets.BoundedIntText(value=4, min=1, max=64, description="Rank at k", style=_STYLE),
    }
    predict_button = widgets.Button(description="Predict", button_style="primary", icon="play")
    cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
    bar = widgets.IntProgress(value=0, min=0, max=1, description="requests")
    status, table = widgets.HTML(), widgets.HTML()
    status.add_class("specdec-message")  # where the page says errors (the notebook tests read it)
    state: dict = {"prediction": None, "stop": None, "thread": None, "error": None}

    def arguments() -> dict:
        from specdec_lib.endpoint import EndpointClient

        drafts = [u.strip() for u in controls["draft_urls"].value.split(",") if u.strip()]
        ks = _floats(controls["ks"].value, "k values", int)
        return dict(target=EndpointClient(controls["target_url"].value.strip()),
                    drafts=[EndpointClient(u) for u in drafts],
                    prompts=controls["prompts_file"].value.strip() or list(controls["prompts"].value),
                    n_prompts=int(controls["n_prompts"].value),
                    temperatures=_floats(controls["temperatures"].value, "temperatures"), ks=ks,
                    methods=list(controls["methods"].value), max_tokens=int(controls["max_tokens"].value),
                    n_logprobs=int(controls["logprobs"].value),
                    top_k=int(controls["top_k"].value) or None, top_p=float(controls["top_p"].value),
                    ngram=oracle_client.DEFAULT_NGRAM if controls["ngram"].value else None,
                    suffix=suffix_replay.SuffixConfig() if controls["suffix"].value else None)

    def show(prediction) -> None:
        k = int(controls["ranking_k"].value)
        ranked = prediction.ranking(k) if k in prediction.metadata["parameters"]["ks"] else None
        table.value = ranked.to_html(index=False, float_format=lambda v: f"{v:.3f}") if ranked is not None else ""
        status.value = _message(f"{prediction.metadata.get('status')}: {len(prediction.records)} requests predicted,"
                                f" {len(prediction.errors)} failed; run folder {prediction.path}", "ok")
        if _autorun():
            for row in ranked.itertuples() if ranked is not None else ():
                print(f"T={row.temperature:g} #{row.rank} {row.candidate} {row.draft_sample_method}: "
                      f"alpha {row.alpha:.3f} [{row.alpha_low:.3f}, {row.alpha_high:.3f}]")

    def work(args: dict, stop: threading.Event) -> None:
        def progress(done: int, total: int) -> None:
            bar.max, bar.value = total, done

        try:
            state["prediction"] = oracle_client.run_prediction(
                args.pop("target"), args.pop("drafts"), runs_dir="runs", stop_event=stop, progress=False,
                on_progress=progress, **args)
            show(state["prediction"])
        except Exception as exc:  # shown on the page, never a traceback in the notebook
            state["error"] = str(exc)
            status.value = _message(str(exc), "error")
        finally:
            predict_button.disabled, cancel_button.disabled = False, True

    def start(_button=None) -> None:
        try:
            args = arguments()
        except ValueError as exc:
            status.value = _message(str(exc), "error")
            return
        stop = threading.Event()
        state.update(stop=stop, error=None)
        predict_button.disabled, cancel_button.disabled = True, False
        bar.value = 0
        status.value = _message("predicting… (Cancel stops between requests)", "info")
        if _autorun():
            work(args, stop)
            return
        state["thread"] = threading.Thread(target=work, args=(args, stop), daemon=True)
        state["thread"].start()

    def cancel(_button=None) -> None:
        if state["stop"] is not None:
            state["stop"].set()
            status.value = _message("cancelling after the request in flight…", "info")

    predict_button.on_click(start)
    cancel_button.on_click(cancel)
    status.value = _message("Nothing is sent until you press Predict.", "info")
    widget = widgets.VBox([widgets.VBox(list(controls.values())), widgets.HBox([predict_button, cancel_button, bar]),
                           status, table])
    page = PredictPage(widget, controls, {"predict": predict_button, "cancel": cancel_button, "progress": bar,
                                          "status": status, "table": table}, state)
    if _autorun():
        start()
    return page
