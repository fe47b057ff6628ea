"""One number, one value: what a page shows, the verdict and the memo agree after every control move.

Issue 10's "Why" 5 (page 00 showed "predicted speedup 1.19x" beside a verdict row "unknown"; the crossover batch
was 127 on page 03 and 50 in the memo; page 03 used a fixed 512-in/256-out request shape; page 01 scored every
draft at one shared alpha), then every control of pages 00, 03 and 07 moved in turn, for a single-class and a
multi-class scenario: the page's figures and rows equal those of a fresh `evaluate` of the page's scenario, and
the memo built from that scenario shows the same verdict and rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from specdec_lib import memo, report
from specdec_lib import widgets as ui
from specdec_lib.evaluate import evaluate
from specdec_lib.evidence import AcceptanceEstimate
from specdec_lib.pages import render
from specdec_lib.scenario import DEFAULT_SCENARIO, load_scenario

ROOT = Path(__file__).resolve().parent.parent
PASSING = load_scenario(ROOT / "scenarios" / "structured-extraction.toml")
MIXED = load_scenario(ROOT / "scenarios" / "mixed-chat.toml")


def _number(text: str | None) -> float | None:
    match = re.search(r"([0-9]+\.[0-9]+)", text or "")
    return float(match.group(1)) if match else None


# --- Why 5 -------------------------------------------------------------------------------------------------------
def test_page_00_speedup_and_its_verdict_row_are_the_same_number():
    page = ui.start_here_page()
    summary, verdict = page.outputs["summary"].value, page.outputs["verdict"].value
    shown = re.search(r"[Pp]redicted speedup at[^<]*</td><td><b>([^<]*)</b>", summary).group(1)
    row = re.search(r"Load model predicts a speedup[^<]*</td><td>([^<]*)</td>", verdict).group(1)
    assert _number(shown) == _number(row)          # the default states no alpha: both unknown
    page.controls["alpha_known"].value = True      # state alpha 0.70: both show the one prediction
    summary, verdict = page.outputs["summary"].value, page.outputs["verdict"].value
    shown = re.search(r"[Pp]redicted speedup at[^<]*</td><td><b>([^<]*)</b>", summary).group(1)
    row = re.search(r"Load model predicts a speedup[^<]*</td><td>([^<]*)</td>", verdict).group(1)
    assert _number(shown) is not None and _number(shown) == _number(row)


def test_page_03_and_the_memo_give_one_crossover_batch():
    page = ui.break_even_page(PASSING)
    page_rows = dict(re.findall(r"<td style='padding-right:1em'>([^<]*)</td><td><b>([^<]*)</b>",
                                page.outputs["summary"].value))
    html = memo.render_memo(PASSING)
    memo_row = re.search(r"crossover batch size \(first batch without a gain\)</th><td>([^<]*)</td>", html).group(1)
    assert page_rows["crossover batch size (first batch without a gain)"] == memo_row


def test_page_03_follows_the_request_shape_and_says_saturated():
    page = ui.break_even_page(PASSING)
    short = page.outputs["state"]["evaluation"].load
    page.controls["prompt_tokens"].value = 6000
    long = page.outputs["state"]["evaluation"].load
    assert (long.prompt_tokens, short.prompt_tokens) == (6000, 1024)
    assert long.capacity_qps < short.capacity_qps
    assert f"{long.capacity_qps:.3g} requests/s" in page.outputs["summary"].value
    page.controls["qps"].value = 3 * long.capacity_qps          # beyond what one replica serves
    assert "saturated" in page.message.value
    assert "SATURATED" in page.outputs["summary"].value
    fig = page.figures["qps"]
    assert any(t.name.startswith("saturated above") for t in fig.data)
    curves = [t for t in fig.data if t.name.startswith("α =")]
    assert curves and all(y is None or y > 0 for t in curves for y in t.y)   # no "0.0x" past capacity


def test_page_01_ranks_drafts_by_their_own_acceptance_never_a_shared_one():
    target = DEFAULT_SCENARIO.target_model
    estimates = (
        AcceptanceEstimate(alpha=0.45, source="prior", method="draft_model", target_model=target,
                           draft_model="meta-llama/Llama-3.2-1B", origin="a stated prior for the test"),
        AcceptanceEstimate(alpha=0.78, source="predicted", method="draft_model", target_model=target,
                           draft_model="meta-llama/Llama-3.1-8B", temperature=0.7, alpha_low=0.74, alpha_high=0.81,
                           origin="oracle"),
    )
    page = ui.draft_selection_page(estimates=estimates)
    ranked = [d for d in page.outputs["state"]["candidates"] if d.speedup_batch1 is not None]
    assert [d.name for d in ranked] == ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.2-1B"]
    assert "predicted (0.740-0.810)" in ranked[0].acceptance and "prior" in ranked[1].acceptance
    others = [d for d in page.outputs["state"]["candidates"] if d.speedup_batch1 is None]
    assert others and all(d.acceptance == "unknown" for d in others)
    # without estimates nothing is ranked, and the page says why
    bare = ui.draft_selection_page()
    assert all(d.speedup_batch1 is None for d in bare.outputs["state"]["candidates"])
    assert "no draft has an acceptance figure" in bare.message.value


# --- every control, pages 00, 03 and 07 ------------------------------------------------------------------------
MOVES = {
    "target_precision": "fp8", "draft_precision": "int8", "gpu": "H200", "num_gpus": 4, "tensor_parallel_size": 4,
    "gpu_memory_utilization": 0.85, "context_len": 16384, "temperature": 0.3, "prompt_tokens": 2048,
    "output_tokens": 512, "num_speculative_tokens": 3, "qps": 2.5, "alpha": 0.74, "alpha_known": True,
    "slo": "ttft", "monitoring_in_place": True, "acceptance_validated_at_production_temperature": True,
    "draft_model": "meta-llama/Llama-3.2-1B", "target_model": "meta-llama/Llama-3.1-405B",
}


def _assert_page_agrees(page, name: str) -> None:
    scenario = page.outputs["state"]["scenario"]
    shown = page.outputs["state"]["evaluation"]
    fresh = evaluate(scenario)
    context = memo.build_context(fresh, generated_utc="test")
    assert shown.verdict == fresh.verdict == context["decision"].verdict, name
    assert [(r.condition, r.status, r.value) for r in shown.decision.reasons] == \
        [(r.condition, r.status, r.value) for r in context["decision"].reasons], name
    assert report.speedup_rows(shown) == context["speedup_rows"], name
    assert report.class_rows(shown) == context["workload_rows"], name
    if "verdict" in page.outputs:
        assert f"Verdict: {fresh.verdict}<" in page.outputs["verdict"].value, name
    if "summary" in page.outputs:
        for label, value in context["speedup_rows"]:
            assert f"<b>{value}</b>" in page.outputs["summary"].value.replace("&#x27;", "'"), (name, label)
    if "alpha" in page.figures and fresh.load is not None and scenario.method != "none":
        k = scenario.num_speculative_tokens
        curve = next(t for t in page.figures["alpha"].data if t.name == f"k = {k}")
        assert list(curve.y) == pytest.approx(fresh.speedup_vs_alpha()[k]), name
    if "memory" in page.figures and fresh.memory is not None:
        expected = render.memory_figure(fresh.memory)
        assert [list(t.x) for t in page.figures["memory"].data] == [list(t.x) for t in expected.data], name
    if "qps" in page.figures and fresh.load is not None:
        for label, ys in fresh.load.curves.items():
            shown_curve = next(t for t in page.figures["qps"].data if t.name.startswith("α =") or t.name == label)
            assert list(shown_curve.y) == list(ys), name


@pytest.mark.parametrize("factory", ["start_here_page", "break_even_page", "decision_memo_page"])
@pytest.mark.parametrize("scenario", [PASSING, MIXED], ids=["single-class", "multi-class"])
def test_every_control_keeps_page_verdict_and_memo_in_agreement(factory, scenario):
    page = getattr(ui, factory)(scenario)
    _assert_page_agrees(page, "initial")
    for name, value in MOVES.items():
        control = page.controls.get(name)
        if control is None or control.disabled:
            continue
        control.value = value
        assert "Traceback" not in page.message.value
        _assert_page_agrees(page, name)
    moved = {n for n in MOVES if n in page.controls and not page.controls[n].disabled}
    if len(scenario.workload) > 1:
        assert not moved & {"temperature", "alpha", "prompt_tokens", "output_tokens"}  # edited in the file
    else:
        assert {"prompt_tokens", "qps", "num_speculative_tokens"} <= moved
