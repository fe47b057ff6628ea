"""What the live pages (04, 05) share: endpoint defaults, input parsing, and a measurement that runs in the
background with a progress bar and a Cancel button.

In a running kernel a measurement runs in a thread: the kernel stays free, so the page's Cancel button can set
the measurement's stop event (loadtest stops cleanly: requests in flight return as cancelled, the run folder is
marked "interrupted" and keeps what finished). Progress is read from the run folder's own records, polled every
`POLL_S`. Headless (no running event loop, or SPECDEC_AUTORUN=1) the measurement runs in the caller, as before.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Callable

import ipywidgets as widgets

from specdec_lib.pages.base import error_text, mark_stale, message_html

DEFAULT_ENDPOINT_URL = "http://127.0.0.1:8000"
LOCAL_DEMO_COMMAND = "python -m specdec_lib.localserver demo"
BASELINE_DEMO_COMMAND = "python -m specdec_lib.localserver demo --port 8001 --spec none"
POLL_S = 0.5


def endpoint_url_default() -> str:
    """The live notebooks' endpoint: env SPECDEC_ENDPOINT, else a local server on port 8000."""
    return os.environ.get("SPECDEC_ENDPOINT", "").strip() or DEFAULT_ENDPOINT_URL


def baseline_url_default() -> str:
    """Page 05's baseline server (no speculation): env SPECDEC_BASELINE_ENDPOINT, else empty (compare nothing)."""
    return os.environ.get("SPECDEC_BASELINE_ENDPOINT", "").strip()


def autorun_requested() -> bool:
    """True when env SPECDEC_AUTORUN=1: the live notebooks press their run button themselves (headless tests)."""
    return os.environ.get("SPECDEC_AUTORUN", "").strip() in {"1", "true", "yes"}


def requests_default(default: int) -> int:
    """Env SPECDEC_REQUESTS overrides the live pages' request counts (small numbers for headless tests)."""
    value = os.environ.get("SPECDEC_REQUESTS", "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"SPECDEC_REQUESTS={value!r} is not accepted: a whole number >= 1")
    return int(value)


def requests_or_note(default: int, notes: list[str]) -> int:
    try:
        return requests_default(default)
    except ValueError as exc:
        notes.append(f"{exc}; using {default}")
        return default


def parse_float_list(text: str, field_name: str, low: float, high: float) -> list[float]:
    """'0, 0.4, 0.8' -> [0.0, 0.4, 0.8]; ValueError naming the field and the range otherwise."""
    try:
        values = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{field_name}={text!r} is not accepted: numbers separated by commas") from None
    if not values or any(not low <= v <= high for v in values):
        raise ValueError(f"{field_name}={text!r} is not accepted: at least one number, each in [{low:g}, {high:g}]")
    return values


def unreachable_text(url: str, exc: BaseException, demo_command: str = LOCAL_DEMO_COMMAND) -> str:
    return (f"Nothing usable answers at {url}: {getattr(exc, 'detail', exc)}\n"
            f"To try this page on this machine, start a tiny real vLLM server (CPU) in a terminal:\n"
            f"    {demo_command}\n"
            f"then press the button again (or set SPECDEC_ENDPOINT before starting JupyterLab).")


def discover(url: str):
    """(client, ServerInfo) for a URL, or an EndpointError explaining what answered (or did not)."""
    from specdec_lib.endpoint import EndpointClient

    client = EndpointClient(url.strip())
    return client, client.discover()


def _records_written(runs_dir: Path, started: set[str]) -> int:
    """Request records written so far by the run folder created under `runs_dir` since the start."""
    folders = [p for p in runs_dir.glob("*") if p.is_dir() and p.name not in started]
    total = 0
    for folder in folders:
        path = folder / "requests.jsonl"
        if path.is_file():
            with path.open("rb") as fh:
                total += sum(1 for _ in fh)
    return total


class BackgroundRun:
    """Run button, Cancel button, progress bar and status line for one measurement at a time.

    `start(work, total, runs_dir, done)`: `work(stop_event)` performs the measurement (it must pass the stop
    event to loadtest) and returns its result; `done(result)` renders it (on failure the page's outputs are
    marked stale and the error is shown). `total` requests are expected, for the bar.
    """

    def __init__(self, message: widgets.HTML, stale: tuple = ()):
        self.message, self.stale = message, stale
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="Progress", bar_style="info")
        self.progress.layout.visibility = "hidden"
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.status = widgets.HTML()
        self.stop_event: threading.Event | None = None
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def cancel(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
            self.status.value = message_html("Cancelling: requests in flight return, the run folder keeps the rest",
                                             "warning")

    def start(self, work: Callable, total: int, runs_dir: str | Path, done: Callable[[object], str | None]) -> None:
        if self.running:
            self.message.value = message_html("a measurement is already running: cancel it first", "warning")
            return
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        before = {p.name for p in runs_dir.glob("*")}
        self.stop_event = threading.Event()
        self.progress.max, self.progress.value = max(1, total), 0
        self.progress.layout.visibility = "visible"
        self.cancel_button.disabled = False
        self.message.value = ""

        def body() -> None:
            try:
                result = work(self.stop_event)
                note = done(result)
            except Exception as exc:  # noqa: BLE001 - the UI edge: every failure becomes a readable message
                mark_stale(self.message, list(self.stale), error_text(exc))
            else:
                self.message.value = message_html(note, "warning") if note else ""
            finally:
                self.progress.value = _records_written(runs_dir, before) or self.progress.value
                self.cancel_button.disabled = True

        if autorun_requested() or not _in_event_loop():
            body()
            return

        def poll() -> None:
            while self.thread is not None and self.thread.is_alive():
                self.progress.value = min(self.progress.max, _records_written(runs_dir, before))
                self.thread.join(POLL_S)

        self.thread = threading.Thread(target=body, name="specdec-measurement", daemon=True)
        self.thread.start()
        threading.Thread(target=poll, name="specdec-progress", daemon=True).start()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
