"""HTTP with a wall-clock deadline on every read (I/O).

``requests``' read timeout bounds each socket read, not the request: a server that sends one byte a second never
trips it, and a thread blocked in ``recv`` sees neither a stop event nor Ctrl-C. Here every request runs under a
``Deadline``: one watchdog thread (shared by all requests of the process) checks each active deadline every
``WATCH_INTERVAL_S`` and, when the wall-clock budget is spent or the caller's stop event is set, shuts the
request's socket down. The blocked read then returns at once, and the caller reads ``deadline.reason``
("timeout" or "cancelled") to report the right cause.

The socket is found without private ``requests`` state: the session's adapter hands every connection it takes
from urllib3's pool to the deadline active in the requesting thread.

Streamed bodies are read with ``read1`` (whatever bytes have arrived, whatever the framing: chunked, a
Content-Length, or an HTTP/1.0 body that ends when the connection closes), so an event's arrival time is the time
its bytes reached us.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Iterator

import requests
from requests.adapters import HTTPAdapter

WATCH_INTERVAL_S = 0.05
READ_SIZE_BYTES = 65536
MAX_LINE_BYTES = 4 * 2**20  # one SSE line longer than this is not a token event: refuse it rather than grow forever

_current = threading.local()


class LineTooLongError(ValueError):
    """A line of a streamed body longer than MAX_LINE_BYTES: not a token event."""


class Deadline:
    """The wall-clock budget of one request (and an optional stop event), enforced by shutting its socket down.

        with Deadline(30.0, stop_event) as dl:
            resp = session.get(url, timeout=(5, 30))   # blocked reads end when dl fires
        dl.reason  -> None | "timeout" | "cancelled"
    """

    def __init__(self, budget_s: float, stop_event: threading.Event | None = None):
        self.budget_s = float(budget_s)
        self.stop_event = stop_event
        self.expires = time.monotonic() + self.budget_s
        self.reason: str | None = None
        self._connections: list = []
        self._lock = threading.Lock()

    def remaining_s(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def attach(self, connection) -> None:
        with self._lock:
            self._connections.append(connection)
            fired = self.reason is not None
        if fired:
            _shutdown(connection)

    def check(self) -> str | None:
        """Fire when due; returns the reason (also used by the reader between reads)."""
        if self.reason is None:
            if self.stop_event is not None and self.stop_event.is_set():
                self._fire("cancelled")
            elif time.monotonic() >= self.expires:
                self._fire("timeout")
        return self.reason

    def _fire(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            connections = list(self._connections)
        for conn in connections:
            _shutdown(conn)

    def __enter__(self) -> "Deadline":
        self._previous = getattr(_current, "deadline", None)
        _current.deadline = self
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *exc) -> None:
        _WATCHDOG.discard(self)
        _current.deadline = self._previous


def _shutdown(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _Watchdog:
    """One daemon thread for every active deadline of the process (started on first use)."""

    def __init__(self):
        self._active: set[Deadline] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._lock:
            self._active.add(deadline)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="specdec-deadlines", daemon=True)
                self._thread.start()

    def discard(self, deadline: Deadline) -> None:
        with self._lock:
            self._active.discard(deadline)

    def _run(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL_S)
            with self._lock:
                active = list(self._active)
            for deadline in active:
                deadline.check()


_WATCHDOG = _Watchdog()


class _DeadlineAdapter(HTTPAdapter):
    """Hands each connection taken from urllib3's pool to the deadline active in the requesting thread."""

    def get_connection_with_tls_context(self, *args, **kwargs):
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        if not getattr(pool, "_specdec_deadline_hook", False):
            take = pool._get_conn

            def get_conn(timeout=None):
                conn = take(timeout=timeout)
                deadline = getattr(_current, "deadline", None)
                if deadline is not None:
                    deadline.attach(conn)
                return conn

            pool._get_conn = get_conn
            pool._specdec_deadline_hook = True
        return pool


def session(base_url: str) -> requests.Session:
    """A ``requests.Session`` for ``base_url`` whose connections obey the active ``Deadline``.

    The environment (``HTTP(S)_PROXY``/``NO_PROXY``, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, ``~/.netrc``) is
    read once here, not on every request as ``requests`` does by default: that re-read cost ~0.8 ms of CPU a
    request, with the GIL held, so a load test's streams released together reached the server as a ramp."""
    s = requests.Session()
    adapter = _DeadlineAdapter()
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.proxies.update(requests.utils.get_environ_proxies(base_url))
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if ca_bundle:
        s.verify = ca_bundle
    s.auth = requests.utils.get_netrc_auth(base_url)
    s.trust_env = False
    return s


KEEP_ALIVE_WAIT_S = 1.0  # how long the end of a body may take after its last event before the connection is dropped


def keep_alive_after_end(resp: requests.Response, wait_s: float = KEEP_ALIVE_WAIT_S) -> bool:
    """After a stream's last event: read the end of the body (at most ``wait_s``) and, if it ended cleanly, give
    the connection back to the pool, so the thread's next request reuses it (as ``vllm bench serve``'s client
    does) instead of opening a new one. Anything else after the last event (more bytes, a stall) drops the
    connection as before. Returns whether it was kept."""
    raw = resp.raw
    conn = getattr(raw, "connection", None)
    if conn is None:
        return False
    with Deadline(wait_s) as deadline:
        deadline.attach(conn)
        try:
            rest = raw.read1(READ_SIZE_BYTES, decode_content=True)
        except Exception:  # a cut or a shut-down socket: the connection is not reused
            return False
    if rest or deadline.reason is not None:
        return False
    raw.release_conn()
    return True


def iter_lines(resp: requests.Response, deadline: Deadline) -> Iterator[tuple[int, float, bytes]]:
    """Lines of a streamed body as they arrive: (read number, arrival time from ``time.perf_counter``, line).

    Reads whatever has arrived (``read1``), so events are timed at arrival whatever the framing. Stops at the end
    of the body or when the deadline fires (the caller checks ``deadline.reason``).
    """
    buf = b""
    reads = 0
    while deadline.check() is None:
        data = resp.raw.read1(READ_SIZE_BYTES, decode_content=True)
        now = time.perf_counter()
        if not data:
            break
        reads += 1
        buf += data
        if b"\n" not in data:
            if len(buf) > MAX_LINE_BYTES:
                raise LineTooLongError(f"a line of the stream exceeds {MAX_LINE_BYTES} bytes without a line break")
            continue
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield reads, now, line.rstrip(b"\r")
    if buf and deadline.reason is None:
        yield reads, time.perf_counter(), buf.rstrip(b"\r")
