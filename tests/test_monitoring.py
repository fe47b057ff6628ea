"""The generated Prometheus rules and Grafana dashboard: thresholds by hand arithmetic, ``promtool check rules``
and ``promtool test rules`` (Debian's Prometheus 2.42, installed by ./run-tests).

The promtool unit tests feed synthetic counter series whose ratios are chosen by hand (written next to each
series) and assert which alerts fire: promtool evaluates the rules with Prometheus's own PromQL engine, so the
expected values here are independent of the workbook's Python.
"""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from specdec_lib import dashboard, decision, monitoring
from specdec_lib.monitoring import WatchPlan

PROMTOOL = shutil.which("promtool")


def promtool(*args, cwd):
    assert PROMTOOL, "promtool is missing: ./run-tests installs Debian's prometheus package"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rules_by_name(text):
    out = {}
    for group in yaml.safe_load(text)["groups"]:
        for r in group["rules"]:
            out[r.get("alert") or r.get("record")] = r
    return out


# ------------------------------------------------------------------------------------------- hand arithmetic
def test_k5_off_threshold_by_hand_is_what_the_rules_compare():
    # alpha = 0.5, k = 5: E = (1 - 0.5**6) / (1 - 0.5) = (1 - 1/64) / 0.5 = 1.96875 tokens per step;
    # V1 ratio = (E - 1) / k = 0.96875 / 5 = 0.19375. Writing "accepted/draft < 0.5" by hand would be wrong.
    hand = 0.19375
    rules = rules_by_name(monitoring.rules_yaml(WatchPlan(5)))
    expr = rules["SpecDecodeAcceptanceBelowOff"]["expr"]
    m = re.fullmatch(r"specdec:acceptance_v1_rate < ([0-9.e-]+)", expr)
    assert m, expr
    assert float(m.group(1)) == pytest.approx(hand, abs=1e-12)
    # the band rule and the break-even alert use the same line
    assert m.group(1) in rules["specdec:acceptance_band"]["expr"]
    assert f">= {m.group(1)}" in rules["SpecDecodeAcceptanceBreakEven"]["expr"]
    # alpha = 0.65, k = 5: E = (1 - 0.65**6) / 0.35 = (1 - 0.075418890625) / 0.35 = 2.641660312...; (E - 1)/5
    win = ((1 - 0.65 ** 6) / 0.35 - 1) / 5
    assert win == pytest.approx(0.3283320625, abs=1e-9)
    assert f"<= {win!r}" in rules["SpecDecodeAcceptanceBreakEven"]["expr"]


def test_thresholds_come_from_decision_not_a_copy(monkeypatch):
    """Moving the source's bands in decision.py moves every generated line (one place for the numbers)."""
    monkeypatch.setattr(decision, "ALPHA_OFF_BELOW", 0.6)
    plan = WatchPlan(3)
    # alpha = 0.6, k = 3: E = 1 + 0.6 + 0.36 + 0.216 = 2.176; (E - 1)/3 = 0.392
    assert plan.v1_off_below == pytest.approx(0.392)
    assert "< 0.392" in rules_by_name(monitoring.rules_yaml(plan))["SpecDecodeAcceptanceBelowOff"]["expr"]
    assert [t.value for t in monitoring.thresholds(plan) if t.alert == "SpecDecodeAcceptanceBelowOff"] == \
        [pytest.approx(0.392)]


def test_bad_plan_inputs_name_the_field():
    for kwargs, field in ((dict(num_speculative_tokens=0), "num_speculative_tokens"),
                          (dict(num_speculative_tokens=4, p99_tpot_s=-1), "p99_tpot_s"),
                          (dict(num_speculative_tokens=4, rate_window="5 minutes"), "rate_window"),
                          (dict(num_speculative_tokens=4, kv_cache_usage_max=90), "kv_cache_usage_max")):
        with pytest.raises(ValueError, match=field):
            WatchPlan(**kwargs)


def test_latency_alerts_only_with_planned_figures_and_the_table_says_so():
    bare = monitoring.artifacts_for(WatchPlan(4))
    assert "SpecDecodeTPOTRegression" not in rules_by_name(bare.rules_yaml)
    assert any("latency alert by hand" in line for line in bare.operator_must_confirm)
    row = bare.thresholds_table().set_index("alert").loc["SpecDecodeTPOTRegression"]
    assert row["value"] is None or row["value"] != row["value"]  # None / NaN: no rule
    planned = monitoring.artifacts_for(WatchPlan(4, p99_tpot_s=0.05, p99_ttft_s=0.5))
    rules = rules_by_name(planned.rules_yaml)
    # 0.05 s x 1.2 = 0.06 s; 0.5 s x 1.2 = 0.6 s
    assert rules["SpecDecodeTPOTRegression"]["expr"] == f"specdec:tpot_seconds:p99 > {0.05 * 1.2!r}"
    assert rules["SpecDecodeTTFTRegression"]["expr"] == "specdec:ttft_seconds:p99 > 0.6"


def test_promtool_check_rules_accepts_the_file(tmp_path):
    for plan in (WatchPlan(5), WatchPlan(4, p99_tpot_s=0.03, p99_ttft_s=0.4, model_name='m"odd', crossover_batch=12)):
        (tmp_path / "rules.yml").write_text(monitoring.rules_yaml(plan))
        res = promtool("check", "rules", "rules.yml", cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout


# ------------------------------------------------------------------------------------------- promtool test rules
K = 4
TEST_PLAN = WatchPlan(K, p99_tpot_s=0.05, p99_ttft_s=0.5, rate_window="5m", alert_for="2m", eval_interval="1m")


def counters(model, engine, drafts, draft_tokens, accepted, per_pos, reset_at=None):
    """Input series growing by the given amount per minute for 30 minutes (optionally restarting at reset_at)."""
    def values(step):
        if reset_at is None:
            return f"0+{step}x30"
        return f"0+{step}x{reset_at - 1} 0+{step}x{30 - reset_at}"  # the counter restarts from 0 at reset_at min

    labels = f'model_name="{model}",engine="{engine}"'
    out = [
        {"series": f"{monitoring.DRAFTS}{{{labels}}}", "values": values(drafts)},
        {"series": f"{monitoring.DRAFT_TOKENS}{{{labels}}}", "values": values(draft_tokens)},
        {"series": f"{monitoring.ACCEPTED}{{{labels}}}", "values": values(accepted)},
    ]
    out += [{"series": f'{monitoring.ACCEPTED_PER_POS}{{{labels},position="{i}"}}', "values": values(a)}
            for i, a in enumerate(per_pos)]
    return out


def close(t, metric, labels, value, tol=1e-9):
    """A promql_expr_test that holds when the series is within tol of value (promtool compares floats exactly)."""
    return {"expr": f"abs({metric}{{{labels}}} - {value!r}) < bool {tol!r}", "eval_time": t,
            "exp_samples": [{"labels": "{" + labels + "}", "value": 1}]}


def expected_alert(rules, name, **labels):
    rule = rules[name]
    ann = {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), v)
           for k, v in rule["annotations"].items()}
    return {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": ann}


def test_promtool_unit_tests_fire_the_right_alerts(tmp_path):
    rules_text = monitoring.rules_yaml(TEST_PLAN)
    rules = rules_by_name(rules_text)
    (tmp_path / "rules.yml").write_text(rules_text)
    series = (
        # good: 200 accepted / 400 draft tokens = 0.5 > 0.3814 (alpha 0.65 at k=4): win, no acceptance alert
        counters("good", 0, 100, 400, 200, (80, 60, 40, 20))
        # poor: 40 / 400 = 0.1 < 0.2344 (alpha 0.5 at k=4); restarts at minute 15: rate() must keep 0.1
        + counters("poor", 0, 100, 400, 40, (30, 8, 2, 0), reset_at=15)
        # multi: engine 0 600/1200 = 0.5, engine 1 20/400 = 0.05. Ratio of sums 620/1600 = 0.3875 (win);
        # a mean of the two ratios (0.275) would wrongly read break-even
        + counters("multi", 0, 300, 1200, 600, (240, 180, 120, 60))
        + counters("multi", 1, 100, 400, 20, (15, 5, 0, 0))
        # k3: a server drafting 3 tokens, not the planned 4: ratio 150/300 = 0.5, but the thresholds do not apply
        + counters("k3", 0, 100, 300, 150, (70, 50, 30))
    )
    # TPOT histogram of "good" per minute: 50 requests <= 25 ms, 40 in (25, 50] ms, 10 in (50, 100] ms.
    # P99: rank 99 of 100 falls in (0.05, 0.1] holding ranks 91..100: 0.05 + (99 - 90)/10 x 0.05 = 0.095 s
    # > 0.05 x 1.2 = 0.06 s: regression. P50: rank 50 in (0.01, 0.025] holding 1..50: 0.01 + 50/50 x 0.015 = 0.025.
    for le, step in (("0.01", 0), ("0.025", 50), ("0.05", 90), ("0.1", 100), ("+Inf", 100)):
        series.append({"series": f'{monitoring.TPOT_HIST}_bucket{{model_name="good",engine="0",le="{le}"}}',
                       "values": f"0+{step}x30"})
    # TTFT of "poor": 10 per minute, all in (0.05, 0.1]: P99 = 0.05 + 0.99 x 0.05 = 0.0995 s < 0.6 s: no alert
    for le, step in (("0.05", 0), ("0.1", 10), ("+Inf", 10)):
        series.append({"series": f'{monitoring.TTFT_HIST}_bucket{{model_name="poor",engine="0",le="{le}"}}',
                       "values": f"0+{step}x30"})
    series += [
        {"series": f'{monitoring.KV_USAGE}{{model_name="good",engine="0"}}', "values": "0.95x30"},  # > 0.90
        {"series": f'{monitoring.KV_USAGE}{{model_name="poor",engine="0"}}', "values": "0.5x30"},
        {"series": f'{monitoring.WAITING}{{model_name="good",engine="0"}}', "values": "2x30"},  # always queued
        {"series": f'{monitoring.WAITING}{{model_name="poor",engine="0"}}', "values": "0x30"},
        # one preemption at minute 10 on "poor": increase over 5 m > 0 from 10 to 14 m, 0 afterwards
        {"series": f'{monitoring.PREEMPTIONS}{{model_name="poor",engine="0"}}', "values": "0x9 1x20"},
    ]

    def at(t, name, *alerts):
        return {"eval_time": t, "alertname": name, "exp_alerts": [expected_alert(rules, name, **a) for a in alerts]}

    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": series,
             "alert_rule_test": [
                 at("1m", "SpecDecodeAcceptanceBelowOff"),  # pending only (for: 2m)
                 at("10m", "SpecDecodeAcceptanceBelowOff", {"model_name": "poor"}),
                 at("17m", "SpecDecodeAcceptanceBelowOff", {"model_name": "poor"}),  # across the restart
                 at("25m", "SpecDecodeAcceptanceBelowOff", {"model_name": "poor"}),
                 at("25m", "SpecDecodeAcceptanceBreakEven"),  # good 0.5, multi 0.3875, k3 0.5: all above 0.3814
                 at("10m", "SpecDecodeKMismatch", {"model_name": "k3"}),
                 at("10m", "SpecDecodeMetricsAbsent"),
                 at("10m", "SpecDecodeTPOTRegression", {"model_name": "good"}),
                 at("10m", "SpecDecodeTTFTRegression"),
                 at("10m", "VLLMKVCachePressure", {"model_name": "good"}),
                 at("10m", "VLLMRequestsWaiting", {"model_name": "good"}),
                 at("12m", "VLLMPreemptions", {"model_name": "poor"}),
                 at("25m", "VLLMPreemptions"),
             ],
             "promql_expr_test": [
                 close("17m", "specdec:acceptance_v1_rate", 'model_name="good"', 0.5),
                 close("17m", "specdec:acceptance_v1_rate", 'model_name="k3"', 0.5),
                 close("17m", "specdec:acceptance_v1_rate", 'model_name="multi"', 0.3875),
                 close("17m", "specdec:acceptance_v1_rate", 'model_name="poor"', 0.1),  # after the restart
                 close("10m", "specdec:acceptance_v1_rate:per_engine", 'model_name="multi",engine="0"', 0.5),
                 close("10m", "specdec:acceptance_v1_rate:per_engine", 'model_name="multi",engine="1"', 0.05),
                 # bands: poor 0 (off), good 2 (win); 1 + 200/100 = 3 tokens per step
                 close("10m", "specdec:acceptance_band", 'model_name="good"', 2),
                 close("10m", "specdec:acceptance_band", 'model_name="poor"', 0),
                 close("10m", "specdec:mean_acceptance_length", 'model_name="good"', 3),
                 # per position: 80/100, 60/100, 40/100, 20/100
                 *[close("10m", "specdec:acceptance_per_position", f'model_name="good",position="{i}"', v)
                   for i, v in enumerate((0.8, 0.6, 0.4, 0.2))],
                 close("10m", "specdec:tpot_seconds:p99", 'model_name="good"', 0.095),
                 close("10m", "specdec:tpot_seconds:p50", 'model_name="good"', 0.025),
             ]},
        ],
    }
    # the "absent" alert fires on a Prometheus that sees no speculative counters at all (for: 2m)
    tests["tests"].append({"interval": "1m", "input_series": [
        {"series": f'{monitoring.KV_USAGE}{{model_name="plain",engine="0"}}', "values": "0.1x10"}],
        "alert_rule_test": [at("1m", "SpecDecodeMetricsAbsent"),
                            at("5m", "SpecDecodeMetricsAbsent", {})]})
    (tmp_path / "tests.yml").write_text(json.dumps(tests, indent=1))  # JSON is YAML
    res = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_test_fails_when_an_expectation_is_wrong(tmp_path):
    """The harness above can fail: claim the good model's ratio is 0.4 and promtool must say no."""
    (tmp_path / "rules.yml").write_text(monitoring.rules_yaml(TEST_PLAN))
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": counters("good", 0, 100, 400, 200, (80, 60, 40, 20)),
        "promql_expr_test": [{"expr": "specdec:acceptance_v1_rate", "eval_time": "10m", "exp_samples": [
            {"labels": 'specdec:acceptance_v1_rate{model_name="good"}', "value": 0.4}]}]}]}
    (tmp_path / "tests.yml").write_text(json.dumps(tests))
    res = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    got = 'got: {__name__="specdec:acceptance_v1_rate", model_name="good"} 5E-01'
    assert res.returncode != 0 and got in res.stderr


# ------------------------------------------------------------------------------------------- dashboard
def test_dashboard_is_import_ready_with_units_and_the_same_lines():
    plan = WatchPlan(4, p99_tpot_s=0.05, p99_ttft_s=0.5)
    dash = json.loads(monitoring.artifacts_for(plan).dashboard_json)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in dash["panels"]}
    for p in dash["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"] and all(t["expr"] for t in p["targets"])
    assert units["V1 acceptance ratio (accepted / draft tokens, k=4)"] == "percentunit"
    assert units["Acceptance by draft position"] == "percentunit"
    assert units["TPOT P50 / P99"] == units["TTFT P50 / P99"] == "s"
    assert units["KV cache usage"] == "percentunit"
    # the acceptance panel's threshold lines are the rules' lines (alpha 0.5 / 0.65 at k=4)
    steps = dash["panels"][0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps[1:]] == [plan.v1_off_below, plan.v1_win_above]
    # (1 - 0.5**5)/0.5 = 1.9375 -> 0.9375/4 = 0.234375
    assert steps[1]["value"] == pytest.approx(0.234375)
    tpot = next(p for p in dash["panels"] if p["title"] == "TPOT P50 / P99")
    assert tpot["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == pytest.approx(0.06)
    queries = dashboard.panel_queries(dash, rate_interval="30s")
    assert all("$" not in q for _, q in queries)


# ------------------------------------------------------------------------------------------- command line
def test_specdec_monitoring_writes_files_promtool_accepts(tmp_path, capsys):
    from specdec_lib import cli

    assert cli.main(["monitoring", "--k", "5", "--p99-tpot-ms", "40", "--p99-ttft-ms", "400",
                     "-o", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["operator_must_confirm"]
    res = promtool("check", "rules", "specdec-rules.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    rules = rules_by_name((tmp_path / "specdec-rules.yml").read_text())
    # 40 ms x 1.2 = 48 ms, in seconds inside the rule
    assert rules["SpecDecodeTPOTRegression"]["expr"] == f"specdec:tpot_seconds:p99 > {0.04 * 1.2!r}"
    assert json.loads((tmp_path / "specdec-dashboard.json").read_text())["uid"] == "specdec-k5"


def test_specdec_watch_help_documents_the_command(capsys):
    from specdec_lib import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["watch", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--url", "--prometheus", "--duration-s", "--interval-s", "--window-s", "--p99-tpot-ms",
                   "Ctrl-C", "interrupted", "load_watch", f"alpha < {decision.ALPHA_OFF_BELOW}"):
        assert needle in text, needle
    with pytest.raises(SystemExit):
        cli.main(["watch", "--k", "4"])  # a source is required
    assert "one of the arguments --url --prometheus is required" in capsys.readouterr().err


def test_memo_rows_and_plan_from_the_default_scenario_share_the_rules_numbers():
    from specdec_lib.scenario import DEFAULT_SCENARIO

    plan = monitoring.plan_from_scenario(DEFAULT_SCENARIO, p99_tpot_s=0.04, crossover_batch=24)
    assert plan.num_speculative_tokens == DEFAULT_SCENARIO.num_speculative_tokens == 5
    rows = {r["what"]: r for r in monitoring.memo_rows(plan)}
    rules = rules_by_name(monitoring.rules_yaml(plan))
    acc = rows["Acceptance ratio (V1: accepted / draft tokens)"]
    assert acc["promql"] == rules["specdec:acceptance_v1_rate"]["expr"]
    assert "< 0.1937" in acc["threshold"] or "< 0.1938" in acc["threshold"]  # 0.19375 at 4 decimals
    # mean acceptance length at alpha 0.5, k = 5: E = 1.96875 -> printed 1.969
    assert "< 1.969" in rows["Mean acceptance length (tokens per verify step)"]["threshold"]
    assert "48.0 ms" in rows["TPOT P99 vs the plan"]["threshold"]  # 40 ms x 1.2
    assert "set the limit by hand" in rows["TTFT P99 vs the plan"]["threshold"]
    assert ">= 24" in rows["Running requests vs the crossover batch"]["threshold"]
