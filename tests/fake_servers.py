"""DELIBERATELY BROKEN local HTTP servers, for faults a real vLLM server cannot be made to produce on demand.

Every other test talks to a real vLLM server. These exist only for:
- ``stream_cut``: a server that looks like vLLM (real captured /metrics, /version, /v1/models) but closes the
  connection in the middle of a streamed completion;
- ``malformed_metrics``: a server whose /metrics payload is not Prometheus exposition text;
- ``not_vllm``: an OpenAI-compatible server that is not vLLM (its /metrics has no vllm:* families, no /version);
- ``gateway_503``: a gateway in front of a dead backend answering 503 (vLLM itself has no way to be asked for a
  5xx; a proxy returning one is what users see when the engine is down).
Bound to 127.0.0.1 on a free port, in a daemon thread, stopped on leaving the ``with`` block.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).parent / "data"
MODEL = "fake-model"


def _models_body() -> bytes:
    return json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "max_model_len": 512}]}).encode()


def _chunk(completion_tokens: int, text: str) -> bytes:
    obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": MODEL,
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
           "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 5 + completion_tokens}}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    behaviour = "stream_cut"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        b = self.behaviour
        if b == "gateway_503":
            return self._send(503, b"<html><body>503 Service Unavailable: no healthy upstream</body></html>", "text/html")
        if self.path == "/v1/models":
            return self._send(200, _models_body())
        if self.path == "/version":
            if b == "not_vllm":
                return self._send(404, b'{"detail":"Not Found"}')
            return self._send(200, b'{"version":"0.32.0"}')
        if self.path == "/metrics":
            if b == "malformed_metrics":
                return self._send(200, b'vllm:spec_decode_num_drafts_total{engine="0" 12\nthis is {{ not exposition', "text/plain")
            if b == "not_vllm":
                return self._send(200, b"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.5\n", "text/plain")
            return self._send(200, (DATA / "vllm032_baseline.txt").read_bytes(), "text/plain")
        return self._send(404, b'{"detail":"Not Found"}')

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.behaviour == "gateway_503":
            return self._send(503, b"<html><body>503 Service Unavailable: no healthy upstream</body></html>", "text/html")
        # stream three token chunks, then drop the connection without the terminating chunk or [DONE]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(1, 4):
            data = _chunk(i, f"tok{i} ")
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"40\r\ndata")  # half a chunk, then the connection closes
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(2)


class FakeBrokenServer:
    """``with FakeBrokenServer("stream_cut") as url: ...``"""

    BEHAVIOURS = ("stream_cut", "malformed_metrics", "not_vllm", "gateway_503")

    def __init__(self, behaviour: str):
        if behaviour not in self.BEHAVIOURS:
            raise ValueError(f"behaviour={behaviour!r}: one of {self.BEHAVIOURS}")
        handler = type(f"Fake_{behaviour}", (_Handler,), {"behaviour": behaviour})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
