"""A DELIBERATELY MISBEHAVING fake of a vLLM server, for the oracle's faults a real server cannot be made to produce.

- ``no_prompt_logprobs``: an OpenAI-compatible server that ignores ``prompt_logprobs`` (answers ``null``), as a
  server or gateway that does not implement vLLM's extension does. A real vLLM server always honours it (or
  refuses N above its cap with a 400, which the live tests cover).
- ``cut``: answers the teacher-forcing request of every other call with a body cut short (Content-Length larger
  than what is sent, then the connection closes): a proxy or a crashing server mid-answer.
- ``ok``: answers everything well-formed (used to resume a run after the faults are gone).

It implements only what the oracle calls: ``/v1/models``, ``/tokenize`` (one id per byte) and ``/v1/completions``
(generation with ``return_token_ids``; teacher forcing with ``prompt_logprobs``). The distributions are a fixed
function of the position, so draft and target agree and acceptance is deterministic. 127.0.0.1 only, a daemon
thread, stopped on leaving the ``with`` block.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-oracle-model"


def _logprob_entry(token: int, position: int, n: int) -> dict:
    """Top-n: token (position * 7) % 50 has logprob -0.1, then -3, -4, ...; the actual token with its rank."""
    top = [((position * 7 + r) % 50, -0.1 if r == 0 else -2.0 - r) for r in range(n)]
    entry = {str(t): {"logprob": lp, "rank": r + 1, "decoded_token": "x"} for r, (t, lp) in enumerate(top)}
    if str(token) not in entry:
        entry[str(token)] = {"logprob": -9.0, "rank": 40, "decoded_token": "x"}
    return entry


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, obj, status: int = 200, cut: bool = False) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) + (5000 if cut else 0)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        self.wfile.flush()
        if cut:
            self.close_connection = True

    def do_GET(self):
        if self.path.startswith("/v1/models"):
            self._send({"object": "list", "data": [{"id": MODEL, "object": "model", "max_model_len": 512}]})
        else:
            self._send({"error": "not found"}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/tokenize":
            tokens = list(body.get("prompt", "").encode("utf-8"))[:200]
            self._send({"count": len(tokens), "max_model_len": 512, "tokens": tokens, "token_strs": None})
            return
        if self.path != "/v1/completions":
            self._send({"error": "not found"}, 404)
            return
        server = self.server
        prompt = body.get("prompt")
        if isinstance(prompt, str):  # generation: the argmax chain of the fixed distributions
            ids = list(prompt.encode("utf-8"))[:40]
            out = [((len(ids) + i) * 7) % 50 for i in range(int(body.get("max_tokens", 1)))]
            self._send({"choices": [{"index": 0, "text": "x" * len(out), "token_ids": out, "prompt_token_ids": ids,
                                     "finish_reason": "length", "prompt_logprobs": None}]})
            return
        n = int(body.get("prompt_logprobs") or 0)
        if n < 0:
            self._send({"error": {"message": "Requested prompt logprobs of 50, which is greater than max allowed: "
                                             "20", "code": 400}}, 400)
            return
        with server.lock:
            server.scored += 1
            calls = server.scored
        if server.behaviour == "no_prompt_logprobs":
            logprobs = None
        else:
            logprobs = [None] + [_logprob_entry(t, i, n) for i, t in enumerate(prompt[1:], 1)]
        cut = server.behaviour == "cut" and calls % 2 == 0
        self._send({"choices": [{"index": 0, "text": "x", "prompt_logprobs": logprobs}]}, cut=cut)


class FakeOracleServer:
    """``with FakeOracleServer("cut") as url: ...``; ``behaviour`` may be changed while it runs."""

    def __init__(self, behaviour: str):
        if behaviour not in ("no_prompt_logprobs", "cut", "ok"):
            raise ValueError(behaviour)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.behaviour = behaviour
        self.httpd.scored = 0
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def set_behaviour(self, behaviour: str) -> None:
        self.httpd.behaviour = behaviour

    def __enter__(self) -> "FakeOracleServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
