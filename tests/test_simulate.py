"""The continuous-batching simulation: conservation, queueing theory, hand-timed runs, and the source's 60/40 claim."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from specdec_lib.simulate import (
    AffineStepTime,
    LengthDistribution,
    Requests,
    ServerConfig,
    SpeculationConfig,
    TrafficClass,
    Workload,
    calibrate_from_records,
    compare,
    fit_affine_step_time,
    length_shape,
    lengths_from_records,
    make_requests,
    requests_from_records,
    simulate,
    source_mixed_example,
    sweep_qps,
)


def _fixed(tokens: int) -> LengthDistribution:
    return LengthDistribution.fixed(tokens)


def _one_request(prompt: int, output: int, alpha: float = 0.0) -> Requests:
    return Requests(
        arrival_s=np.array([0.0]),
        prompt_tokens=np.array([prompt]),
        output_tokens=np.array([output]),
        class_index=np.array([0]),
        class_names=("only",),
        class_alpha=(alpha,),
    )


MIXED = Workload(
    (
        TrafficClass("chat", 0.5, 0.7, *length_shape("chat")),
        TrafficClass("code", 0.3, 0.9, *length_shape("code")),
        TrafficClass("summary", 0.2, 0.3, *length_shape("summarisation")),
    )
)
STEP = AffineStepTime(fixed_s=0.012, per_token_s=7e-5, per_kv_token_s=5e-8, draft_fixed_s=0.003, draft_per_seq_s=1.6e-5)
BIG_SERVER = ServerConfig(kv_capacity_tokens=200_000, max_num_seqs=64, max_num_batched_tokens=4096)


# ---- hand-timed single requests


def test_one_request_timing_matches_hand_arithmetic_with_chunked_prefill():
    step = AffineStepTime(fixed_s=0.01, per_token_s=1e-4)
    server = ServerConfig(kv_capacity_tokens=1000, max_num_seqs=4, max_num_batched_tokens=64)
    r = simulate(_one_request(prompt=100, output=10), server, step)
    # prefill in chunks of 64 and 36 tokens: 0.01 + 64e-4 and 0.01 + 36e-4; the second samples token 1
    ttft = (0.01 + 0.0064) + (0.01 + 0.0036)
    # 9 more decode steps of one token each: 0.01 + 1e-4
    e2e = ttft + 9 * 0.0101
    assert r.ttft_s[0] == pytest.approx(ttft)
    assert r.e2e_s[0] == pytest.approx(e2e)
    assert r.tpot_s[0] == pytest.approx(0.0101)
    assert r.num_steps == 2 + 9


def test_full_acceptance_appends_k_plus_one_tokens_per_step():
    step = AffineStepTime(fixed_s=0.01, per_token_s=1e-4, draft_fixed_s=0.002)
    server = ServerConfig(kv_capacity_tokens=1000, max_num_seqs=4, max_num_batched_tokens=256)
    r = simulate(_one_request(prompt=100, output=10, alpha=1.0), server, step, SpeculationConfig(4))
    # step 1: prefill 100 tokens, first token, and the drafter's 4 passes that propose step 2's drafts (vLLM
    # drafts after every forward pass, a prefill-only one included): 0.01 + 0.01 + 4 * 0.002
    # steps 2-3: verify 5 positions (k=4 drafts + 1), 4 draft passes: 0.01 + 5e-4 + 4 * 0.002; 5 then 4 tokens
    assert r.num_steps == 3
    assert r.ttft_s[0] == pytest.approx(0.02 + 0.008)
    assert r.e2e_s[0] == pytest.approx(0.028 + 2 * (0.01 + 5e-4 + 0.008))
    assert r.generated_tokens[0] == 10


def test_mean_tokens_per_step_follows_leviathan_formula():
    alpha, k, output = 0.6, 4, 200_001
    server = ServerConfig(kv_capacity_tokens=300_000, max_num_seqs=1, max_num_batched_tokens=16)
    r = simulate(_one_request(prompt=10, output=output, alpha=alpha), server, AffineStepTime(0.01),
                 SpeculationConfig(k))
    expected_tokens = (1 - alpha ** (k + 1)) / (1 - alpha)  # 2.30560
    decode_steps = r.num_steps - 1  # the first step is the prefill
    assert (output - 1) / decode_steps == pytest.approx(expected_tokens, rel=0.01)


# ---- conservation, determinism, Little's law, queueing theory


@pytest.fixture(scope="module")
def mixed_run():
    reqs = make_requests(MIXED, num_requests=3000, qps=6.0, seed=3)
    return reqs, simulate(reqs, BIG_SERVER, STEP, SpeculationConfig(4), seed=3)


def test_every_request_finishes_once_with_exactly_the_tokens_asked(mixed_run):
    reqs, r = mixed_run
    assert np.all(np.isfinite(r.finish_s))
    assert np.array_equal(r.generated_tokens, reqs.output_tokens)
    assert r.generated_tokens.sum() == reqs.output_tokens.sum()
    assert np.all(reqs.arrival_s <= r.admitted_s)
    assert np.all(r.admitted_s < r.first_token_s)
    assert np.all(r.first_token_s <= r.finish_s)
    # single-token outputs finish on their first token
    assert np.all((reqs.output_tokens > 1) | (r.first_token_s == r.finish_s))


def test_littles_law_holds_on_the_simulated_output(mixed_run):
    reqs, r = mixed_run
    horizon = r.horizon_s
    occupancy = r.timeline.mean_in_system(horizon)  # from the scheduler's own step records
    arrival_rate = reqs.num_requests / horizon
    mean_time_in_system = float(np.mean(r.e2e_s))  # from the per-request records
    # over a horizon that starts empty and ends empty the identity is exact, up to float rounding
    assert occupancy == pytest.approx(arrival_rate * mean_time_in_system, rel=1e-6)


def test_single_slot_server_matches_pollaczek_khinchine_m_d_1_waiting_time():
    # max_num_seqs = 1 and a fixed step time make the server M/D/1: service = output steps of 10 ms
    step_s, output, qps = 0.01, 50, 1.0
    service_s = output * step_s  # 0.5 s: 1 prefill step (with the first token) + 49 decode steps
    rho = qps * service_s  # 0.5
    expected_wait_s = qps * service_s**2 / (2 * (1 - rho))  # Pollaczek-Khinchine: 0.25 s
    workload = Workload((TrafficClass("only", 1.0, 0.0, _fixed(1), _fixed(output)),))
    reqs = make_requests(workload, num_requests=40_000, qps=qps, seed=11)
    server = ServerConfig(kv_capacity_tokens=1000, max_num_seqs=1, max_num_batched_tokens=16)
    r = simulate(reqs, server, AffineStepTime(fixed_s=step_s))
    assert np.allclose(r.e2e_s - r.queue_s, service_s)
    assert float(np.mean(r.queue_s)) == pytest.approx(expected_wait_s, rel=0.08)


def test_same_seed_same_result_and_another_seed_differs():
    reqs = make_requests(MIXED, num_requests=500, qps=8.0, seed=5)
    a = simulate(reqs, BIG_SERVER, STEP, SpeculationConfig(4), seed=9)
    b = simulate(make_requests(MIXED, num_requests=500, qps=8.0, seed=5), BIG_SERVER, STEP, SpeculationConfig(4),
                 seed=9)
    c = simulate(reqs, BIG_SERVER, STEP, SpeculationConfig(4), seed=10)
    assert np.array_equal(a.finish_s, b.finish_s)
    assert np.array_equal(a.timeline.batch_size, b.timeline.batch_size)
    assert not np.array_equal(a.finish_s, c.finish_s)


def test_qps_sweep_keeps_classes_and_lengths_only_arrivals_change():
    slow = make_requests(MIXED, num_requests=300, qps=1.0, seed=2)
    fast = make_requests(MIXED, num_requests=300, qps=4.0, seed=2)
    assert np.array_equal(slow.class_index, fast.class_index)
    assert np.array_equal(slow.output_tokens, fast.output_tokens)
    assert np.allclose(slow.arrival_s, 4 * fast.arrival_s)


# ---- KV cache


def test_kv_capacity_limits_admission_and_is_never_exceeded():
    # 400-token prompts and a 1,000-token cache: a third request's first chunk never fits beside two others
    workload = Workload((TrafficClass("only", 1.0, 0.5, _fixed(400), _fixed(60)),))
    reqs = make_requests(workload, num_requests=200, qps=50.0, seed=1)
    server = ServerConfig(kv_capacity_tokens=1000, max_num_seqs=8, max_num_batched_tokens=2048)
    r = simulate(reqs, server, AffineStepTime(0.01, per_token_s=1e-5), SpeculationConfig(3))
    assert r.max_kv_tokens <= 1000
    assert r.timeline.num_running.max() <= 1000 // 400
    assert np.array_equal(r.generated_tokens, reqs.output_tokens)


def test_growing_outputs_past_the_cache_cause_preemption_but_every_token_still_arrives():
    workload = Workload((TrafficClass("only", 1.0, 0.7, _fixed(50), _fixed(400)),))
    reqs = make_requests(workload, num_requests=300, qps=40.0, seed=4)
    server = ServerConfig(kv_capacity_tokens=2000, max_num_seqs=16, max_num_batched_tokens=1024)
    r = simulate(reqs, server, AffineStepTime(0.01, per_token_s=1e-5), SpeculationConfig(4))
    assert r.preemptions.sum() > 0
    assert r.max_kv_tokens <= 2000
    assert np.array_equal(r.generated_tokens, reqs.output_tokens)
    assert r.timeline.mean_in_system(r.horizon_s) == pytest.approx(
        reqs.num_requests / r.horizon_s * float(np.mean(r.e2e_s)), rel=1e-6
    )


def test_a_request_larger_than_the_cache_is_refused():
    with pytest.raises(ValueError, match="kv_capacity_tokens"):
        simulate(_one_request(900, 200), ServerConfig(kv_capacity_tokens=1000), AffineStepTime(0.01))


# ---- speculation never helps a zero-acceptance class


def _zero_acceptance_requests() -> Requests:
    workload = Workload((TrafficClass("hopeless", 1.0, 0.0, _fixed(64), *length_shape("chat")[1:]),))
    return make_requests(workload, num_requests=800, qps=3.0, seed=8)


def test_zero_acceptance_gains_nothing_even_when_speculation_is_free():
    reqs = _zero_acceptance_requests()
    server = ServerConfig(kv_capacity_tokens=500_000, max_num_seqs=32, max_num_batched_tokens=8192)
    free = AffineStepTime(fixed_s=0.02)  # step time independent of k: drafting and verifying cost nothing
    base = simulate(reqs, server, free)
    spec = simulate(reqs, server, free, SpeculationConfig(5))
    assert np.array_equal(base.finish_s, spec.finish_s)


def test_zero_acceptance_is_slower_for_every_request_when_drafting_costs_time():
    reqs = _zero_acceptance_requests()
    server = ServerConfig(kv_capacity_tokens=500_000, max_num_seqs=32, max_num_batched_tokens=8192)
    base = simulate(reqs, server, STEP)
    spec = simulate(reqs, server, STEP, SpeculationConfig(5))
    assert np.all(spec.e2e_s >= base.e2e_s)
    assert np.mean(spec.tpot_s[np.isfinite(spec.tpot_s)]) > 1.2 * np.mean(base.tpot_s[np.isfinite(base.tpot_s)])


# ---- k by batch size (vLLM 0.32's num_speculative_tokens_per_batch_size)


def test_k_schedule_follows_vllm_gap_and_tail_rules():
    table = SpeculationConfig(4, ((1, 16, 3), (32, 128, 2))).k_by_batch_size(200)
    assert table[1] == 3 and table[16] == 3
    assert table[17] == 3 and table[31] == 3  # a gap carries the previous range's k forward
    assert table[32] == 2 and table[128] == 2 and table[200] == 2  # the tail carries the last k
    assert SpeculationConfig(2, ((1, 8, 5),)).k_by_batch_size(10)[5] == 2  # capped at num_speculative_tokens


@pytest.mark.parametrize(
    "schedule", [((2, 8, 3),), ((1, 8, 3), (8, 16, 2)), ((1, 8, -1),), ()]
)
def test_invalid_k_schedules_are_refused_like_vllm(schedule):
    with pytest.raises(ValueError, match="per_batch_size"):
        SpeculationConfig(4, schedule)


def test_k_zero_for_every_batch_size_is_the_baseline():
    reqs = make_requests(MIXED, num_requests=400, qps=5.0, seed=6)
    base = simulate(reqs, BIG_SERVER, STEP)
    off = simulate(reqs, BIG_SERVER, STEP, SpeculationConfig(4, ((1, 64, 0),)))
    assert np.array_equal(base.finish_s, off.finish_s)


def test_disabling_by_batch_size_uses_k_only_below_the_threshold():
    reqs = make_requests(MIXED, num_requests=1500, qps=12.0, seed=6)
    r = simulate(reqs, BIG_SERVER, STEP, SpeculationConfig(4, ((1, 8, 4), (9, 64, 0))), seed=1)
    tl = r.timeline
    assert np.all(tl.num_speculative_tokens[tl.batch_size > 8] == 0)
    assert np.any(tl.num_speculative_tokens[tl.batch_size <= 8] == 4)
    assert np.any(tl.batch_size > 8)


# ---- the source's 60/40 example


def test_source_mix_p50_improves_while_p99_regresses_at_low_load():
    """The source: "P50 looks like a win; P99 is a regression". The model reproduces it at 1 QPS for the
    source's own deployment (draft pass ~0.25 of a target pass): the creative 40 % gain ~1.6 tokens per step,
    too few to repay the longer step, and the slowest 1 % of requests are long creative ones."""
    sc = source_mixed_example()
    reqs = make_requests(sc.workload, num_requests=2000, qps=1.0, seed=0)
    cmp = compare(
        reqs, sc.step_time, sc.speculation, baseline_server=sc.baseline_server,
        speculative_server=sc.speculative_server, qps=1.0,
    )
    assert cmp.ratio("e2e", "p50") < 1 < cmp.ratio("e2e", "p99")
    assert cmp.ratio("tpot", "p50") < 1 < cmp.ratio("tpot", "p99")
    assert cmp.ratio("e2e", "p99", "structured (T=0.1)") < 1 < cmp.ratio("e2e", "p99", "creative (T=1.0)")


def test_source_mix_with_a_cheap_draft_improves_p99_too_where_the_model_disagrees_with_the_source():
    """Where the model disagrees: with a draft pass costing 0.05 of a target pass (an EAGLE-like head), even
    alpha = 0.38 gains (speedup (1 - 0.38**6) / (0.62 * (5 * 0.05 + 1)) = 1.28), so at low load P99 improves too.
    The source's regression needs the low-acceptance class to be slower than without speculation."""
    sc = source_mixed_example(draft_cost_scale=0.2)
    reqs = make_requests(sc.workload, num_requests=2000, qps=1.0, seed=0)
    cmp = compare(
        reqs, sc.step_time, sc.speculation, baseline_server=sc.baseline_server,
        speculative_server=sc.speculative_server, qps=1.0,
    )
    assert cmp.ratio("e2e", "p50") < 1 and cmp.ratio("e2e", "p99") < 1


def test_source_mix_at_high_load_speculation_stops_helping_and_the_sweep_says_so():
    sc = source_mixed_example()
    sweep = sweep_qps(
        sc.workload, [1.0, 8.0], sc.step_time, sc.speculation, baseline_server=sc.baseline_server,
        speculative_server=sc.speculative_server, num_requests=1500,
    )
    low, high = sweep.points
    assert low.ratio("e2e", "p50") < 1
    assert high.ratio("e2e", "p50") > 1 and high.ratio("e2e", "p99") > 1
    sentence = sweep.statement("e2e")
    assert "P50 end-to-end latency is lower up to 1 QPS and stops helping by 8 QPS" in sentence
    assert "P99 end-to-end latency is higher at every load simulated" in sentence


def test_source_example_kv_capacities_follow_the_hand_arithmetic():
    sc = source_mixed_example()
    budget = 2 * 85_017_493_504 * 0.92 - 2 * 4 * 2**30
    assert sc.speculative_server.kv_capacity_tokens == int(
        (budget - 70_553_706_496 - 2 * 8_030_261_248) // (327_680 + 131_072)
    )
    assert sc.baseline_server.kv_capacity_tokens == int((budget - 70_553_706_496) // 327_680)
    assert sc.step_time.draft_fixed_s / sc.step_time.fixed_s == pytest.approx(0.25, abs=0.01)


# ---- inputs and calibration


def test_fit_affine_step_time_recovers_known_costs():
    rng = np.random.default_rng(0)
    batch = rng.integers(1, 64, size=200)
    tokens = batch + rng.integers(0, 2000, size=200)
    true = AffineStepTime(fixed_s=0.004, per_token_s=2e-6, per_seq_s=1e-4)
    fitted = fit_affine_step_time(batch, tokens, true(batch, tokens, 0, 0))
    assert fitted.fixed_s == pytest.approx(0.004)
    assert fitted.per_token_s == pytest.approx(2e-6)
    assert fitted.per_seq_s == pytest.approx(1e-4)


def test_fit_drops_a_cost_that_would_be_negative():
    # an exact fit is fixed 0.012, per_seq +0.001, per_token -0.001; dropping per_token and refitting gives
    # per_seq = mean(b=2) - mean(b=1) = 0.0125 - 0.0115 and fixed = 0.0115 - 0.001
    fitted = fit_affine_step_time([1, 2, 1, 2], [1, 1, 2, 2], [0.012, 0.013, 0.011, 0.012])
    assert fitted.per_token_s == 0
    assert fitted.per_seq_s == pytest.approx(0.001)
    assert fitted.fixed_s == pytest.approx(0.0105)


def test_lengths_from_run_records_skip_errors():
    records = [
        {"prompt_tokens": 10, "completion_tokens": 5, "error": None},
        {"prompt_tokens": 20, "completion_tokens": 0, "error": "timeout"},
        {"prompt_tokens": 30, "completion_tokens": 7, "error": None},
    ]
    dist = lengths_from_records(records, "completion_tokens")
    assert sorted(set(dist.values)) == [5, 7]
    assert set(dist.sample(np.random.default_rng(0), 100)) <= {5, 7}


def test_trace_arrivals_are_used_as_given():
    reqs = make_requests(MIXED, arrival_times_s=[3.0, 1.0, 2.0], seed=0)
    assert reqs.arrival_s.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: Workload((TrafficClass("a", 0.5, 0.5, *length_shape("chat")),)), "shares"),
        (lambda: TrafficClass("a", 1.0, 1.5, *length_shape("chat")), "alpha"),
        (lambda: ServerConfig(kv_capacity_tokens=0), "kv_capacity_tokens"),
        (lambda: AffineStepTime(fixed_s=-1.0), "fixed_s"),
        (lambda: length_shape("poetry"), "length shape"),
        (
            lambda: simulate(
                _one_request(10, 10), ServerConfig(10_000, max_num_seqs=256, max_num_batched_tokens=512),
                AffineStepTime(0.01), SpeculationConfig(4),
            ),
            "max_num_batched_tokens",
        ),
    ],
)
def test_bad_inputs_name_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_result_summary_has_every_class_and_sane_throughput(mixed_run):
    reqs, r = mixed_run
    s = r.summary()
    assert set(s.by_class) == {"chat", "code", "summary"}
    assert sum(c.num_requests for c in s.by_class.values()) == reqs.num_requests
    assert s.output_tokens_per_s == pytest.approx(reqs.output_tokens.sum() / r.horizon_s)
    assert s.overall.e2e.p50 <= s.overall.e2e.p95 <= s.overall.e2e.p99
    assert 0 < s.mean_batch_size <= BIG_SERVER.max_num_seqs
    assert dataclasses.is_dataclass(s)


# ---- the library's load and memory models as inputs


def _source_deployment():
    from specdec_lib import catalog, load

    return load.Deployment(
        target=catalog.get_model("meta-llama/Llama-3.1-70B"), target_precision=catalog.get_precision("int8"),
        gpu=catalog.get_gpu("H100-SXM"), tp=2, draft=catalog.get_model("meta-llama/Llama-3.1-8B"),
        draft_precision=catalog.get_precision("bf16"), draft_tp=2,
    )


def test_load_adapter_charges_what_load_py_charges():
    from specdec_lib import load
    from specdec_lib.simulate import step_time_from_load

    dep = _source_deployment()
    fn = step_time_from_load(dep, kv_bucket_tokens=1)
    # 8 decoding sequences at context 512: tokens_in_step 8 (k = 0) or 8 * 6 (k = 5)
    assert fn(8, 8, 0, 8 * 512) == pytest.approx(load.target_step_time(dep, 8, 1, 512).total_s)
    assert fn(8, 48, 5, 8 * 512) == pytest.approx(load.spec_step_time(dep, 8, 5, 512).total_s)
    assert fn(8, 8, 0, np.array([8 * 512, 8 * 1024])).tolist() == pytest.approx(
        [load.target_step_time(dep, 8, 1, 512).total_s, load.target_step_time(dep, 8, 1, 1024).total_s]
    )


def test_source_mix_on_the_library_models_shows_the_same_direction():
    from specdec_lib import memory
    from specdec_lib.simulate import servers_from_memory_plan, step_time_from_load

    plan = memory.plan_memory(
        "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-8B", gpu="H100-SXM", num_gpus=2, tp=2, draft_tp=2,
        target_precision="int8", draft_precision="bf16", context_len=8192,
    )
    base_server, spec_server = servers_from_memory_plan(plan)
    assert base_server.kv_capacity_tokens == plan.kv_capacity_tokens_without_draft > spec_server.kv_capacity_tokens
    sc = source_mixed_example()
    reqs = make_requests(sc.workload, num_requests=1500, qps=1.0, seed=0)
    cmp = compare(
        reqs, step_time_from_load(_source_deployment()), sc.speculation, baseline_server=base_server,
        speculative_server=spec_server, qps=1.0,
    )
    assert cmp.ratio("e2e", "p50") < 1 < cmp.ratio("e2e", "p99")


# ---- calibration from a measured baseline run


def _record(index, concurrency, step_s, ttft, prompt, completion, sent_at=0.0, chunks=None):
    """A runs.py record whose decode took step_s per engine step after the first token."""
    steps = (chunks if chunks is not None else completion) - 1
    e2e = None if ttft is None else ttft + step_s * steps
    return {
        "index": index, "label": f"concurrency={concurrency}", "concurrency": concurrency, "rate_qps": None,
        "sent_at_s": sent_at, "ttft_s": ttft, "e2e_s": e2e, "itl_s": [], "prompt_tokens": prompt,
        "completion_tokens": completion, "chunks": chunks if chunks is not None else completion, "error": None,
        "acceptance_source": None, "draft_tokens": None,
    }


def test_calibration_from_closed_loop_records_recovers_the_step_costs():
    # a server whose step is 2 ms + 0.5 ms per sequence; when idle the first token comes 9 ms after the request
    # (one 2.5 ms step + 6.5 ms of HTTP and tokenisation)
    def step(b):
        return 0.002 + 5e-4 * b

    records = [_record(i, 1, step(1), 0.009, 100, 201) for i in range(4)]
    records.append({**_record(5, 1, step(1), 0.009, 100, 201), "ttft_s": 0.4})  # a burst-delayed first chunk
    for c in (2, 4, 8):
        # bursty delivery moves time from decode into TTFT; E2E is what the calibration trusts
        records += [
            {**_record(10 * c + i, c, step(c), 0.009, 100, 201), "ttft_s": 0.3, "e2e_s": 0.009 + 200 * step(c)}
            for i in range(3)
        ]
        records.append(_record(10 * c + 9, c, 0.05, 0.009, 100, 201))  # a slow outlier: the median skips it
    calibration = calibrate_from_records(records)
    assert calibration.step_time.fixed_s == pytest.approx(0.002, rel=1e-6)
    assert calibration.step_time.per_seq_s == pytest.approx(5e-4, rel=1e-6)
    assert calibration.step_time.per_token_s == 0
    assert calibration.request_overhead_s == pytest.approx(0.009 - 0.0025, rel=1e-6)


def test_replay_takes_arrivals_and_lengths_from_the_records():
    records = [_record(0, None, 0.01, 0.1, 30, 5, sent_at=10.5), _record(1, None, 0.01, 0.1, 20, 7, sent_at=10.0)]
    records.append({**_record(2, None, 0.01, None, 10, 0, sent_at=11.0), "error": "timeout"})
    reqs = requests_from_records(records, alpha=0.4)
    assert reqs.arrival_s.tolist() == [0.0, 0.5]
    assert reqs.prompt_tokens.tolist() == [20, 30] and reqs.output_tokens.tolist() == [7, 5]
    assert reqs.class_alpha == (0.4,)


def test_calibrating_from_a_speculative_run_is_refused():
    rec = {**_record(0, 1, 0.01, 0.02, 10, 6), "acceptance_source": "chunks", "draft_tokens": 20}
    with pytest.raises(ValueError, match="baseline"):
        calibrate_from_records([rec, rec, rec, rec])


def test_source_diagnostic_structured_tail_tightens_without_the_creative_class_under_load():
    """The source's check: "run the same load test against a homogeneous low-temperature workload and compare P99.
    If it tightens significantly, you have a mixed-workload problem". At 6 QPS with speculation the structured
    requests' P99 is far worse in the mix than alone (the creative ones hold batch slots longer and every step grows
    with the batch); without speculation the mix costs them much less."""
    sc = source_mixed_example()
    structured = sc.workload.classes[0]
    alone = Workload((dataclasses.replace(structured, share=1.0),))
    mix_reqs = make_requests(sc.workload, num_requests=3000, qps=6.0, seed=0)
    alone_reqs = make_requests(alone, num_requests=1800, qps=0.6 * 6.0, seed=0)

    def structured_p99(reqs, server, spec):
        return simulate(reqs, server, sc.step_time, spec).summary().by_class[structured.name].e2e.p99

    spec_penalty = structured_p99(mix_reqs, sc.speculative_server, sc.speculation) / structured_p99(
        alone_reqs, sc.speculative_server, sc.speculation
    )
    base_penalty = structured_p99(mix_reqs, sc.baseline_server, None) / structured_p99(
        alone_reqs, sc.baseline_server, None
    )
    assert spec_penalty > 1.4
    assert spec_penalty > base_penalty + 0.25


def test_replaying_a_run_the_model_produced_reproduces_its_percentiles():
    """validate_against_run's plumbing: records written from a simulation (as runs.py would store them) replay
    through the same model and step costs with zero error."""
    from specdec_lib.simulate import validate_against_run

    step = AffineStepTime(fixed_s=0.008, per_token_s=3e-5, per_seq_s=4e-4)
    server = ServerConfig(kv_capacity_tokens=50_000, max_num_seqs=16, max_num_batched_tokens=512)
    workload = Workload((TrafficClass("only", 1.0, 0.0, _fixed(40), LengthDistribution(30, 0.5, 2, 100)),))
    reqs = make_requests(workload, num_requests=200, qps=20.0, seed=3)
    r = simulate(reqs, server, step)
    records = [
        {"index": i, "sent_at_s": float(reqs.arrival_s[i]) + 100.0, "prompt_tokens": int(reqs.prompt_tokens[i]),
         "completion_tokens": int(reqs.output_tokens[i]), "ttft_s": float(r.ttft_s[i]), "tpot_s": float(r.tpot_s[i]),
         "e2e_s": float(r.e2e_s[i]), "error": None}
        for i in range(reqs.num_requests)
    ]
    v = validate_against_run(records, server, step)
    assert v.num_requests == 200
    assert all(abs(row.relative_error) < 1e-9 for row in v.rows)
    assert v.error("e2e", "p99") == pytest.approx(0.0, abs=1e-9)


def test_a_scenario_workload_becomes_traffic_classes_and_unknown_alpha_is_refused():
    from specdec_lib.scenario import RequestClass
    from specdec_lib.simulate import workload_from_scenario

    classes = (
        RequestClass("json", 0.6, 0.1, prompt_tokens=300, output_tokens=120, alpha=0.82),
        RequestClass("story", 0.4, 1.0, prompt_tokens=80, output_tokens=600, alpha=0.38),
    )
    wl = workload_from_scenario(classes)
    assert [c.alpha for c in wl.classes] == [0.82, 0.38]
    assert wl.classes[1].output.median_tokens == 600
    with pytest.raises(ValueError, match="alpha"):
        workload_from_scenario((RequestClass("chat", 1.0, 0.7, 512, 256),))


def test_draft_costs_are_fitted_on_top_of_the_baseline_step():
    from specdec_lib.simulate import calibrate_draft_from_records

    target = AffineStepTime(fixed_s=0.005, per_token_s=2e-5, per_seq_s=5e-4)
    k = 4
    # the speculative server's step: target over c * (k + 1) tokens + k draft passes of 1 ms + 0.1 ms per sequence
    records = [
        _record(c, c, 0.005 + 2e-5 * c * (k + 1) + 5e-4 * c + k * (0.001 + 1e-4 * c), 0.02, 50, 30, chunks=9)
        for c in (1, 2, 4, 8)
    ]  # TTFT 0.02 s at every level, the idle one included
    fitted = calibrate_draft_from_records(records, target, k)
    assert fitted.draft_fixed_s == pytest.approx(0.001, rel=1e-6)
    assert fitted.draft_per_seq_s == pytest.approx(1e-4, rel=1e-6)
    assert fitted.fixed_s == target.fixed_s


def test_alpha_from_records_converts_vllm_v1_prefix_rate():
    from specdec_lib.simulate import alpha_from_records

    # alpha 0.5, k = 4: E = (1 - 0.5**5) / 0.5 = 1.9375 tokens per step, so V1 counts 0.9375 accepted of 4 drafted
    records = [{"accepted_tokens": 9375, "draft_tokens": 40000, "error": None}]
    assert alpha_from_records(records, 4) == pytest.approx(0.5, abs=1e-6)


def test_expected_decode_steps_by_hand():
    from specdec_lib.simulate import expected_decode_steps

    assert expected_decode_steps(1.0, 10, 4) == pytest.approx(2.0)  # 5 tokens a step, ceil(10 / 5)
    assert expected_decode_steps(0.0, 10, 4) == pytest.approx(10.0)  # 1 token a step
    # k = 1, alpha 0.5: E1 = 1; E2 = 1 + 0.5 E1 + 0.5 E0 = 1.5; E3 = 1 + 0.5 E2 + 0.5 E1 = 2.25
    assert expected_decode_steps(0.5, 3, 1) == pytest.approx(2.25)
    with pytest.raises(ValueError, match="alpha"):
        expected_decode_steps(1.5, 3, 1)


def test_alpha_from_steps_recovers_the_acceptance_a_truncated_run_hides():
    """Records drawn from the simulator's process by hand (4000 requests of 32 tokens, k = 4, alpha 0.8: each step
    appends 1 + a geometric accepted prefix capped at 4, the surplus past the 32nd token dropped, one chunk a step):
    the step-matching estimate finds 0.8; the chunk count (tokens - chunks) / (4 x decode steps) under-reads it."""
    from specdec_lib.simulate import alpha_from_records, alpha_from_steps

    rng = np.random.default_rng(7)
    records = []
    for _ in range(4000):
        tokens, steps = 1, 0  # the first token comes from the prefill, in its own chunk
        while tokens < 32:
            accepted = 0
            while accepted < 4 and rng.random() < 0.8:
                accepted += 1
            tokens = min(32, tokens + 1 + accepted)
            steps += 1
        records.append({"completion_tokens": 32, "chunks": steps + 1, "accepted_tokens": 32 - (steps + 1),
                        "draft_tokens": 4 * steps, "error": None})
    assert alpha_from_steps(records, 4) == pytest.approx(0.8, abs=0.01)
    assert alpha_from_records(records, 4) < 0.78  # the cut last steps counted as rejections
    with pytest.raises(ValueError, match="2 or more streamed chunks"):
        alpha_from_steps([{"completion_tokens": 1, "chunks": 1}], 4)


@pytest.mark.parametrize("trial", range(12))
def test_invariants_hold_for_random_servers_and_workloads(trial):
    """Random class mixes (alpha 0, 1 or anything), lengths, caps, budgets, KV sizes, k schedules: every request
    finishes with its tokens, KV and the running cap are respected, and Little's law holds."""
    rng = np.random.default_rng(1000 + trial)
    k = int(rng.integers(0, 6))
    shares = rng.dirichlet(np.ones(int(rng.integers(1, 4))))
    classes = tuple(
        TrafficClass(
            f"c{i}", float(share), float(rng.choice([0.0, 1.0, rng.random()])),
            LengthDistribution(float(rng.integers(1, 300)), float(rng.random()), 1, 600),
            LengthDistribution(float(rng.integers(1, 200)), float(rng.random()), 1, 400),
        )
        for i, share in enumerate(shares / shares.sum())
    )
    seqs = int(rng.integers(1, 40))
    server = ServerConfig(int(rng.integers(1100, 20000)), seqs, max(seqs * (k + 1), int(rng.integers(1, 2000))))
    schedule = ((1, 4, k), (int(rng.integers(6, 20)), 1000, int(rng.integers(0, k + 1)))) if k and trial % 2 else None
    reqs = make_requests(Workload(classes), num_requests=int(rng.integers(1, 300)), qps=float(rng.uniform(0.5, 200)),
                         seed=trial)
    step = AffineStepTime(float(rng.uniform(1e-3, 2e-2)), float(rng.uniform(0, 1e-4)), 0.0,
                          float(rng.uniform(0, 1e-7)), float(rng.uniform(0, 5e-3)))
    r = simulate(reqs, server, step, SpeculationConfig(k, schedule) if k else None, seed=trial)
    assert np.array_equal(r.generated_tokens, reqs.output_tokens)
    assert np.all(np.isfinite(r.finish_s)) and np.all(r.admitted_s >= reqs.arrival_s)
    assert r.max_kv_tokens <= server.kv_capacity_tokens
    assert r.timeline.num_running.max() <= seqs
    lam_w = reqs.num_requests / r.horizon_s * float(np.mean(r.e2e_s))
    assert r.timeline.mean_in_system(r.horizon_s) == pytest.approx(lam_w, rel=1e-6)


def test_sweep_rows_flatten_the_comparisons():
    sc = source_mixed_example()
    sweep = sweep_qps(sc.workload, [2.0, 1.0], sc.step_time, sc.speculation, baseline_server=sc.baseline_server,
                      speculative_server=sc.speculative_server, num_requests=300)
    rows = sweep.rows()
    assert [r["qps"] for r in rows] == [1.0, 2.0]
    assert rows[0]["speculative_e2e_p99_s"] == sweep.points[0].speculative.overall.e2e.p99
    assert rows[1]["baseline_tpot_p50_s"] == sweep.points[1].baseline.overall.tpot.p50


def test_the_drafts_per_token_cost_covers_its_first_pass_over_the_steps_tokens_and_k_minus_1_more():
    """vLLM's draft model runs one pass over every token the target scheduled, then k - 1 one-token passes per
    sequence of the batch (vllm/v1/spec_decode/llm_base_proposer.py, propose). By hand: 3 decoding sequences
    verifying k + 1 = 5 positions each plus one sequence's 40-token prefill chunk = 55 tokens in a batch of 4; the
    draft computes 55 + (4 - 1) x 4 = 67 tokens."""
    step = AffineStepTime(fixed_s=0.010, per_token_s=0.001, draft_fixed_s=0.002, draft_per_token_s=0.0001)
    assert step(4, 55, 4, 0) == pytest.approx(0.010 + 0.001 * 55 + 4 * 0.002 + 0.0001 * 67, rel=1e-12)
    assert step(4, 55, 0, 0) == pytest.approx(0.010 + 0.001 * 55, rel=1e-12)  # no speculation: no draft
    kv = np.array([0.0, 100.0])
    assert np.allclose(step(3, 15, 4, kv), 0.010 + 0.001 * 15 + 4 * 0.002 + 0.0001 * (15 + 9))
