"""`specdec calibrate` without a server: the fits recover known step costs, the file round-trips, bad files and
secrets are refused. The live calibration against a real vLLM server is in tests/test_simulate_engine_live.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from specdec_lib import catalog, load
from specdec_lib.calibrate import fit, load_calibration, write_calibration
from specdec_lib.calibrate.command import calibrate_endpoint, format_fit, hardware_spec
from specdec_lib.calibrate.files import redact_url
from specdec_lib.calibrate.probe import ProbeResult
from specdec_lib.cli import build_parser
from specdec_lib.simulate import AffineStepTime

TRUE = AffineStepTime(fixed_s=0.020, per_token_s=0.0004, per_seq_s=0.002, draft_fixed_s=0.004,
                      draft_per_seq_s=0.0005)
PROMPTS = (20, 60, 200)  # three requests per level, of these prompt lengths (median 60)
OVERHEAD_S = 0.015


def _records(k: int = 0, tokens_per_step: float = 1.0, true: AffineStepTime = TRUE,
             prompts: dict[int, tuple[int, ...]] | None = None) -> list[dict]:
    """Closed-loop records whose steps follow `true` exactly (hand arithmetic of the module docstring's model): each
    level (c, N) runs three waves of c streams, released together 100 s apart, wave j's prompts PROMPTS[j] tokens
    (or prompts[N][j]), so its streams decode in the same steps over the same span (a decode step computes the
    c * (k + 1) decode tokens of c sequences holding c * (prompt + N / 2) KV tokens on average; no prefill lands
    in it); a first token takes the overhead plus one step that prefills the request's prompt."""
    out = []
    i = 0
    for n in (32, 128):
        for c in (1, 2, 4, 8):
            steps = round((n - 1) / tokens_per_step) + 1 if k else n
            tokens = c * (k + 1)
            for j, prompt in enumerate((prompts or {}).get(n, PROMPTS)):
                kv = c * (prompt + n / 2)
                step = (true.fixed_s + true.per_token_s * tokens + true.per_seq_s * c + true.per_kv_token_s * kv
                        + (k * (true.draft_fixed_s + true.draft_per_seq_s * c + true.draft_per_kv_token_s * kv)
                           if k else 0.0))
                ttft = OVERHEAD_S + true.fixed_s + true.per_token_s * prompt + true.per_seq_s
                for _ in range(c):
                    out.append({"index": i, "concurrency": c, "max_tokens": n, "prompt_tokens": prompt,
                                "sent_at_s": 100.0 * j, "accepted_tokens": (steps - 1) if k else None,
                                "draft_tokens": k * (steps - 1) if k else None,
                                "completion_tokens": n, "chunks": steps if k else n, "ttft_s": ttft,
                                "e2e_s": ttft + step * (steps - 1), "error": None, "temperature": 0.0})
                    i += 1
    return out


def test_baseline_fit_recovers_the_step_costs_it_was_made_from():
    levels = fit.level_observations(_records(), "baseline")
    assert [(o.concurrency, o.max_tokens) for o in levels][:3] == [(1, 32), (1, 128), (2, 32)]
    res = fit.fit_simulator_step(levels, [], [r for r in _records() if r["concurrency"] == 1])
    for name in ("fixed_s", "per_token_s", "per_seq_s"):
        assert getattr(res.step_time, name) == pytest.approx(getattr(TRUE, name), rel=1e-6), name
    assert res.request_overhead_s == pytest.approx(OVERHEAD_S, rel=1e-6)
    assert res.median_abs_pct_error < 1e-9


def test_draft_terms_come_from_the_speculative_levels():
    # k = 4 with 2 tokens per step: chunks = (N - 1) / 2 + 1
    base = fit.level_observations(_records(), "baseline")
    spec = fit.level_observations(_records(k=4, tokens_per_step=2.0), "speculative", 4)
    assert spec[0].tokens_per_step_emitted == pytest.approx(2.0, rel=0.05)
    res = fit.fit_simulator_step(base, spec, [r for r in _records() if r["concurrency"] == 1])
    assert res.step_time.draft_fixed_s == pytest.approx(TRUE.draft_fixed_s, rel=0.05)
    assert res.step_time.draft_per_seq_s == pytest.approx(TRUE.draft_per_seq_s, rel=0.05)


def test_kv_costs_come_from_probe_levels_of_short_and_long_prompts():
    """The probe pairs its shorter output with short prompts and its longer with long ones (contexts 46 and 264
    tokens here), which separates the cost of reading the context from the per-sequence cost: records made by a
    step with both KV terms give them back, and the steps at a context the probe never held (a 30-token prompt
    at 128 tokens out) are predicted exactly. With one context everywhere the KV terms stay 0."""
    true = replace(TRUE, per_kv_token_s=4e-6, draft_per_kv_token_s=6e-6)
    by_length = {32: (20, 30, 40), 128: (150, 200, 250)}
    base = fit.level_observations(_records(true=true, prompts=by_length), "baseline")
    spec = fit.level_observations(_records(4, 2.0, true, by_length), "speculative", 4)
    idle = [r for r in _records(true=true, prompts=by_length) if r["concurrency"] == 1]
    res = fit.fit_simulator_step(base, spec, idle)
    for name in ("fixed_s", "per_seq_s", "per_kv_token_s", "draft_fixed_s", "draft_per_seq_s",
                 "draft_per_kv_token_s"):
        assert getattr(res.step_time, name) == pytest.approx(getattr(true, name), rel=0.02), name
    short_context = fit.level_observations(_records(4, 2.0, true, {128: (30, 30, 30)}), "speculative", 4)[-1]
    assert fit.predict_level(res.step_time, short_context) == pytest.approx(short_context.step_s, rel=0.01)
    one_context = fit.fit_simulator_step(fit.level_observations(_records(true=true), "baseline"), [], idle)
    assert one_context.step_time.per_kv_token_s == 0.0


def test_the_probe_measures_every_concurrency_at_both_contexts():
    """Short and long prompts alternate over the concurrencies and swap at the next output length: every
    concurrency sees both classes over two lengths, and each length (a part of an interleaved probe) holds both,
    so the machine's drift between parts is not read as a KV cost."""
    from specdec_lib.calibrate.probe import PROMPT_CLASSES, level_prompt_sets

    short, long = PROMPT_CLASSES
    grid = [[level_prompt_sets(PROMPT_CLASSES, i, j) for j in range(4)] for i in range(2)]
    assert grid == [[short, long, short, long], [long, short, long, short]]
    assert level_prompt_sets((("chat",),), 1, 3) == ("chat",)


def test_a_prefill_landing_in_a_decode_span_is_counted_where_it_landed():
    """Two streams that drifted apart (by hand): A's first token at 0.1 s, end 1.1 s, 10 decode steps; B (a 100-token
    prompt) prefilled in one of A's steps, first token at 0.5 s, end 1.5 s, 10 decode steps. A's span holds B's
    decoding for 0.6 of its 1.0 s (1.6 sequences a step) and B's prefill (one sequence, 100 tokens, once); B's span
    holds A for 0.6 s and no prefill (A's came before it). KV: prompt + half of 20 output tokens, A 50, B 110.

    Without chunk times each span is one piece: A's (a prompt landed in it) 1.0 s, 10 steps, 10 * 1.6 + 1 = 17
    sequence-steps, 16 + 100 = 116 tokens, 10 * (50 + 0.6 * 110) = 1160 KV token-steps; B's (decode only) 1.0 s,
    10 steps, 16, 16, 10 * (110 + 0.6 * 50) = 1400."""
    a = {"sent_at_s": 0.0, "ttft_s": 0.1, "e2e_s": 1.1, "prompt_tokens": 40, "completion_tokens": 20}
    b = {"sent_at_s": 0.2, "ttft_s": 0.3, "e2e_s": 1.3, "prompt_tokens": 100, "completion_tokens": 20}
    parts = fit.step_composition([a, b], [11, 11], 0)
    assert parts[True] == pytest.approx((1.0, 10, 17, 116, 1160))
    assert parts[False] == pytest.approx((1.0, 10, 16, 16, 1400))
    assert parts[False].composition == pytest.approx((1.6, 1.6, 140))
    # with k = 4 each decoding sequence verifies 5 positions; the landed prompt is computed once
    assert fit.step_composition([a, b], [11, 11], 4)[True].tokens == pytest.approx(10 * 1.6 * 5 + 100)


def test_chunk_times_put_a_landed_prompt_in_its_own_step():
    """The same two streams, A's 10 chunks recorded 0.1 s apart: B's first token (0.5 s) ends A's interval
    (0.4, 0.5], which alone holds the prompt: 0.1 s, 1 step, A and B's prefill = 2 sequences, 1 + 100 tokens, A's
    50 KV tokens (B's decoding starts after it). A's other 9 intervals only decode: 0.9 s, 9 steps, B decoding in 6
    of them (9 + 6 = 15 sequence-steps and tokens, 9 * 50 + 6 * 110 = 1110 KV); with B's span (no chunk times,
    decode only, as above): 1.9 s, 19 steps, 31, 31, 2510. The totals are those of the uncut spans."""
    a = {"sent_at_s": 0.0, "ttft_s": 0.1, "e2e_s": 1.1, "prompt_tokens": 40, "completion_tokens": 20,
         "itl_s": [0.1] * 10}
    b = {"sent_at_s": 0.2, "ttft_s": 0.3, "e2e_s": 1.3, "prompt_tokens": 100, "completion_tokens": 20}
    parts = fit.step_composition([a, b], [11, 11], 0)
    assert parts[True] == pytest.approx((0.1, 1, 2, 101, 50))
    assert parts[False] == pytest.approx((1.9, 19, 31, 31, 2510))
    uncut = fit.step_composition([{**a, "itl_s": None}, b], [11, 11], 0)
    assert [sum(v) for v in zip(*parts.values())] == pytest.approx([sum(v) for v in zip(*uncut.values())])
    # chunk gaps that do not number the steps (a chunk carried two tokens) leave the span uncut
    assert fit.step_composition([{**a, "itl_s": [0.1] * 9}, b], [11, 11], 0) == uncut


def test_a_level_recorded_twice_is_read_as_two_runs():
    """A merged probe may hold one level from two runs whose send times both start near 0: the second run's
    requests must not be read as overlapping the first's (the level's step and batch are those of one run)."""
    one = [r for r in _records() if (r["concurrency"], r["max_tokens"]) == (2, 32)]
    once = fit.level_observations(one, "baseline")[0]
    twice = fit.level_observations(one + [{**r, "index": r["index"]} for r in one], "baseline")[0]
    assert once.batch_size == pytest.approx(2.0)
    assert (twice.step_s, twice.batch_size, twice.tokens_in_step) == pytest.approx(
        (once.step_s, once.batch_size, once.tokens_in_step))


def test_a_stalled_request_is_left_out_of_its_levels_mean_step():
    """One request of a level whose decode span stalled for 60 s (once seen: a 40 s first step on the CPU server)
    would alone multiply the level's pooled mean step; beyond STALL_FACTOR times the level's median it is left
    out, counted, and the level reads as the clean one."""
    level = [r for r in _records() if (r["concurrency"], r["max_tokens"]) == (4, 32)]
    clean = fit.level_observations(level, "baseline")[0]
    stalled = fit.level_observations([{**level[0], "e2e_s": level[0]["e2e_s"] + 60.0}, *level[1:]], "baseline")[0]
    assert clean.stalled_requests == 0 and stalled.stalled_requests == 1
    assert (stalled.step_s, stalled.batch_size, stalled.tokens_in_step) == pytest.approx(
        (clean.step_s, clean.batch_size, clean.tokens_in_step))


def test_a_runs_own_steps_check_the_calibration():
    """`run_step_check` on a run made by TRUE (a closed-loop level of 4 streams, k = 4, 2 tokens a step): the step
    it observes is TRUE's for 4 sequences of 5 positions, so the check reads 0 % with TRUE and +50 % with a step
    whose every cost is 1.5 times TRUE's."""
    run = [r for r in _records(k=4, tokens_per_step=2.0) if (r["concurrency"], r["max_tokens"]) == (4, 128)]
    check = fit.run_step_check(run, TRUE, 4)
    assert check["batch_size"] == pytest.approx(4.0) and check["tokens_in_step"] == pytest.approx(20.0)
    assert check["error"] == pytest.approx(0.0, abs=1e-9)
    slow = AffineStepTime(**{name: 1.5 * value for name, value in TRUE.__dict__.items()})
    assert fit.run_step_check(run, slow, 4)["error"] == pytest.approx(0.5)
    # the diagnostic "at the run's speed" scales a step back to the run's own: TRUE, every cost 1 / 1.5 of slow's
    back = fit.at_run_speed(run, slow, 4)
    assert back.__dict__ == pytest.approx(TRUE.__dict__)
    with pytest.raises(ValueError, match="no successful request"):
        fit.run_step_check([{**run[0], "error": "HTTP 500"}], TRUE, 4)


def test_calibrate_check_puts_recorded_runs_next_to_a_calibration(tmp_path, capsys):
    """`specdec calibrate --check RUN_DIR --calibration FILE`: a run folder written by the workbook's RunWriter
    (records made by TRUE, speculative server with k = 4 in its metadata) against a calibration fitted from
    TRUE-made probes reads about 0 %; against the same file with every step cost doubled, +100 %."""
    from specdec_lib import runs
    from specdec_lib.calibrate.command import check_runs
    from specdec_lib.cli import EXIT_BAD_INPUT, main

    writer = runs.RunWriter.create(tmp_path / "runs", "load", {"server": {"speculation": True,
                                                                         "num_speculative_tokens": 4}})
    blank = dict.fromkeys(("label", "prompt_set", "prompt_id", "rate_qps", "tpot_s", "itl_s", "acceptance_rate",
                           "acceptance_source", "spec_metrics", "finish_reason", "error_kind", "status"))
    for r in _records(k=4, tokens_per_step=2.0):
        if (r["concurrency"], r["max_tokens"]) == (8, 128):
            writer.append_request({**blank, **r, "label": "concurrency=8"})
    writer.finish("complete")
    payload = calibrate_endpoint(_probe("baseline", _records()), _probe("speculative", _records(4, 2.0), 4))
    cal = write_calibration(tmp_path / "cal.json", payload)
    (row,) = check_runs(cal, [writer.path])
    assert row["num_speculative_tokens"] == 4 and row["batch_size"] == pytest.approx(8.0)
    assert row["error"] == pytest.approx(0.0, abs=0.02)
    doubled = json.loads(cal.read_text())
    doubled["simulator"]["step_time"] = {k: 2 * v for k, v in doubled["simulator"]["step_time"].items()}
    (tmp_path / "slow.json").write_text(json.dumps(doubled))
    assert check_runs(tmp_path / "slow.json", [writer.path])[0]["error"] == pytest.approx(1.0, abs=0.04)
    assert main(["calibrate", "--check", str(writer.path), "--calibration", str(cal)]) == 0
    assert writer.path.name[:43] in capsys.readouterr().out
    assert main(["calibrate", "--check", str(writer.path)]) == EXIT_BAD_INPUT
    assert "--check needs --calibration FILE" in capsys.readouterr().err


def test_levels_refuse_a_speculative_server_without_k():
    with pytest.raises(ValueError, match="k >= 1"):
        fit.level_observations(_records(), "speculative", 0)


def _simulated_probe():
    """Probe-like records from the simulator itself: a server whose steps follow TRUE, Poisson sends at three
    loads (24 requests each, prompts of 10-300 tokens, 32 output tokens), TTFT and E2E plus OVERHEAD_S."""
    from specdec_lib import simulate as sim

    server = sim.ServerConfig(10**6, 64, 4096)
    workload = sim.Workload((sim.TrafficClass("x", 1.0, 0.0, sim.LengthDistribution(60, 0.6, 10, 300),
                                              sim.LengthDistribution.fixed(32)),))
    records = []
    for level, qps in enumerate((2.0, 6.0, 12.0)):
        reqs = sim.make_requests(workload, num_requests=24, qps=qps, seed=level)
        res = sim.simulate(reqs, server, TRUE)
        for i in range(reqs.num_requests):
            records.append({"concurrency": level + 1, "max_tokens": 32, "sent_at_s": float(reqs.arrival_s[i]),
                            "prompt_tokens": int(reqs.prompt_tokens[i]), "completion_tokens": 32,
                            "ttft_s": float(res.ttft_s[i]) + OVERHEAD_S, "e2e_s": float(res.e2e_s[i]) + OVERHEAD_S})
    return server, records


def test_the_replay_loss_is_zero_for_the_step_that_made_the_probe_and_grows_away_from_it():
    """Probe records produced by the simulator itself (a server whose steps follow TRUE, Poisson sends at three
    loads): replayed with TRUE and the true overhead they match (loss ~0); with every target term 50 % off, or the
    overhead doubled, they do not."""
    from dataclasses import replace

    from specdec_lib.calibrate import replay

    server, records = _simulated_probe()
    exact = replay.replay_loss(TRUE, OVERHEAD_S, records, server=server)
    assert exact < 1e-6
    off = replace(TRUE, fixed_s=1.5 * TRUE.fixed_s, per_token_s=0.5 * TRUE.per_token_s, per_seq_s=1.5 * TRUE.per_seq_s)
    assert replay.replay_loss(off, OVERHEAD_S, records, server=server) > 1e-3
    assert replay.replay_loss(TRUE, 2 * OVERHEAD_S, records, server=server) > 1e-3
    with pytest.raises(ValueError, match="no successful closed-loop level"):
        replay.replay_loss(TRUE, OVERHEAD_S, [{**records[0], "error": "x"}], server=server)


def _probe(kind: str, records: list[dict], k: int = 0) -> ProbeResult:
    server = {"base_url": "http://user:hunter2@127.0.0.1:8000/?key=abc", "served_model": "m", "speculation": bool(k),
              "num_speculative_tokens": k or None}
    return ProbeResult(kind, server, k, (), tuple(records))


def test_calibration_file_round_trips_without_credentials(tmp_path):
    payload = calibrate_endpoint(_probe("baseline", _records()), _probe("speculative", _records(4, 2.0), 4))
    path = write_calibration(tmp_path / "cal.json", payload)
    text = path.read_text()
    assert "hunter2" not in text and "key=abc" not in text
    cal = load_calibration(path)
    assert cal.step_time == AffineStepTime(**payload["simulator"]["step_time"])
    assert cal.request_overhead_s == payload["simulator"]["request_overhead_s"]
    assert cal.num_speculative_tokens == 4 and cal.step_factors is None  # no architecture given: not fitted
    assert "cal.json" in cal.source and "127.0.0.1:8000" in cal.source
    assert len(json.loads(text)["observations"]["baseline"]) == len(_records())
    assert "simulator" in format_fit(payload) and "note:" not in format_fit(payload)
    assert payload["fit_quality"]["simulator_notes"] == []  # every term identified its usual way, nothing left out
    noted = {**payload, "fit_quality": {**payload["fit_quality"], "simulator_notes": ["no KV cost: why"]}}
    assert format_fit(noted).endswith("\nnote: no KV cost: why")


def test_load_factors_fit_recovers_factors_of_a_roofline_made_sample(tmp_path):
    """Steps generated by load.step_time_breakdown with known factors come back as those factors."""
    model = catalog.get_model("meta-llama/Llama-3.2-1B")
    gpu = catalog.get_gpu("H100-SXM")
    prec = catalog.get_precision("bf16")
    truth = load.StepFactors(memory_efficiency=0.6, compute_efficiency=0.3, overhead_s=0.004,
                             overhead_s_per_layer=0.0)
    levels = []
    for c in (1, 16, 64, 256):
        o = fit.LevelObservation("baseline", c, 128, 4, 500.0, 128.0, 0.0, 1.0, 1.0, 0, c, c, 564.0 * c)
        step = load.step_time_s(model, prec, gpu, 1, c, 1, int(o.context_tokens), truth)
        levels.append(fit.LevelObservation("baseline", c, 128, 4, 500.0, 128.0, step, 1.0, 1.0, 0, c, c, 564.0 * c))
    res = fit.fit_load_factors(levels, [], model=model, precision=prec, hardware=gpu)
    assert res.factors.memory_efficiency == pytest.approx(0.6, abs=0.01)
    assert res.factors.overhead_s == pytest.approx(0.004, rel=0.05)
    assert res.baseline_median_abs_pct_error < 0.01


def test_builtin_h100_factors_load_as_a_calibration():
    cal = load_calibration(catalog.data_dir() / "calibration" / "h100_fitted_factors.json")
    assert cal.step_factors == load.DEFAULT_FACTORS.__class__(**{**load.DEFAULT_FACTORS.as_dict(),
                                                                 "source": cal.step_factors.source,
                                                                 "overhead_s": cal.step_factors.overhead_s,
                                                                 "overhead_s_per_layer":
                                                                     cal.step_factors.overhead_s_per_layer})
    assert cal.step_time is None and "h100_fitted_factors.json" in cal.source


@pytest.mark.parametrize("content, field", [
    ("[]", "JSON object"),
    ('{"format": "other/1"}', "'format'"),
    ('{"format": "specdec-endpoint-calibration/1", "server": {"baseline": {"base_url": "u"}}, '
     '"simulator": {"step_time": {"fixed_s": -1}, "request_overhead_s": 0}}', "simulator.step_time.fixed_s"),
    ('{"format": "specdec-endpoint-calibration/1", "server": {"baseline": {"base_url": "u"}}, '
     '"simulator": {"step_time": {"fixed_s": 0.01, "warp_s": 1}, "request_overhead_s": 0}}', "unknown"),
])
def test_a_bad_calibration_file_names_the_file_and_field(tmp_path, content, field):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad.json") as err:
        load_calibration(path)
    assert field in str(err.value)


def test_redact_url_drops_user_info_and_query():
    assert redact_url("https://u:p@host:8443/v1?api_key=x") == "https://host:8443/v1"


def test_hardware_file_needs_its_peaks(tmp_path):
    f = tmp_path / "cpu.json"
    f.write_text('{"name": "cpu", "bandwidth_bytes_per_s": 1e10}')
    with pytest.raises(ValueError, match="bf16_flops_per_s"):
        hardware_spec(str(f))


def test_calibrate_is_a_cli_command():
    args = build_parser().parse_args(["calibrate", "--url", "http://127.0.0.1:1", "--spec-url", "http://x:2"])
    assert args.func.__name__ == "cmd_calibrate" and args.concurrency == "1,2,4,8"


def test_refit_from_a_file_adds_the_load_models_factors(tmp_path, capsys):
    from specdec_lib.cli import main

    payload = calibrate_endpoint(_probe("baseline", _records()), _probe("speculative", _records(4, 2.0), 4))
    path = write_calibration(tmp_path / "cal.json", payload)
    before = load_calibration(path)
    assert before.step_factors is None
    peaks = catalog.data_dir() / "calibration" / "cpu-2core-epyc-peaks.json"
    code = main(["calibrate", "--from-file", str(path), "--hardware", str(peaks), "--model",
                 "meta-llama/Llama-3.2-1B", "--precision", "fp32"])
    assert code == 0
    cal = load_calibration(path)
    assert cal.step_factors is not None and "cal.json" in cal.step_factors.source
    assert cal.step_time == before.step_time  # the simulator's fit is unchanged by the refit
    assert "load model" in capsys.readouterr().out


def test_the_drafts_per_token_cost_is_the_speculative_idle_slope_beyond_the_baselines():
    """The speculative server's first token also waits for the draft's pass over the prompt: its idle TTFT grows
    by per_token_s + draft_per_token_s a prompt token. By hand: 0.4 ms + 0.1 ms a token over prompts of 20, 60 and
    200 tokens, intercept 0.06 s -> draft_per_token_s = 0.1 ms."""
    base = fit.level_observations(_records(), "baseline")
    spec = fit.level_observations(_records(k=4, tokens_per_step=2.0), "speculative", 4)
    spec_idle = [{"prompt_tokens": p, "ttft_s": 0.06 + (TRUE.per_token_s + 0.0001) * p, "concurrency": 1}
                 for p in PROMPTS]
    res = fit.fit_simulator_step(base, spec, [r for r in _records() if r["concurrency"] == 1], spec_idle)
    assert res.step_time.draft_per_token_s == pytest.approx(0.0001, rel=1e-6)
    no_slope = fit.fit_simulator_step(base, spec, [r for r in _records() if r["concurrency"] == 1], [])
    assert no_slope.step_time.draft_per_token_s == 0.0


def test_an_idle_line_that_does_not_rise_takes_the_token_cost_from_the_steps_a_prompt_landed_in():
    """Idle first tokens that do not grow with their prompts (CI once, from a held stream's first tokens, now left
    out; a line can still come out flat) give no cost per token: here they fall 0.2 ms a token. Then the
    steps a prompt landed in give it: here each such step computes 150 prompt tokens more than its level's decode
    step and takes 150 x 0.4 ms = 60 ms more, so per_token_s = 0.4 ms, and the fixed and per-sequence costs come
    back as they were made."""
    base = fit.level_observations(_records(), "baseline")
    assert not any(o.prompt_in_step for o in base)
    landed = [replace(o, prompt_in_step=True, tokens_in_step=o.tokens_in_step + 150,
                      step_s=o.step_s + 150 * TRUE.per_token_s) for o in base if o.concurrency > 1]
    idle = [{"prompt_tokens": p, "ttft_s": 0.12 - 0.0002 * p, "concurrency": 1} for p in PROMPTS]
    assert fit._prefill_line(idle)[1] == 0.0  # the premise: the idle line gives no slope
    res = fit.fit_simulator_step(base + landed, [], idle)
    for name in ("per_token_s", "fixed_s", "per_seq_s"):
        assert getattr(res.step_time, name) == pytest.approx(getattr(TRUE, name), rel=1e-6), name
    assert res.fallbacks == ("cost per token 0.4000 ms from the steps a prompt landed in: the idle first-token "
                             "latency gave no slope against prompt length",)
    usual = fit.fit_simulator_step(base + landed, [], [r for r in _records() if r["concurrency"] == 1])
    assert usual.fallbacks == () and usual.step_time.per_token_s == pytest.approx(TRUE.per_token_s, rel=1e-6)


def test_a_kv_term_that_would_take_the_whole_step_is_dropped():
    """Steps that a line through the KV tokens alone fits better than any with a fixed cost (here 20 us a KV token
    minus 1 ms, at contexts of 60 and 250 tokens; no idle slope, no prompt steps): a fit keeping the KV term would
    leave the step no fixed, per-token or per-sequence cost, which is no step (the error CI once printed); every
    step reads the weights, so a KV term that leaves no fixed cost is dropped and the rest refitted: a step that
    takes time, no KV cost."""
    def level(c: int, context: int) -> fit.LevelObservation:
        return fit.LevelObservation(server="baseline", concurrency=c, max_tokens=16, requests=4 * c,
                                    prompt_tokens=context - 8, completion_tokens=16, step_s=2e-5 * c * context - 1e-3,
                                    decode_tokens_per_seq=1, tokens_per_step_emitted=1, num_speculative_tokens=0,
                                    batch_size=c, tokens_in_step=c, kv_tokens=c * context)

    levels = [level(c, context) for c in (1, 2, 4) for context in (60, 250)]
    idle = [{"prompt_tokens": 52, "ttft_s": 0.08, "concurrency": 1},
            {"prompt_tokens": 242, "ttft_s": 0.05, "concurrency": 1}]
    res = fit.fit_simulator_step(levels, [], idle)
    step = res.step_time
    assert step.per_kv_token_s == 0.0 and step.per_token_s == 0.0
    assert step.fixed_s + step.per_seq_s > 0
    assert [text.split(":")[0] for text in res.fallbacks] == [
        "no cost per token (no level's steps with a prompt gave one)", "no KV cost"]


def test_a_level_delivered_in_one_burst_is_left_out_and_its_first_tokens_too():
    """A concurrency-1 level whose chunks all came at the end, 0.02 ms apart (seen in a full test run: the starved
    API process held the stream), each first token the whole request's time: its decode steps measure nothing
    and its first tokens are not idle prefills. Its three requests are flagged (0.02 ms against a median step of
    tens of ms: under 1/10 of it), the level gives no observation, the idle line keeps the other level's three
    requests (prompts of 20, 60 and 200 tokens), and the fit recovers the step the records were made from; the
    calibration notes what it left out."""
    clean = _records()
    bursty = [{**r, "ttft_s": r["e2e_s"] - (r["completion_tokens"] - 1) * 2e-5}
              if (r["concurrency"], r["max_tokens"]) == (1, 32) else r for r in clean]
    flagged = fit.burst_flags(bursty)
    assert [r["index"] for r, f in zip(bursty, flagged) if f] == [r["index"] for r in clean[:3]]
    assert (1, 32) not in {(o.concurrency, o.max_tokens) for o in fit.level_observations(bursty, "baseline")}
    assert fit.level_observations(bursty, "baseline") == fit.level_observations(clean, "baseline")[1:]
    idle = fit.idle_records(bursty)
    assert [(r["max_tokens"], r["prompt_tokens"]) for r in idle] == [(128, p) for p in PROMPTS]
    res = fit.fit_simulator_step(fit.level_observations(bursty, "baseline"), [], idle)
    for name in ("fixed_s", "per_token_s", "per_seq_s"):
        assert getattr(res.step_time, name) == pytest.approx(getattr(TRUE, name), rel=1e-6), name
    every_idle = [r for r in bursty if r["concurrency"] == 1]  # the bursts' first tokens would tilt the line
    assert fit._prefill_line(every_idle)[1] != pytest.approx(TRUE.per_token_s, rel=0.1)
    one_in_a_pair = [{**r, "ttft_s": r["e2e_s"] - (r["completion_tokens"] - 1) * 2e-5}
                     if r["index"] == clean[3]["index"] else r for r in clean]  # the first request of level (2, 32)
    counts = {(o.concurrency, o.max_tokens): o.burst_requests
              for o in fit.level_observations(one_in_a_pair, "baseline")}
    assert counts == {**{level: 0 for level in counts}, (2, 32): 1}
    assert all(type(n) is int for n in counts.values())
    payload = calibrate_endpoint(_probe("baseline", bursty))
    assert any(n.startswith("left out: 3 baseline request(s) whose chunks came in one burst")
               for n in payload["fit_quality"]["simulator_notes"])


def test_the_idle_line_reads_no_slope_over_prompts_of_about_one_length():
    """Idle first tokens of 190- and 218-token prompts (less than 1.5x apart): 30 and 50 ms would read 0.71 ms a
    token, mostly noise; the line gives no slope and the median, 40 ms."""
    assert fit._prefill_line([{"prompt_tokens": 190, "ttft_s": 0.03}, {"prompt_tokens": 218, "ttft_s": 0.05}]) \
        == pytest.approx((0.04, 0.0))
