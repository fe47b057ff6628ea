"""Run folders: every measured request on disk as it completes; summaries recomputed from the raw records.

Layout (``docs/measurement.md`` has the full schema)::

    runs/<UTC stamp>-<kind>/
        metadata.json     endpoint URL (never the key), served model, vLLM version, speculative config,
                          parameters, host, workbook version, status ("running" | "complete" | "interrupted")
        requests.jsonl    one JSON object per finished request (success or error), appended and flushed
        intervals.jsonl   one JSON object per counter interval: the /metrics counters before and after a group
                          of requests (one temperature of a sweep, one load level), and their delta

A resumed run appends to the same files; for an index recorded more than once the last record wins, so a failed
request retried on resume replaces its error. Each line is written in one write and rolled back if the write
fails; a resume finds a last line cut by a kill, sets it aside in ``<file>.cut-<stamp>`` and says so. A run holds
``run.lock`` while it writes, so a resume of a run still going is refused. Run folders started in the same
millisecond get ``-2``, ``-3``, ... suffixes. Percentiles are computed here from the file, never carried over
from the live run, so a summary can always be recomputed and audited (linear interpolation between closest
ranks, numpy's default and ``vllm bench serve``'s).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

RECORD_FIELDS = (
    "index", "label", "prompt_set", "prompt_id", "temperature", "max_tokens", "concurrency", "rate_qps",
    "sent_at_s", "ttft_s", "tpot_s", "e2e_s", "itl_s", "prompt_tokens", "completion_tokens", "chunks",
    "accepted_tokens", "draft_tokens", "acceptance_rate", "acceptance_source", "spec_metrics", "finish_reason",
    "error", "error_kind", "status", "timing_note",
)
OPTIONAL_RECORD_FIELDS = ("timing_note",)  # added later: a record without it is written with None
SECRET_KEYS = ("api_key", "apikey", "authorization", "bearer", "password", "secret")


RUN_LOCK_FILE = "run.lock"
MAX_RUN_ID_ATTEMPTS = 1000


class RunInUseError(ValueError):
    """Another writer (this process or another) holds the run folder: a resume must wait until it has stopped."""


class RecordWriteError(OSError):
    """One line could not be written (disk full, a quota, an I/O error); the file was rolled back to its last
    complete line, so the records already on disk stay readable."""


def _utc_stamp(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"


def _check_no_secrets(obj: Any, where: str) -> None:
    """Refuse to write a field whose name says it holds a credential."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and any(s in k.lower() for s in SECRET_KEYS) and k != "has_api_key":
                raise ValueError(f"{where}: refusing to write field {k!r}: "
                                 "credentials are never stored in a run folder")
            _check_no_secrets(v, where)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_no_secrets(v, where)


def _workbook_version() -> str:
    try:
        from importlib.metadata import version

        return version("specdec-workbook")
    except Exception:
        return "unknown"


def _unique_run_dir(root: Path, stem: str) -> Path:
    """``root/stem``, or ``stem-2``, ``stem-3``, ... when several runs start in the same millisecond (mkdir is
    atomic, so two processes never get the same folder)."""
    for n in range(1, MAX_RUN_ID_ATTEMPTS + 1):
        path = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"{root}: {MAX_RUN_ID_ATTEMPTS} run folders named {stem}*: cannot make another")


def _append_line(path: Path, line: str) -> None:
    """Append one line with a single write; on any failure cut the file back to where it was (no partial line)."""
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise RecordWriteError(exc.errno, f"could not append a line to {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def set_aside_cut_tail(path: Path) -> str | None:
    """If the last line of a JSONL file is cut (no final newline) or not JSON, move it to a named file beside it
    (``<name>.cut-<UTC stamp>``) and truncate the file after its last good line. Returns what was done, or None."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data:
        return None
    body = data[:-1] if data.endswith(b"\n") else data
    cut = body.rfind(b"\n") + 1  # start of the last line
    last = data[cut:]
    if not last.strip():  # a trailing blank line is no record
        return None
    complete = data.endswith(b"\n")
    if complete:
        try:
            json.loads(last.decode("utf-8"))
            return None
        except ValueError:
            pass
    aside = path.with_name(f"{path.name}.cut-{_utc_stamp()}")
    aside.write_bytes(last)
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    why = "cut mid-write (no final newline)" if not complete else "not valid JSON"
    return f"{path}: its last line ({len(last)} bytes) was {why}; set aside in {aside.name}, not appended to"


class RunWriter:
    """Appends records to a run folder; thread-safe; each line is written in one write, fsynced, and rolled back
    if the write fails. Holds ``run.lock`` (an flock) from opening to ``finish``/``close``: a second writer on the
    same folder (a resume while the run still runs) gets ``RunInUseError``.

    ``redact`` (e.g. ``EndpointClient.redact_obj``) is applied to every object before it is written.
    """

    def __init__(self, path: Path, *, redact: Callable[[Any], Any] | None = None):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._redact = redact or (lambda obj: obj)
        if not self.path.is_dir():
            raise ValueError(f"run folder {self.path}: not a directory")
        if not (self.path / "metadata.json").is_file():
            raise ValueError(f"run folder {self.path}: no metadata.json (not a run folder)")
        self.lost_records: list[int] = []  # indices whose record could not be written (disk full, I/O error)
        self._lock_file = _acquire_run_lock(self.path)
        found = (set_aside_cut_tail(self.path / n) for n in ("requests.jsonl", "intervals.jsonl"))
        self.set_aside = tuple(m for m in found if m)

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, kind: str, metadata: dict, *,
               redact: Callable[[Any], Any] | None = None) -> "RunWriter":
        if not kind or not kind.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"kind={kind!r}: use letters, digits, '-' or '_'")
        metadata = (redact or (lambda obj: obj))(metadata)
        _check_no_secrets(metadata, "metadata")
        root = Path(runs_dir)
        if root.exists() and not root.is_dir():
            raise ValueError(f"runs folder {root}: exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        created = datetime.now(timezone.utc)
        path = _unique_run_dir(root, f"{_utc_stamp(created)}-{kind}")
        meta = {
            "run_id": path.name,
            "kind": kind,
            "created_utc": created.isoformat(),
            "host": platform.node(),
            "workbook_version": _workbook_version(),
            "status": "running",
            **metadata,
        }
        (path / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        (path / "requests.jsonl").touch()
        (path / "intervals.jsonl").touch()
        return cls(path, redact=redact)

    @property
    def metadata(self) -> dict:
        return read_metadata(self.path)

    def update_metadata(self, **fields: Any) -> None:
        fields = self._redact(fields)
        _check_no_secrets(fields, "metadata")
        with self._lock:
            meta = self.metadata
            meta.update(fields)
            tmp = self.path / "metadata.json.tmp"
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
            tmp.replace(self.path / "metadata.json")

    def _append(self, name: str, obj: dict) -> None:
        obj = self._redact(obj)
        _check_no_secrets(obj, name)
        line = json.dumps(obj, sort_keys=True, allow_nan=False)
        with self._lock:
            _append_line(self.path / name, line)

    def append_request(self, record: dict) -> None:
        """Write one request record. A record holding a value JSON cannot carry (NaN, Infinity, an object) is
        written as an error record for its index instead; a failed write raises RecordWriteError (that record
        only is lost; the file keeps every earlier line)."""
        record = {**{f: None for f in OPTIONAL_RECORD_FIELDS}, **record}
        missing = [k for k in RECORD_FIELDS if k not in record]
        if missing:
            raise ValueError(f"request record is missing fields {missing}")
        try:
            json.dumps(record, allow_nan=False)
        except (ValueError, TypeError) as exc:
            record = {**{f: None for f in RECORD_FIELDS}, **{f: record.get(f) for f in _IDENTITY_FIELDS},
                      "itl_s": [], "error_kind": "bad_response",
                      "error": f"the answer held a value a record cannot store ({exc}); nothing else was kept"}
        self._append("requests.jsonl", record)

    def append_interval(self, interval: dict) -> None:
        self._append("intervals.jsonl", interval)

    def completed_indices(self) -> set[int]:
        """Indices with a successful record: a resumed run skips these and retries the rest."""
        return {r["index"] for r in latest_records(_read_jsonl(self.path / "requests.jsonl")) if r.get("error") is None}

    def finish(self, status: str) -> None:
        if status not in ("complete", "interrupted", "failed"):
            raise ValueError(f"status={status!r}: expected 'complete', 'interrupted' or 'failed'")
        try:
            self.update_metadata(status=status, finished_utc=datetime.now(timezone.utc).isoformat())
        finally:
            self.close()

    def close(self) -> None:
        """Release the run lock (idempotent)."""
        f, self._lock_file = self._lock_file, None
        if f is not None:
            f.close()  # closing the file releases its flock


_IDENTITY_FIELDS = ("index", "label", "prompt_set", "prompt_id", "temperature", "max_tokens", "concurrency",
                    "rate_qps", "sent_at_s", "e2e_s", "status")


def _acquire_run_lock(path: Path):
    f = open(path / RUN_LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunInUseError(f"run folder {path} is in use by a run still going ({holder}); wait for it to finish "
                            "or stop it, then resume") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {platform.node()} since {datetime.now(timezone.utc).isoformat()}\n")
    f.flush()
    return f


def read_metadata(path: Path) -> dict:
    """A run folder's metadata.json as a dict; ValueError naming the file when it is missing or damaged."""
    meta_path = Path(path) / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"run folder {path}: no metadata.json") from None
    except IsADirectoryError:
        raise ValueError(f"{meta_path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{meta_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _read_jsonl(path: Path, notes: list[str] | None = None) -> list[dict]:
    """The records of a JSONL file. A cut or non-JSON LAST line (a crash mid-write) is skipped and said in
    ``notes``; damage anywhere else, non-UTF-8 text or a record without an integer ``index``/string ``label`` (for
    requests.jsonl) is a ValueError naming the file and line."""
    out = []
    if not path.exists():
        return out
    if not path.is_file():
        raise ValueError(f"{path}: expected a file")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            if i == last:
                if notes is not None:
                    notes.append(f"{path}:{i + 1}: last line cut or not JSON ({len(line)} characters); skipped")
                continue
            raise ValueError(f"{path}:{i + 1}: not valid JSON and not the last line") from None
        if not isinstance(obj, dict) or not (whole_number(obj.get("index")) or path.name != "requests.jsonl") \
                or not isinstance(obj.get("label"), str):
            raise ValueError(f"{path}:{i + 1}: expected an object with an integer 'index' and a string 'label'")
        out.append(obj)
    return out


def whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def latest_records(records: Iterable[dict]) -> list[dict]:
    """One record per index, the last one written (a retry replaces an earlier failure), sorted by index."""
    by_index: dict[int, dict] = {}
    for r in records:
        by_index[r["index"]] = r
    return [by_index[i] for i in sorted(by_index)]


@dataclass(frozen=True)
class Run:
    path: Path
    metadata: dict
    records: tuple[dict, ...]  # one per index (latest)
    raw_records: tuple[dict, ...]  # every line, including replaced attempts
    intervals: tuple[dict, ...]
    notes: tuple[str, ...] = ()  # what reading found and skipped (a cut last line)


def load_run(path: str | os.PathLike) -> Run:
    """A run folder read back. Damage (not a folder, a broken metadata.json, non-UTF-8 or corrupt JSONL) is a
    ValueError naming the file; a cut last line is skipped and said in ``notes``."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"run folder {p}: {'does not exist' if not p.exists() else 'not a directory'}")
    meta = read_metadata(p)
    notes: list[str] = []
    raw = _read_jsonl(p / "requests.jsonl", notes)
    return Run(
        path=p,
        metadata=meta,
        records=tuple(latest_records(raw)),
        raw_records=tuple(raw),
        intervals=tuple(_read_jsonl(p / "intervals.jsonl", notes)),
        notes=tuple(notes),
    )


def percentile(values: Iterable[float], q: float) -> float | None:
    """q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not 0 <= q <= 100:
        raise ValueError(f"q={q}: accepted range is 0..100")
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(records: list[dict], quantiles: tuple[float, ...] = (50, 95, 99)) -> dict:
    """Counts, TTFT/TPOT/ITL/E2E percentiles (seconds) and output throughput of a group of request records."""
    ok = [r for r in records if r.get("error") is None]
    errors = [r for r in records if r.get("error") is not None]
    out: dict[str, Any] = {
        "requests": len(records),
        "succeeded": len(ok),
        "errors": len(errors),
        "timeouts": sum(1 for r in errors if r.get("error_kind") == "timeout"),
        "cancelled": sum(1 for r in errors if r.get("error_kind") == "cancelled"),
        "error_kinds": sorted({r.get("error_kind") or "unknown" for r in errors}),
        "completion_tokens": sum(r.get("completion_tokens") or 0 for r in ok),
    }
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        vals = [r[name] for r in ok if r.get(name) is not None]
        for q in quantiles:
            out[f"{name.removesuffix('_s')}_p{q:g}_s"] = percentile(vals, q)
        out[f"{name.removesuffix('_s')}_mean_s"] = sum(vals) / len(vals) if vals else None
    itl = [x for r in ok for x in (r.get("itl_s") or [])]
    for q in quantiles:
        out[f"itl_p{q:g}_s"] = percentile(itl, q)
    if ok:
        start = min(r["sent_at_s"] for r in ok)
        end = max(r["sent_at_s"] + r["e2e_s"] for r in ok)
        span = end - start
        out["duration_s"] = span
        out["output_tokens_per_s"] = out["completion_tokens"] / span if span > 0 else None
    else:
        out["duration_s"] = None
        out["output_tokens_per_s"] = None
    return out


def acceptance_summary(records: list[dict], intervals: list[dict]) -> dict:
    """Counter-based acceptance (summed over the intervals) and per-request P10/P50/P90 for one group."""
    ok = [r for r in records if r.get("error") is None]
    rates = [r["acceptance_rate"] for r in ok if r.get("acceptance_rate") is not None]
    sources = sorted({r["acceptance_source"] for r in ok if r.get("acceptance_source")})
    deltas = [iv["delta"] for iv in intervals if iv.get("delta") is not None]
    available = any(d.get("available") for d in deltas)
    drafts = sum(d.get("drafts", 0) for d in deltas)
    draft_tokens = sum(d.get("draft_tokens", 0) for d in deltas)
    accepted = sum(d.get("accepted_tokens", 0) for d in deltas)
    k = next((d.get("num_speculative_tokens") for d in deltas if d.get("num_speculative_tokens")), None)
    per_pos: list[int] = []
    for d in deltas:
        for i, a in enumerate(d.get("per_position") or []):
            if i >= len(per_pos):
                per_pos.append(0)
            per_pos[i] += a
    return {
        "intervals": len(deltas),
        "speculation_metrics": available,
        "drafts": drafts,
        "draft_tokens": draft_tokens,
        "accepted_tokens": accepted,
        "num_speculative_tokens": k,
        "per_position_accepted": per_pos,
        "per_request_sources": sources,
        "per_request_rates": len(rates),
        "per_request_p10": percentile(rates, 10),
        "per_request_p50": percentile(rates, 50),
        "per_request_p90": percentile(rates, 90),
    }


def summarise(run: Run) -> dict:
    """Per-label summary of a run, recomputed from requests.jsonl and intervals.jsonl.

    Labels are the groups the run was measured in ("T=0.4", "concurrency=4", "rate=2qps", ...).
    """
    labels: list[str] = []
    for r in run.records:
        if r["label"] not in labels:
            labels.append(r["label"])
    for iv in run.intervals:
        if iv["label"] not in labels:
            labels.append(iv["label"])
    groups = {}
    for label in labels:
        recs = [r for r in run.records if r["label"] == label]
        ivs = [iv for iv in run.intervals if iv["label"] == label]
        temps = sorted({r["temperature"] for r in recs if r.get("temperature") is not None})
        if not temps and ivs and ivs[0].get("temperature") is not None:
            temps = [ivs[0]["temperature"]]
        groups[label] = {
            # one temperature per group in a sweep; a mixed-temperature load level has None here and lists them
            "temperature": temps[0] if len(temps) == 1 else None,
            "temperatures": temps,
            "latency": latency_summary(recs),
            "acceptance": acceptance_summary(recs, ivs),
            "server_requests_finished": sum(iv["delta"].get("requests_finished") or 0 for iv in ivs if iv.get("delta")),
        }
    return {"run_id": run.metadata.get("run_id"), "kind": run.metadata.get("kind"),
            "status": run.metadata.get("status"), "groups": groups}
