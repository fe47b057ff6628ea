"""The source's default scenario (and the two shipped scenario files) reach the same verdict for the same reasons
as before the single evaluation path existed (recorded from `decision.evaluate` at commit 052a04e).

New validity gates (vLLM accepts the configuration, the load is within capacity) may add passing reasons; they
must not change what fails, what is unknown, or what decides.
"""
from pathlib import Path

import pytest

from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import DEFAULT_SCENARIO, load_scenario

ROOT = Path(__file__).resolve().parent.parent

# verdict, failed conditions, unknown conditions (as printed by main's `specdec plan` at 052a04e)
TODAY = {
    "default": ("leave off", {"temperature_low", "acceptance_validated", "monitoring_in_place"},
                {"acceptance_band", "acceptance_tail", "speedup_at_qps"}),
    "mixed-chat": ("leave off", {"temperature_homogeneous", "batch_consistent", "temperature_varies_widely",
                                 "acceptance_band", "acceptance_tail"}, set()),
    "structured-extraction": ("use", set(), set()),
}


@pytest.mark.parametrize("name", sorted(TODAY))
def test_shipped_scenarios_keep_their_verdict_and_reasons(name):
    scenario = DEFAULT_SCENARIO if name == "default" else load_scenario(ROOT / "scenarios" / f"{name}.toml")
    verdict, failed, unknown = TODAY[name]
    decision = evaluate(scenario).decision
    assert decision.verdict == verdict
    assert {r.condition for r in decision.reasons if r.status == "failed"} == failed
    assert {r.condition for r in decision.reasons if r.status == "unknown"} == unknown


def test_default_scenario_is_left_off_for_missing_monitoring_only():
    decision = evaluate(DEFAULT_SCENARIO).decision
    assert [r.condition for r in decision.deciding] == ["monitoring_in_place"]


def test_default_file_equals_the_builtin_default():
    assert load_scenario(ROOT / "scenarios" / "default.toml") == DEFAULT_SCENARIO
