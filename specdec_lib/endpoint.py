"""Talking to a vLLM server over HTTP: discovery, /metrics scrapes, and streaming one request (I/O).

Everything here is plain ``requests`` (synchronous). The load generator in ``loadtest.py`` runs these calls from
a thread pool. Every failure becomes an ``EndpointError`` whose message names the URL and what happened; the API
key is sent only as an ``Authorization: Bearer`` header and never appears in a repr, a message or a record.

Definitions of the streamed timings (the same as ``vllm bench serve``'s, ``vllm/benchmarks/lib/endpoint_request_func.py``):

* TTFT = arrival of the first chunk that carries a generated token − the moment the request was sent;
* ITL  = gaps between consecutive token-carrying chunks (with speculation a chunk carries several tokens);
* TPOT = (E2E − TTFT) / (completion tokens − 1);
* E2E  = end of the stream − the moment the request was sent.

Token counts come from the server's usage (``stream_options.continuous_usage_stats``), never from text: a chunk
that ends inside a UTF-8 character has empty text but still carries a token.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests

from specdec_lib import metrics

BODY_EXCERPT_CHARS = 300


class EndpointError(RuntimeError):
    """A failure talking to an endpoint. ``kind`` is one of KINDS; ``status`` the HTTP status when there was one."""

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
        self.url = url
        self.kind = kind
        self.status = status
        self.detail = detail
        self.run_path = None  # set by loadtest when a run folder recorded this failure
        super().__init__(f"{url}: {detail}")


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _explain_connection_error(url: str, exc: BaseException) -> EndpointError:
    """Turn a requests/urllib3 connection failure into a message a person can act on."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__ or (e.args[0] if e.args and isinstance(e.args[0], BaseException) else None)
        if e is not None and hasattr(e, "reason") and isinstance(e.reason, BaseException):
            chain.append(e)
            e = e.reason
    text = " ".join(str(c) for c in chain)
    host = urlparse(url).hostname or "?"
    if any(isinstance(c, socket.gaierror) for c in chain) or "NameResolutionError" in text or "Name or service not known" in text or "nodename nor servname" in text:
        return EndpointError(url, "dns_failure", f"DNS failure: the host name {host!r} could not be resolved")
    if any(isinstance(c, ConnectionRefusedError) for c in chain) or "Connection refused" in text:
        return EndpointError(url, "connection_refused", f"connection refused: nothing is listening at {host}:{urlparse(url).port or '(default port)'} (is the server running?)")
    return EndpointError(url, "connection_error", f"could not connect: {type(exc).__name__}: {str(exc)[:BODY_EXCERPT_CHARS]}")


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
    """(method, k, draft model, scalar settings) from ``vllm_config.speculative_config`` of ``/server_info``."""
    draft_cfg = spec_cfg.get("draft_model_config")
    draft = draft_cfg.get("model") if isinstance(draft_cfg, dict) else spec_cfg.get("model")
    scalars = {key: v for key, v in spec_cfg.items() if isinstance(v, (str, int, float, bool)) and v is not None}
    return spec_cfg.get("method"), spec_cfg.get("num_speculative_tokens"), draft, scalars


@dataclass(frozen=True)
class StreamResult:
    """One streamed request, timed on the client. Seconds throughout; token counts from the server's usage."""

    ttft_s: float | None
    e2e_s: float
    itl_s: tuple[float, ...]
    chunk_tokens: tuple[int, ...]  # tokens carried by each token-carrying chunk, in order
    prompt_tokens: int | None
    completion_tokens: int
    finish_reason: str | None
    text: str
    spec_metrics: dict | None  # the response's metrics.speculative_decoding (--per-request-spec-decode-metrics)

    @property
    def chunks(self) -> int:
        return len(self.chunk_tokens)

    @property
    def tpot_s(self) -> float | None:
        """(E2E − TTFT) / (completion tokens − 1), as vllm bench serve defines it."""
        if self.ttft_s is None or self.completion_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.completion_tokens - 1)


class EndpointClient:
    """A vLLM OpenAI-compatible endpoint: ``EndpointClient("http://127.0.0.1:8000", api_key=None)``.

    Thread-safe for concurrent ``stream`` calls (one ``requests.Session`` per thread).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 120.0, connect_timeout_s: float = 5.0):
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"base_url={base_url!r}: expected http(s)://host[:port][/prefix]")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}, connect_timeout_s={connect_timeout_s}: both must be > 0")
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        # The key lives only inside this closure: not an attribute, so vars()/repr/pickle-by-dict never show it.
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._headers = lambda: dict(headers)
        self._redact = lambda text: _redact(text, api_key)
        self._local = threading.local()
        self.has_api_key = bool(api_key)

    def __repr__(self) -> str:
        return f"EndpointClient({self.base_url!r}, api_key={'<hidden>' if self.has_api_key else None})"

    __str__ = __repr__

    def __getstate__(self):
        raise TypeError("EndpointClient holds a secret and is not picklable; pass base_url and the key separately")

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers.update(self._headers())
            self._local.session = s
        return s

    def url(self, path: str) -> str:
        return self.base_url + path

    def _request(self, method: str, path: str, *, json_body: dict | None = None, stream: bool = False, timeout_s: float | None = None) -> requests.Response:
        url = self.url(path)
        read_timeout = timeout_s if timeout_s is not None else self.timeout_s
        try:
            resp = self._session().request(method, url, json=json_body, stream=stream, timeout=(self.connect_timeout_s, read_timeout))
        except requests.exceptions.ConnectTimeout:
            raise EndpointError(url, "timeout", f"timed out connecting after {self.connect_timeout_s:g} s") from None
        except requests.exceptions.ReadTimeout:
            raise EndpointError(url, "timeout", f"no response within {read_timeout:g} s (read timeout)") from None
        except requests.exceptions.ConnectionError as exc:
            raise _explain_connection_error(url, exc) from None
        if resp.status_code >= 400:
            try:
                body = resp.text[:BODY_EXCERPT_CHARS]
            except Exception:  # a broken body must not hide the status
                body = "<unreadable body>"
            resp.close()
            raise EndpointError(url, "http_status", f"HTTP {resp.status_code} {resp.reason}: {self._redact(body)!r}", status=resp.status_code)
        return resp

    def get_json(self, path: str) -> Any:
        resp = self._request("GET", path)
        try:
            return resp.json()
        except ValueError:
            raise EndpointError(self.url(path), "bad_response", f"expected JSON, got {resp.text[:BODY_EXCERPT_CHARS]!r}") from None

    # -- discovery --------------------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        data = self.get_json("/v1/models")
        if not isinstance(data, dict) or not isinstance(data.get("data"), list) or not data["data"]:
            raise EndpointError(self.url("/v1/models"), "bad_response", f"no models listed: {str(data)[:BODY_EXCERPT_CHARS]!r}")
        return data["data"]

    def version(self) -> str | None:
        """vLLM's ``/version``; None when the server has no such route (it is then probably not vLLM)."""
        try:
            data = self.get_json("/version")
        except EndpointError as exc:
            if exc.kind == "http_status" and exc.status == 404:
                return None
            raise
        return data.get("version") if isinstance(data, dict) else None

    def metrics_text(self) -> str:
        resp = self._request("GET", "/metrics")
        return resp.text

    def scrape(self) -> metrics.Snapshot:
        """Fetch and parse ``/metrics``. Raises EndpointError (malformed_metrics / not_vllm) with the URL."""
        url = self.url("/metrics")
        text = self.metrics_text()
        try:
            snap = metrics.parse_metrics(text)
        except metrics.MetricsError as exc:
            raise EndpointError(url, "malformed_metrics", f"malformed /metrics payload: {exc}") from None
        if not snap.is_vllm:
            raise EndpointError(url, "not_vllm", "no vllm:* metric families in /metrics: this does not look like a vLLM server")
        return snap

    def server_config(self) -> dict | None:
        """``/server_info?config_format=json`` (only when vLLM runs with VLLM_SERVER_DEV_MODE=1); else None."""
        try:
            data = self.get_json("/server_info?config_format=json")
        except EndpointError as exc:
            if exc.kind == "http_status" and exc.status in (404, 405):
                return None
            raise
        cfg = data.get("vllm_config") if isinstance(data, dict) else None
        return cfg if isinstance(cfg, dict) else None

    def discover(self) -> ServerInfo:
        models = self.models()
        ids = tuple(str(m.get("id")) for m in models)
        version = self.version()
        snap = self.scrape()
        unknowns = []
        if version is None:
            unknowns.append("vLLM version: the server has no /version route")
        speculation = snap.has_spec_counters or snap.v0_acceptance_rate is not None
        k = len(snap.spec_engines[0].accepted_per_position) if snap.has_spec_counters else None
        method = draft = None
        settings: dict = {}
        cfg = self.server_config()
        spec_cfg = (cfg or {}).get("speculative_config") if cfg else None
        if isinstance(spec_cfg, dict):
            method, k_cfg, draft, settings = speculative_settings(spec_cfg)
            k = k_cfg if k_cfg is not None else k
        elif speculation:
            unknowns.append(
                "speculative method and draft model: /metrics does not name them and /server_info is off "
                "(it needs VLLM_SERVER_DEV_MODE=1); k is the number of per-position counters"
            )
        cache = snap.info.get(metrics.CACHE_CONFIG_INFO, {})
        kv_tokens = cache.get("kv_cache_size_tokens")
        return ServerInfo(
            base_url=self.base_url,
            served_model=ids[0],
            served_models=ids,
            max_model_len=models[0].get("max_model_len"),
            vllm_version=version,
            speculation=speculation,
            method=method if speculation else None,
            num_speculative_tokens=k,
            draft_model=draft,
            speculative_settings=settings,
            engines=len({e.engine for e in snap.spec_engines}),
            kv_cache_size_tokens=int(kv_tokens) if kv_tokens and kv_tokens.isdigit() else None,
            unknowns=tuple(unknowns),
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

        ``timeout_s`` bounds the whole request (connect + every chunk); exceeding it raises EndpointError(timeout).
        ``stop_event`` set by another thread closes the stream and raises EndpointError(cancelled).
        """
        if (prompt is None) == (messages is None):
            raise ValueError("give exactly one of prompt= or messages=")
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens}: must be >= 1")
        if not 0.0 <= temperature <= 2.0:
            raise ValueError(f"temperature={temperature}: accepted range is 0..2")
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
        t0 = time.perf_counter()
        deadline = t0 + total_s
        resp = self._request("POST", path, json_body=body, stream=True, timeout_s=total_s)
        ttft = None
        last_token_t = None
        itl: list[float] = []
        chunk_tokens: list[int] = []
        completion_tokens = 0
        prompt_tokens = None
        finish = None
        text_parts: list[str] = []
        spec = None
        done = False
        try:
            for raw in resp.iter_lines(chunk_size=None):
                now = time.perf_counter()
                if stop_event is not None and stop_event.is_set():
                    raise EndpointError(url, "cancelled", "cancelled by the caller (stop event set) mid-stream")
                if now > deadline:
                    raise EndpointError(url, "timeout", f"request exceeded its {total_s:g} s budget mid-stream after {completion_tokens} tokens")
                if not raw:
                    continue
                line = raw.decode("utf-8", errors="replace")
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise EndpointError(url, "bad_response", f"stream chunk is not JSON: {payload[:BODY_EXCERPT_CHARS]!r}") from None
                if "error" in chunk and not chunk.get("choices"):
                    err = chunk["error"]
                    code = err.get("code") if isinstance(err, dict) else None
                    raise EndpointError(
                        url, "bad_response",
                        f"server reported an error mid-stream after {completion_tokens} tokens: {str(err)[:BODY_EXCERPT_CHARS]!r}",
                        status=code if isinstance(code, int) else None)
                usage = chunk.get("usage") or {}
                if usage.get("prompt_tokens") is not None:
                    prompt_tokens = usage["prompt_tokens"]
                new_total = usage.get("completion_tokens")
                for choice in chunk.get("choices") or []:
                    delta_text = choice.get("text") if messages is None else (choice.get("delta") or {}).get("content")
                    if delta_text:
                        text_parts.append(delta_text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                if new_total is not None and new_total > completion_tokens:
                    chunk_tokens.append(new_total - completion_tokens)
                    completion_tokens = new_total
                    if ttft is None:
                        ttft = now - t0
                    else:
                        itl.append(now - last_token_t)
                    last_token_t = now
                m = chunk.get("metrics")
                if isinstance(m, dict) and isinstance(m.get("speculative_decoding"), dict):
                    spec = m["speculative_decoding"]
        except requests.exceptions.RequestException as exc:
            raise EndpointError(
                url, "stream_cut",
                f"the stream was cut after {completion_tokens} tokens in {len(chunk_tokens)} chunks: {type(exc).__name__}",
            ) from None
        finally:
            resp.close()
        e2e = time.perf_counter() - t0
        if not done:
            raise EndpointError(url, "stream_cut", f"the stream ended without [DONE] after {completion_tokens} tokens in {len(chunk_tokens)} chunks")
        if completion_tokens and not chunk_tokens:
            raise EndpointError(url, "bad_response", "no per-chunk usage: the server ignored stream_options.continuous_usage_stats")
        return StreamResult(
            ttft_s=ttft,
            e2e_s=e2e,
            itl_s=tuple(itl),
            chunk_tokens=tuple(chunk_tokens),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish,
            text="".join(text_parts),
            spec_metrics=spec,
        )


@dataclass(frozen=True)
class RequestAcceptance:
    """One request's acceptance. ``source`` is "server" (the response's metrics) or "chunks" (estimated)."""

    source: str
    accepted_tokens: int
    draft_tokens: int | None
    rate: float | None  # V1 definition: accepted prefix tokens / draft tokens
    definition: str = field(default="")


def request_acceptance(result: StreamResult, k: int | None) -> RequestAcceptance | None:
    """Per-request acceptance: the server's own figure when the response carries it, else the chunk estimate.

    Chunk estimate (draft model, one chunk per engine step plus the first from prefill):
    accepted = tokens − chunks; rate = accepted / (k × (chunks − 1)). It under-reads a request cut by max_tokens
    (the last step's surplus accepted tokens are discarded) and, for n-gram, counts steps with no proposal as
    k rejected drafts. Returns None when neither is possible (no k, or fewer than two chunks).
    """
    if result.spec_metrics is not None:
        sm = result.spec_metrics
        return RequestAcceptance(
            source="server",
            accepted_tokens=int(sm["num_accepted_draft_tokens"]),
            draft_tokens=int(sm["num_draft_tokens"]),
            rate=float(sm["draft_acceptance_rate"]) if sm.get("num_draft_tokens") else None,
            definition="server: num_accepted_draft_tokens / num_draft_tokens of this request (V1, prefix)",
        )
    if k is None or result.chunks < 2:
        return None
    accepted = result.completion_tokens - result.chunks
    drafts = k * (result.chunks - 1)
    return RequestAcceptance(
        source="chunks",
        accepted_tokens=accepted,
        draft_tokens=drafts,
        rate=accepted / drafts,
        definition="estimate: (tokens - chunks) / (k * (chunks - 1)) from streamed chunks (V1, prefix)",
    )
