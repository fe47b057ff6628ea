"""One number, one value: what a page shows, the verdict and the memo agree after every control move.

Every control of pages 00, 03 and 07 moved in turn, for a single-class and a multi-class scenario: the page's
figures and rows equal those of a fresh `evaluate` of the page's scenario, and the memo built from that scenario
shows the same verdict and rows. (Issue 10's "Why" 5 cases are in test_pages_truthful.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from specdec_lib import memo, report
from specdec_lib import widgets as ui
from specdec_lib.evaluate import evaluate
from specdec_lib.pages import render
from specdec_lib.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
PASSING = load_scenario(ROOT / "scenarios" / "structured-extraction.toml")
MIXED = load_scenario(ROOT / "scenarios" / "mixed-chat.toml")


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
