"""The methods comparison is part of the one evaluation path (issue 13 item 6): computed once from the same scenario
and estimates, the scenario's own method row equal to the Evaluation's figures, published priors never reaching the
verdict, and the memo, `specdec plan` and page 03b showing one set of figures."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
from test_vllm_command import _METHOD_CHECKER, run_in_vllm

from specdec_lib import cli, memo, report
from specdec_lib.evaluate import evaluate
from specdec_lib.evidence import AcceptanceEstimate
from specdec_lib.scenario import DEFAULT_SCENARIO, load_scenario, with_changes

ROOT = Path(__file__).resolve().parent.parent
MIXED = load_scenario(ROOT / "scenarios" / "mixed-chat.toml")


def _with_alpha(scenario, alpha):
    return with_changes(scenario, workload=tuple(dataclasses.replace(c, alpha=alpha) for c in scenario.workload))


def _own(comparison):
    rows = [r for r in comparison.rows if r.own]
    assert len(rows) == 1, [r.method for r in comparison.rows]
    return rows[0]


@pytest.mark.parametrize("scenario", [
    _with_alpha(DEFAULT_SCENARIO, 0.8),
    with_changes(_with_alpha(DEFAULT_SCENARIO, 0.75), num_gpus=4, qps=3.0),  # two replicas share the QPS
    MIXED,  # two request classes, each with its own alpha and shape
    with_changes(DEFAULT_SCENARIO, method="ngram", draft_model=None,
                 workload=(dataclasses.replace(DEFAULT_SCENARIO.workload[0], alpha=0.6),)),
], ids=["default-alpha-0.8", "two-replicas", "mixed-chat", "ngram"])
def test_the_scenarios_own_method_row_is_the_evaluations_figures(scenario):
    ev = evaluate(scenario)
    assert ev.load is not None and ev.load.alpha is not None
    row = _own(ev.methods)
    assert row.method == scenario.method
    assert row.k == scenario.num_speculative_tokens
    assert row.alpha == ev.load.alpha
    assert row.cost_ratio == ev.load.cost_ratio
    assert row.speedup_at_qps == ev.load.speedup_at_qps
    assert row.crossover_batch == ev.load.crossover_batch
    assert row.crossover_qps == ev.load.crossover_qps
    assert row.batch_at_qps == ev.load.batch_at_qps and row.max_batch == ev.load.max_batch


def test_a_prior_fills_the_default_row_but_never_the_verdict():
    ev = evaluate(DEFAULT_SCENARIO)
    row = _own(ev.methods)
    # The verdict's acceptance stays unknown (no estimate given): the prior lives only in the comparison.
    assert ev.load.alpha is None and ev.acceptance[0].chosen is None
    assert ev.verdict == "leave off" and [r.condition for r in ev.decision.deciding] == ["monitoring_in_place"]
    assert row.acceptance.startswith("published prior") and row.alpha == pytest.approx(0.52)
    # The row's figures are those the Evaluation gives when that alpha is stated: the same forecast, same inputs.
    stated = evaluate(_with_alpha(DEFAULT_SCENARIO, row.alpha))
    assert row.cost_ratio == ev.load.cost_ratio == stated.load.cost_ratio
    assert row.speedup_at_qps == pytest.approx(stated.load.speedup_at_qps)
    assert row.crossover_batch == stated.load.crossover_batch
    assert row.crossover_qps == pytest.approx(stated.load.crossover_qps)


def test_the_comparison_is_computed_on_first_use_only():
    from specdec_lib.pages import break_even_page

    ev = evaluate(DEFAULT_SCENARIO)
    assert "methods" not in ev.__dict__  # evaluate alone does not pay for it
    page = break_even_page()  # a page that does not show it does not compute it
    assert "methods" not in page.outputs["state"]["evaluation"].__dict__
    first = ev.methods
    assert ev.methods is first  # once


def test_a_measured_estimate_reaches_the_verdict_and_the_comparison_alike():
    measured = AcceptanceEstimate(alpha=0.9, source="measured", method="draft_model", temperature=0.7, k=5,
                                  target_model=DEFAULT_SCENARIO.target_model,
                                  draft_model=DEFAULT_SCENARIO.draft_model, origin="run test-9")
    ev = evaluate(DEFAULT_SCENARIO, estimates=[measured])
    row = _own(ev.methods)
    assert ev.acceptance[0].chosen is measured
    assert row.alpha == ev.load.alpha == 0.9 and report.acceptance_kind(row.acceptance) == "measured"
    assert row.speedup_at_qps == ev.load.speedup_at_qps


def test_memo_on_the_default_scenario_compares_draft_eagle3_and_ngram_with_reasons():
    ev = evaluate(DEFAULT_SCENARIO)
    block = memo.build_context(ev, generated_utc="test")["methods"]
    assert block["comparison"] is ev.methods
    rows = {r.method: r for r in block["comparison"].rows}
    assert {"draft_model", "eagle3", "ngram"} <= set(rows)
    assert not rows["eagle3"].applies
    assert "no EAGLE-3 head for meta-llama/Llama-3.1-70B-Instruct" in rows["eagle3"].why_not
    assert block["rows"] == report.method_rows(ev.methods)
    for shown in block["rows"]:
        if shown["why_not"] == "—":  # every acceptance is labelled, and a prior carries its citation
            assert shown["source"] in ("prior", "predicted", "measured", "assumed")
        if shown["source"] == "prior":
            assert "published prior" in shown["citation"] and ("#" in shown["citation"] or "source" in
                                                               shown["citation"])
    best = ev.methods.row(ev.methods.best)
    assert block["command"] == best.command and f'"method":"{best.method}"' in block["command"]
    assert block["reasons"] == list(ev.methods.reasons) and any(ev.methods.best in r for r in block["reasons"])
    assert any(r.startswith("eagle3: no EAGLE-3 head") for r in block["reasons"])


def test_memo_html_shows_the_methods_section():
    html = memo.render_memo(DEFAULT_SCENARIO, generated_utc="test")
    section = html[html.index('<section id="methods">'):html.index('<section id="measurements">')]
    assert 'id="methods-table"' in section and 'id="methods-command"' in section
    assert "no EAGLE-3 head for meta-llama/Llama-3.1-70B-Instruct" in section
    assert "draft_model (your scenario)" in section and "vllm-project/vllm#19254" in section


def test_the_picked_methods_command_passes_vllms_parser():
    ev = evaluate(DEFAULT_SCENARIO)
    command = memo.build_context(ev, generated_utc="test")["methods"]["command"]
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:3] == ["vllm", "serve", DEFAULT_SCENARIO.target_model]
    result = run_in_vllm(_METHOD_CHECKER, [{"name": "pick", "argv": argv[2:]}])["pick"]
    assert result["parse_error"] is None
    best = ev.methods.row(ev.methods.best)
    assert result["speculative_config"]["method"] == best.method
    assert result["speculative_config"]["num_speculative_tokens"] == best.k


def test_cli_plan_shows_the_same_pick_and_rows(capsys):
    assert cli.main(["plan", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ev = evaluate(DEFAULT_SCENARIO)
    assert out["methods"]["best"] == ev.methods.best
    assert out["methods"]["rows"] == report.method_rows(ev.methods)
    assert cli.main(["plan"]) == 0
    text = capsys.readouterr().out
    assert f"pick {report.methods_pick(ev.methods)}" in text
    assert cli.main(["methods", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["best"] == ev.methods.best


MOVES = {"qps": 4.0, "num_speculative_tokens": 3, "alpha_known": True, "alpha": 0.82, "num_gpus": 4,
         "prompt_tokens": 2048, "draft_model": "(none)"}


def test_page_memo_and_cli_show_one_methods_table():
    from specdec_lib.pages import methods_compared_page

    page = methods_compared_page()
    for name, value in MOVES.items():
        page.controls[name].value = value
        page.refresh()
        state = page.outputs["state"]
        scenario, shown = state["scenario"], state["comparison"]
        assert "#b00020" not in page.message.value, (name, page.message.value)
        fresh = evaluate(scenario)
        rows = report.method_rows(fresh.methods)
        assert report.method_rows(shown) == rows, name
        assert memo.build_context(fresh, generated_utc="test")["methods"]["rows"] == rows, name
        assert cli._plan_dict(fresh)["methods"]["rows"] == rows, name
        table = page.outputs["table"].value
        for row in rows:
            assert f"<td>{row['speedup_at_qps']}</td>" in table, (name, row["method"])
        assert set(page.figures["speedup_vs_qps"].data[i].name for i in range(len(shown.curves))) == \
            set(shown.curves), name
    assert page.outputs["state"]["scenario"].method == "none"  # the draft removed: no row is "your scenario"
    assert not any(r.own for r in page.outputs["state"]["comparison"].rows)


def test_a_failed_change_marks_the_methods_table_stale():
    from specdec_lib.pages import methods_compared_page

    page = methods_compared_page()
    assert "Pick:" in page.outputs["table"].value
    page.controls["target_config"].value = "/no/such/dir/config.json"
    page.refresh()
    assert "/no/such/dir/config.json" in page.message.value
    assert "specdec-stale" in page.outputs["table"].value


def test_an_unknown_target_leaves_the_comparison_empty_and_says_why():
    ev = evaluate(with_changes(DEFAULT_SCENARIO, target_model="no-such/model"))
    assert ev.memory_error and ev.methods.rows == () and ev.methods.best is None
    assert "no-such/model" in ev.methods.reasons[0] and report.methods_pick(ev.methods) == ev.methods.reasons[0]
