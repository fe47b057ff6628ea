"""The hostile-server suite: one deliberately misbehaving fake vLLM (``hostile_server.py``), one test per fault class.

Each test asserts the clear error (naming the URL and the field), the records on disk, and that neither the API key
nor the URL password appears anywhere: every file of the run folder, captured stdout/stderr, messages and reprs.
Every request sends a key and the URL carries ``user:password@``, so any leak would show. No vLLM needed: fast.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hostile_server import MARK, MODEL, HostileServer

from specdec_lib import cli, loadtest, metrics, runs
from specdec_lib.endpoint import EndpointClient, EndpointError

KEY = "sk-hostile-9f3Kq2Lm7Zt4Wb8Rv6Yn1Pc5"
PASSWORD = "pw-Hj4Ns8Dq2Vx6"
SECRETS = (KEY, PASSWORD)
DATA = Path(__file__).parent / "data"


def secret_pieces() -> list[bytes]:
    """Every 10-character piece of each secret: a cut key leaks a piece, not the whole."""
    return sorted({s[i:i + 10].encode() for s in SECRETS for i in range(len(s) - 9)})


def assert_no_secret(*texts: str, folders: tuple[Path, ...] = ()) -> None:
    blobs = [t.encode() for t in texts]
    files = [p for f in folders for p in Path(f).rglob("*") if p.is_file()]
    blobs += [p.read_bytes() for p in files]
    for piece in secret_pieces():
        for blob in blobs:
            assert piece not in blob, f"a piece of a secret ({piece!r}) leaked"


def keyed_client(srv: HostileServer, **kw) -> EndpointClient:
    return EndpointClient(srv.url.replace("http://", f"http://planner:{PASSWORD}@"), api_key=KEY, **kw)


def prompts_file(folder: Path) -> Path:
    """Three prompts; the first carries the marker, so a ``marker`` fault hits it and only it."""
    path = folder / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in [
        {"id": "bad", "prompt": f"{MARK}: describe the harbour at dawn"},
        {"id": "ok-1", "prompt": "Describe the railway station at night."},
        {"id": "ok-2", "prompt": "Describe the garden in late summer."},
    ]) + "\n")
    return path


def load(srv, folder: Path, **kw) -> loadtest.LoadTestResult:
    args = dict(concurrency_levels=(1,), requests_per_level=3, max_tokens=6, prompts=prompts_file(folder),
                runs_dir=folder / "runs", progress=False, request_timeout_s=5)
    args.update(kw)
    return loadtest.run_load_test(keyed_client(srv), **args)


# ----------------------------------------------------------------------------------- one bad answer, one record
@pytest.mark.parametrize("fault, words", [
    ("spec_nan", "field 'metrics.speculative_decoding.num_draft_tokens' = nan"),
    ("spec_missing", "field 'metrics.speculative_decoding.num_accepted_draft_tokens' = None"),
    ("inf_tokens", "field 'usage.completion_tokens' = inf"),
    ("list_chunk", "stream chunk is a JSON list, expected an object"),
    ("error_chunk_echo", "server reported an error mid-stream"),
    ("non_json_echo", "stream chunk is not JSON"),
    ("http_401_echo", "HTTP 401"),
])
def test_one_bad_answer_costs_that_record_only_and_leaks_nothing(fault, words, test_output_dir, capsys):
    with HostileServer(stream=fault, marker=MARK) as srv:
        res = load(srv, test_output_dir)
    run = runs.load_run(res.run_path)
    by_id = {r["prompt_id"]: r for r in run.records}
    assert len(run.raw_records) == 3 and run.metadata["status"] == "complete"
    bad = by_id["bad"]
    assert bad["error"].startswith(srv.url + "/v1/chat/completions: ") and words in bad["error"]
    assert by_id["ok-1"]["error"] is None and by_id["ok-2"]["error"] is None
    assert by_id["ok-1"]["completion_tokens"] == 6 and by_id["ok-1"]["acceptance_rate"] == pytest.approx(6 / 8)
    if "echo" in fault:
        assert "***" in bad["error"]
    assert_no_secret(*capsys.readouterr(), repr(res), folders=(test_output_dir,))


@pytest.mark.parametrize("k", ["k0", "k_string"])
def test_a_k_from_server_info_that_is_no_count_is_ignored_and_said(k, test_output_dir, capsys):
    with HostileServer(server_info=k) as srv:
        res = load(srv, test_output_dir)
    run = runs.load_run(res.run_path)
    assert [r["error"] for r in run.records] == [None, None, None]
    server = run.metadata["server"]
    assert server["num_speculative_tokens"] == 4  # the per-position counters of the captured /metrics
    assert any("num_speculative_tokens=" in u and "ignored" in u for u in server["unknowns"])
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


def test_a_write_that_fails_costs_that_record_only(test_output_dir):
    """A real failed write: the run runs in a child process whose file-size limit (RLIMIT_FSIZE) stops
    requests.jsonl from growing past 4 KiB, as a full disk would; the limit cuts writes mid-line."""
    with HostileServer() as srv:
        script = f"""
import resource, signal, sys
sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parent.parent)]!r}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from specdec_lib import loadtest
from specdec_lib.endpoint import EndpointClient
res = loadtest.run_load_test(EndpointClient({srv.url!r}, api_key={KEY!r}), concurrency_levels=(2,),
                             requests_per_level=12, max_tokens=6, runs_dir={str(test_output_dir / 'runs')!r},
                             progress=False, request_timeout_s=10)
print("RUN", res.run_path)
"""
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = (test_output_dir / "runs").iterdir()
    lines = (run_dir / "requests.jsonl").read_text().split("\n")
    assert lines[-1] == "" and all(json.loads(line) for line in lines[:-1])  # no partial line anywhere
    written = len(lines) - 1
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert 1 <= written < 12 and written + len(meta["lost_records"]) == 12
    assert meta["status"] == "complete" and len(runs.load_run(run_dir).records) == written
    assert done.stderr.count("not written") == len(meta["lost_records"]) and "Traceback" not in done.stderr
    assert_no_secret(done.stdout, done.stderr, folders=(test_output_dir,))


# ------------------------------------------------------------------------------------ resume, lock, run ids
def test_a_cut_last_line_is_set_aside_on_resume_not_appended_to(test_output_dir, capsys):
    with HostileServer(stream="http_500", marker=MARK) as srv:
        first = load(srv, test_output_dir)
        path = first.run_path / "requests.jsonl"
        with open(path, "a") as f:
            f.write('{"index": 1, "label": "concurrency=1", "ttft_s": 0.0')  # a kill mid-write
        srv.set(stream="ok")
        second = load(srv, test_output_dir, resume=first.run_path)
    assert second.run_path == first.run_path
    run = runs.load_run(first.run_path)  # every line parses: the retry was not glued onto the cut line
    assert run.notes == () and [r["error"] for r in run.records] == [None, None, None]
    (aside,) = first.run_path.glob("requests.jsonl.cut-*")
    assert aside.read_text().startswith('{"index": 1, "label"')
    err = capsys.readouterr().err
    assert "set aside in " + aside.name in err and run.metadata["set_aside"]
    assert_no_secret(err, folders=(test_output_dir,))


def test_a_resume_while_the_run_still_runs_is_refused(test_output_dir):
    with HostileServer(stream="ok") as srv:
        srv.set(tokens=40)  # ~1 s per request: the first run is still going when the resume starts
        out: dict = {}
        first = threading.Thread(target=lambda: out.update(res=load(srv, test_output_dir, requests_per_level=3)))
        first.start()
        deadline = time.monotonic() + 20
        while not list((test_output_dir / "runs").glob("*/run.lock")) and time.monotonic() < deadline:
            time.sleep(0.05)
        (run_dir,) = (test_output_dir / "runs").iterdir()
        posts_before = srv.posts
        with pytest.raises(runs.RunInUseError, match="in use by a run still going"):
            load(srv, test_output_dir, requests_per_level=3, resume=run_dir)
        first.join(timeout=60)
    run = runs.load_run(run_dir)
    assert len(run.raw_records) == 3 and run.metadata["status"] == "complete"  # nothing measured twice
    assert srv.posts == 3 and posts_before <= 3


def test_runs_started_in_the_same_millisecond_get_distinct_folders(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    frozen = datetime(2026, 11, 28, 6, 0, 0, 123000, tzinfo=timezone.utc)

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return frozen

    monkeypatch.setattr(runs, "datetime", FrozenClock)
    writers = []
    threads = [threading.Thread(target=lambda: writers.append(runs.RunWriter.create(tmp_path, "load", {})))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(w.path.name for w in writers)
    assert len(set(names)) == 6 and names[0] == "20261128T060000123Z-load"
    assert all(json.loads((w.path / "metadata.json").read_text())["run_id"] == w.path.name for w in writers)


# ------------------------------------------------------------------------------------------------- credentials
def test_a_server_echoing_the_key_and_a_url_password_leave_no_trace(test_output_dir, capsys):
    with HostileServer(version="echo", stream="http_401_echo") as srv:
        client = keyed_client(srv)
        assert client.base_url == srv.url and PASSWORD not in repr(client)
        res = load(srv, test_output_dir)
        with pytest.raises(EndpointError) as err:
            client.models()  # fine here; a 401 below comes from the stream
            client.stream(model=MODEL, prompt="x", max_tokens=2, temperature=0)
    meta = runs.load_run(res.run_path).metadata
    assert meta["endpoint"] == srv.url and "***" in meta["vllm_version"]
    memo_path = test_output_dir / "memo.html"
    assert cli.main(["memo", "--run", str(res.run_path), "-o", str(memo_path)]) == 0
    assert_no_secret(str(err.value), repr(err.value), *capsys.readouterr(), folders=(test_output_dir,))


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_a_key_with_a_line_break_is_refused_without_being_printed(ending, monkeypatch, capsys):
    monkeypatch.setenv("SPECDEC_HOSTILE_KEY", KEY + ending)
    code = cli.main(["measure", "--url", "http://127.0.0.1:9", "--api-key-env", "SPECDEC_HOSTILE_KEY"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_BAD_INPUT and "line break" in err and "SPECDEC_HOSTILE_KEY" in err
    assert_no_secret(out, err)


# ----------------------------------------------------------------------------------------------------- hangs
def test_a_server_sending_a_byte_a_second_cannot_outlast_the_timeout(test_output_dir, capsys):
    with HostileServer(stream="drip") as srv:
        started = time.monotonic()
        res = load(srv, test_output_dir, requests_per_level=1, request_timeout_s=2)
        elapsed = time.monotonic() - started
    (rec,) = runs.load_run(res.run_path).records
    assert rec["error_kind"] == "timeout" and "2 s budget" in rec["error"]
    assert elapsed < 2 + 3  # the budget, plus discovery and scrapes; the drip alone would last 30 s
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


def test_a_slow_metrics_endpoint_cannot_outlast_the_timeout(test_output_dir, capsys):
    with HostileServer(metrics="drip") as srv:
        started = time.monotonic()
        with pytest.raises(EndpointError) as err:
            keyed_client(srv, timeout_s=1.5).scrape()
        assert time.monotonic() - started < 1.5 + 1.5
    assert err.value.kind == "timeout" and err.value.url == srv.url + "/metrics"
    assert_no_secret(str(err.value), *capsys.readouterr())


def test_ctrl_c_ends_a_dripping_run_at_once_and_keeps_the_record(test_output_dir, capsys, ctrl_c_raises):
    def ctrl_c_once_the_request_is_in_flight():
        deadline = time.monotonic() + 20
        while srv.posts < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the server is dripping its answer now
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    sent: list = []
    with HostileServer(stream="drip") as srv:
        threading.Thread(target=ctrl_c_once_the_request_is_in_flight, daemon=True).start()
        res = load(srv, test_output_dir, requests_per_level=2, request_timeout_s=25)
        stopped_after = time.monotonic() - sent[0]
    assert res.interrupted and stopped_after < 2.5  # not the 25 s request timeout
    run = runs.load_run(res.run_path)
    assert run.metadata["status"] == "interrupted"
    assert [r["error_kind"] for r in run.records] == ["cancelled"]
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


def test_the_stop_event_ends_a_dripping_request_at_once(test_output_dir, capsys):
    stop = threading.Event()
    out: dict = {}
    with HostileServer(stream="drip") as srv:
        worker = threading.Thread(target=lambda: out.update(res=load(srv, test_output_dir, requests_per_level=2,
                                                                     request_timeout_s=25, stop_event=stop)))
        worker.start()
        deadline = time.monotonic() + 20
        while srv.posts < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the server is dripping its answer now
        set_at = time.monotonic()
        stop.set()
        worker.join(timeout=25)
        stopped_after = time.monotonic() - set_at
    assert not worker.is_alive() and stopped_after < 2.5  # not the 25 s request timeout
    assert out["res"].interrupted
    assert [r["error_kind"] for r in runs.load_run(out["res"].run_path).records] == ["cancelled"]
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


# ------------------------------------------------------------------------------------------- wrong numbers
def test_a_stalled_stream_is_a_timeout_not_a_cut(test_output_dir, capsys):
    with HostileServer(stream="stall") as srv:
        res = load(srv, test_output_dir, requests_per_level=1, request_timeout_s=1.5)
    (rec,) = runs.load_run(res.run_path).records
    assert rec["error_kind"] == "timeout" and "after 2 tokens" in rec["error"]
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


def test_a_read_timeout_is_reported_as_a_timeout_not_as_could_not_connect():
    with HostileServer(metrics="stall") as srv:
        with pytest.raises(EndpointError) as err:
            keyed_client(srv, timeout_s=1.0).scrape()
    assert err.value.kind == "timeout" and "could not connect" not in str(err.value)


def test_a_buffered_unframed_stream_does_not_report_ttft_equal_to_e2e(test_output_dir, capsys):
    with HostileServer(stream="http10_buffered") as srv:
        res = load(srv, test_output_dir, requests_per_level=1)
    (rec,) = runs.load_run(res.run_path).records
    assert rec["error"] is None and rec["completion_tokens"] == 6 and rec["e2e_s"] >= 6 * 0.1
    assert rec["ttft_s"] is None and rec["tpot_s"] is None and rec["itl_s"] == []
    assert "not measurable" in rec["timing_note"]
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


def test_an_unframed_stream_written_incrementally_is_timed_at_arrival(test_output_dir, capsys):
    with HostileServer(stream="http10_incremental") as srv:
        res = load(srv, test_output_dir, requests_per_level=1)
    (rec,) = runs.load_run(res.run_path).records
    # the server sleeps 0.1 s before each of its 6 token events: TTFT is about one gap, E2E about six
    assert rec["error"] is None and rec["timing_note"] is None and len(rec["itl_s"]) == 5
    assert 0.1 <= rec["ttft_s"] <= rec["e2e_s"] - 0.2  # the server spends 0.5 s after its first event
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


def test_duplicate_series_are_counted_once(test_output_dir, capsys):
    before = metrics.parse_metrics((DATA / "vllm032_draft_noise05_before.txt").read_text())
    after = metrics.parse_metrics((DATA / "vllm032_draft_noise05_after.txt").read_text())
    expected = metrics.delta(before, after)
    with HostileServer(metrics="dup_same", metrics_fault_from=2) as srv:
        res = load(srv, test_output_dir)
    (iv,) = runs.load_run(res.run_path).intervals
    assert iv["error"] is None and iv["delta"]["drafts"] == expected.drafts == 50  # 102 - 52 in the captures
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


@pytest.mark.parametrize("fault, words", [
    ("dup_diff", "appears twice with different values"),
    ("inf_counter", "finite, non-negative whole number"),
    ("nan_gauge", "expected a finite number in 0..1"),
    ("gauge_out_of_range", "expected a finite number in 0..1"),
])
def test_impossible_metrics_give_a_per_interval_error_and_the_run_goes_on(fault, words, test_output_dir, capsys):
    with HostileServer(metrics=fault, metrics_fault_from=2) as srv:
        res = load(srv, test_output_dir)
    run = runs.load_run(res.run_path)
    (iv,) = run.intervals
    assert iv["delta"] is None and iv["error"].startswith(srv.url + "/metrics: malformed /metrics payload")
    assert words in iv["error"]
    assert len(run.records) == 3 and all(r["error"] is None for r in run.records)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert_no_secret(out, err, folders=(test_output_dir,))


# ----------------------------------------------------------------------------------------- confusing errors
def test_wrong_shaped_json_is_a_clear_error_naming_url_and_field(test_output_dir, capsys, monkeypatch):
    monkeypatch.setenv("SPECDEC_HOSTILE_KEY", KEY)
    with HostileServer(models="wrong_shape") as srv:
        code = cli.main(["measure", "--url", srv.url, "--api-key-env", "SPECDEC_HOSTILE_KEY",
                         "--runs-dir", str(test_output_dir / "runs"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_ENDPOINT_ERROR and "Traceback" not in err
    assert f"{srv.url}/v1/models: field 'data[0]': expected an object with a string 'id'" in err
    assert_no_secret(out, err, folders=(test_output_dir,))


@pytest.mark.parametrize("faults", [{"version": "403"}, {"version": "html_500"}, {"server_info": "html_500"}])
def test_optional_discovery_routes_failing_do_not_abort_discovery(faults, test_output_dir, capsys):
    with HostileServer(**faults) as srv:
        res = load(srv, test_output_dir)
    run = runs.load_run(res.run_path)
    assert len(run.records) == 3 and all(r["error"] is None for r in run.records)
    assert any(("403" in u or "500" in u) for u in run.metadata["server"]["unknowns"])
    assert_no_secret(*capsys.readouterr(), folders=(test_output_dir,))


def test_several_served_models_need_an_explicit_choice(test_output_dir, capsys, monkeypatch):
    with HostileServer(models="several") as srv:
        with pytest.raises(ValueError, match=r"serves 2 models \['fake-model', 'fake-model-b'\]: choose one"):
            load(srv, test_output_dir)
        res = load(srv, test_output_dir, model="fake-model-b")
        code = cli.main(["measure", "--url", srv.url, "--runs-dir", str(test_output_dir / "cli"), "--no-progress"])
    assert runs.load_run(res.run_path).metadata["served_model"] == "fake-model-b"
    assert code == cli.EXIT_BAD_INPUT and "--model NAME" in capsys.readouterr().err


def test_prompts_file_is_accepted_by_the_cli_as_the_help_offers(test_output_dir, capsys):
    with HostileServer() as srv:
        code = cli.main(["measure", "--url", srv.url, "--sweep", "load", "--concurrency", "1", "--requests", "3",
                         "--max-tokens", "4", "--prompts", str(prompts_file(test_output_dir)), "--json",
                         "--runs-dir", str(test_output_dir / "runs"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK, err
    run = runs.load_run(json.loads(out)["run_path"])
    assert sorted(r["prompt_id"] for r in run.records) == ["bad", "ok-1", "ok-2"]


@pytest.mark.parametrize("fault", ["stall_after_done", "junk_after_done"])
def test_a_body_that_does_not_end_cleanly_after_done_keeps_the_result_and_is_not_reused(fault):
    """The connection of a finished stream is kept for the next request only when the body ends cleanly right after
    [DONE] (transport.keep_alive_after_end); a server that stalls there costs at most KEEP_ALIVE_WAIT_S, not the
    request's budget, and one that sends more gets a new connection for the next request."""
    from specdec_lib import transport

    with HostileServer(stream=fault) as srv:
        client = EndpointClient(srv.url, timeout_s=25)
        results, calls_s = [], []
        for _ in range(2):
            started = time.monotonic()
            results.append(client.stream(model=MODEL, prompt="hello", max_tokens=6, temperature=0.0))
            calls_s.append(time.monotonic() - started)
        connections = srv.connections
    assert [r.completion_tokens for r in results] == [6, 6] and all(r.finish_reason == "length" for r in results)
    assert sum(calls_s) < 25  # two requests, neither waited out its 25 s budget (a stall lasts MAX_SLOW_S = 30 s)
    assert connections == 2  # one a request: neither connection was put back after a body that did not end
    if fault == "stall_after_done":  # each call waited KEEP_ALIVE_WAIT_S for the body's end; E2E ends at [DONE]
        for r, call_s in zip(results, calls_s):
            assert call_s >= transport.KEEP_ALIVE_WAIT_S and r.e2e_s <= call_s - 0.9 * transport.KEEP_ALIVE_WAIT_S


def test_a_body_that_ends_cleanly_after_done_leaves_its_connection_for_the_next_request():
    with HostileServer(stream="ok") as srv:
        client = EndpointClient(srv.url)
        results = [client.stream(model=MODEL, prompt="hello", max_tokens=6, temperature=0.0) for _ in range(3)]
        assert [r.completion_tokens for r in results] == [6, 6, 6]
        assert srv.connections == 1
        srv.set(stream="junk_after_done")  # the control: the same client, a body that does not end cleanly
        client.stream(model=MODEL, prompt="hello", max_tokens=6, temperature=0.0)
        client.stream(model=MODEL, prompt="hello", max_tokens=6, temperature=0.0)
        assert srv.connections == 2  # the kept connection served the first of these, the second needed a new one


def test_the_proxy_and_ca_environment_is_read_once_a_session_and_still_honoured(monkeypatch, tmp_path):
    """requests re-reads the environment on every request unless told not to; the session reads it once
    (transport.session) and must still honour it: a proxy, NO_PROXY, a CA bundle."""
    from specdec_lib import transport

    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    s = transport.session("http://vllm.example:8000")
    assert s.trust_env is False and s.proxies.get("http") == "http://proxy.invalid:3128"
    assert s.verify == str(tmp_path / "ca.pem")
    monkeypatch.setenv("NO_PROXY", "vllm.example")
    assert "http" not in transport.session("http://vllm.example:8000").proxies
    # and a request really goes through the proxy it names: an unreachable one is a clear connection error
    monkeypatch.delenv("NO_PROXY")
    import socket

    # the proxy's port is held bound but never listened on, so a connection to it is refused, on any machine
    with socket.socket() as refusing, HostileServer() as srv:
        refusing.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTP_PROXY", f"http://me:proxy-secret@127.0.0.1:{refusing.getsockname()[1]}")
        with pytest.raises(EndpointError) as err:
            EndpointClient(srv.url, timeout_s=5).models()
        assert srv.connections == 0  # the request never reached the server directly
    assert err.value.kind == "connection_error" and "proxy" in str(err.value) and "HTTP_PROXY" in str(err.value)
    assert "nothing is listening" not in str(err.value)  # the server was never tried: not its fault
    assert "proxy-secret" not in str(err.value)  # the proxy's password stays in the process
