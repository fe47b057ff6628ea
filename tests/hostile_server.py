"""A DELIBERATELY HOSTILE fake vLLM server, for faults a real vLLM server cannot be made to produce on demand.

Every other test talks to a real vLLM server. This one looks like vLLM 0.32 (real captured ``/metrics``,
``/version``, ``/v1/models``, streamed chat/completion chunks with per-chunk usage) and misbehaves on request:

    with HostileServer(stream="drip") as srv:          # srv.url; srv.set(stream="ok") changes it live
        ...

``stream`` (the streamed POST; with ``marker`` set, only requests whose body contains the marker misbehave):
    ok, cut (connection dropped mid-chunk), drip (one byte a second), stall (two tokens, then silence),
    http10_buffered (HTTP/1.0, no framing, the whole body written at once after the tokens were "generated"),
    http10_incremental (HTTP/1.0, no framing, events written as they are generated), error_chunk_echo (a
    mid-stream error chunk quoting the caller's Authorization header), non_json_echo (a non-JSON data line quoting
    the key where a 300-character excerpt cuts it), http_401_echo, http_500, spec_nan, spec_missing (per-request
    metrics with NaN / without its counts), inf_tokens (usage completion_tokens Infinity), list_chunk (a JSON list
    where an object belongs), gateway_503, stall_after_done (the body never ends after ``[DONE]``),
    junk_after_done (another event after ``[DONE]``). ``srv.connections`` counts the TCP connections accepted.
``metrics`` (from scrape number ``metrics_fault_from`` on, counting from 0): ok, malformed, not_vllm, drip, stall,
    dup_same, dup_diff, inf_counter, nan_gauge, gauge_out_of_range.
``models``: ok, several, wrong_shape, version_echo (the key in /version's answer).  ``version``: ok, 404, 403,
    html_500, echo.  ``server_info``: absent (404), k4, k0, k_string, html_500.

Bound to 127.0.0.1 on a free port; every slow loop is bounded (``MAX_SLOW_S``) and ends when the client goes away;
stopped on leaving the ``with`` block.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).parent / "data"
MODEL = "fake-model"
MARK = "HOSTILE"
MAX_SLOW_S = 30.0  # no misbehaviour lasts longer than this
TOKEN_GAP_S = 0.02  # between generated tokens of a well-behaved stream

STREAM_FAULTS = ("ok", "cut", "drip", "stall", "http10_buffered", "http10_incremental", "error_chunk_echo",
                 "non_json_echo", "http_401_echo", "http_500", "spec_nan", "spec_missing", "inf_tokens", "list_chunk",
                 "gateway_503", "stall_after_done", "junk_after_done")
METRICS_FAULTS = ("ok", "malformed", "not_vllm", "drip", "stall", "dup_same", "dup_diff", "inf_counter", "nan_gauge",
                  "gauge_out_of_range")
MODELS_FAULTS = ("ok", "several", "wrong_shape")
VERSION_FAULTS = ("ok", "404", "403", "html_500", "echo")
SERVER_INFO_FAULTS = ("absent", "k4", "k0", "k_string", "html_500")


def _metrics_text(scrape_no: int, fault: str) -> bytes:
    name = "vllm032_draft_noise05_before.txt" if scrape_no < 2 else "vllm032_draft_noise05_after.txt"
    text = (DATA / name).read_text()
    drafts = next(line for line in text.splitlines() if line.startswith("vllm:spec_decode_num_drafts_total{"))
    if fault == "dup_same":
        text = text.replace(drafts, drafts + "\n" + drafts)
    elif fault == "dup_diff":
        text = text.replace(drafts, drafts + "\n" + drafts.rsplit(" ", 1)[0] + " 1.0")
    elif fault == "inf_counter":
        text = text.replace(drafts, drafts.rsplit(" ", 1)[0] + " +Inf")
    elif fault in ("nan_gauge", "gauge_out_of_range"):
        value = "NaN" if fault == "nan_gauge" else "1.7"
        text += ("# TYPE vllm:spec_decode_draft_acceptance_rate gauge\n"
                 f'vllm:spec_decode_draft_acceptance_rate{{model_name="{MODEL}"}} {value}\n')
    elif fault == "malformed":
        text = 'vllm:spec_decode_num_drafts_total{engine="0" 12\nthis is {{ not exposition'
    elif fault == "not_vllm":
        text = "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.5\n"
    return text.encode()


def _server_info(fault: str) -> bytes:
    k = {"k4": 4, "k0": 0, "k_string": "four"}[fault]
    return json.dumps({"vllm_config": {"speculative_config": {
        "method": "draft_model", "num_speculative_tokens": k, "draft_model_config": {"model": "fake-draft"}}}}).encode()


def _chunk(chat: bool, completion_tokens, text: str, finish: str | None = None, metrics: dict | None = None) -> bytes:
    choice = {"index": 0, "finish_reason": finish}
    choice.update({"delta": {"content": text}} if chat else {"text": text})
    obj = {"id": "cmpl-hostile", "object": "chat.completion.chunk" if chat else "text_completion", "model": MODEL,
           "choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens}}
    if metrics is not None:
        obj["metrics"] = {"speculative_decoding": metrics}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args):  # keep test output quiet
        pass

    # -- plumbing --------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _key(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ")

    def _start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunked(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drip(self, data: bytes, gap_s: float) -> None:
        """One byte every ``gap_s`` seconds, for at most MAX_SLOW_S; ends when the client has gone."""
        started = time.monotonic()
        try:
            for i in range(len(data)):
                if time.monotonic() - started > MAX_SLOW_S:
                    break
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(gap_s)
        except OSError:
            pass
        self.close_connection = True

    def _stall(self) -> None:
        """Say nothing for at most MAX_SLOW_S, or until the server stops."""
        self.server.stopping.wait(MAX_SLOW_S)
        self.close_connection = True

    # -- GET -------------------------------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        if srv.stream == "gateway_503":
            return self._send(503, b"<html><body>503 Service Unavailable: no healthy upstream</body></html>",
                              "text/html")
        if self.path == "/v1/models":
            ids = [MODEL] if srv.models != "several" else [MODEL, MODEL + "-b"]
            data = [{"id": i, "object": "model", "max_model_len": 512} for i in ids]
            if srv.models == "wrong_shape":
                data = [MODEL]
            return self._send(200, json.dumps({"object": "list", "data": data}).encode())
        if self.path == "/version":
            if srv.version in ("404", "403"):
                return self._send(int(srv.version), b'{"detail":"Forbidden"}')
            if srv.version == "html_500":
                return self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
            version = "0.32.0" if srv.version != "echo" else f"0.32.0 (authorised by {self._key()})"
            return self._send(200, json.dumps({"version": version}).encode())
        if self.path.startswith("/server_info"):
            if srv.server_info == "absent":
                return self._send(404, b'{"detail":"Not Found"}')
            if srv.server_info == "html_500":
                return self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
            return self._send(200, _server_info(srv.server_info))
        if self.path == "/metrics":
            with srv.lock:
                scrape_no = srv.scrapes
                srv.scrapes += 1
            fault = srv.metrics if scrape_no >= srv.metrics_fault_from else "ok"
            if fault in ("drip", "stall"):
                body = _metrics_text(scrape_no, "ok")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.flush()
                return self._drip(body, 1.0) if fault == "drip" else self._stall()
            return self._send(200, _metrics_text(scrape_no, fault), "text/plain")
        return self._send(404, b'{"detail":"Not Found"}')

    # -- POST ------------------------------------------------------------------------------------------------
    def do_POST(self):  # noqa: N802
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with srv.lock:
            srv.posts += 1
        chat = self.path.endswith("/chat/completions")
        fault = srv.stream if (srv.marker is None or srv.marker.encode() in body) else "ok"
        if fault == "gateway_503":
            return self._send(503, b"<html><body>503 Service Unavailable: no healthy upstream</body></html>",
                              "text/html")
        if fault == "http_401_echo":  # the key lands where a 300-character excerpt would cut it
            message = "x" * 245 + f" invalid API key {self._key()}: check Authorization: Bearer {self._key()}"
            return self._send(401, json.dumps({"error": {"message": message, "code": 401}}).encode())
        if fault == "http_500":
            return self._send(500, json.dumps({"error": {"message": "engine hiccup", "code": 500}}).encode())
        tokens = srv.tokens
        if fault.startswith("http10"):
            return self._http10(chat, tokens, buffered=fault == "http10_buffered")
        self._start_chunked()
        try:
            self._stream(fault, chat, tokens)
        except OSError:  # the client went away
            self.close_connection = True

    def _stream(self, fault: str, chat: bool, tokens: int) -> None:
        for i in range(1, tokens + 1):
            if fault == "stall" and i == 3:
                return self._stall()
            if fault == "cut" and i == 4:
                self.wfile.write(b"40\r\ndata")  # half a chunk, then the connection closes
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "error_chunk_echo" and i == 2:
                err = {"error": {"message": f"authorisation revoked for key {self._key()}", "code": 401}}
                self._chunked(b"data: " + json.dumps(err).encode() + b"\n\n")
                return self._end_chunked()
            if fault == "non_json_echo" and i == 2:
                self._chunked(b"data: " + ("y" * 265 + f" upstream said: bad key {self._key()}").encode() + b"\n\n")
                return self._end_chunked()
            if fault == "list_chunk" and i == 2:
                self._chunked(b"data: " + json.dumps([{"choices": []}]).encode() + b"\n\n")
                return self._end_chunked()
            count = float("inf") if (fault == "inf_tokens" and i == 2) else i
            data = _chunk(chat, count, f"tok{i} ", "length" if i == tokens else None)
            if fault == "drip":  # chunked framing kept, each byte on its own (json.dumps writes Infinity for inf)
                payload = data * tokens
                return self._drip(f"{len(payload):x}\r\n".encode() + payload + b"\r\n", 1.0)
            self._chunked(data)
            time.sleep(TOKEN_GAP_S)
        metrics = {"num_draft_tokens": 8, "num_accepted_draft_tokens": 6, "draft_acceptance_rate": 0.75}
        if fault == "spec_nan":
            metrics = {"num_draft_tokens": float("nan"), "num_accepted_draft_tokens": 6,
                       "draft_acceptance_rate": float("nan")}
        elif fault == "spec_missing":
            metrics = {"draft_acceptance_rate": 0.5}
        self._chunked(b"data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": tokens},
                                              "metrics": {"speculative_decoding": metrics}}).encode() + b"\n\n")
        self._chunked(b"data: [DONE]\n\n")
        if fault == "stall_after_done":
            return self._stall()
        if fault == "junk_after_done":
            self._chunked(b"data: {\"late\": true}\n\n")
        self._end_chunked()

    def _http10(self, chat: bool, tokens: int, *, buffered: bool) -> None:
        """An HTTP/1.0 hop: no Transfer-Encoding, no Content-Length, the body ends when the connection closes."""
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        self.wfile.flush()
        parts = []
        for i in range(1, tokens + 1):
            time.sleep(TOKEN_GAP_S * 5)  # generation time, spent before (buffered) or between (incremental) writes
            data = _chunk(chat, i, f"tok{i} ", "length" if i == tokens else None)
            if buffered:
                parts.append(data)
            else:
                self.wfile.write(data)
                self.wfile.flush()
        parts.append(b"data: [DONE]\n\n")
        self.wfile.write(b"".join(parts))
        self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def process_request(self, request, client_address):
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        """A client that hangs up (the point of several faults) is not an error; anything else is printed."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class HostileServer:
    """``with HostileServer(stream=..., metrics=..., ...) as srv: srv.url`` (see the module docstring)."""

    def __init__(self, *, stream: str = "ok", metrics: str = "ok", metrics_fault_from: int = 0, models: str = "ok",
                 version: str = "ok", server_info: str = "absent", marker: str | None = None, tokens: int = 6):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.lock = threading.Lock()
        self.httpd.stopping = threading.Event()
        self.httpd.scrapes = 0
        self.httpd.posts = 0
        self.set(stream=stream, metrics=metrics, metrics_fault_from=metrics_fault_from, models=models,
                 version=version, server_info=server_info, marker=marker, tokens=tokens)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def set(self, **faults) -> None:
        allowed = {"stream": STREAM_FAULTS, "metrics": METRICS_FAULTS, "models": MODELS_FAULTS,
                   "version": VERSION_FAULTS, "server_info": SERVER_INFO_FAULTS}
        for name, value in faults.items():
            if name in allowed and value not in allowed[name]:
                raise ValueError(f"{name}={value!r}: one of {allowed[name]}")
            setattr(self.httpd, name, value)

    @property
    def posts(self) -> int:
        return self.httpd.posts

    @property
    def connections(self) -> int:
        return self.httpd.connections

    def __enter__(self) -> "HostileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
