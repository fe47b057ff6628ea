"""Run folders: every measured request on disk as it completes; summaries recomputed from the raw records.

Layout (``docs/measurement.md`` has the full schema)::

    runs/<UTC stamp>-<kind>/
        metadata.json     endpoint URL (never the key), served model, vLLM version, speculative config,
                          parameters, host, workbook version, status ("running" | "complete" | "interrupted")
        requests.jsonl    one JSON object per finished request (success or error), appended and flushed
        intervals.jsonl   one JSON object per counter interval: the /metrics counters before and after a group
                          of requests (one temperature of a sweep, one load level), and their delta

A resumed run appends to the same files; for an index recorded more than once the last record wins, so a failed
request retried on resume replaces its error. Percentiles are computed here from the file, never carried over
from the live run, so a summary can always be recomputed and audited (linear interpolation between closest
ranks, numpy's default and ``vllm bench serve``'s).
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

RECORD_FIELDS = (
    "index", "label", "prompt_set", "prompt_id", "temperature", "max_tokens", "concurrency", "rate_qps",
    "sent_at_s", "ttft_s", "tpot_s", "e2e_s", "itl_s", "prompt_tokens", "completion_tokens", "chunks",
    "accepted_tokens", "draft_tokens", "acceptance_rate", "acceptance_source", "spec_metrics", "finish_reason",
    "error", "error_kind", "status",
)
SECRET_KEYS = ("api_key", "apikey", "authorization", "bearer", "password", "secret")


def _utc_stamp(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"


def _check_no_secrets(obj: Any, where: str) -> None:
    """Refuse to write a field whose name says it holds a credential."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and any(s in k.lower() for s in SECRET_KEYS) and k != "has_api_key":
                raise ValueError(f"{where}: refusing to write field {k!r}: credentials are never stored in a run folder")
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


class RunWriter:
    """Appends records to a run folder; thread-safe; each line is flushed and fsynced as it is written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        if not (self.path / "metadata.json").is_file():
            raise ValueError(f"run folder {self.path}: no metadata.json (not a run folder)")

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, kind: str, metadata: dict) -> "RunWriter":
        if not kind or not kind.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"kind={kind!r}: use letters, digits, '-' or '_'")
        _check_no_secrets(metadata, "metadata")
        root = Path(runs_dir)
        root.mkdir(parents=True, exist_ok=True)
        created = datetime.now(timezone.utc)
        path = root / f"{_utc_stamp(created)}-{kind}"
        path.mkdir()
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
        return cls(path)

    @property
    def metadata(self) -> dict:
        return json.loads((self.path / "metadata.json").read_text())

    def update_metadata(self, **fields: Any) -> None:
        _check_no_secrets(fields, "metadata")
        with self._lock:
            meta = self.metadata
            meta.update(fields)
            tmp = self.path / "metadata.json.tmp"
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
            tmp.replace(self.path / "metadata.json")

    def _append(self, name: str, obj: dict) -> None:
        _check_no_secrets(obj, name)
        line = json.dumps(obj, sort_keys=True, allow_nan=False)
        with self._lock, open(self.path / name, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def append_request(self, record: dict) -> None:
        missing = [k for k in RECORD_FIELDS if k not in record]
        if missing:
            raise ValueError(f"request record is missing fields {missing}")
        self._append("requests.jsonl", record)

    def append_interval(self, interval: dict) -> None:
        self._append("intervals.jsonl", interval)

    def completed_indices(self) -> set[int]:
        """Indices with a successful record: a resumed run skips these and retries the rest."""
        return {r["index"] for r in latest_records(_read_jsonl(self.path / "requests.jsonl")) if r.get("error") is None}

    def finish(self, status: str) -> None:
        if status not in ("complete", "interrupted", "failed"):
            raise ValueError(f"status={status!r}: expected 'complete', 'interrupted' or 'failed'")
        self.update_metadata(status=status, finished_utc=datetime.now(timezone.utc).isoformat())


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                # A line cut by a crash mid-write can only be the last one; anything else is corruption.
                rest = f.read().strip()
                if rest:
                    raise ValueError(f"{path}:{n}: not valid JSON and not the last line") from None
    return out


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


def load_run(path: str | os.PathLike) -> Run:
    p = Path(path)
    meta_path = p / "metadata.json"
    if not meta_path.is_file():
        raise ValueError(f"run folder {p}: no metadata.json")
    raw = _read_jsonl(p / "requests.jsonl")
    return Run(
        path=p,
        metadata=json.loads(meta_path.read_text()),
        records=tuple(latest_records(raw)),
        raw_records=tuple(raw),
        intervals=tuple(_read_jsonl(p / "intervals.jsonl")),
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
    return {"run_id": run.metadata.get("run_id"), "kind": run.metadata.get("kind"), "status": run.metadata.get("status"), "groups": groups}
