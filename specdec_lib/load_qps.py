"""Request rate <-> running batch (pure): the load half of the load model, split out of ``load.py``.

Little's law gives the mean running batch at a request rate: B = QPS × E2E(B), E2E = prefill + output_tokens ·
TPOT(B) / (1 − ρ_prefill), solved consistently by bisection, with TPOT(B) from ``load``'s step model. Here:
``Workload``, ``prefill_time_s``, ``batch_from_qps`` (``BatchAtLoad``), ``capacity_qps``, ``speedup_at_qps``
(``QpsResult``) and ``crossover_qps``.

``load`` re-exports every public name of this module (``load.crossover_qps`` etc., through its module
``__getattr__``), so callers written before the split keep working; this module imports from ``load``, never the
other way round at import time, so there is no import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from . import speculation
from .load import (
    Deployment,
    _positive_int,
    _spec_step_at,
    _target_step_at,
    _target_step_s,
    positive_number,
    step_time_s,
)

__all__ = [
    "Workload", "BatchAtLoad", "QpsResult",
    "prefill_time_s", "batch_from_qps", "capacity_qps", "speedup_at_qps", "crossover_qps",
]


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        _positive_int("prompt_tokens", self.prompt_tokens)
        _positive_int("output_tokens", self.output_tokens)

    @property
    def mean_context_len(self) -> int:
        """Mean context over a request's decode: prompt + half the output."""
        return self.prompt_tokens + self.output_tokens // 2


def prefill_time_s(dep: Deployment, prompt_tokens: int) -> float:
    """One request's prefill on the target (and the draft, which must also prefill): q = prompt, context 0."""
    t = _target_step_s(dep, 1, prompt_tokens, 0)
    if dep.method == "draft_model":
        t += step_time_s(dep.draft, dep.draft_precision, dep.gpu, dep.draft_tp, 1, prompt_tokens, 0, dep.factors,
                         kv_dtype_bytes=dep.kv_dtype_bytes)
    elif dep.method == "eagle":
        t += step_time_s(replace(dep.target, num_layers=1), dep.target_precision, dep.gpu, dep.tp, 1,
                         prompt_tokens, 0, dep.factors, kv_dtype_bytes=dep.kv_dtype_bytes)
    return t


@dataclass(frozen=True)
class BatchAtLoad:
    """The steady state at a request rate: running batch, latencies, and whether the server keeps up."""

    qps: float
    speculative: bool
    batch_size: float  # mean running batch (Little's law)
    tpot_s: float
    e2e_s: float  # prefill + decode, no queueing; inf when saturated
    prefill_utilisation: float  # share of GPU time spent on prefills
    saturated: bool  # the rate exceeds what max_batch sequences can sustain: a queue grows without bound
    capacity_qps: float  # requests per second at max_batch
    assumptions: tuple[str, ...]


def _tpot_at(dep: Deployment, wl: Workload, speculative: bool, alpha: float, k: int):
    """b -> time per output token at a running batch of b (built once per bisection: the hot path)."""
    ctx = wl.mean_context_len
    if speculative:
        e = speculation.expected_tokens_per_step(alpha, k)
        step = _spec_step_at(dep, k, ctx)

        def tpot(b: float) -> float:
            draft, verify = step(b)
            return (draft + verify) / e
        return tpot
    return _target_step_at(dep, 1, ctx)


def batch_from_qps(dep: Deployment, qps: float, workload: Workload, *, speculative: bool, alpha: float = 0.0,
                   k: int = 1, max_batch: int = 256) -> BatchAtLoad:
    """Solve B = QPS × E2E(B) (Little's law) with E2E(B) = prefill + output_tokens × TPOT(B) / (1 − ρ_prefill).

    ρ_prefill = QPS × prefill time: the share of GPU time taken by prefills, which continuous batching interleaves
    with decode steps and so stretches every step. Bisection on B in [0, max_batch]; if even max_batch sequences
    cannot keep up (or prefills alone fill the GPU) the result is ``saturated`` and E2E is infinite (the queue
    grows). ``max_batch`` stands for vLLM's max_num_seqs or the KV-cache limit, whichever is smaller.
    """
    qps = positive_number("qps", qps)
    _positive_int("max_batch", max_batch)
    pre = prefill_time_s(dep, workload.prompt_tokens)
    cap = capacity_qps(dep, workload, speculative=speculative, alpha=alpha, k=k, max_batch=max_batch)
    return _batch_at(qps, workload, speculative, alpha, k, max_batch, pre, cap,
                     _tpot_at(dep, workload, speculative, alpha, k))


def _batch_at(qps: float, workload: Workload, speculative: bool, alpha: float, k: int, max_batch: int, pre: float,
              cap: float, tpot_at) -> BatchAtLoad:
    """``batch_from_qps`` given what does not depend on the rate (prefill, capacity, TPOT as a function of the
    batch): a rate scan computes those once."""
    qps = positive_number("qps", qps)
    rho = qps * pre

    assumptions = (
        f"Little's law B = QPS × E2E(B); prompt {workload.prompt_tokens}, output {workload.output_tokens} tokens; "
        f"prefill {pre * 1e3:.1f} ms per request takes {rho:.0%} of GPU time",
        f"running batch capped at {max_batch} (vLLM max_num_seqs / KV capacity); no queueing below saturation "
        "(mean values, not a queueing-theory tail)",
        ("speculative: α = %.3f, k = %d" % (alpha, k)) if speculative else "baseline: no speculation",
    )
    if rho >= 1:
        return BatchAtLoad(qps, speculative, float(max_batch), math.inf, math.inf, rho, True, cap, assumptions)

    def g(b: float) -> float:
        return qps * (pre + workload.output_tokens * tpot_at(b) / (1 - rho)) - b

    if g(max_batch) > 0:
        tpot = tpot_at(max_batch) / (1 - rho)
        return BatchAtLoad(qps, speculative, float(max_batch), tpot, math.inf, rho, True, cap, assumptions)
    lo, hi = 0.0, float(max_batch)  # g(0) > 0 >= g(max_batch)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if g(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9 * max(1.0, hi):
            break
    b = hi
    tpot = tpot_at(b) / (1 - rho)
    return BatchAtLoad(qps, speculative, b, tpot, pre + workload.output_tokens * tpot, rho, False, cap, assumptions)


def capacity_qps(dep: Deployment, workload: Workload, *, speculative: bool, alpha: float = 0.0, k: int = 1,
                 max_batch: int = 256) -> float:
    """The highest request rate with a steady state: λ with λ · (prefill + output · TPOT(max_batch) / (1 − λ ·
    prefill)) = max_batch (the same Little's-law model as ``batch_from_qps``, at the batch cap); bisection."""
    _positive_int("max_batch", max_batch)
    pre = prefill_time_s(dep, workload.prompt_tokens)
    decode = workload.output_tokens * _tpot_at(dep, workload, speculative, alpha, k)(max_batch)

    def h(lam: float) -> float:
        return lam * (pre + decode / (1 - lam * pre)) - max_batch

    lo, hi = 0.0, 1.0 / pre
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if h(mid) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return lo


@dataclass(frozen=True)
class QpsResult:
    qps: float
    speedup: float  # baseline E2E / speculative E2E; 0 when only speculation saturates; capacity ratio if both do
    baseline: BatchAtLoad
    speculative: BatchAtLoad
    assumptions: tuple[str, ...]


def speedup_at_qps(dep: Deployment, qps: float, workload: Workload, alpha: float, k: int,
                   max_batch: int = 256) -> QpsResult:
    """Speculation versus baseline at one request rate, each at its own consistent running batch.

    Below saturation: ratio of mean E2E latencies. When only speculation saturates its latency grows without
    bound (speedup 0); when only the baseline does, speculation wins without bound (inf); when both do, the ratio
    of their capacities (the rates at which they drain a queue)."""
    base = batch_from_qps(dep, qps, workload, speculative=False, max_batch=max_batch)
    spec = batch_from_qps(dep, qps, workload, speculative=True, alpha=alpha, k=k, max_batch=max_batch)
    return _speedup_of(qps, base, spec)


def _speedup_of(qps: float, base: BatchAtLoad, spec: BatchAtLoad) -> QpsResult:
    if base.saturated and spec.saturated:
        s, how = (spec.capacity_qps / base.capacity_qps if base.capacity_qps > 0 else math.nan), "capacity ratio"
    elif spec.saturated:
        s, how = 0.0, "speculation saturates, the baseline does not"
    elif base.saturated:
        s, how = math.inf, "the baseline saturates, speculation does not"
    else:
        s, how = base.e2e_s / spec.e2e_s, "ratio of mean E2E latencies"
    return QpsResult(qps, s, base, spec, (f"speedup at QPS {qps:g}: {how}", *spec.assumptions))


def crossover_qps(dep: Deployment, workload: Workload, alpha: float, k: int, *, max_batch: int = 256,
                  qps_max: float | None = None) -> float | None:
    """Lowest QPS at which speculation stops paying (speedup ≤ 1), by a scan then bisection; None if it pays up to
    ``qps_max`` (default: the baseline's capacity)."""
    if qps_max is None:
        probe = batch_from_qps(dep, 1e-6, workload, speculative=False, max_batch=max_batch)
        qps_max = probe.capacity_qps
    qps_max = positive_number("qps_max", qps_max)

    # speedup_at_qps(dep, q, workload, alpha, k, max_batch).speedup, with what does not depend on q computed once
    _positive_int("max_batch", max_batch)
    pre = prefill_time_s(dep, workload.prompt_tokens)
    fixed = [(speculative, a, kk, capacity_qps(dep, workload, speculative=speculative, alpha=a, k=kk,
                                               max_batch=max_batch), _tpot_at(dep, workload, speculative, a, kk))
             for speculative, a, kk in ((False, 0.0, 1), (True, alpha, k))]

    def s(q: float) -> float:
        base, spec = (_batch_at(q, workload, sp, a, kk, max_batch, pre, cap, tpot) for sp, a, kk, cap, tpot in fixed)
        return _speedup_of(q, base, spec).speedup

    grid = [qps_max * i / 64 for i in range(1, 65)]
    if s(grid[0]) <= 1:
        lo_q = 0.0
        hi_q = grid[0]
        if s(1e-9 * qps_max) <= 1:
            return 0.0
    else:
        prev = grid[0]
        for q in grid[1:]:
            if s(q) <= 1:
                lo_q, hi_q = prev, q
                break
            prev = q
        else:
            return None
    lo_q = max(lo_q, 1e-9 * qps_max)
    for _ in range(60):
        mid = 0.5 * (lo_q + hi_q)
        if s(mid) <= 1:
            hi_q = mid
        else:
            lo_q = mid
    return hi_q
