"""Talking to a vLLM server over HTTP: discovery, /metrics scrapes, and streaming one request (I/O).

Everything here is plain ``requests`` (synchronous). The load generator in ``loadtest.py`` runs these calls from
a thread pool. Every failure becomes an ``EndpointError`` whose message names the URL and what happened; the API
key is sent only as an ``Authorization: Bearer`` header and never appears in a repr, a message or a record.

Every read runs under a wall-clock deadline (``transport.py``): a server that trickles bytes cannot outlast the
request's timeout, the stop event or Ctrl-C. Credentials (the key, ``user:password@`` in the URL) are masked by
``EndpointClient.redact`` (``redaction.py``) in every message before it is cut to an excerpt. Stream parsing and
the timing definitions (TTFT, ITL, TPOT, E2E) are in ``stream_events.py``.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import requests
import urllib3

from specdec_lib import metrics, redaction, rules, transport
from specdec_lib.stream_events import (  # noqa: F401  (re-exported: the stream's records live there)
    BUFFERED_NOTE,
    RequestAcceptance,
    StreamError,
    StreamParser,
    StreamResult,
    request_acceptance,
    whole,
)

BODY_EXCERPT_CHARS = 300


class EndpointError(RuntimeError):
    """A failure talking to an endpoint. ``kind`` is one of KINDS; ``status`` the HTTP status when there was one.

    The message must already be redacted (``EndpointClient.redact``): it is printed and written as it is.
    """

    KINDS = (
        "connection_refused",
        "dns_failure",
        "connection_error",
        "http_status",
        "timeout",
        "stream_cut",
        "not_vllm",
        "malformed_metrics",
        "bad_response",
        "cancelled",
    )

    def __init__(self, url: str, kind: str, detail: str, status: int | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"kind={kind!r} is not one of {self.KINDS}")
        url = redaction.url_without_credentials(url)
        self.url = url
        self.kind = kind
        self.status = status
        self.detail = detail
        self.run_path = None  # set by loadtest when a run folder recorded this failure
        super().__init__(f"{url}: {detail}")


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it (``__cause__``/``__context__``, urllib3's ``reason``), at most 10 deep."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        reason = getattr(e, "reason", None)
        nxt = e.__cause__ or e.__context__ or (e.args[0] if e.args and isinstance(e.args[0], BaseException) else None)
        e = reason if isinstance(reason, BaseException) and reason is not e else nxt
    return chain


def _is_read_timeout(exc: BaseException) -> bool:
    return any(isinstance(c, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, socket.timeout,
                              TimeoutError)) for c in _chain(exc))


def _explain_connection_error(url: str, exc: BaseException, redact) -> EndpointError:
    """Turn a requests/urllib3 connection failure into a message a person can act on."""
    chain = _chain(exc)
    text = " ".join(str(c) for c in chain)
    parsed = urlparse(url)
    host = parsed.hostname or "?"
    if any(isinstance(c, requests.exceptions.ProxyError) for c in chain) or "ProxyError" in text:
        return EndpointError(url, "connection_error", "could not connect through the proxy the environment names "
                             "(HTTP_PROXY / HTTPS_PROXY; NO_PROXY lists hosts that bypass it): "
                             f"{redact(str(exc), BODY_EXCERPT_CHARS)}")
    if any(isinstance(c, socket.gaierror) for c in chain) or "NameResolutionError" in text \
            or "Name or service not known" in text or "nodename nor servname" in text:
        return EndpointError(url, "dns_failure", f"DNS failure: the host name {host!r} could not be resolved")
    if any(isinstance(c, ConnectionRefusedError) for c in chain) or "Connection refused" in text:
        return EndpointError(url, "connection_refused", f"connection refused: nothing is listening at {host}:"
                             f"{parsed.port or '(default port)'} (is the server running?)")
    return EndpointError(url, "connection_error", f"could not connect: {type(exc).__name__}: "
                         f"{redact(str(exc), BODY_EXCERPT_CHARS)}")


@dataclass(frozen=True)
class ServerInfo:
    """What the server says about itself. Fields that cannot be known are None and explained in ``unknowns``."""

    base_url: str
    served_model: str
    served_models: tuple[str, ...]
    max_model_len: int | None
    vllm_version: str | None
    speculation: bool  # True when vllm:spec_decode_* counters (V1) or the V0 gauge are exposed
    method: str | None  # "draft_model", "ngram", ... only when the server's config is readable (/server_info)
    num_speculative_tokens: int | None  # k: the number of per-position counters, or the config
    draft_model: str | None
    speculative_settings: dict  # scalar keys of the server's speculative_config (only via /server_info)
    engines: int  # engines seen in the speculative counters (0 without speculation)
    kv_cache_size_tokens: int | None
    unknowns: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "served_model": self.served_model,
            "served_models": list(self.served_models),
            "max_model_len": self.max_model_len,
            "vllm_version": self.vllm_version,
            "speculation": self.speculation,
            "method": self.method,
            "num_speculative_tokens": self.num_speculative_tokens,
            "draft_model": self.draft_model,
            "speculative_settings": dict(self.speculative_settings),
            "engines": self.engines,
            "kv_cache_size_tokens": self.kv_cache_size_tokens,
            "unknowns": list(self.unknowns),
        }


def speculative_settings(spec_cfg: dict) -> tuple[str | None, int | None, str | None, dict]:
    """(method, k, draft model, scalar settings) from ``vllm_config.speculative_config`` of ``/server_info``.

    k is None unless the config holds a whole number >= 1 (a 0, a string or a float is not a k)."""
    draft_cfg = spec_cfg.get("draft_model_config")
    draft = draft_cfg.get("model") if isinstance(draft_cfg, dict) else spec_cfg.get("model")
    scalars = {key: v for key, v in spec_cfg.items() if isinstance(v, (str, int, float, bool)) and v is not None}
    k = spec_cfg.get("num_speculative_tokens")
    method = spec_cfg.get("method")
    return (method if isinstance(method, str) else None, k if whole(k) and k >= 1 else None,
            draft if isinstance(draft, str) else None, scalars)


class EndpointClient:
    """A vLLM OpenAI-compatible endpoint: ``EndpointClient("http://127.0.0.1:8000", api_key=None)``.

    Thread-safe for concurrent ``stream`` calls (one ``requests.Session`` per thread). Credentials (the API key,
    ``user:password@`` in the URL, sent as basic auth) live only in closures; ``base_url`` has no userinfo, and
    ``redact`` masks them in any text (the one redaction contract: ``specdec_lib.redaction``).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 120.0,
                 connect_timeout_s: float = 5.0):
        redaction.check_api_key(api_key)
        if not isinstance(base_url, str):
            raise ValueError(f"base_url: expected a string, got {type(base_url).__name__}")
        user, password = redaction.url_credentials(base_url)
        shown = redaction.redact(base_url, (password,))
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"base_url={shown!r}: expected http(s)://host[:port][/prefix]")
        if parsed.query or parsed.fragment:
            raise ValueError(f"base_url={redaction.redact(shown, (parsed.query, parsed.fragment))!r}: no query or "
                             "fragment (expected http(s)://host[:port][/prefix])")
        for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r}: expected a finite number of seconds > 0")
        self.base_url = redaction.url_without_credentials(base_url).rstrip("/").removesuffix("/v1")
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        secrets = tuple(s for s in (api_key, password, f"{user}:{password}" if password else None) if s)
        # The credentials live only inside these closures: not attributes, so vars()/repr/pickle never show them.
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        auth = (user or "", password or "") if (user or password) and not api_key else None
        self._headers = lambda: dict(headers)
        self._auth = lambda: auth
        self._secrets = lambda: secrets
        self._local = threading.local()
        self.has_api_key = bool(api_key)

    def redact(self, text: str, limit: int | None = None) -> str:
        """``text`` with this client's credentials (and any URL userinfo / Bearer token) masked, then cut."""
        out = redaction.redact(text, self._secrets())
        return out if limit is None else out[:limit]

    def redact_obj(self, obj: Any) -> Any:
        return redaction.redact_obj(obj, self._secrets())

    def __repr__(self) -> str:
        return f"EndpointClient({self.base_url!r}, api_key={'<hidden>' if self.has_api_key else None})"

    __str__ = __repr__

    def __getstate__(self):
        raise TypeError("EndpointClient holds a secret and is not picklable; pass base_url and the key separately")

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = transport.session(self.base_url)
            s.headers.update(self._headers())
            s.auth = self._auth() or s.auth  # the URL's credentials or the key; else what ~/.netrc says
            self._local.session = s
        return s

    def url(self, path: str) -> str:
        return self.base_url + path

    def _failure(self, url: str, exc: BaseException, deadline: transport.Deadline, budget_s: float,
                 mid_stream: str | None = None) -> EndpointError:
        """The EndpointError for an exception raised while talking to ``url``: the deadline's reason first (its
        watchdog cut the socket), then timeouts, then connection failures; ``mid_stream`` says how far a stream got."""
        if deadline.reason == "cancelled":
            return EndpointError(url, "cancelled", "cancelled by the caller (stop event set)"
                                 + (f" mid-stream after {mid_stream}" if mid_stream else ""))
        if deadline.reason == "timeout":
            return EndpointError(url, "timeout", f"request exceeded its {budget_s:g} s budget (wall-clock deadline)"
                                 + (f" mid-stream after {mid_stream}" if mid_stream else ""))
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return EndpointError(url, "timeout", f"timed out connecting after {self.connect_timeout_s:g} s")
        if _is_read_timeout(exc):
            return EndpointError(url, "timeout", f"no data for {min(budget_s, deadline.budget_s):g} s (read timeout)"
                                 + (f" mid-stream after {mid_stream}" if mid_stream else ""))
        if mid_stream is not None:
            return EndpointError(url, "stream_cut", f"the stream was cut after {mid_stream}: {type(exc).__name__}")
        return _explain_connection_error(url, exc, self.redact)

    def _request(self, method: str, path: str, deadline: transport.Deadline, *, json_body: dict | None = None,
                 stream: bool = False) -> requests.Response:
        """One request under ``deadline`` (the caller's ``with``); 4xx/5xx become EndpointError(http_status)."""
        url = self.url(path)
        budget = deadline.budget_s
        try:
            resp = self._session().request(method, url, json=json_body, stream=stream,
                                           timeout=(self.connect_timeout_s, max(0.001, deadline.remaining_s())))
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._failure(url, exc, deadline, budget) from None
        if resp.status_code >= 400:
            try:
                body = resp.text
            except Exception:  # a broken body must not hide the status
                body = "<unreadable body>"
            resp.close()
            raise EndpointError(url, "http_status", f"HTTP {resp.status_code} {self.redact(resp.reason or '')}: "
                                f"{self.redact(body, BODY_EXCERPT_CHARS)!r}", status=resp.status_code)
        return resp

    def get_json(self, path: str, timeout_s: float | None = None) -> Any:
        budget = timeout_s if timeout_s is not None else self.timeout_s
        with transport.Deadline(budget) as deadline:
            resp = self._request("GET", path, deadline)
            try:
                text = resp.text
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._failure(self.url(path), exc, deadline, budget) from None
        try:
            return json.loads(text)
        except ValueError:
            raise EndpointError(self.url(path), "bad_response",
                                f"expected JSON, got {self.redact(text, BODY_EXCERPT_CHARS)!r}") from None

    def open_connection(self, timeout_s: float = 5.0) -> bool:
        """Open this thread's keep-alive connection with one cheap GET (``/v1/models``), so that the thread's next
        request only writes to a socket. A load test's streams call it before they are released together. A
        failure is not an error here (the request that follows reports it); returns whether it worked."""
        try:
            self.get_json("/v1/models", timeout_s=timeout_s)
            return True
        except EndpointError:
            return False

    def post_json(self, path: str, body: dict, timeout_s: float | None = None) -> Any:
        """POST ``body`` as JSON and read the whole JSON answer under one wall-clock budget.

        Errors are EndpointErrors naming the URL: HTTP 4xx/5xx ``http_status``; a body cut before its end
        (Content-Length not reached, connection closed) ``stream_cut``; a non-JSON answer ``bad_response``
        (excerpt redacted)."""
        budget = timeout_s if timeout_s is not None else self.timeout_s
        with transport.Deadline(budget) as deadline:
            resp = self._request("POST", path, deadline, json_body=body, stream=True)
            try:
                raw = resp.content
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._failure(self.url(path), exc, deadline, budget, mid_stream="part of the body") from None
            finally:
                resp.close()
        try:
            return json.loads(raw)
        except ValueError:
            text = raw[:BODY_EXCERPT_CHARS].decode("utf-8", errors="replace")
            raise EndpointError(self.url(path), "bad_response",
                                f"expected JSON, got {self.redact(text, BODY_EXCERPT_CHARS)!r}") from None

    # -- discovery --------------------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        url = self.url("/v1/models")
        data = self.get_json("/v1/models")
        if not isinstance(data, dict) or not isinstance(data.get("data"), list) or not data["data"]:
            raise EndpointError(url, "bad_response", "field 'data': expected a non-empty list of models, got "
                                f"{self.redact(str(data), BODY_EXCERPT_CHARS)!r}")
        for i, m in enumerate(data["data"]):
            if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m["id"]:
                raise EndpointError(url, "bad_response", f"field 'data[{i}]': expected an object with a string "
                                    f"'id', got {self.redact(str(m), BODY_EXCERPT_CHARS)!r}")
        return data["data"]

    def _optional_json(self, path: str, what: str, unknowns: list[str]) -> Any:
        """An optional discovery route: any HTTP error or a non-JSON answer (403, 500, an HTML page) -> None and a
        line in ``unknowns``; only an unreachable server is an error."""
        try:
            return self.get_json(path)
        except EndpointError as exc:
            if exc.kind in ("http_status", "bad_response"):
                if exc.status != 404:
                    unknowns.append(f"{what}: {self.url(path)} answered {exc.detail[:120]}")
                return None
            raise

    def version(self, unknowns: list[str] | None = None) -> str | None:
        """vLLM's ``/version``; None when the server has no such route (it is then probably not vLLM)."""
        data = self._optional_json("/version", "vLLM version", unknowns if unknowns is not None else [])
        version = data.get("version") if isinstance(data, dict) else None
        return version if isinstance(version, str) else None

    def metrics_text(self) -> str:
        with transport.Deadline(self.timeout_s) as deadline:
            resp = self._request("GET", "/metrics", deadline)
            try:
                return resp.text
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._failure(self.url("/metrics"), exc, deadline, self.timeout_s) from None

    def scrape(self) -> metrics.Snapshot:
        """Fetch and parse ``/metrics``. Raises EndpointError (malformed_metrics / not_vllm) with the URL."""
        url = self.url("/metrics")
        text = self.metrics_text()
        try:
            snap = metrics.parse_metrics(text)
        except metrics.MetricsError as exc:
            raise EndpointError(url, "malformed_metrics",
                                f"malformed /metrics payload: {self.redact(str(exc), BODY_EXCERPT_CHARS)}") from None
        if not snap.is_vllm:
            raise EndpointError(url, "not_vllm",
                                "no vllm:* metric families in /metrics: this does not look like a vLLM server")
        return snap

    def server_config(self, unknowns: list[str] | None = None) -> dict | None:
        """``/server_info?config_format=json`` (only when vLLM runs with VLLM_SERVER_DEV_MODE=1); else None."""
        data = self._optional_json("/server_info?config_format=json", "server config",
                                   unknowns if unknowns is not None else [])
        cfg = data.get("vllm_config") if isinstance(data, dict) else None
        return cfg if isinstance(cfg, dict) else None

    def discover(self, model: str | None = None) -> ServerInfo:
        """What the server serves and how it speculates. A server serving several models needs ``model``: which
        one to measure (ValueError listing the served names otherwise)."""
        models = self.models()
        ids = tuple(m["id"] for m in models)
        if model is None and len(ids) > 1:
            raise ValueError(f"{self.url('/v1/models')} serves {len(ids)} models {list(ids)}: choose one to measure "
                             "(--model NAME, or model= in Python)")
        if model is not None and model not in ids:
            raise ValueError(f"model={model!r}: {self.url('/v1/models')} serves {list(ids)}")
        chosen = models[ids.index(model)] if model is not None else models[0]
        unknowns: list[str] = []
        version = self.version(unknowns)
        snap = self.scrape()
        if version is None:
            unknowns.append("vLLM version: the server has no readable /version route")
        speculation = snap.has_spec_counters or snap.v0_acceptance_rate is not None
        k = len(snap.spec_engines[0].accepted_per_position) if snap.has_spec_counters else None
        method = draft = None
        settings: dict = {}
        cfg = self.server_config(unknowns)
        spec_cfg = cfg.get("speculative_config") if cfg else None
        if isinstance(spec_cfg, dict):
            method, k_cfg, draft, settings = speculative_settings(spec_cfg)
            raw_k = spec_cfg.get("num_speculative_tokens")
            if k_cfg is None and raw_k is not None:
                unknowns.append(f"/server_info num_speculative_tokens={self.redact(repr(raw_k), 40)} is not a whole "
                                "number >= 1: ignored; k is the number of per-position counters")
            k = k_cfg if k_cfg is not None else k
        elif speculation:
            unknowns.append(
                "speculative method and draft model: /metrics does not name them and /server_info is off "
                "(it needs VLLM_SERVER_DEV_MODE=1); k is the number of per-position counters"
            )
        cache = snap.info.get(metrics.CACHE_CONFIG_INFO, {})
        kv_tokens = cache.get("kv_cache_size_tokens")
        max_len = chosen.get("max_model_len")
        return ServerInfo(
            base_url=self.base_url,
            served_model=chosen["id"],
            served_models=ids,
            max_model_len=max_len if whole(max_len) and max_len > 0 else None,
            vllm_version=version,
            speculation=speculation,
            method=method if speculation else None,
            num_speculative_tokens=k,
            draft_model=draft,
            speculative_settings=self.redact_obj(settings),
            engines=len({e.engine for e in snap.spec_engines}),
            kv_cache_size_tokens=int(kv_tokens) if kv_tokens and kv_tokens.isdigit() else None,
            unknowns=tuple(self.redact(u) for u in unknowns),
        )

    # -- one streamed request ---------------------------------------------------------------------------------
    def stream(
        self,
        *,
        model: str,
        prompt: str | None = None,
        messages: list[dict] | None = None,
        max_tokens: int,
        temperature: float,
        seed: int | None = None,
        timeout_s: float | None = None,
        stop_event: threading.Event | None = None,
        extra_body: dict | None = None,
    ) -> StreamResult:
        """Send one streaming request (chat when ``messages``, completion when ``prompt``) and time it.

        ``timeout_s`` bounds the whole request on the wall clock (connect, headers, every byte of the body);
        exceeding it raises EndpointError(timeout), also against a server that trickles bytes. ``stop_event`` set
        by another thread closes the connection within ``transport.WATCH_INTERVAL_S`` and raises
        EndpointError(cancelled).
        """
        if (prompt is None) == (messages is None):
            raise ValueError("give exactly one of prompt= or messages=")
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens}: must be >= 1")
        rules.check_temperatures([temperature], "temperature")
        path = "/v1/chat/completions" if messages is not None else "/v1/completions"
        url = self.url(path)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if messages is not None:
            body["messages"] = messages
        else:
            body["prompt"] = prompt
        if seed is not None:
            body["seed"] = seed
        if extra_body:
            body.update(extra_body)
        total_s = timeout_s if timeout_s is not None else self.timeout_s
        state = StreamParser(chat=messages is not None, redact=self.redact)
        with transport.Deadline(total_s, stop_event) as deadline:
            if deadline.check() == "cancelled":
                raise EndpointError(url, "cancelled", "cancelled by the caller (stop event set) before sending")
            state.t0 = time.perf_counter()
            resp = self._request("POST", path, deadline, json_body=body, stream=True)
            done_at = None  # arrival of [DONE]: the request's end (not the body's end read after it)
            try:
                for read_no, now, raw in transport.iter_lines(resp, deadline):
                    if state.feed(read_no, now, raw):
                        done_at = now
                        transport.keep_alive_after_end(resp)  # the connection serves the thread's next request
                        break
            except StreamError as exc:
                raise EndpointError(url, exc.kind, exc.detail, status=exc.status) from None
            except transport.LineTooLongError as exc:
                raise EndpointError(url, "bad_response", f"{exc} after {state.progress()}") from None
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                    OSError, ValueError) as exc:  # ValueError: a read on the socket the deadline just closed
                raise self._failure(url, exc, deadline, total_s, mid_stream=state.progress()) from None
            finally:
                resp.close()
            if deadline.reason is not None and not state.done:
                raise self._failure(url, RuntimeError(deadline.reason), deadline, total_s, mid_stream=state.progress())
        try:
            return state.result(done_at if done_at is not None else time.perf_counter())
        except StreamError as exc:
            raise EndpointError(url, exc.kind, exc.detail, status=exc.status) from None
