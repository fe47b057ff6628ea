"""The one evaluation path: which acceptance figure counts for each request class, the calibration slot, and
the per-class load forecast. Scenarios are the shipped ones with one thing changed; estimates are written by
hand with the fields a producer (oracle, drafter catalog, run) fills in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from specdec_lib import load, memo, runs
from specdec_lib.evaluate import evaluate
from specdec_lib.evidence import AcceptanceEstimate
from specdec_lib.scenario import RequestClass, load_scenario, with_changes

ROOT = Path(__file__).resolve().parent.parent
PASSING = load_scenario(ROOT / "scenarios" / "structured-extraction.toml")   # T = 0.1, alpha 0.80 typed, k = 5
TARGET, DRAFT = PASSING.target_model, PASSING.draft_model


def estimate(alpha, source, **kw):
    fields = dict(method="draft_model", temperature=0.1, target_model=TARGET, draft_model=DRAFT, origin=source)
    fields.update(kw)
    return AcceptanceEstimate(alpha=alpha, source=source, **fields)


def test_the_most_trusted_applicable_estimate_is_used_and_the_others_are_shown():
    measured = estimate(0.71, "measured", k=5, n_requests=40, origin="run R1")
    predicted = estimate(0.74, "predicted", alpha_low=0.70, alpha_high=0.79, origin="oracle")
    prior = estimate(0.60, "prior", temperature=None, origin="EAGLE paper, table 2")
    ev = evaluate(PASSING, estimates=(prior, predicted, measured), curve_points=0)
    choice = ev.acceptance[0]
    assert choice.chosen is measured and choice.source == "measured"
    assert choice.also_applicable[:2] == (predicted, prior)      # then the scenario's own 0.80 (assumed)
    assert choice.also_applicable[2].source == "assumed" and choice.also_applicable[2].alpha == 0.80
    assert ev.decision.reason("acceptance_band").source == "measured"
    assert ev.decision.reason("acceptance_band").value == pytest.approx(0.71)
    row = memo.build_context(ev)["workload_rows"][0]                 # predicted next to measured, with bounds
    assert row["alpha"].startswith("0.710 measured") and "0.740 predicted (0.700-0.790)" in row["also"]


@pytest.mark.parametrize("field, value, words", [
    ("target_model", "tiny-target", "not the scenario's target"),
    ("method", "eagle", "is for method 'eagle'"),
    ("draft_model", "meta-llama/Llama-3.2-1B", "used draft"),
    ("k", 4, "k=4"),
    ("temperature", 0.7, "temperature 0.7"),
])
def test_an_estimate_of_another_configuration_is_set_aside_with_its_reason(field, value, words):
    foreign = estimate(0.95, "measured", origin="run X", **{"k": 5, field: value})
    ev = evaluate(PASSING, estimates=(foreign,), curve_points=0)
    choice = ev.acceptance[0]
    assert choice.chosen.source == "assumed"                          # the scenario's own 0.80, not 0.95
    assert [why for e, why in choice.rejected if e is foreign] and words in choice.rejected[0][1]
    applies = ev.decision.reason("evidence_applies")
    assert applies.status == "failed" and words in applies.detail and ev.verdict != "use"


def test_a_server_that_does_not_name_its_method_is_used_with_that_caveat():
    unnamed = estimate(0.78, "measured", k=5, method="unknown", draft_model=None, origin="run R2")
    choice = evaluate(PASSING, estimates=(unnamed,), curve_points=0).acceptance[0]
    assert choice.chosen is unnamed
    assert any("did not report its method" in c for c in choice.caveats)
    assert any("did not report its draft" in c for c in choice.caveats)


def test_each_class_gets_the_estimate_taken_at_its_temperature():
    mixed = with_changes(PASSING, workload=(RequestClass("json", 0.6, 0.1, 1024, 256),
                                            RequestClass("chat", 0.4, 0.7, 512, 256)))
    cold = estimate(0.8, "measured", k=5, temperature=0.12)          # within the 0.05 tolerance of 0.1
    warm = estimate(0.5, "measured", k=5, temperature=0.7)
    greedy = estimate(0.9, "measured", k=5, temperature=0.0)         # 0.1 away from both classes: never used
    ev = evaluate(mixed, estimates=(cold, warm, greedy), curve_points=0)
    assert [c.alpha for c in ev.acceptance] == [0.8, 0.5]
    assert ev.decision.reason("acceptance_validated").source == "measured"
    assert ev.decision.reason("evidence_applies").status == "failed"   # the greedy run applies to no class
    assert "temperature 0" in ev.decision.reason("evidence_applies").detail


def test_the_calibration_slot_drives_the_load_model_and_is_named():
    slower = dataclasses.replace(load.DEFAULT_FACTORS, memory_efficiency=0.5, source="fitted to my endpoint")
    default, mine = evaluate(PASSING, curve_points=0), evaluate(PASSING, calibration=slower, curve_points=0)
    assert default.calibration == load.DEFAULT_FACTORS.source and mine.calibration == "fitted to my endpoint"
    assert mine.load.calibration == "fitted to my endpoint"
    assert mine.load.capacity_qps < default.load.capacity_qps           # slower memory: fewer requests served
    assert ("calibration", "fitted to my endpoint") in memo.build_context(mine)["speedup_rows"]


def test_replicas_share_the_load_and_capacity_scales_with_them():
    one = evaluate(with_changes(PASSING, qps=4.0), curve_points=0).load
    two = evaluate(with_changes(PASSING, qps=4.0, num_gpus=4), curve_points=0).load   # TP 2 on 4 GPUs: 2 replicas
    assert (one.replicas, two.replicas) == (1, 2) and "derived" in two.replicas_source
    assert two.capacity_qps == pytest.approx(2 * one.capacity_qps, rel=1e-9)
    assert two.batch_at_qps < one.batch_at_qps                          # each replica sees 2 requests/s


def test_a_mix_is_modelled_at_its_mean_tokens_per_step_not_its_mean_alpha():
    from specdec_lib import speculation

    mixed = with_changes(PASSING, workload=(RequestClass("a", 0.5, 0.1, 1024, 256, alpha=0.9),
                                            RequestClass("b", 0.5, 0.1, 1024, 256, alpha=0.5)))
    f = evaluate(mixed, curve_points=0).load
    mean_e = 0.5 * speculation.expected_tokens_per_step(0.9, 5) + 0.5 * speculation.expected_tokens_per_step(0.5, 5)
    assert speculation.expected_tokens_per_step(f.alpha, 5) == pytest.approx(mean_e, rel=1e-9)
    assert f.alpha != pytest.approx(0.7)                                # not the mean alpha


def test_a_run_converts_to_one_measured_estimate_per_temperature():
    from specdec_lib import acceptance

    run = runs.load_run(ROOT / "data" / "example-run")
    estimates = acceptance.estimates_from_run(run)
    assert [e.temperature for e in estimates] == [0.0, 0.7]
    assert all(e.source == "measured" and e.k == 4 and e.target_model == "tiny-target" for e in estimates)
    assert all(e.method == "unknown" for e in estimates)               # /server_info was off on that server


def test_an_eagle_head_outside_the_catalog_leaves_memory_unknown_not_the_load_model():
    eagle = with_changes(PASSING, method="eagle", draft_model="yuhuili/EAGLE-LLaMA3.1-Instruct-70B")
    ev = evaluate(eagle, curve_points=0)
    assert "yuhuili/EAGLE-LLaMA3.1-Instruct-70B" in ev.memory_error and ev.memory is None
    assert ev.load is not None and ev.load.cost_ratio > 0           # one decoder layer of the target's shape
    assert ev.decision.reason("memory_fits").status == "unknown" and ev.verdict != "use"
