"""Faults: each gives a clear message naming the URL and what happened, and what was measured stays on disk.

Real vLLM servers produce the faults they can: 4xx for an unknown model and for a prompt longer than the context,
timeouts, and a real engine death (the engine-core process SIGKILLed mid-run: 500 mid-stream, HTTP 500s, then
connection refused once the API server has shut down); closed ports and `.invalid` host names give real
connection-refused and DNS failures. The deliberately hostile server of ``hostile_server.py`` is used only for what
a real server cannot be made to do (``test_hostile_server.py`` has the rest): a stream cut mid-way, a malformed
/metrics payload and non-vLLM servers (an OpenAI-compatible server without vLLM's metrics; a gateway answering 503).
"""

import json
import os
import signal
import socket
import threading
import time

import pytest
from hostile_server import HostileServer

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
        loadtest.run_temperature_sweep(EndpointClient(url, connect_timeout_s=3), runs_dir=test_output_dir,
                                       progress=False)
    e = err.value
    assert e.kind == kind and words in str(e) and url + "/v1/models" in str(e)
    run = _failed_run(e)
    assert run.metadata["endpoint"] == url and run.records == ()


@pytest.mark.parametrize("behaviour, kind, words", [
    ({"metrics": "not_vllm"}, "not_vllm", "does not look like a vLLM server"),
    ({"metrics": "malformed"}, "malformed_metrics", "malformed /metrics payload"),
    ({"stream": "gateway_503"}, "http_status", "HTTP 503"),
])
def test_broken_server_is_named_and_recorded(behaviour, kind, words, test_output_dir):
    with HostileServer(**behaviour) as srv:
        url = srv.url
        with pytest.raises(EndpointError) as err:
            loadtest.run_load_test(EndpointClient(url), runs_dir=test_output_dir, progress=False)
    e = err.value
    assert e.kind == kind and words in str(e) and str(e).startswith(url + "/")
    if kind == "http_status":
        assert e.status == 503 and "no healthy upstream" in str(e)  # body excerpt
    _failed_run(e)


def test_stream_cut_midway_is_recorded_and_the_run_continues(test_output_dir):
    with HostileServer(stream="cut") as srv:
        url = srv.url
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


def _kill_engine_core_mid_run(server, run_dir_root, done_before_kill: int, killed: list, stop: threading.Event):
    """SIGKILL the server's engine-core process once ``done_before_kill`` records are on disk: the closed loop sends
    its next request the moment the last one ends, so a request is streaming then (vLLM's running gauge was the
    signal before; its scrape, answered between two streams on a busy API process, could read 0 until the run
    had ended). Bounded by the stop event and 240 s."""
    deadline = time.monotonic() + 240
    while not stop.is_set() and time.monotonic() < deadline:
        files = list(run_dir_root.glob("*-load/requests.jsonl"))
        done = len(files[0].read_text().splitlines()) if files else 0
        if done >= done_before_kill:
            pids = server.engine_core_pids()
            assert len(pids) == 1, f"expected one VLLM::EngineCore child of {server.pid}, found {pids}"
            os.kill(pids[0], signal.SIGKILL)
            killed.append((pids[0], done))
            return
        time.sleep(0.05)


@pytest.mark.vllm
def test_engine_killed_mid_run_gives_a_5xx_then_refusals_and_every_record_stays(tiny_models, vllm_venv,
                                                                                test_output_dir):
    """The engine core (the API server's child titled ``VLLM::EngineCore``) is SIGKILLed while a request streams.
    What vLLM 0.32 does then (observed): the request in flight gets an error chunk with code 500 ("EngineCore
    encountered an issue"), a request sent right after gets HTTP 500, and once the API server has shut itself
    down the rest are refused. Every record finished before the kill stays on disk and loads back. Own server."""
    from specdec_lib import localserver

    runs_dir = test_output_dir / "runs"
    killed: list = []
    stop = threading.Event()
    with localserver.VLLMServer(tiny_models.target, venv=vllm_venv, served_model_name="tiny-target",
                                log_path=test_output_dir / "engine-death-server.log") as server:
        killer = threading.Thread(target=_kill_engine_core_mid_run, args=(server, runs_dir, 2, killed, stop))
        killer.start()
        try:
            res = loadtest.run_load_test(EndpointClient(server.base_url, connect_timeout_s=3), concurrency_levels=(1,),
                                         requests_per_level=8, max_tokens=300, prompts=["chat"], runs_dir=runs_dir,
                                         progress=False, request_timeout_s=60, max_duration_s=400)
        finally:
            stop.set()
            killer.join(timeout=30)
        assert killed, "the engine core was never killed (no request was seen running)"
        deadline = time.monotonic() + 60
        while server.alive() and time.monotonic() < deadline:  # vLLM's API server exits when its engine is dead
            time.sleep(0.2)
        assert not server.alive()
        assert "EngineCore" in server.log_text()
        with pytest.raises(EndpointError) as refused:  # the API server has gone: a request now is refused
            EndpointClient(server.base_url, connect_timeout_s=3).stream(
                model="tiny-target", prompt="The harbour at dawn", max_tokens=4, temperature=0)
        assert refused.value.kind == "connection_refused"
    run = runs.load_run(res.run_path)
    recs = sorted(run.records, key=lambda r: r["index"])
    assert len(recs) == 8 == len(run.raw_records) and run.metadata["status"] == "complete"
    first_error = next(i for i, r in enumerate(recs) if r["error"] is not None)
    assert first_error >= 2 and all(r["error"] is None and r["completion_tokens"] > 0 for r in recs[:first_error])
    failed = recs[first_error]
    assert failed["status"] == 500 and "EngineCore" in failed["error"]  # mid-stream error chunk or HTTP 500
    assert failed["error"].startswith(server.base_url + "/v1/chat/completions:")
    later = recs[first_error + 1:]  # sent while the API server shuts down: HTTP 500s, or refusals once it is gone
    assert later and all(r["error"] is not None for r in later)
    assert all((r["status"] == 500 and "EngineCore" in r["error"]) or r["error_kind"] == "connection_refused"
               for r in later)
    (level,) = res.levels
    assert level.latency["succeeded"] == first_error and level.latency["errors"] == 8 - first_error
    assert len(run.intervals) == 1  # the level's interval is written whatever the closing scrape found
