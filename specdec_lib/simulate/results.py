"""What a simulation returns: per-request times, the batch timeline, and percentile summaries (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from specdec_lib.simulate.config import ServerConfig, SpeculationConfig
from specdec_lib.simulate.workload import Requests


@dataclass(frozen=True)
class Timeline:
    """Batch size over time, one row per segment (a single step, or a stretch of identical-batch decode steps)."""

    start_s: np.ndarray
    duration_s: np.ndarray
    num_steps: np.ndarray
    batch_size: np.ndarray  # sequences scheduled in each step of the segment
    num_running: np.ndarray  # sequences holding a running slot (scheduled or not)
    waiting_seconds: np.ndarray  # integral of the waiting-queue length over the segment (request-seconds)
    num_speculative_tokens: np.ndarray

    def mean_batch_size(self) -> float:
        """Time-weighted mean batch size over the busy time."""
        busy = float(self.duration_s.sum())
        return float((self.batch_size * self.duration_s).sum() / busy) if busy > 0 else 0.0

    def mean_in_system(self, horizon_s: float) -> float:
        """Time-average number of requests in the server (running + waiting) over horizon_s: Little's L."""
        return float(((self.num_running * self.duration_s).sum() + self.waiting_seconds.sum()) / horizon_s)


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: np.ndarray) -> Percentiles:
        v = values[np.isfinite(values)]
        if v.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan)
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        return cls(float(p50), float(p95), float(p99), float(v.mean()))


@dataclass(frozen=True)
class LatencySummary:
    """Seconds. TPOT = (E2E - TTFT) / (output tokens - 1), undefined for one-token outputs (left out)."""

    num_requests: int
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    queue: Percentiles


@dataclass(frozen=True)
class Summary:
    overall: LatencySummary
    by_class: dict[str, LatencySummary]
    duration_s: float  # first arrival to last finish
    output_tokens_per_s: float
    requests_per_s: float
    mean_batch_size: float
    num_preemptions: int


@dataclass(frozen=True)
class SimulationResult:
    requests: Requests
    server: ServerConfig
    speculation: SpeculationConfig | None
    admitted_s: np.ndarray  # first time scheduled
    first_token_s: np.ndarray
    finish_s: np.ndarray
    generated_tokens: np.ndarray
    preemptions: np.ndarray
    timeline: Timeline
    max_kv_tokens: int  # peak KV slots in use during any step (resident + that step's new tokens)
    num_steps: int

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.requests.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        return self.finish_s - self.requests.arrival_s

    @property
    def queue_s(self) -> np.ndarray:
        return self.admitted_s - self.requests.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        n = self.requests.output_tokens
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 1, (self.finish_s - self.first_token_s) / (n - 1), np.nan)

    @property
    def horizon_s(self) -> float:
        return float(self.finish_s.max() - self.requests.arrival_s.min())

    def _latency(self, sel: np.ndarray) -> LatencySummary:
        return LatencySummary(
            num_requests=int(sel.sum()),
            ttft=Percentiles.of(self.ttft_s[sel]),
            tpot=Percentiles.of(self.tpot_s[sel]),
            e2e=Percentiles.of(self.e2e_s[sel]),
            queue=Percentiles.of(self.queue_s[sel]),
        )

    def summary(self) -> Summary:
        everyone = np.ones(self.requests.num_requests, dtype=bool)
        horizon = self.horizon_s
        return Summary(
            overall=self._latency(everyone),
            by_class={
                name: self._latency(self.requests.class_index == i)
                for i, name in enumerate(self.requests.class_names)
                if np.any(self.requests.class_index == i)
            },
            duration_s=horizon,
            output_tokens_per_s=float(self.generated_tokens.sum() / horizon),
            requests_per_s=float(self.requests.num_requests / horizon),
            mean_batch_size=self.timeline.mean_batch_size(),
            num_preemptions=int(self.preemptions.sum()),
        )
