"""With and without speculation, QPS sweeps, and validation of the simulation against a measured run (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from specdec_lib.simulate.config import ServerConfig, SpeculationConfig
from specdec_lib.simulate.engine import simulate
from specdec_lib.simulate.results import Summary
from specdec_lib.simulate.steptime import AffineStepTime, StepTimeFn
from specdec_lib.simulate.workload import Requests, Workload, make_requests, requests_from_records


@dataclass(frozen=True)
class Comparison:
    """The same requests through a baseline server and a speculative one (their own KV capacities)."""

    qps: float | None
    baseline: Summary
    speculative: Summary

    def ratio(self, metric: str = "e2e", stat: str = "p99", traffic_class: str | None = None) -> float:
        """speculative / baseline for a latency metric ("ttft", "tpot", "e2e", "queue") and stat; < 1 = faster."""
        return _stat(self.speculative, metric, stat, traffic_class) / _stat(self.baseline, metric, stat, traffic_class)


_METRICS = ("ttft", "tpot", "e2e", "queue")
_STATS = ("p50", "p95", "p99", "mean")


def _stat(summary: Summary, metric: str, stat: str, traffic_class: str | None) -> float:
    if metric not in _METRICS:
        raise ValueError(f"metric = {metric!r}; expected one of {_METRICS}")
    if stat not in _STATS:
        raise ValueError(f"stat = {stat!r}; expected one of {_STATS}")
    if traffic_class is None:
        latency = summary.overall
    elif traffic_class in summary.by_class:
        latency = summary.by_class[traffic_class]
    else:
        raise ValueError(f"traffic_class = {traffic_class!r}; expected one of {sorted(summary.by_class)}")
    return getattr(getattr(latency, metric), stat)


def compare(
    requests: Requests,
    step_time_fn: StepTimeFn | Callable[..., Any],
    speculation: SpeculationConfig,
    *,
    baseline_server: ServerConfig,
    speculative_server: ServerConfig | None = None,
    qps: float | None = None,
    seed: int = 0,
) -> Comparison:
    """Simulate `requests` without and with speculation. A draft model's KV shares the budget, so the speculative
    server usually has a smaller `kv_capacity_tokens` (the memory planner's figure with the draft)."""
    base = simulate(requests, baseline_server, step_time_fn, None, seed=seed)
    spec = simulate(requests, speculative_server or baseline_server, step_time_fn, speculation, seed=seed)
    return Comparison(qps=qps, baseline=base.summary(), speculative=spec.summary())


@dataclass(frozen=True)
class Sweep:
    points: tuple[Comparison, ...]

    def rows(self, traffic_class: str | None = None) -> list[dict[str, float | None]]:
        """One flat dict per QPS (seconds; keys like "baseline_e2e_p99_s"), for tables and plots."""
        out = []
        for p in self.points:
            row: dict[str, float | None] = {"qps": p.qps}
            for side, summary in (("baseline", p.baseline), ("speculative", p.speculative)):
                row[f"{side}_mean_batch_size"] = summary.mean_batch_size
                row[f"{side}_output_tokens_per_s"] = summary.output_tokens_per_s
                for metric in _METRICS:
                    for stat in _STATS:
                        row[f"{side}_{metric}_{stat}_s"] = _stat(summary, metric, stat, traffic_class)
            out.append(row)
        return out

    def statement(self, metric: str = "e2e") -> str:
        """One sentence: at which simulated QPS speculation lowers P50 and P99 of `metric`, and where it stops."""
        qps = [p.qps for p in self.points]
        helps50 = [p.ratio(metric, "p50") < 1 for p in self.points]
        helps99 = [p.ratio(metric, "p99") < 1 for p in self.points]
        label = {"e2e": "end-to-end latency", "tpot": "TPOT", "ttft": "TTFT", "queue": "queueing time"}[metric]

        def phrase(flags: list[bool]) -> str:
            if all(flags):
                return f"is lower at every load simulated ({_qps(qps[0])} to {_qps(qps[-1])} QPS)"
            if not any(flags):
                return f"is higher at every load simulated ({_qps(qps[0])} to {_qps(qps[-1])} QPS)"
            first_bad = flags.index(False)
            if first_bad == 0:
                good = [_qps(q) for q, f in zip(qps, flags) if f]
                return f"is higher at {_qps(qps[0])} QPS and lower only at {', '.join(good)} QPS"
            tail = " (and lower again at some higher loads)" if any(flags[first_bad:]) else ""
            last_good, first_bad_qps = _qps(qps[first_bad - 1]), _qps(qps[first_bad])
            return f"is lower up to {last_good} QPS and stops helping by {first_bad_qps} QPS{tail}"

        return f"For this mix, with speculation P50 {label} {phrase(helps50)}, while P99 {label} {phrase(helps99)}."


def _qps(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def sweep_qps(
    workload: Workload,
    qps_values: Sequence[float],
    step_time_fn: StepTimeFn | Callable[..., Any],
    speculation: SpeculationConfig,
    *,
    baseline_server: ServerConfig,
    speculative_server: ServerConfig | None = None,
    num_requests: int = 2000,
    seed: int = 0,
) -> Sweep:
    """compare() at each QPS (ascending); the same classes and lengths at every QPS, only arrivals rescale."""
    values = sorted(float(q) for q in qps_values)
    if not values or values[0] <= 0:
        raise ValueError(f"qps_values = {list(qps_values)!r}; expected a non-empty list of QPS > 0")
    points = []
    for q in values:
        reqs = make_requests(workload, num_requests=num_requests, qps=q, seed=seed)
        points.append(
            compare(
                reqs,
                step_time_fn,
                speculation,
                baseline_server=baseline_server,
                speculative_server=speculative_server,
                qps=q,
                seed=seed,
            )
        )
    return Sweep(tuple(points))


@dataclass(frozen=True)
class ValidationRow:
    metric: str  # "ttft", "tpot", "e2e"
    stat: str  # "p50", "p99"
    measured_s: float
    simulated_s: float

    @property
    def relative_error(self) -> float:
        """(simulated - measured) / measured."""
        return (self.simulated_s - self.measured_s) / self.measured_s


@dataclass(frozen=True)
class Validation:
    num_requests: int
    step_time: AffineStepTime
    request_overhead_s: float
    rows: tuple[ValidationRow, ...]
    simulated_mean_batch_size: float

    def error(self, metric: str, stat: str) -> float:
        for row in self.rows:
            if row.metric == metric and row.stat == stat:
                return row.relative_error
        raise ValueError(f"metric/stat = {metric}/{stat}; expected one of ttft/tpot/e2e x p50/p99")


def validate_against_run(
    measured_records: Iterable[Mapping[str, Any]],
    server: ServerConfig,
    step_time: AffineStepTime,
    *,
    request_overhead_s: float = 0.0,
    speculation: SpeculationConfig | None = None,
    alpha: float = 0.0,
    seed: int = 0,
) -> Validation:
    """Replay a measured open-loop run through the simulation and compare P50/P99 of TTFT, TPOT and E2E.

    The replay uses each request's own send time and token counts (`requests_from_records`); the simulated TTFT and
    E2E get `request_overhead_s` added (the client-side time outside engine steps, from `calibrate_from_records`).
    Percentiles of both sides use numpy's linear interpolation (as runs.py and `vllm bench serve` do).
    """
    records = [r for r in measured_records if not r.get("error")]
    reqs = requests_from_records(records, alpha=alpha)
    result = simulate(reqs, server, step_time, speculation, seed=seed)
    ordered = sorted(records, key=lambda r: r["sent_at_s"])
    rows = []
    simulated_by_metric = (
        ("ttft", result.ttft_s + request_overhead_s),
        ("tpot", result.tpot_s),
        ("e2e", result.e2e_s + request_overhead_s),
    )
    for metric, simulated in simulated_by_metric:
        measured = np.array([np.nan if r.get(f"{metric}_s") is None else float(r[f"{metric}_s"]) for r in ordered])
        for stat, q in (("p50", 50), ("p99", 99)):
            rows.append(
                ValidationRow(
                    metric, stat, float(np.nanpercentile(measured, q)), float(np.nanpercentile(simulated, q))
                )
            )
    return Validation(reqs.num_requests, step_time, request_overhead_s, tuple(rows), result.timeline.mean_batch_size())
