"""Predicted acceptance, a real calibration file and the generated monitoring reach the plan, the memo and the CLI.

The prediction run folder is written the way `specdec predict` writes one (a `runs.RunWriter` of kind "predict",
one record per prompt × temperature) with β per position computed by the oracle's own arithmetic
(`oracle.draft_acceptance`) from hand-made top-2 log-probability answers; the expected β is worked out by hand
below. The calibration file is the one `specdec calibrate` wrote from a real vLLM CPU server
(data/calibration/cpu-engine-bound-validation.json).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from pathlib import Path

import pytest

from specdec_lib import cli, inputs, memo, monitoring, oracle, oracle_client, runs
from specdec_lib.evaluate import evaluate
from specdec_lib.evidence import AcceptanceEstimate
from specdec_lib.prediction import load_prediction
from specdec_lib.scenario import DEFAULT_SCENARIO, RequestClass, load_scenario, save_scenario

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "data" / "calibration" / "cpu-engine-bound-validation.json"
TARGET, DRAFT = DEFAULT_SCENARIO.target_model, DEFAULT_SCENARIO.draft_model
T = 0.7          # the default scenario's one request class
K = 5            # its k
MAX_TOKENS = 200
# Hand-made answers: the target puts 0.8 / 0.15 on its top-2 (0.05 left in a tail the answer does not return),
# the draft prefers the same token. Greedy drafting proposes the draft's argmax (token 0), accepted with
# p_T(0) at temperature 0.7: 0.8^(1/0.7) / sum_i p_i^(1/0.7), the tail between "one token holds all of it" and
# "spread so thin it adds nothing".
TARGET_TOP2 = (0.8, 0.15)
DRAFT_TOP2 = (0.6, 0.3)


def _entry(probs) -> dict:
    return {str(t): {"logprob": math.log(p), "rank": t + 1, "decoded_token": "x"} for t, p in enumerate(probs)}


def _hand_beta_bounds() -> tuple[float, float]:
    top = [p ** (1 / T) for p in TARGET_TOP2]
    with_tail_in_one_token = top[0] / (sum(top) + 0.05 ** (1 / T))  # the tail as one token: largest denominator
    no_tail = top[0] / sum(top)                                    # the tail spread to nothing
    return with_tail_in_one_token, no_tail


def write_prediction(runs_dir: Path, target: str = TARGET, draft: str = DRAFT, n_prompts: int = 3) -> Path:
    """A prediction run folder as `oracle_client.run_prediction` records it, β from `oracle.draft_acceptance`."""
    target_head = oracle.Head.from_vllm(_entry(TARGET_TOP2), 2)
    draft_head = oracle.Head.from_vllm(_entry(DRAFT_TOP2), 2)
    beta = [round(v, 6) for v in oracle.draft_acceptance(target_head, draft_head, T, "greedy")]
    settings = oracle_client.Settings((T,), (K,), ("greedy",), MAX_TOKENS, 2, None, 0, None)
    meta = {"endpoint": "http://127.0.0.1:1", "served_model": target, "parameters": {
        **settings.as_dict(), "prompts": "hand-made", "n_prompts": n_prompts},
        "drafts": [{"endpoint": "http://127.0.0.1:2", "served_model": draft}]}
    writer = runs.RunWriter.create(runs_dir, oracle_client.KIND, meta)
    n_positions = MAX_TOKENS + K
    for i in range(n_prompts):
        rec = {f: None for f in runs.RECORD_FIELDS}
        rec.update(index=i, label=f"T={T:g}", prompt_set="hand", prompt_id=f"p{i}", temperature=T,
                   max_tokens=MAX_TOKENS, itl_s=[], status=200, e2e_s=0.01,
                   oracle={"prompt_ids": 4, "continuation": [0] * n_positions, "finish_reason": "length",
                           "drafts": {draft: {"greedy": [beta] * n_positions}}, "tokens_sent": 4 + 2 * n_positions,
                           "seconds": 0.01})
        writer.append_request(rec)
    writer.finish("complete")
    return writer.path


@pytest.fixture()
def prediction_dir(tmp_path) -> Path:
    return write_prediction(tmp_path / "runs")


def test_the_prediction_folder_reads_back_with_the_hand_worked_bounds(prediction_dir):
    low, high = _hand_beta_bounds()
    (est,) = load_prediction(prediction_dir).estimates()
    assert est.source == "predicted" and est.k == K and est.temperature == T
    assert est.target_model == TARGET and est.draft_model == DRAFT
    # Every position has the same β, so the chain's alpha is that β; the bounds bracket the hand values.
    assert est.alpha_low == pytest.approx(low, abs=2e-3)
    assert est.alpha_high == pytest.approx(high, abs=2e-3)
    assert est.alpha_low < est.alpha_high and est.alpha_low <= est.alpha <= est.alpha_high


def test_predicted_alpha_gives_the_load_prediction_and_the_verdict_with_its_source(prediction_dir):
    resolved = inputs.resolve(DEFAULT_SCENARIO, prediction_runs=[prediction_dir])
    ev = evaluate(DEFAULT_SCENARIO, estimates=resolved.estimates)
    (choice,) = ev.acceptance
    assert choice.source == "predicted" and choice.chosen.origin == prediction_dir.name
    # The load prediction is computed from that alpha: the same as typing the alpha into the scenario.
    typed = dataclasses.replace(DEFAULT_SCENARIO, workload=(dataclasses.replace(
        DEFAULT_SCENARIO.workload[0], alpha=choice.alpha),))
    assumed = evaluate(typed)
    assert assumed.acceptance[0].source == "assumed"
    assert ev.load.alpha == pytest.approx(choice.alpha)
    assert ev.load.speedup_at_qps == pytest.approx(assumed.load.speedup_at_qps)
    assert ev.load.crossover_batch == assumed.load.crossover_batch
    # Without it the speedup is unknown; with it the reasons that need alpha cite "predicted".
    assert evaluate(DEFAULT_SCENARIO).load.speedup_at_qps is None
    cited = [r for r in ev.decision.reasons if r.source == "predicted"]
    assert cited, [(r.condition, r.source) for r in ev.decision.reasons]
    assert all(r.status != "unknown" for r in cited)
    # The memo shows the predicted figure with its bounds and run id.
    text = memo.render_memo(evaluation=ev)
    shown = f"{choice.alpha:.3f} predicted ({choice.chosen.alpha_low:.3f}-{choice.chosen.alpha_high:.3f}"
    assert shown in html.unescape(text)
    assert prediction_dir.name in text


def test_a_prediction_for_another_pair_is_refused_with_a_reason(tmp_path):
    other_target = write_prediction(tmp_path / "a", target="Qwen/Qwen2.5-72B-Instruct")
    other_draft = write_prediction(tmp_path / "b", draft="meta-llama/Llama-3.2-1B-Instruct")
    ev = evaluate(DEFAULT_SCENARIO, estimates=inputs.prediction_estimates([other_target, other_draft]))
    (choice,) = ev.acceptance
    assert choice.source != "predicted"
    whys = " | ".join(why for _, why in choice.rejected)
    assert "Qwen/Qwen2.5-72B-Instruct" in whys and "not the scenario's target" in whys
    assert "Llama-3.2-1B-Instruct" in whys and "the scenario's draft" in whys
    assert ev.decision.reason("evidence_applies").status == "failed"


def test_predicted_next_to_measured_in_the_memo(prediction_dir):
    (pred,) = load_prediction(prediction_dir).estimates()
    measured = AcceptanceEstimate(alpha=0.62, source="measured", method="draft_model", temperature=T, k=K,
                                  target_model=TARGET, draft_model=DRAFT, n_requests=20, origin="run-measured-1")
    ev = evaluate(DEFAULT_SCENARIO, estimates=[pred, measured])
    assert ev.acceptance[0].source == "measured"
    (row,) = memo.predicted_vs_measured(ev)
    assert row["difference"] == f"{pred.alpha - 0.62:+.3f}"
    assert row["inside"] == ("yes" if pred.alpha_low <= 0.62 <= pred.alpha_high else "no")
    text = html.unescape(memo.render_memo(evaluation=ev))
    assert 'id="predicted-vs-measured-table"' in text and "run-measured-1" in text and prediction_dir.name in text


def test_scenario_names_prediction_runs_and_calibration_in_toml(tmp_path, prediction_dir):
    s = dataclasses.replace(DEFAULT_SCENARIO, prediction_runs=(str(prediction_dir),), calibration=str(CALIBRATION))
    back = load_scenario(save_scenario(s, tmp_path / "s.toml"))
    assert back.prediction_runs == (str(prediction_dir),) and back.calibration == str(CALIBRATION)
    assert load_scenario(save_scenario(DEFAULT_SCENARIO, tmp_path / "d.toml")).prediction_runs == ()
    with pytest.raises(ValueError, match="prediction_runs"):
        dataclasses.replace(DEFAULT_SCENARIO, prediction_runs=(3,))
    with pytest.raises(ValueError, match="calibration"):
        dataclasses.replace(DEFAULT_SCENARIO, calibration="  ")
    resolved = inputs.resolve(back)
    assert resolved.estimates and resolved.calibration.path == CALIBRATION


def test_cli_plan_and_memo_take_prediction_and_calibration(tmp_path, prediction_dir, capsys):
    assert cli.main(["plan", "--json"]) == 0
    base = json.loads(capsys.readouterr().out)
    assert cli.main(["plan", "--json", "--prediction", str(prediction_dir), "--calibration", str(CALIBRATION)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["acceptance"][0]["source"] == "predicted" and prediction_dir.name in d["acceptance"][0]["used"]
    assert d["calibration"].startswith("cpu-engine-bound-validation.json (probe of")
    assert base["calibration"] != d["calibration"]
    # A CPU calibration changes the step times, so the draft/target cost ratio differs from the H100 one.
    assert d["load"]["cost_ratio"] != pytest.approx(base["load"]["cost_ratio"], rel=1e-3)
    out = tmp_path / "memo.html"
    assert cli.main(["memo", "--prediction", str(prediction_dir), "--calibration", str(CALIBRATION),
                     "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "calibration: cpu-engine-bound-validation.json" in err and prediction_dir.name in err
    text = html.unescape(out.read_text())
    assert "cpu-engine-bound-validation.json (probe of" in text and prediction_dir.name in text
    # A scenario that names them gives the same plan as the flags.
    scen = save_scenario(dataclasses.replace(DEFAULT_SCENARIO, prediction_runs=(str(prediction_dir),),
                                             calibration=str(CALIBRATION)), tmp_path / "s.toml")
    assert cli.main(["plan", "--json", "--scenario", str(scen)]) == 0
    from_scenario = json.loads(capsys.readouterr().out)
    assert from_scenario["load"] == d["load"] and from_scenario["calibration"] == d["calibration"]


def test_cli_names_a_bad_prediction_or_calibration_path(tmp_path, capsys):
    assert cli.main(["plan", "--prediction", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    assert "not a run folder" in capsys.readouterr().err
    bad = tmp_path / "cal.json"
    bad.write_text("{}")
    assert cli.main(["plan", "--calibration", str(bad)]) == cli.EXIT_BAD_INPUT
    assert "cal.json" in capsys.readouterr().err


def test_memo_and_specdec_monitoring_write_the_same_rules(tmp_path, capsys):
    # A scenario with an alpha has a crossover batch, so the crossover alert is in the rules too.
    s = dataclasses.replace(DEFAULT_SCENARIO, workload=(RequestClass("chat", 1.0, T, 512, 256, alpha=0.7),))
    path = save_scenario(s, tmp_path / "s.toml")
    assert cli.main(["monitoring", "--scenario", str(path), "-o", str(tmp_path / "mon")]) == 0
    capsys.readouterr()
    rules_file = (tmp_path / "mon" / "specdec-rules.yml").read_text()
    dashboard_file = (tmp_path / "mon" / "specdec-dashboard.json").read_text()
    ev = evaluate(s)
    assert ev.load.crossover_batch is not None
    assert f"(vllm:num_requests_running) >= {ev.load.crossover_batch:g}\"" in rules_file
    text = memo.render_memo(evaluation=ev)
    shown = html.unescape(re.search(r'<pre id="rules-yaml">(.*?)</pre>', text, re.S).group(1))
    assert shown == rules_file
    assert html.unescape(re.search(r'<pre id="dashboard-json">(.*?)</pre>', text, re.S).group(1)) == dashboard_file
    # The download links carry the same bytes (base64 data: URIs: one offline file).
    import base64

    href = re.search(r'id="rules-download" download="specdec-rules.yml" href="data:application/yaml;base64,([^"]+)"',
                     text).group(1)
    assert base64.b64decode(href).decode() == rules_file
    # The memo's PromQL table is the rule file's expressions (one truth): its acceptance ratio expression is in it.
    plan = monitoring.plan_for_evaluation(ev)
    assert monitoring.memo_rows(plan)[0]["promql"] in rules_file
    assert memo.monitoring_plan(s, ev.load.crossover_batch) == monitoring.memo_rows(plan)
    # No latency forecast: the memo says so, and the operator list asks for the limit by hand.
    assert "predicts no P99 TPOT/TTFT" in text
    assert any("set the latency alert by hand" in item for item in monitoring.artifacts_for(plan).operator_must_confirm)


def test_the_monitoring_condition_says_what_is_generated_and_what_to_confirm():
    ev = evaluate(DEFAULT_SCENARIO)
    r = ev.decision.reason("monitoring_in_place")
    assert r.status == "failed"
    plan = monitoring.plan_for_evaluation(ev)
    assert "Prometheus rule file and a Grafana dashboard" in r.detail
    for item in monitoring.operator_must_confirm(plan):
        assert item in r.detail


def test_pages_take_the_prediction_run(prediction_dir, monkeypatch):
    from specdec_lib import pages

    monkeypatch.delenv("SPECDEC_AUTORUN", raising=False)
    (est,) = load_prediction(prediction_dir).estimates()
    # Page 01: the run folder control gives the scenario's draft its predicted alpha; other drafts stay unknown.
    p01 = pages.draft_selection_page()
    p01.controls["prediction_runs"].value = str(prediction_dir)
    p01.refresh()
    from specdec_lib import catalog

    (ours,) = [d for d in p01.outputs["state"]["candidates"] if catalog.same_model(d.name, DRAFT)]
    assert "predicted" in ours.acceptance and ours.alpha == pytest.approx(est.alpha)
    assert ours.speedup_batch1 is not None
    assert all(d.alpha is None for d in p01.outputs["state"]["candidates"] if d is not ours)
    # Page 00 with estimates; page 07 with the folder control: the verdict cites "predicted", as the CLI does.
    p00 = pages.start_here_page(estimates=load_prediction(prediction_dir).estimates())
    assert p00.outputs["state"]["evaluation"].acceptance[0].source == "predicted"
    p07 = pages.decision_memo_page()
    p07.controls["prediction_runs"].value = str(prediction_dir)
    ev = p07.outputs["state"]["evaluation"]
    assert ev.acceptance[0].source == "predicted"
    assert ev.load.speedup_at_qps == pytest.approx(evaluate(DEFAULT_SCENARIO, estimates=[est]).load.speedup_at_qps)


def test_the_simulation_page_uses_the_calibration_and_names_it():
    from specdec_lib import pages
    from specdec_lib.calibrate import load_calibration

    default = pages.mixed_workload_page()
    default.controls["num_requests"].value = 200
    default.refresh()
    calibrated = pages.mixed_workload_page(calibration=str(CALIBRATION))
    calibrated.controls["num_requests"].value = 200
    calibrated.refresh()
    assert "2× H100" in default.outputs["summary"].value
    assert html.escape(load_calibration(CALIBRATION).source) in calibrated.outputs["summary"].value
    # The CPU server's step times (tens of ms) give other latencies than the H100 example's.
    assert default.figures["tpot"].data[0].y != calibrated.figures["tpot"].data[0].y
