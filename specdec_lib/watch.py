"""``specdec watch``: follow a live vLLM endpoint (or a Prometheus server) over time and flag regressions (I/O).

Every ``interval_s`` the watcher reads vLLM's counters and histograms, either straight from the server's
``/metrics`` (``EndpointSource``, through ``endpoint.EndpointClient``) or from a Prometheus server's HTTP API
(``PrometheusSource``), and appends one record to ``<runs_dir>/<stamp>-watch/intervals.jsonl`` (flushed and
fsynced; ``runs.RunWriter``). Each record holds the cumulative counters it read (so anything can be recomputed),
the last interval's acceptance, and a rolling window's: V1 ratio, α, mean acceptance length and per-position
rates per engine and summed (``metrics.delta``), TPOT/TTFT percentiles from the histograms' deltas
(``histogram_quantile``, Prometheus's interpolation), preemptions, KV usage, waiting requests, and the flags
raised against the plan (``monitoring.WatchPlan``; thresholds from ``monitoring``/``decision``). Ctrl-C stops
the loop between reads and marks the run "interrupted"; what was recorded is already on disk.

A counter that went down (a restart) costs one interval: the record says "reset" and the window starts again.
A failed read costs one record (kind "error") and the watch goes on.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from specdec_lib import decision, metrics, monitoring, runs, speculation
from specdec_lib.endpoint import EndpointClient, EndpointError

HISTOGRAMS = {"tpot_s": monitoring.TPOT_HIST, "ttft_s": monitoring.TTFT_HIST}
QUANTILES = (0.5, 0.9, 0.99)
POSITION_DRIFT_MAX = 0.10  # a per-position rate moving more than 10 points from the first window: drift (assumed)


class WatchError(RuntimeError):
    """A read that failed: the URL and what went wrong (never a credential)."""


def redact_url(url: str) -> str:
    """The URL without ``user:password@``: what may appear in a record, a message or a repr."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, "***@" + netloc, parts.path, parts.query, parts.fragment))


# ------------------------------------------------------------------------------------------- histograms
@dataclass(frozen=True)
class Histogram:
    """Cumulative buckets ``(upper bound, count)`` sorted by bound, the last one +Inf; summed over engines."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def minus(self, before: "Histogram") -> "Histogram":
        """Bucket-wise difference; raises metrics.CounterResetError when a bucket went down (a restart)."""
        old = dict(before.buckets)
        out = []
        for le, c in self.buckets:
            d = c - old.get(le, 0.0)
            if d < 0:
                raise metrics.CounterResetError(f"histogram bucket le={le} went from {old[le]} to {c}: restart")
            out.append((le, d))
        return Histogram(tuple(out))


def histogram_quantile(q: float, h: Histogram) -> float | None:
    """The q-quantile as Prometheus's ``histogram_quantile`` computes it (promql/quantile.go, v2.42).

    Linear interpolation inside the bucket holding rank q·count, the lowest bucket starting at 0; a rank in the
    +Inf bucket returns the highest finite bound. None with no observations (Prometheus: NaN).
    """
    if not 0 <= q <= 1:
        raise ValueError(f"q={q!r}: expected a quantile in [0, 1]")
    b = h.buckets
    if len(b) < 2 or not math.isinf(b[-1][0]) or b[-1][1] == 0:
        return None
    rank = q * b[-1][1]
    i = next(i for i, (_, c) in enumerate(b) if c >= rank)
    if i == len(b) - 1:
        return b[-2][0]
    if i == 0 and b[0][0] <= 0:
        return b[0][0]
    start, end, count = 0.0, b[i][0], b[i][1]
    if i > 0:
        start = b[i - 1][0]
        count -= b[i - 1][1]
        rank -= b[i - 1][1]
    return start + (end - start) * (rank / count) if count else start


# ------------------------------------------------------------------------------------------- one reading
@dataclass(frozen=True)
class Reading:
    """What one read returns: the counters (as ``metrics.Snapshot``), histograms, and scheduler gauges."""

    t_s: float
    snapshot: metrics.Snapshot
    histograms: dict[str, Histogram]
    preemptions: float | None
    kv_cache_usage: float | None  # max over engines, a fraction
    waiting: float | None         # summed over engines


def _histograms_and_gauges(text: str) -> tuple[dict[str, Histogram], dict[str, float]]:
    hist: dict[str, dict[float, float]] = {k: {} for k in HISTOGRAMS}
    names = {v + "_bucket": k for k, v in HISTOGRAMS.items()}
    gauges: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in names:
                le = float(s.labels["le"])
                slot = hist[names[s.name]]
                slot[le] = slot.get(le, 0.0) + s.value
            elif s.name == monitoring.PREEMPTIONS:
                gauges["preemptions"] = gauges.get("preemptions", 0.0) + s.value
            elif s.name == monitoring.KV_USAGE:
                gauges["kv"] = max(gauges.get("kv", 0.0), s.value)
            elif s.name == monitoring.WAITING:
                gauges["waiting"] = gauges.get("waiting", 0.0) + s.value
    return {k: Histogram(tuple(sorted(v.items()))) for k, v in hist.items() if v}, gauges


def reading_from_text(text: str, t_s: float) -> Reading:
    """Parse one ``/metrics`` text: counters through ``metrics.parse_metrics``, histograms and gauges here."""
    snap = metrics.parse_metrics(text)
    try:
        hist, g = _histograms_and_gauges(text)
    except (KeyError, ValueError) as exc:  # a bucket without a numeric "le" label
        raise metrics.MetricsError(f"histogram bucket without a numeric 'le' label: {exc}") from None
    return Reading(t_s, snap, hist, g.get("preemptions"), g.get("kv"), g.get("waiting"))


class EndpointSource:
    """Reads a vLLM server's ``/metrics`` through ``EndpointClient`` (the key stays inside the client)."""

    def __init__(self, client: EndpointClient):
        self.client = client
        self.description = f"endpoint {redact_url(client.base_url)}/metrics"

    def read(self) -> Reading:
        text = self.client.metrics_text()
        try:
            return reading_from_text(text, time.monotonic())
        except metrics.MetricsError as exc:
            raise WatchError(f"{redact_url(self.client.url('/metrics'))}: malformed /metrics payload: {exc}") from None


class PrometheusSource:
    """Reads the same numbers from a Prometheus server's HTTP API (``/api/v1/query``, latest samples).

    Engines are told apart by ``instance`` and ``engine``: the key becomes ``"<instance>/<engine>"``.
    Counters are read as each series' last sample within ``BRIDGE`` (``last_over_time``): a scrape that failed
    (a stalled or busy server) marks its series stale, and a plain instant query would drop that engine for a read,
    which the window would take for a restart and start again; a real restart still shows as a counter that went
    down.
    """

    BRIDGE = "5m"  # Prometheus's default lookback: a series missing longer than this is gone

    def __init__(self, url: str, model_name: str | None = None, timeout_s: float = 10.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus url={url!r}: expected http(s)://host:port")
        self.url = url.rstrip("/")
        self.sel = monitoring.selector(monitoring.WatchPlan(1, model_name=model_name))
        self.timeout_s = timeout_s
        self.description = f"prometheus {redact_url(self.url)}"

    def query(self, expr: str) -> list[dict]:
        url = redact_url(self.url) + "/api/v1/query"
        try:
            resp = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=self.timeout_s)
            body = resp.json()
        except (requests.RequestException, ValueError) as exc:
            detail = str(exc).replace(self.url, redact_url(self.url))[:200]
            raise WatchError(f"{url}: {type(exc).__name__}: {detail}") from None
        if resp.status_code != 200 or body.get("status") != "success":
            raise WatchError(f"{url} query {expr!r}: HTTP {resp.status_code}: {str(body.get('error'))[:200]}")
        if body["data"]["resultType"] != "vector":
            raise WatchError(f"{url} query {expr!r}: expected an instant vector, got {body['data']['resultType']}")
        return body["data"]["result"]

    def _by_engine(self, name: str, extra: tuple[str, ...] = ()) -> dict[tuple, float]:
        by = ", ".join(("instance", "engine", "model_name", *extra))
        out = {}
        for r in self.query(f"sum by ({by}) (last_over_time({name}{self.sel}[{self.BRIDGE}]))"):
            m = r["metric"]
            key = (f"{m.get('instance', '')}/{m.get('engine', '')}", m.get("model_name", ""),
                   *(m.get(x, "") for x in extra))
            out[key] = float(r["value"][1])
        return out

    def read(self) -> Reading:
        drafts = self._by_engine(monitoring.DRAFTS)
        tokens = self._by_engine(monitoring.DRAFT_TOKENS)
        accepted = self._by_engine(monitoring.ACCEPTED)
        per_pos = self._by_engine(monitoring.ACCEPTED_PER_POS, ("position",))
        engines = []
        for key in sorted(drafts):
            pos = sorted((int(p), v) for (e, mn, p), v in per_pos.items() if (e, mn) == key)
            engines.append(metrics.EngineCounters(key[0], key[1], int(drafts[key]), int(tokens.get(key, 0)),
                                                  int(accepted.get(key, 0)), tuple(int(v) for _, v in pos)))
        snap = metrics.Snapshot(families=frozenset(), spec_engines=tuple(engines), v0_acceptance_rate=None,
                                v0_efficiency=None, request_success={}, generation_tokens=None, prompt_tokens=None)
        hist = {}
        for key, name in HISTOGRAMS.items():
            rows = self.query(f"sum by (le) (last_over_time({name}_bucket{self.sel}[{self.BRIDGE}]))")
            if rows:
                hist[key] = Histogram(tuple(sorted((float(r["metric"]["le"]), float(r["value"][1])) for r in rows)))

        def scalar(expr: str) -> float | None:
            rows = self.query(expr)
            return float(rows[0]["value"][1]) if rows else None

        preemptions = f"sum(last_over_time({monitoring.PREEMPTIONS}{self.sel}[{self.BRIDGE}]))"
        return Reading(time.monotonic(), snap, hist, scalar(preemptions),
                       scalar(f"max({monitoring.KV_USAGE}{self.sel})"), scalar(f"sum({monitoring.WAITING}{self.sel})"))


# ------------------------------------------------------------------------------------------- one record
def _acceptance(d: metrics.SpecDelta, k: int) -> dict:
    def one(e_drafts, e_tokens, e_acc, e_pos) -> dict:
        rate = e_acc / e_tokens if e_tokens else None
        return {"drafts": e_drafts, "draft_tokens": e_tokens, "accepted_tokens": e_acc,
                "accepted_per_position": list(e_pos), "v1_rate": rate,
                "alpha": None if rate is None else speculation.alpha_from_v1_rate(min(rate, 1.0), k),
                "mean_acceptance_length": 1 + e_acc / e_drafts if e_drafts else None,
                "per_position_rates": [a / e_drafts for a in e_pos] if e_drafts else None}

    out = one(d.drafts, d.draft_tokens, d.accepted_tokens, d.per_position)
    out["per_engine"] = {e.engine: one(e.drafts, e.draft_tokens, e.accepted_tokens, e.accepted_per_position)
                         for e in d.per_engine}
    return out


def _latency(before: Reading, after: Reading) -> dict:
    out = {}
    for key in HISTOGRAMS:
        if key in after.histograms and key in before.histograms:
            h = after.histograms[key].minus(before.histograms[key])
            out[key] = {"count": h.count, **{f"p{round(q * 100)}": histogram_quantile(q, h) for q in QUANTILES}}
    return out


def flags(window: dict, plan: monitoring.WatchPlan, k_server: int | None, baseline_positions: list | None) -> list:
    """Regressions of one window against the plan (thresholds from ``monitoring``/``decision``)."""
    out = []
    if k_server is not None and k_server != plan.num_speculative_tokens:
        out.append(f"k_mismatch: the server drafts {k_server} tokens, the plan {plan.num_speculative_tokens}")
    acc = window.get("acceptance") or {}
    alpha = acc.get("alpha")
    if alpha is not None:
        if alpha < decision.ALPHA_OFF_BELOW:
            out.append(f"acceptance_off: alpha {alpha:.3f} < {decision.ALPHA_OFF_BELOW}")
        elif alpha <= decision.ALPHA_WIN_ABOVE:
            out.append(f"acceptance_break_even: alpha {alpha:.3f} in [{decision.ALPHA_OFF_BELOW}, "
                       f"{decision.ALPHA_WIN_ABOVE}]")
    engines = acc.get("per_engine") or {}
    if len(engines) > 1:  # one bad engine can hide in a healthy sum
        for name, e in sorted(engines.items()):
            if e.get("alpha") is not None and e["alpha"] < decision.ALPHA_OFF_BELOW:
                out.append(f"engine_acceptance_off[{name}]: alpha {e['alpha']:.3f} < {decision.ALPHA_OFF_BELOW}")
    rates = acc.get("per_position_rates")
    if rates and baseline_positions and len(rates) == len(baseline_positions):
        drift = max(abs(a - b) for a, b in zip(rates, baseline_positions))
        if drift > POSITION_DRIFT_MAX:
            out.append(f"position_drift: a per-position rate moved {drift:.3f} from the first window")
    for key, plan_s in (("tpot_s", plan.p99_tpot_s), ("ttft_s", plan.p99_ttft_s)):
        p99 = (window.get("latency", {}).get(key) or {}).get("p99")
        if plan_s is not None and p99 is not None and p99 > plan_s * (1 + plan.latency_tolerance):
            out.append(f"{key[:4]}_p99_regression: {p99 * 1e3:.1f} ms > plan {plan_s * 1e3:.1f} ms "
                       f"+ {plan.latency_tolerance:.0%}")
    if (window.get("preemptions") or 0) > 0:
        out.append(f"preemptions: {window['preemptions']:g} in the window")
    kv = window.get("kv_cache_usage")
    if kv is not None and kv > plan.kv_cache_usage_max:
        out.append(f"kv_cache_pressure: {kv:.0%} > {plan.kv_cache_usage_max:.0%}")
    return out


def _counters(r: Reading) -> dict:
    return {"engines": [{"engine": e.engine, "model_name": e.model_name, "drafts": e.drafts,
                         "draft_tokens": e.draft_tokens, "accepted_tokens": e.accepted_tokens,
                         "accepted_per_position": list(e.accepted_per_position)} for e in r.snapshot.spec_engines],
            "histograms": {k: [[("+Inf" if math.isinf(le) else le), c] for le, c in h.buckets]
                           for k, h in r.histograms.items()},
            "preemptions": r.preemptions, "kv_cache_usage": r.kv_cache_usage, "waiting": r.waiting}


def _window(before: Reading, after: Reading, plan: monitoring.WatchPlan) -> tuple[dict, int | None]:
    d = metrics.delta(before.snapshot, after.snapshot)
    k_server = d.num_speculative_tokens
    k = k_server or plan.num_speculative_tokens
    preempt = None
    if after.preemptions is not None and before.preemptions is not None:
        preempt = after.preemptions - before.preemptions
    if preempt is not None and preempt < 0:
        raise metrics.CounterResetError("vllm:num_preemptions_total went down: restart")
    return {"span_s": after.t_s - before.t_s, "acceptance": _acceptance(d, k) if d.available else None,
            "latency": _latency(before, after), "preemptions": preempt, "kv_cache_usage": after.kv_cache_usage,
            "waiting": after.waiting}, k_server


# ------------------------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class WatchResult:
    run_path: object
    records: int
    status: str  # "complete" | "interrupted"


def watch(source, plan: monitoring.WatchPlan, *, runs_dir, duration_s: float, interval_s: float = 10.0,
          window_s: float = 60.0, stop_event: threading.Event | None = None,
          on_record: Callable[[dict], None] | None = None) -> WatchResult:
    """Watch until ``duration_s`` passes, ``stop_event`` is set or Ctrl-C; one record per read, on disk at once."""
    if not (duration_s > 0 and interval_s > 0 and window_s >= interval_s):
        raise ValueError(f"duration_s={duration_s}, interval_s={interval_s}, window_s={window_s}: need positive "
                         "numbers with window_s >= interval_s")
    writer = runs.RunWriter.create(runs_dir, "watch", {
        "source": source.description, "plan": {k: v for k, v in plan.__dict__.items()},
        "interval_s": interval_s, "window_s": window_s, "duration_s": duration_s,
        "thresholds": [t.__dict__ for t in monitoring.thresholds(plan)]})
    stop_event = stop_event or threading.Event()
    start = time.monotonic()
    history: deque[Reading] = deque()
    baseline_positions = None
    n = 0
    status = "complete"
    try:
        while not stop_event.is_set():
            # every record of a run folder carries a string label (runs.py's contract; summaries group by it)
            record: dict = {"n": n, "label": "watch", "utc": datetime.now(timezone.utc).isoformat(),
                            "elapsed_s": time.monotonic() - start}
            try:
                r = source.read()
                record["counters"] = _counters(r)
                if history:
                    interval, _ = _window(history[-1], r, plan)
                    while len(history) > 1 and r.t_s - history[1].t_s >= window_s:
                        history.popleft()
                    window, k_server = _window(history[0], r, plan)
                    acc = window["acceptance"]
                    if baseline_positions is None and acc and acc["drafts"] and window["span_s"] >= window_s:
                        baseline_positions = acc["per_position_rates"]
                    record.update(kind="tick", interval=interval, window=window,
                                  flags=flags(window, plan, k_server, baseline_positions))
                else:
                    record.update(kind="first", flags=[])
                history.append(r)
            except metrics.CounterResetError as exc:
                history.clear()
                history.append(r)
                record.update(kind="reset", detail=str(exc), flags=[])
            except (EndpointError, WatchError, metrics.MetricsError) as exc:
                record.update(kind="error", detail=str(exc), flags=[])
            writer.append_interval(record)
            n += 1
            if on_record is not None:
                on_record(record)
            remaining = duration_s - (time.monotonic() - start)
            if remaining <= 0:
                break
            stop_event.wait(min(interval_s, remaining))
        else:
            status = "interrupted"
    except KeyboardInterrupt:
        status = "interrupted"
    writer.finish(status)
    return WatchResult(writer.path, n, status)


def load_watch(path):
    """A watch run folder as a pandas DataFrame, one row per record (window figures flattened)."""
    import pandas as pd

    run = runs.load_run(path)
    rows = []
    for rec in run.intervals:
        w = rec.get("window") or {}
        acc = w.get("acceptance") or {}
        lat = w.get("latency") or {}
        row = {"n": rec["n"], "utc": rec["utc"], "elapsed_s": rec["elapsed_s"], "kind": rec["kind"],
               "v1_rate": acc.get("v1_rate"), "alpha": acc.get("alpha"),
               "mean_acceptance_length": acc.get("mean_acceptance_length"),
               "flags": "; ".join(rec.get("flags") or [])}
        for key in HISTOGRAMS:
            for q in QUANTILES:
                row[f"{key[:-2]}_p{round(q * 100)}_s"] = (lat.get(key) or {}).get(f"p{round(q * 100)}")
        for i, v in enumerate(acc.get("per_position_rates") or []):
            row[f"position_{i}_rate"] = v
        for engine, e in (acc.get("per_engine") or {}).items():
            row[f"alpha[{engine}]"] = e.get("alpha")
        rows.append(row)
    return run.metadata, pd.DataFrame(rows)
