"""The simulation against a real vLLM CPU server: calibrate on its own closed-loop run, predict an open-loop one.

The server is the shared tiny baseline (no speculation). Its step costs are fitted from closed-loop levels at
concurrency 1, 2 and 4 (`calibrate_from_records`); a Poisson run at a rate that should keep about three sequences
running is then replayed through the simulation with the same send times and token counts, and the simulated
percentiles are compared with the measured ones (written to test-output/<this test>/validation.json).

Bound: the simulated E2E P50 within a factor of 3 of the measured one. That is a sanity bound, not an accuracy
claim. On this two-core machine, shared with other servers and tests, the tiny server's latency is dominated by
its API process rather than its engine (steps of ~2 ms): the API process is starved while the engine runs and
delivers chunks in bursts, so TTFT and TPOT swap time between them and P99 follows CPU contention, none of which
the model contains. Errors seen for E2E P50 in benchmarks/simulate.py runs: -10 %, -17 %, -59 % and +140 %;
P99 was underestimated by 20-75 %. TTFT and TPOT are recorded, not asserted.
"""

from __future__ import annotations

import json

import pytest

from specdec_lib import endpoint, loadtest, localserver, runs
from specdec_lib.simulate import ServerConfig, calibrate_from_records, validate_against_run

MAX_TOKENS = 128
CPU_MAX_NUM_SEQS = 128  # vLLM 0.32's OpenAI-server defaults on CPU (vllm/engine/arg_utils.py get_batch_defaults)
CPU_MAX_NUM_BATCHED_TOKENS = 2048
E2E_P50_FACTOR = 3.0


@pytest.mark.vllm
def test_simulation_predicts_a_real_servers_latency_percentiles(vllm_servers, test_output_dir):
    server = vllm_servers.get_named("baseline")
    client = endpoint.EndpointClient(server.base_url)
    common = dict(temperatures=(0.0,), max_tokens=MAX_TOKENS, runs_dir=test_output_dir, progress=False)
    loadtest.run_load_test(client, concurrency_levels=(2,), requests_per_level=4, **common)  # warm-up, discarded
    calib = loadtest.run_load_test(client, concurrency_levels=(1, 2, 4), requests_per_level=8, **common)
    calibration = calibrate_from_records(runs.load_run(calib.run_path).records)
    step = calibration.step_time
    rate_qps = 3 / (MAX_TOKENS * float(step(3, 3, 0, 0)))  # Little's law: about 3 sequences running
    measured = loadtest.run_load_test(
        client, concurrency_levels=(), request_rates_qps=(rate_qps,), requests_per_level=40, max_in_flight=64, **common
    )
    records = runs.load_run(measured.run_path).records
    assert not any(r.get("error") for r in records)
    kv_tokens = localserver.kv_cache_tokens_from_log(server.log_text())
    server_config = ServerConfig(kv_tokens, CPU_MAX_NUM_SEQS, CPU_MAX_NUM_BATCHED_TOKENS)
    v = validate_against_run(records, server_config, step, request_overhead_s=calibration.request_overhead_s)
    (test_output_dir / "validation.json").write_text(
        json.dumps(
            {"rate_qps": rate_qps, "step_time": step.__dict__, "request_overhead_s": calibration.request_overhead_s,
             "kv_capacity_tokens": kv_tokens,
             "rows": [{**r.__dict__, "relative_error": r.relative_error} for r in v.rows]},
            indent=2,
        )
    )
    ratio = 1 + v.error("e2e", "p50")  # simulated / measured
    assert 1 / E2E_P50_FACTOR < ratio < E2E_P50_FACTOR, (ratio, v.rows)
