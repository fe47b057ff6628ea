"""The endpoint client against real vLLM 0.32 CPU servers: discovery, streaming, and the API key kept secret."""

import dataclasses
import logging
import threading
import uuid

import pytest
import requests

from specdec_lib import loadtest, localserver
from specdec_lib.endpoint import EndpointClient, EndpointError, request_acceptance


def test_discovery_on_a_baseline_server(vllm_servers):
    server = vllm_servers.get_named("baseline")
    info = EndpointClient(server.base_url).discover()
    assert info.served_model == server.model_name
    assert info.vllm_version == "0.32.0"
    assert info.max_model_len == 512
    assert info.speculation is False and info.num_speculative_tokens is None and info.method is None
    assert info.kv_cache_size_tokens and info.kv_cache_size_tokens > 0


def test_discovery_on_a_draft_model_server_says_what_it_cannot_know(vllm_servers):
    server = vllm_servers.get_named("draft_copy_prob", ("--per-request-spec-decode-metrics", "detailed"))
    info = EndpointClient(server.base_url + "/v1/").discover()  # a /v1 suffix is accepted
    assert info.base_url == server.base_url
    assert info.speculation is True and info.num_speculative_tokens == 4 and info.engines == 1
    assert info.method is None and any("method" in u for u in info.unknowns)


def test_stream_timing_and_per_request_acceptance(vllm_servers):
    server = vllm_servers.get_named("draft_copy_prob", ("--per-request-spec-decode-metrics", "detailed"))
    client = EndpointClient(server.base_url)
    res = client.stream(model=server.model_name, messages=[{"role": "user", "content": "Describe the harbour."}],
                        max_tokens=40, temperature=0.0)
    assert res.completion_tokens == sum(res.chunk_tokens) == 40
    assert len(res.itl_s) == res.chunks - 1
    assert 0 < res.ttft_s <= res.e2e_s
    assert res.tpot_s == pytest.approx((res.e2e_s - res.ttft_s) / 39)
    sm = res.spec_metrics
    # vLLM's own per-request numbers: one engine step per chunk after the first (prefill) chunk
    assert sm["num_spec_steps"] == res.chunks - 1
    server_acc = request_acceptance(res, 4)
    assert server_acc.source == "server" and server_acc.accepted_tokens == sm["num_accepted_draft_tokens"]
    # the chunk estimate (used when the server does not report) differs only by what max_tokens cut off
    est = request_acceptance(dataclasses.replace(res, spec_metrics=None), 4)
    assert est.source == "chunks" and est.draft_tokens == sm["num_draft_tokens"]
    assert 0 <= sm["num_accepted_draft_tokens"] - est.accepted_tokens <= 4


def test_consecutive_streams_of_a_thread_share_one_connection(vllm_servers, monkeypatch):
    """As `vllm bench serve`'s client does, a thread's streamed requests reuse one keep-alive connection to a real
    vLLM server (before 7 Dec 2026 each stream closed its connection, so every request opened a new one: a connect
    for the client and an accept for the server's API process at every request of a load test)."""
    import urllib3.util.connection

    opened = []
    connect = urllib3.util.connection.create_connection
    monkeypatch.setattr(urllib3.util.connection, "create_connection",
                        lambda *a, **kw: opened.append(a[0]) or connect(*a, **kw))
    server = vllm_servers.get_named("baseline")
    client = EndpointClient(server.base_url)
    results = [client.stream(model=server.model_name, prompt="The harbour at dawn", max_tokens=8, temperature=0.0)
               for _ in range(3)]
    assert [r.completion_tokens for r in results] == [8, 8, 8]
    assert len(opened) == 1  # three streams, one TCP connection
    other = []  # another thread opens its own (one session a thread)
    worker = threading.Thread(target=lambda: other.append(client.stream(
        model=server.model_name, prompt="The harbour at dawn", max_tokens=8, temperature=0.0)))
    worker.start()
    worker.join(timeout=60)
    assert other and other[0].completion_tokens == 8 and len(opened) == 2


def test_api_key_reaches_no_file_log_repr_or_exception(vllm_servers, test_output_dir, caplog, capsys):
    """vLLM without --api-key ignores the header, so the key travels without being needed: nothing may echo it."""
    key = "sk-test-" + uuid.uuid4().hex
    server = vllm_servers.get_named("baseline")
    client = EndpointClient(server.base_url, api_key=key)
    caplog.set_level(logging.DEBUG)
    assert key not in repr(client) and key not in str(client) and "<hidden>" in repr(client)
    assert key not in repr(vars(client))
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(client)
    res = loadtest.run_load_test(client, concurrency_levels=(2,), requests_per_level=3, max_tokens=8,
                                 runs_dir=test_output_dir, progress=True)
    with pytest.raises(EndpointError) as err:
        client.stream(model="no-such-model", prompt="x", max_tokens=2, temperature=0)
    for text in (str(err.value), repr(err.value), caplog.text, *capsys.readouterr()):
        assert key not in text
    files = [p for p in res.run_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"metadata.json", "requests.jsonl", "intervals.jsonl"}
    for p in files:
        assert key not in p.read_text()
    assert key not in server.log_text()


class _KeyedServer(localserver.VLLMServer):
    """A real vLLM server that demands a key (VLLM_API_KEY in its environment, so not on its command line)."""

    def _wait_ready(self, started):
        import time

        while time.monotonic() - started < self.ready_timeout_s:
            if self._proc.poll() is not None:
                raise localserver.HarnessError(f"server exited: {self.log_tail()}")
            try:
                if requests.get(self.base_url + "/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise localserver.HarnessError(f"{self.base_url} not ready: {self.log_tail()}")


@pytest.mark.vllm
def test_bearer_key_is_sent_and_a_wrong_key_is_a_clear_401(tiny_models, test_output_dir):
    key = "sk-test-" + uuid.uuid4().hex
    with _KeyedServer(tiny_models.target, env={"VLLM_API_KEY": key}, served_model_name="tiny-target",
                      log_path=test_output_dir / "keyed-server.log") as server:
        ok = EndpointClient(server.base_url, api_key=key)
        assert ok.discover().served_model == "tiny-target"
        assert ok.stream(model="tiny-target", prompt="The harbour master counted the boats", max_tokens=4,
                         temperature=0).completion_tokens == 4
        wrong = EndpointClient(server.base_url, api_key="sk-wrong")
        with pytest.raises(EndpointError) as err:
            wrong.models()
        assert err.value.kind == "http_status" and err.value.status == 401
        assert server.base_url + "/v1/models" in str(err.value) and "401" in str(err.value)
        with pytest.raises(EndpointError) as err:
            EndpointClient(server.base_url).models()
        assert err.value.status == 401
    assert key not in (test_output_dir / "keyed-server.log").read_text()
