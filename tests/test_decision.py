"""Each condition of the source's decision framework flips the verdict the way the source says.

Every test starts from a scenario that passes every condition (a dedicated JSON-extraction endpoint at T = 0.1,
alpha 0.80, Llama-3.1-70B INT8 + Llama-3.1-8B on 2x H100 SXM, QPS 1, TPOT SLO, monitoring on) and breaks one
thing. Memory and load numbers come from the real catalog, memory plan and load model (`decision.evaluate`);
where no catalog model isolates one checklist item, the test breaks that item in the evidence instead.
"""

import dataclasses
from pathlib import Path

import pytest

from specdec_lib import decision as dec
from specdec_lib import runs, speculation
from specdec_lib.evaluate import evaluate as _evaluate
from specdec_lib.scenario import RequestClass, load_scenario

ROOT = Path(__file__).resolve().parent.parent
PASSING = load_scenario(ROOT / "scenarios" / "structured-extraction.toml")


def _pair(scenario, **kwargs):
    """(decision, evidence) from the one evaluation path."""
    ev = _evaluate(scenario, **kwargs)
    return ev.decision, ev.evidence


def _with(**changes):
    return dataclasses.replace(PASSING, **changes)


def _classes(*specs):
    """(name, share, temperature, alpha) -> request classes with the passing scenario's lengths."""
    return tuple(RequestClass(n, share, t, 1024, 256, alpha=a) for n, share, t, a in specs)


def _failed(decision):
    return {r.condition for r in decision.reasons if r.status == "failed"}


def test_the_starting_scenario_passes_every_condition():
    decision, evidence = _pair(PASSING)
    assert decision.verdict == "use"
    assert all(r.status == "passed" for r in decision.reasons)
    # Hand check of two computed numbers: the 70B/8B ratio from the published parameter counts, and the
    # draft's share of what vLLM may use per GPU (bf16 weights split over TP 2, H100 = 85,017,493,504 bytes).
    assert decision.reason("draft_size_ratio").value == pytest.approx(70_553_706_496 / 8_030_261_248)
    assert decision.reason("draft_memory_share").value == pytest.approx(8_030_261_248 * 2 / 2 / (85_017_493_504 * 0.92),
                                                                        rel=0.02)
    assert evidence.load.speedup_at_qps > 1


@pytest.mark.parametrize("condition, changes, verdict", [
    # Use it when: "target temperature <= 0.5"
    ("temperature_low", dict(workload=_classes(("chat", 1.0, 0.6, 0.8))), "measure more"),
    # Use it when: "temperature-homogeneous" (our reading: classes within 0.3)
    ("temperature_homogeneous",
     dict(workload=_classes(("a", 0.5, 0.1, 0.8), ("b", 0.5, 0.45, 0.8))), "measure more"),
    # Use it when: "draft ... no more than ~15% of total available VRAM" (8 GB of 51 GB per GPU at 0.6)
    ("draft_memory_share", dict(gpu_memory_utilization=0.6), "measure more"),
    # Use it when: "not mixing request types with dramatically different acceptance rates"
    ("batch_consistent", dict(workload=_classes(("a", 0.5, 0.1, 0.92), ("b", 0.5, 0.1, 0.68))), "measure more"),
    # Use it when: "validated acceptance rates at production temperatures, not just greedy benchmarks"
    ("acceptance_validated", dict(acceptance_validated_at_production_temperature=False), "measure more"),
    # Use it when: "primary SLO is TPOT/throughput" / leave it off when "TTFT-bound"
    ("slo_not_ttft", dict(slo="ttft"), "leave off"),
    # Leave it off when: "temperature varies widely across your request mix"
    # (a spread this wide is also not homogeneous: both fail, leave off wins)
    (("temperature_varies_widely", "temperature_homogeneous"),
     dict(workload=_classes(("a", 0.5, 0.0, 0.8), ("b", 0.5, 0.6, 0.8))), "leave off"),
    # The source's BF16 + BF16 on 2x H100: "effectively unusable" - here it does not hold one request at all,
    # so vLLM refuses to start and no load can be served either.
    (("memory_fits", "vllm_accepts", "within_capacity", "speedup_at_qps"), dict(target_precision="bf16"),
     "leave off"),
    # Leave it off when: "VRAM-constrained and serving long-context requests": 64K context, fewer full-context
    # requests fit than the QPS keeps running.
    ("vram_long_context", dict(context_len=65536), "leave off"),
    # Leave it off when: "haven't set up acceptance rate monitoring"
    ("monitoring_in_place", dict(monitoring_in_place=False), "leave off"),
    # Draft checklist: "1:8-1:12 size ratio" (Llama-3.2-3B is 1:22 of the 70B)
    ("draft_size_ratio", dict(draft_model="meta-llama/Llama-3.2-3B-Instruct"), "measure more"),
    # The load model: above the crossover request rate speculation costs more than it gains (alpha 0.7: the
    # crossover, 3.8 requests/s, lies below the deployment's 4.8 requests/s capacity).
    ("speedup_at_qps", dict(qps=4.2, workload=_classes(("json", 1.0, 0.1, 0.7))), "leave off"),
    # Validity: at 12 requests/s the deployment is saturated (capacity 4.8): said as such, not as a speedup.
    (("within_capacity", "speedup_at_qps"), dict(qps=12.0), "leave off"),
])
def test_breaking_one_condition_flips_the_verdict(condition, changes, verdict):
    conditions = set(condition) if isinstance(condition, tuple) else {condition}
    decision, _ = _pair(_with(**changes))
    assert _failed(decision) == conditions
    assert decision.verdict == verdict
    assert conditions & {r.condition for r in decision.deciding}


def test_median_temperature_above_07_is_left_off():
    # "Leave it off when ... your median temperature is above 0.7" (which also fails "<= 0.5"; leave off wins).
    at_boundary, _ = _pair(_with(workload=_classes(("chat", 1.0, 0.7, 0.8))))
    assert _failed(at_boundary) == {"temperature_low"} and at_boundary.verdict == "measure more"
    decision, _ = _pair(_with(workload=_classes(("creative", 1.0, 0.8, 0.8))))
    assert _failed(decision) == {"temperature_low", "temperature_median_high"}
    assert decision.verdict == "leave off"


@pytest.mark.parametrize("alpha, verdict", [
    (0.80, "use"),            # > 0.65: "likely a genuine benefit"
    (0.64, "measure more"),   # 0.5-0.65: "near the break-even line; measure P99 latency under real load"
    (0.45, "leave off"),      # < 0.5: "speculative decoding is net-negative on this workload, disable it"
])
def test_acceptance_bands(alpha, verdict):
    decision, _ = _pair(_with(workload=_classes(("json", 1.0, 0.1, alpha))))
    band = decision.reason("acceptance_band")
    assert band.value == pytest.approx(alpha)
    assert decision.verdict == verdict
    if verdict == "measure more":
        # the load model still predicts a (small) gain at QPS 1: the band alone holds the verdict back
        assert decision.reason("speedup_at_qps").status == "passed" and band.status == "failed"


def _evidence():
    _, evidence = _pair(PASSING)
    return evidence


def _draft(evidence, **changes):
    return dataclasses.replace(evidence, draft=dataclasses.replace(evidence.draft, **changes))


def test_a_draft_from_another_family_needs_measuring():
    decision = dec.decide(PASSING, _draft(_evidence(), family="other-family"))
    assert _failed(decision) == {"draft_same_family"}
    assert decision.verdict == "measure more"


def test_a_draft_with_another_tokenizer_is_left_off():
    decision = dec.decide(PASSING, _draft(_evidence(), tokenizer="qwen2.5-151k", vocab_size=152_064))
    assert _failed(decision) == {"draft_same_tokenizer"}
    assert decision.verdict == "leave off"


def test_quantize_the_draft_before_relaxing_the_family():
    relaxed = _draft(_evidence(), family="other-family")
    with_alternative = dataclasses.replace(relaxed, same_family_quantized_alternative="meta-llama/Llama-3.1-8B")
    decision = dec.decide(PASSING, with_alternative)
    assert _failed(decision) == {"draft_same_family", "draft_quantize_before_relaxing_family"}
    assert decision.reason("draft_quantize_before_relaxing_family").value == "meta-llama/Llama-3.1-8B"
    # With the real catalog: a Qwen2.5-7B draft for Llama-3.1-70B breaks family and tokenizer, and the
    # same-family Llama-3.1-8B fits in INT8, so the checklist points at it.
    real, _ = _pair(_with(draft_model="Qwen/Qwen2.5-7B-Instruct"))
    # (vLLM 0.32 also refuses the different vocabulary at start-up: a validity failure of its own)
    assert _failed(real) == {"draft_same_family", "draft_same_tokenizer", "draft_quantize_before_relaxing_family",
                             "vllm_accepts"}
    assert real.reason("draft_quantize_before_relaxing_family").value == "meta-llama/Llama-3.1-8B"
    assert real.verdict == "leave off"


def test_a_slow_tail_of_requests_needs_measuring():
    # "If P10 of your acceptance distribution is below 0.5, a significant portion of traffic is net-negative."
    decision = dec.decide(PASSING, dataclasses.replace(_evidence(), low_acceptance_share=0.15))
    assert _failed(decision) == {"acceptance_tail"}
    assert decision.verdict == "measure more"


def test_unknown_acceptance_blocks_use_but_does_not_force_leave_off():
    decision, _ = _pair(_with(workload=_classes(("json", 1.0, 0.1, None))))
    assert decision.reason("acceptance_band").status == "unknown"
    assert decision.reason("speedup_at_qps").status == "unknown"
    assert decision.verdict == "measure more"


def test_the_sources_mixed_workload_is_left_off():
    # "60% ... 82% acceptance, 40% ... 38%: the weighted average is ~65%, which looks healthy."
    mixed = load_scenario(ROOT / "scenarios" / "mixed-chat.toml")
    decision, _ = _pair(mixed)
    assert decision.reason("acceptance_band").value == pytest.approx(0.6 * 0.82 + 0.4 * 0.38)
    assert decision.reason("acceptance_tail").value == pytest.approx(0.4)
    assert decision.verdict == "leave off"


def test_measured_v1_rates_are_converted_to_alpha_before_the_bands(tmp_path):
    # A healthy deployment, alpha = 0.70 at k = 5, reads as a V1 accepted/draft ratio of about 0.39 (vLLM V1
    # counts only the accepted prefix). Hand arithmetic: E = (1 - 0.7^6) / 0.3 = 2.9412; (E - 1) / 5 = 0.3882.
    expected_tokens = (1 - 0.7 ** 6) / 0.3
    v1_rate = (expected_tokens - 1) / 5
    assert v1_rate == pytest.approx(0.3882, abs=1e-4)
    writer = runs.RunWriter.create(tmp_path, "temps", {
        "endpoint": "http://127.0.0.1:1", "served_model": PASSING.target_model,
        "speculative": {"method": "draft_model", "num_speculative_tokens": 5, "draft_model": PASSING.draft_model}})
    draft_tokens = 5 * 2000
    writer.append_interval({"label": "T=0.1", "temperature": 0.1, "delta": {
        "available": True, "drafts": 2000, "draft_tokens": draft_tokens,
        "accepted_tokens": round(v1_rate * draft_tokens), "num_speculative_tokens": 5, "per_position": []}})
    writer.finish("complete")
    run = runs.load_run(writer.path)
    scenario = _with(workload=_classes(("json", 1.0, 0.1, None)))
    decision, evidence = _pair(scenario, run=run)
    band = decision.reason("acceptance_band")
    assert band.source == "measured"
    assert band.value == pytest.approx(0.70, abs=0.002)
    assert band.status == "passed"          # the raw 0.39 would have read "leave off"
    assert decision.reason("acceptance_validated").source == "measured"
    measured = evidence.acceptance[0].chosen
    assert measured.source == "measured" and measured.k == 5
    assert speculation.v1_rate_from_alpha(measured.alpha, 5) == pytest.approx(v1_rate, abs=1e-4)
    assert speculation.verdict_band(v1_rate).name == "off"
