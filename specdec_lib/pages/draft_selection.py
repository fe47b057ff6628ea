"""01 · Which draft? Every smaller catalog model as the draft of the chosen target, each with its OWN acceptance.

Each candidate is the scenario with that draft, evaluated (`evaluate`): its cost ratio c, break-even alpha, the
checklist, and the acceptance that applies to it among the estimates given to the page (predicted by the oracle,
measured, or a stated prior; the scenario's typed alpha applies only to the scenario's own draft). A candidate
with no applicable estimate says "unknown" and is not ranked: no alpha is shared between drafts.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass

import ipywidgets as widgets

from specdec_lib.pages.base import (
    Page,
    grid,
    layout,
    new_figure,
    new_message,
    update_figure_in_place,
    wire,
    with_file_inputs,
)
from specdec_lib.pages.controls import default_scenario, scenario_controls, scenario_from_controls
from specdec_lib.scenario import with_changes

CONTROLS = ["target_model", "target_config", "target_precision", "draft_model", "draft_precision", "gpu",
            "num_gpus", "tensor_parallel_size", "num_speculative_tokens", "alpha", "alpha_known", "context_len"]


@dataclass(frozen=True)
class DraftCandidate:
    name: str
    ratio: float                # target params / draft params
    band: str                   # the source's reading of the ratio
    same_family: bool
    same_tokenizer: bool
    same_vocab_size: bool
    runs: bool                  # vLLM would start it (memory plan and command builder found no refusal)
    problem: str                # why not, when it would not
    weights_bytes_per_gpu: int | None
    cost_ratio: float | None    # c at batch 1 (Leviathan's c)
    break_even_alpha: float | None
    acceptance: str             # "0.720 predicted (0.650-0.780), origin" or "unknown"
    alpha: float | None
    speedup_batch1: float | None  # at this draft's own alpha
    verdict: str


def candidate_scenario(s, draft_name: str):
    """The scenario with `draft_name` as its draft; the typed alpha is kept only for the scenario's own draft."""
    from specdec_lib import catalog

    own = catalog.same_model(draft_name, s.draft_model)
    workload = s.workload if own else tuple(dataclasses.replace(c, alpha=None) for c in s.workload)
    return with_changes(s, draft_model=draft_name, method="draft_model", workload=workload)


def draft_candidates(s, estimates=()) -> list[DraftCandidate]:
    """Every catalog model smaller than the target, each evaluated as this scenario's draft; ranked by the speedup
    at its own acceptance (known first), then the unknown ones by size."""
    from specdec_lib import catalog, inputs
    from specdec_lib.evaluate import evaluate

    resolved = inputs.resolve(s)  # the scenario's prediction runs (every candidate's predicted alpha) and calibration
    estimates = tuple(estimates) + resolved.estimates
    target = catalog.get_model(s.target_model)
    out = []
    for name, spec in sorted(catalog.models().items(), key=lambda kv: -kv[1].params):
        if spec.params >= target.params:
            continue
        ev = evaluate(candidate_scenario(s, name), estimates=estimates, calibration=resolved.step_factors,
                      curve_points=0)
        pair = catalog.pairing(spec, target)
        alpha, _ = ev.workload_alpha
        f = ev.load
        out.append(DraftCandidate(
            name=name, ratio=pair.ratio, band=pair.verdict, same_family=pair.same_family,
            same_tokenizer=pair.same_tokenizer, same_vocab_size=pair.same_vocab_size, runs=not ev.refusals
            and ev.memory_error is None, problem="; ".join(ev.refusals) or (ev.memory_error or ""),
            weights_bytes_per_gpu=None if ev.memory is None else ev.memory.draft_weights_bytes_per_gpu,
            cost_ratio=None if f is None else f.cost_ratio, break_even_alpha=None if f is None else f.break_even_alpha,
            acceptance=" / ".join(dict.fromkeys(c.describe() for c in ev.acceptance)), alpha=alpha,
            speedup_batch1=None if alpha is None else ev.speedup_at_batch1(alpha), verdict=ev.verdict))
    known = sorted((d for d in out if d.speedup_batch1 is not None), key=lambda d: -d.speedup_batch1)
    return known + [d for d in out if d.speedup_batch1 is None]


def _opt(value, fmt: str, none: str = "–") -> str:
    return none if value is None else format(value, fmt)


def draft_table_html(candidates: list[DraftCandidate], selected: str | None, k: int) -> str:
    def yes(flag: bool) -> str:
        return "✓" if flag else "<span style='color:#b00020'>✗</span>"

    head = ("<tr><th>rank</th><th>draft</th><th>ratio</th><th>source's reading</th><th>family</th><th>tokenizer</th>"
            "<th>vLLM starts it</th><th>weights/GPU</th><th>c</th><th>break-even α</th><th>α (its own)</th>"
            f"<th>speedup at batch 1, k={k}</th><th>verdict</th></tr>")
    rows = []
    for rank, d in enumerate(candidates, 1):
        style = " style='background:#fff3cd'" if d.name == selected else ""
        weights = "–" if d.weights_bytes_per_gpu is None else f"{d.weights_bytes_per_gpu / 2**30:.1f} GiB"
        runs = yes(d.runs) + ("" if d.runs else f" <small>{html.escape(d.problem[:120])}</small>")
        rows.append(
            f"<tr{style}><td>{rank if d.speedup_batch1 is not None else '–'}</td><td>{html.escape(d.name)}</td>"
            f"<td>1:{d.ratio:.1f}</td><td>{html.escape(d.band)}</td><td>{yes(d.same_family)}</td>"
            f"<td>{yes(d.same_tokenizer and d.same_vocab_size)}</td><td>{runs}</td><td>{weights}</td>"
            f"<td>{_opt(d.cost_ratio, '.3f')}</td><td>{_opt(d.break_even_alpha, '.2f', 'never')}</td>"
            f"<td>{html.escape(d.acceptance)}</td><td>{_opt(d.speedup_batch1, '.2f')}"
            f"{'×' if d.speedup_batch1 is not None else ''}</td><td>{html.escape(d.verdict)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def draft_selection_page(scenario=None, estimates=()) -> Page:
    """`estimates`: AcceptanceEstimates for candidate drafts (the oracle's, a drafter catalog's priors, runs).
    The "prediction run folders" control (or the scenario's `prediction_runs`) adds a `specdec predict` run's
    predicted alpha per candidate draft (page 01b writes one)."""
    from specdec_lib import plots
    from specdec_lib.pages.controls import text_control

    base = scenario or default_scenario()
    controls = {n: w for n, w in scenario_controls(base).items() if n in CONTROLS}
    fig = new_figure()
    table, message = widgets.HTML(), new_message()
    state: dict = {"candidates": []}
    predictions = text_control(",".join(base.prediction_runs), "Prediction run folders",
                               "optional, comma-separated: runs/<time>-predict (page 01b)")

    def update() -> str | None:
        s = with_file_inputs(scenario_from_controls(base, controls), predictions.value, "")
        candidates = draft_candidates(s, estimates)
        if not candidates:
            raise ValueError(f"target_model={s.target_model!r}: the catalog has no smaller model to draft with")
        state["candidates"] = candidates
        usable = [d for d in candidates if d.break_even_alpha is not None]
        update_figure_in_place(fig, plots.draft_candidates_figure(
            [d.name for d in usable], [d.ratio for d in usable], [d.break_even_alpha for d in usable],
            [d.same_family for d in usable], selected=s.draft_model,
            title=f"Drafts for {s.target_model}: size ratio vs the α they need (k = {s.num_speculative_tokens})"))
        table.value = draft_table_html(candidates, s.draft_model, s.num_speculative_tokens)
        if not any(d.speedup_batch1 is not None for d in candidates):
            return ("no draft has an acceptance figure: give the page estimates (the oracle's prediction, a "
                    "measurement or a stated prior), or state α for the current draft; none is ranked")
        return None

    refresh = wire({**controls, "prediction_runs": predictions}, update, message, stale=(table,))
    widget = layout(grid(controls, CONTROLS), predictions, message, fig, table)
    return Page(widget=widget, controls={**controls, "prediction_runs": predictions}, figures={"candidates": fig},
                message=message, outputs={"table": table, "state": state}, refresh=refresh)
