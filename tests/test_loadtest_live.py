"""Temperature sweeps and load tests against real vLLM 0.32 CPU servers (tiny local models, k = 4).

Independent references: the test's own /metrics scrapes parsed here with prometheus_client directly (not through
specdec_lib.metrics), and the server's own per-request figures (--per-request-spec-decode-metrics detailed).
Tests are grouped by server; requests are few and short so the whole file stays in a couple of minutes.
"""

import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from specdec_lib import loadtest, runs
from specdec_lib.endpoint import EndpointClient

TEMPS = (0.0, 0.4, 0.8, 1.0)
DETAILED = ("--per-request-spec-decode-metrics", "detailed")


def counters(base_url: str) -> dict:
    """Sum of each vllm counter sample we check, read straight from /metrics."""
    out = {}
    for fam in text_string_to_metric_families(requests.get(base_url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name in ("vllm:spec_decode_num_draft_tokens_total", "vllm:spec_decode_num_accepted_tokens_total",
                          "vllm:spec_decode_num_drafts_total", "vllm:request_success_total"):
                out[s.name] = out.get(s.name, 0) + s.value
    return out


def sweep(server, out_dir, n=4, max_tokens=48, temps=TEMPS, **kw):
    client = EndpointClient(server.base_url)
    return loadtest.run_temperature_sweep(client, temperatures=temps, requests_per_temperature=n, max_tokens=max_tokens,
                                          prompts=("chat", "summarisation"), runs_dir=out_dir, progress=False,
                                          concurrency=2, request_timeout_s=60, max_duration_s=240, **kw)


# Order: servers already live from the earlier files (baseline, draft_copy_prob[detailed]) first, then the
# noisy drafts, then n-gram, so that the pool (2 live servers) restarts none of them.

# ----------------------------------------------------------------------------------------- baseline
def test_baseline_reports_no_speculation_not_zero(vllm_servers, test_output_dir):
    res = sweep(vllm_servers.get_named("baseline"), test_output_dir, n=2, temps=(0.0, 0.8))
    for t in res.temperatures:
        assert t.status.startswith("no speculation metrics")
        assert t.v1_rate is None and t.alpha is None and t.band is None
        assert t.succeeded == 2
    assert runs.load_run(res.run_path).metadata["speculative"] is None


def test_load_test_counts_match_the_servers_request_counters(vllm_servers, test_output_dir):
    server = vllm_servers.get_named("baseline")
    client = EndpointClient(server.base_url)
    before = counters(server.base_url)
    res = loadtest.run_load_test(client, concurrency_levels=(1, 4), request_rates_qps=(20.0,), requests_per_level=6,
                                 temperatures=(0.0, 1.0), max_tokens=24, runs_dir=test_output_dir, progress=False,
                                 request_timeout_s=60, max_duration_s=180)
    after = counters(server.base_url)
    assert [lv.label for lv in res.levels] == ["concurrency=1", "concurrency=4", "rate=20qps"]
    for lv in res.levels:
        assert lv.client_requests == 6 == lv.server_requests_finished
        lat = lv.latency
        assert lat["errors"] == 0 and lat["succeeded"] == 6
        assert lat["ttft_p50_s"] <= lat["ttft_p95_s"] <= lat["ttft_p99_s"]
        assert lat["output_tokens_per_s"] > 0
    assert after["vllm:request_success_total"] - before["vllm:request_success_total"] == 18
    # percentiles recomputed from the file agree with the result handed back
    again = loadtest.load_results_from_run(runs.load_run(res.run_path))
    assert again == res.levels


def test_baseline_vs_speculative_side_by_side(vllm_servers, test_output_dir):
    kw = dict(concurrency_levels=(2,), requests_per_level=4, max_tokens=24, runs_dir=test_output_dir, progress=False,
              request_timeout_s=60, max_duration_s=120)
    base = loadtest.run_load_test(EndpointClient(vllm_servers.get_named("baseline").base_url), **kw)
    spec = loadtest.run_load_test(EndpointClient(vllm_servers.get_named("draft_copy_prob", DETAILED).base_url), **kw)
    rows = loadtest.compare_load_tests(base, spec)
    assert {(r.label, r.metric) for r in rows} == {("concurrency=2", m) for m in ("ttft", "tpot", "itl", "e2e")}
    for r in rows:
        assert r.baseline_p50_s > 0 and r.speculative_p50_s > 0
        assert r.p50_change == pytest.approx((r.speculative_p50_s - r.baseline_p50_s) / r.baseline_p50_s)


def test_closed_loop_streams_do_not_wait_for_the_disk(vllm_servers, test_output_dir, monkeypatch):
    """The streams of a closed-loop level keep sending while a record is being written: the first write is held
    here until every request of the level has come back from the server (a design that writes each record before
    sending the next request finishes only the first wave while the write is held, and the server sees fewer
    requests in flight than the level says); then every record is on disk."""
    n = 8
    came_back: list[int] = []
    real_execute, real_append = loadtest._execute, runs.RunWriter.append_request

    def counted(*args, **kwargs):
        rec = real_execute(*args, **kwargs)
        came_back.append(rec["index"])
        return rec

    back_at_first_write: list[int] = []

    def held(self, rec):
        if not back_at_first_write:
            deadline = time.monotonic() + 120
            while len(came_back) < n and time.monotonic() < deadline:
                time.sleep(0.01)
            back_at_first_write.append(len(came_back))
        return real_append(self, rec)

    monkeypatch.setattr(loadtest, "_execute", counted)
    monkeypatch.setattr(runs.RunWriter, "append_request", held)
    res = loadtest.run_load_test(EndpointClient(vllm_servers.get_named("baseline").base_url), concurrency_levels=(2,),
                                 requests_per_level=n, max_tokens=8, runs_dir=test_output_dir, progress=False,
                                 request_timeout_s=60, max_duration_s=180)
    assert back_at_first_write == [n]
    run = runs.load_run(res.run_path)
    assert sorted(r["index"] for r in run.records) == list(range(n))
    assert all(r["error"] is None for r in run.records) and not res.interrupted


def _on_the_nth_return(monkeypatch, n: int, action) -> list[int]:
    """Make the load test's request runner call `action` as its n-th request comes back, in the stream that ran
    it (a fault at a chosen point, whatever the server's speed); returns the indices as they come back."""
    real_execute, came_back = loadtest._execute, []

    def counted(*args, **kwargs):
        rec = real_execute(*args, **kwargs)
        came_back.append(rec["index"])
        if len(came_back) == n:
            action()
        return rec

    monkeypatch.setattr(loadtest, "_execute", counted)
    return came_back


def test_cancel_keeps_records_and_resume_finishes_the_run(vllm_servers, test_output_dir, monkeypatch):
    """A stop set as the third request comes back (deliberately, inside the stream that ran it, so the next
    request is never taken, however fast the server): the three records stay on disk, the run is marked
    "interrupted", and a resume sends only the five left."""
    server = vllm_servers.get_named("baseline")
    client = EndpointClient(server.base_url)
    stop = threading.Event()
    kw = dict(concurrency_levels=(1,), requests_per_level=8, max_tokens=48, runs_dir=test_output_dir, progress=False,
              request_timeout_s=60, max_duration_s=120)
    came_back = _on_the_nth_return(monkeypatch, 3, stop.set)
    first = loadtest.run_load_test(client, stop_event=stop, **kw)
    monkeypatch.undo()  # the resume runs unpatched
    assert first.interrupted
    run = runs.load_run(first.run_path)
    assert run.metadata["status"] == "interrupted"
    done = {r["index"] for r in run.records if r["error"] is None}
    assert len(came_back) == 3 and done == set(came_back)
    second = loadtest.run_load_test(client, resume=first.run_path, **kw)
    assert not second.interrupted and second.run_path == first.run_path
    run = runs.load_run(first.run_path)
    assert run.metadata["status"] == "complete"
    assert sorted(r["index"] for r in run.records) == list(range(8))
    assert all(r["error"] is None for r in run.records)
    # the successful first-pass records were not sent again
    assert sum(1 for r in run.raw_records if r["index"] in done) == len(done)


# ----------------------------------------------------------------------------------------- identical draft
def test_identical_draft_measures_at_least_0_9_at_every_temperature_and_matches_vllms_counters(vllm_servers,
                                                                                               test_output_dir):
    server = vllm_servers.get_named("draft_copy_prob", DETAILED)
    before = counters(server.base_url)
    res = sweep(server, test_output_dir)
    after = counters(server.base_url)
    assert not res.interrupted
    assert [t.temperature for t in res.temperatures] == list(TEMPS)
    for t in res.temperatures:
        assert t.status == "measured" and t.errors == 0 and t.succeeded == 4
        assert t.v1_rate >= 0.9, t
        assert t.alpha >= t.v1_rate
        assert t.per_request_source == "server"
        assert t.band == "likely_win"
    # the workbook's per-temperature counters add up to vLLM's own counter ratio over the same requests
    d_acc = after["vllm:spec_decode_num_accepted_tokens_total"] - before["vllm:spec_decode_num_accepted_tokens_total"]
    d_draft = after["vllm:spec_decode_num_draft_tokens_total"] - before["vllm:spec_decode_num_draft_tokens_total"]
    assert sum(t.accepted_tokens for t in res.temperatures) == d_acc
    assert sum(t.draft_tokens for t in res.temperatures) == d_draft
    # and each temperature's counter delta equals the sum of the server's per-request figures of that temperature
    run = runs.load_run(res.run_path)
    for t in res.temperatures:
        recs = [r for r in run.records if r["label"] == t.label]
        assert t.accepted_tokens == sum(r["spec_metrics"]["num_accepted_draft_tokens"] for r in recs)
        assert t.draft_tokens == sum(r["spec_metrics"]["num_draft_tokens"] for r in recs)
        assert t.v1_rate == pytest.approx(t.accepted_tokens / t.draft_tokens)
    # the run folder: metadata without secrets, one record per request, one counter interval per temperature
    assert run.metadata["status"] == "complete" and run.metadata["vllm_version"] == "0.32.0"
    assert run.metadata["speculative"]["num_speculative_tokens"] == 4
    assert len(run.records) == 16 and len(run.intervals) == 4


# ----------------------------------------------------------------------------------------- noisier drafts
@pytest.fixture(scope="module")
def noisy_sweeps(vllm_servers, tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy-sweeps")
    results = []
    for name in ("draft_noise05_prob", "draft_noise20_prob"):
        server = vllm_servers.get_named(name)
        before = counters(server.base_url)
        res = sweep(server, out)
        after = counters(server.base_url)
        results.append((res, {k: after[k] - before[k] for k in after}))
    return results


def test_noisy_drafts_workbook_rate_equals_vllms_counter_ratio(noisy_sweeps):
    for res, d in noisy_sweeps:
        acc = sum(t.accepted_tokens for t in res.temperatures)
        drafted = sum(t.draft_tokens for t in res.temperatures)
        assert acc == d["vllm:spec_decode_num_accepted_tokens_total"]
        assert drafted == d["vllm:spec_decode_num_draft_tokens_total"]
        assert acc / drafted == pytest.approx(d["vllm:spec_decode_num_accepted_tokens_total"]
                                              / d["vllm:spec_decode_num_draft_tokens_total"])
        assert d["vllm:request_success_total"] == sum(t.succeeded for t in res.temperatures)


def test_noisier_drafts_measure_lower_in_order(noisy_sweeps):
    (n05, _), (n20, _) = noisy_sweeps
    for a, b in zip(n05.temperatures, n20.temperatures):
        assert a.temperature == b.temperature
        assert a.status == b.status == "measured"
        # identical draft >= 0.9 (test above) > 5 % noise > 20 % noise
        assert 0.9 > a.v1_rate > b.v1_rate, (a, b)
        assert a.alpha > b.alpha


def test_per_request_chunk_estimates_agree_with_the_counters(noisy_sweeps):
    """No per-request metrics on these servers: acceptance is estimated from streamed chunks.

    The estimate, (tokens − chunks) / (k × (chunks − 1)), misses only the accepted tokens that max_tokens cut from
    each request's last step, so summed over a temperature it reads at most a few points under the counters.
    """
    for res, _ in noisy_sweeps:
        run = runs.load_run(res.run_path)
        for t in res.temperatures:
            recs = [r for r in run.records if r["label"] == t.label]
            assert t.per_request_source == "chunks"
            est_acc = sum(r["accepted_tokens"] for r in recs)
            est_draft = sum(r["draft_tokens"] for r in recs)
            # drafts: one engine step per chunk after the first, k = 4 draft tokens each
            assert est_draft == t.draft_tokens
            # the estimate can only miss tokens accepted in a request's last step and then cut by max_tokens (or
            # dropped after the end-of-sequence token): between 0 and k per request
            assert 0 <= t.accepted_tokens - est_acc <= 4 * len(recs)
            # measured on this build (4 requests x 48 tokens): within 0.07 of the counter rate
            assert est_acc / est_draft == pytest.approx(t.v1_rate, abs=0.1)
            assert t.per_request_p10 <= t.per_request_p50 <= t.per_request_p90


def test_quantization_ab_flags_a_drop_of_more_than_5_points(noisy_sweeps):
    """Stand-in for BF16 vs INT4 target: same prompts, a worse-matched pair as the candidate."""
    (ref, _), (cand, _) = noisy_sweeps
    rows = loadtest.quantization_ab(ref, cand)
    assert [r.temperature for r in rows] == list(TEMPS)
    assert all(r.flagged and r.alpha_drop_points > 5 for r in rows)
    same = loadtest.quantization_ab(ref, ref)
    assert not any(r.flagged for r in same) and all(r.alpha_drop_points == 0 for r in same)


# ----------------------------------------------------------------------------------------- n-gram
def test_ngram_sweep_measures_from_counters(vllm_servers, test_output_dir):
    server = vllm_servers.get_named("ngram")
    before = counters(server.base_url)
    res = sweep(server, test_output_dir, n=4, temps=(0.0,))
    after = counters(server.base_url)
    (t,) = res.temperatures
    assert t.status == "measured" and 0 < t.v1_rate < 1
    accepted = "vllm:spec_decode_num_accepted_tokens_total"
    assert t.accepted_tokens == after[accepted] - before[accepted]
    assert t.drafts == after["vllm:spec_decode_num_drafts_total"] - before["vllm:spec_decode_num_drafts_total"]


# ----------------------------------------------------------------------------------------- pure comparisons
def _fake_level(label, p50, p99):
    metrics = ("ttft", "tpot", "itl", "e2e")
    lat = {f"{m}_p50_s": p50 for m in metrics} | {f"{m}_p99_s": p99 for m in metrics}
    return loadtest.LoadLevelResult(label, 8, None, lat, 10, 10, {})


def test_p50_improves_while_p99_regresses_is_flagged():
    base = loadtest.LoadTestResult(None, False, {}, (_fake_level("concurrency=8", 0.100, 0.200),))
    mixed = loadtest.LoadTestResult(None, False, {}, (_fake_level("concurrency=8", 0.080, 0.260),))
    better = loadtest.LoadTestResult(None, False, {}, (_fake_level("concurrency=8", 0.080, 0.150),))
    rows = loadtest.compare_load_tests(base, mixed)
    assert all(r.p50_improves_p99_regresses for r in rows)
    assert rows[0].p50_change == pytest.approx(-0.2) and rows[0].p99_change == pytest.approx(0.3)
    assert not any(r.p50_improves_p99_regresses for r in loadtest.compare_load_tests(base, better))


def test_ctrl_c_stops_cleanly_and_keeps_the_records(vllm_servers, test_output_dir, ctrl_c_raises, monkeypatch):
    """KeyboardInterrupt in the thread running the load test (as Ctrl-C in a terminal or notebook), sent
    deliberately as the second request comes back (from the stream that ran it, however fast the server)."""
    import _thread

    server = vllm_servers.get_named("baseline")
    came_back = _on_the_nth_return(monkeypatch, 2, _thread.interrupt_main)
    try:
        res = loadtest.run_load_test(EndpointClient(server.base_url), concurrency_levels=(1,), requests_per_level=12,
                                     max_tokens=64, runs_dir=test_output_dir, progress=False, max_duration_s=120)
    except KeyboardInterrupt:  # only if the interrupt landed outside the request loop
        res = None
    (folder,) = test_output_dir.glob("*-load")
    run = runs.load_run(folder)
    assert run.metadata["status"] == "interrupted"
    assert 2 <= len(run.records) < 12
    assert set(came_back[:2]) <= {r["index"] for r in run.records if r["error"] is None}  # both came back, both kept
    if res is not None:
        assert res.interrupted


# ----------------------------------------------------------------------------------------- run folders (no server)
def _record(index, error=None, **kw):
    rec = {f: None for f in runs.RECORD_FIELDS}
    rec.update(index=index, label="concurrency=1", temperature=0.0, sent_at_s=float(index), e2e_s=1.0, itl_s=[],
               error=error, error_kind="timeout" if error else None, **kw)
    return rec


def test_percentiles_are_numpys_linear_interpolation():
    # hand arithmetic: rank (n-1)q/100; [1,2,3,4]: p50 at rank 1.5 -> 2.5; p99 at rank 2.97 -> 3.97
    assert runs.percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert runs.percentile([4, 1, 3, 2], 99) == pytest.approx(3.97)
    assert runs.percentile([7.0], 95) == 7.0 and runs.percentile([], 50) is None
    with pytest.raises(ValueError, match="q=101"):
        runs.percentile([1], 101)


def test_run_folder_refuses_credentials_and_survives_a_cut_last_line(tmp_path):
    with pytest.raises(ValueError, match="api_key"):
        runs.RunWriter.create(tmp_path, "load", {"endpoint": "http://x", "parameters": {"api_key": "sk-1"}})
    w = runs.RunWriter.create(tmp_path, "load", {"endpoint": "http://x"})
    w.append_request(_record(0, error="http://x/v1/chat/completions: no response within 1 s"))
    w.append_request(_record(1, completion_tokens=10, ttft_s=0.1))
    w.append_request(_record(0, completion_tokens=10, ttft_s=0.3))  # the retry of index 0 on resume
    assert w.completed_indices() == {0, 1}
    with open(w.path / "requests.jsonl", "a") as f:
        f.write('{"index": 2, "label": "concurr')  # a crash mid-write
    run = runs.load_run(w.path)
    assert [r["index"] for r in run.records] == [0, 1] and len(run.raw_records) == 3
    assert run.records[0]["error"] is None
    lat = runs.latency_summary(list(run.records))
    assert lat["errors"] == 0 and lat["ttft_p50_s"] == pytest.approx(0.2)
    # output throughput: 20 tokens between first send (0 s) and last finish (1 + 1 = 2 s)
    assert lat["output_tokens_per_s"] == pytest.approx(10.0)
    lines = (w.path / "requests.jsonl").read_text().splitlines()
    (w.path / "requests.jsonl").write_text("\n".join([lines[0], "{broken", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="not valid JSON and not the last line"):
        runs.load_run(w.path)
