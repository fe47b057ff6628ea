"""One streamed completion: reading its server-sent events, timing them, and per-request acceptance (pure).

``endpoint.py`` does the I/O and feeds each line with its arrival time to a ``StreamParser``; the parser checks
every chunk's shape and values (a wrong-shaped or impossible field is a ``StreamError`` naming the field, so one
bad answer costs one record) and returns a ``StreamResult``.

Definitions of the streamed timings (the same as ``vllm bench serve``'s,
``vllm/benchmarks/lib/endpoint_request_func.py``):

* TTFT = arrival of the first chunk that carries a generated token − the moment the request was sent;
* ITL  = gaps between consecutive token-carrying chunks (with speculation a chunk carries several tokens);
* TPOT = (E2E − TTFT) / (completion tokens − 1);
* E2E  = end of the stream − the moment the request was sent.

"Arrival" is the read that delivered the event's last byte (``transport.iter_lines``). When every token event
arrived in one read (a buffering proxy, an HTTP/1.0 hop that sends the whole body at once), TTFT and ITL are not
measurable: they are recorded as None with ``timing_note`` rather than as TTFT = E2E.

Token counts come from the server's usage (``stream_options.continuous_usage_stats``), never from text: a chunk
that ends inside a UTF-8 character has empty text but still carries a token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

EXCERPT_CHARS = 300


class StreamError(ValueError):
    """What went wrong in a stream: ``kind`` as in ``endpoint.EndpointError.KINDS``, the HTTP-like ``status``."""

    def __init__(self, kind: str, detail: str, status: int | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.status = kind, detail, status


def whole(value: Any) -> bool:
    """A JSON whole number (not a bool, not a float such as NaN or Infinity)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class StreamResult:
    """One streamed request, timed on the client. Seconds throughout; token counts from the server's usage.

    ``timing_note`` is set (and ``ttft_s``/``itl_s`` are None/empty) when every token event reached the client
    in one read: a buffering proxy or server delivered the whole body at once, so the first token's arrival says
    nothing about the server's TTFT (it would equal E2E).
    """

    ttft_s: float | None
    e2e_s: float
    itl_s: tuple[float, ...]
    chunk_tokens: tuple[int, ...]  # tokens carried by each token-carrying chunk, in order
    prompt_tokens: int | None
    completion_tokens: int
    finish_reason: str | None
    text: str
    spec_metrics: dict | None  # the response's metrics.speculative_decoding (--per-request-spec-decode-metrics)
    timing_note: str | None = None

    @property
    def chunks(self) -> int:
        return len(self.chunk_tokens)

    @property
    def tpot_s(self) -> float | None:
        """(E2E − TTFT) / (completion tokens − 1), as vllm bench serve defines it."""
        if self.ttft_s is None or self.completion_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.completion_tokens - 1)


BUFFERED_NOTE = ("TTFT/ITL not measurable: every token event arrived in one read (the response was buffered, e.g. "
                 "by an HTTP/1.0 proxy); E2E is measured")


class StreamParser:
    """What the chunks of one stream said so far; ``feed`` validates each chunk's shape and values.

    ``redact`` masks credentials in any text taken from the stream (before it is cut to an excerpt)."""

    def __init__(self, *, chat: bool, redact: Callable[..., str]):
        self.chat, self.redact = chat, redact
        self.t0 = 0.0
        self.ttft: float | None = None
        self.last_token_t: float | None = None
        self.itl: list[float] = []
        self.chunk_tokens: list[int] = []
        self.token_reads: set[int] = set()
        self.completion_tokens = 0
        self.prompt_tokens: int | None = None
        self.finish: str | None = None
        self.text_parts: list[str] = []
        self.spec: dict | None = None
        self.done = False

    def progress(self) -> str:
        return f"{self.completion_tokens} tokens in {len(self.chunk_tokens)} chunks"

    def bad(self, what: str) -> StreamError:
        return StreamError("bad_response", f"{self.redact(what, 2 * EXCERPT_CHARS)} (after {self.progress()})")

    def feed(self, read_no: int, now: float, raw: bytes) -> bool:
        """Take one line of the stream; True at ``[DONE]``."""
        if not raw:
            return False
        line = raw.decode("utf-8", errors="replace")
        if not line.startswith("data:"):
            return False
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return True
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise self.bad(f"stream chunk is not JSON: {self.redact(payload, EXCERPT_CHARS)!r}") from None
        if not isinstance(chunk, dict):
            raise self.bad(f"stream chunk is a JSON {type(chunk).__name__}, expected an object")
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            code = err.get("code") if isinstance(err, dict) else None
            raise StreamError(
                "bad_response",
                f"server reported an error mid-stream after {self.completion_tokens} tokens: "
                f"{self.redact(str(err), EXCERPT_CHARS)!r}", status=code if whole(code) else None)
        usage = chunk.get("usage")
        if usage is None:
            usage = {}
        if not isinstance(usage, dict):
            raise self.bad(f"field 'usage' is {type(usage).__name__}, expected an object")
        for name in ("prompt_tokens", "completion_tokens"):
            v = usage.get(name)
            if v is not None and not (whole(v) and v >= 0):
                raise self.bad(f"field 'usage.{name}' = {v!r}: expected a whole number >= 0")
        if usage.get("prompt_tokens") is not None:
            self.prompt_tokens = usage["prompt_tokens"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise self.bad("field 'choices': expected a list of objects")
        for choice in choices:
            delta = choice.get("delta") if self.chat else None
            if self.chat and delta is not None and not isinstance(delta, dict):
                raise self.bad(f"field 'choices[].delta' is {type(delta).__name__}, expected an object")
            text = choice.get("text") if not self.chat else (delta or {}).get("content")
            if text is not None and not isinstance(text, str):
                raise self.bad(f"field 'choices[].{'delta.content' if self.chat else 'text'}' is not a string")
            if text:
                self.text_parts.append(text)
            finish = choice.get("finish_reason")
            if finish:
                self.finish = str(finish)
        new_total = usage.get("completion_tokens")
        if new_total is not None and new_total > self.completion_tokens:
            self.chunk_tokens.append(new_total - self.completion_tokens)
            self.completion_tokens = new_total
            self.token_reads.add(read_no)
            if self.ttft is None:
                self.ttft = now - self.t0
            else:
                self.itl.append(now - self.last_token_t)
            self.last_token_t = now
        m = chunk.get("metrics")
        if isinstance(m, dict) and m.get("speculative_decoding") is not None:
            self.spec = checked_spec_metrics(m["speculative_decoding"], self.bad)
        return False

    def result(self, end: float) -> StreamResult:
        if not self.done:
            raise StreamError("stream_cut", f"the stream ended without [DONE] after {self.progress()}")
        if self.completion_tokens and not self.chunk_tokens:
            raise StreamError("bad_response",
                              "no per-chunk usage: the server ignored stream_options.continuous_usage_stats")
        buffered = len(self.chunk_tokens) >= 2 and len(self.token_reads) == 1
        return StreamResult(
            ttft_s=None if buffered else self.ttft,
            e2e_s=end - self.t0,
            itl_s=() if buffered else tuple(self.itl),
            chunk_tokens=tuple(self.chunk_tokens),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish_reason=self.finish,
            text="".join(self.text_parts),
            spec_metrics=self.spec,
            timing_note=BUFFERED_NOTE if buffered else None,
        )


def checked_spec_metrics(sm: Any, bad) -> dict:
    """The response's ``metrics.speculative_decoding``, refused (``bad(message)``) unless its counts are whole
    numbers with accepted <= draft tokens."""
    if not isinstance(sm, dict):
        raise bad(f"field 'metrics.speculative_decoding' is {type(sm).__name__}, expected an object")
    for name in ("num_accepted_draft_tokens", "num_draft_tokens"):
        v = sm.get(name)
        if not (whole(v) and v >= 0):
            raise bad(f"field 'metrics.speculative_decoding.{name}' = {v!r}: expected a whole number >= 0")
    if sm["num_accepted_draft_tokens"] > sm["num_draft_tokens"]:
        raise bad(f"field 'metrics.speculative_decoding': {sm['num_accepted_draft_tokens']} accepted of "
                  f"{sm['num_draft_tokens']} draft tokens")
    return dict(sm)


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
            rate=sm["num_accepted_draft_tokens"] / sm["num_draft_tokens"] if sm["num_draft_tokens"] else None,
            definition="server: num_accepted_draft_tokens / num_draft_tokens of this request (V1, prefix)",
        )
    if not (whole(k) and k >= 1) or result.chunks < 2:
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
