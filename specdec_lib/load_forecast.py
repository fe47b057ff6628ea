"""The load model (`load.py`) applied to a scenario: per request class and for the mix, with capacity.

One function, `forecast`, gives every load figure a page, the memo or the CLI shows: the draft's cost ratio c,
the running batch at the scenario's QPS, the predicted speedup, the crossover batch and QPS (where speculation
stops paying), capacity, saturation, and the speedup-vs-QPS curves. Nothing else computes them.

Request shape. Each class runs with its own prompt and output lengths; the mix runs at the share-weighted mean
shape. In one batch every sequence shares the step, so the mix's tokens per verification step are the
share-weighted mean of the classes' E(alpha_i, k) (Leviathan et al. eq. 1); the mix is modelled at the alpha whose
E equals that mean (`speculation.alpha_from_mean_acceptance_length`), not at the mean alpha.

Replicas. num_gpus // tensor_parallel_size independent copies serve the QPS between them (derived, not a
scenario field): each replica sees QPS / replicas, and capacities are quoted for the whole deployment.

Capacity. A replica saturates when its requests need more GPU time than there is. For a mix, each class's
request costs 1 / capacity_i of a replica's time at the batch cap, so the mix's capacity is
1 / sum(share_i / capacity_i); above it the queue grows without bound, and the forecast says "saturated"
instead of a speedup. Pure: the caller resolves catalog names into a `load.Deployment`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from specdec_lib import load, rules, speculation

DEFAULT_MAX_BATCH = 256  # vLLM's max_num_seqs on most GPUs when no memory plan caps it
CURVE_POINTS = 24


@dataclass(frozen=True)
class ClassLoad:
    """The load model for one request class, as if the deployment served only this shape at the scenario's QPS."""

    name: str
    share: float
    prompt_tokens: int
    output_tokens: int
    alpha: float | None
    max_batch: int                      # min(max_num_seqs, KV cache / (prompt + output))
    capacity_qps: float                 # whole deployment, baseline, this shape only
    crossover_batch: float | None       # first running batch without a gain (None: none below the cap)
    crossover_qps: float | None         # whole deployment
    speedup_at_qps: float | None        # None when alpha is unknown or this shape alone saturates
    saturated: bool


@dataclass(frozen=True)
class LoadPrediction:
    """Every load figure of one scenario (see the module docstring). QPS figures are for the whole deployment."""

    calibration: str                    # `StepFactors.source` of the step-time factors used
    replicas: int
    replicas_source: str
    qps: float
    prompt_tokens: int                  # the mix's mean shape
    output_tokens: int
    alpha: float | None                 # the mix's effective alpha (equal mean tokens per step), None if unknown
    k: int
    cost_ratio: float                   # draft step / target step at batch 1, mean context (Leviathan's c)
    break_even_alpha: float | None      # at batch 1 and k; None when c >= 1
    max_batch: int
    capacity_qps: float                 # baseline, the mix
    saturated: bool
    replicas_needed: int                # replicas the QPS needs at the mix's capacity
    batch_at_qps: float | None          # running batch per replica (baseline when alpha is unknown)
    speedup_at_qps: float | None
    crossover_batch: float | None
    crossover_qps: float | None
    classes: tuple[ClassLoad, ...] = ()
    curve_x: tuple[float, ...] = ()
    curves: dict = field(default_factory=dict)  # label -> speedups over curve_x (None past saturation)
    notes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        speed = "saturated" if self.saturated else ("alpha unknown" if self.speedup_at_qps is None
                                                    else f"{self.speedup_at_qps:.2f}x")
        return (f"LoadPrediction({self.qps:g} QPS on {self.replicas} replica(s): {speed}; capacity "
                f"{self.capacity_qps:.3g} QPS; crossover batch {self.crossover_batch}, QPS "
                f"{_fmt(self.crossover_qps)})")

    def to_frame(self):
        """One row per request class plus one for the mix (pandas DataFrame)."""
        import pandas as pd

        rows = [dict(class_name=c.name, share=c.share, prompt_tokens=c.prompt_tokens,
                     output_tokens=c.output_tokens, alpha=c.alpha, max_batch=c.max_batch,
                     capacity_qps=c.capacity_qps, saturated=c.saturated, speedup_at_qps=c.speedup_at_qps,
                     crossover_batch=c.crossover_batch, crossover_qps=c.crossover_qps) for c in self.classes]
        rows.append(dict(class_name="(mix)", share=1.0, prompt_tokens=self.prompt_tokens,
                         output_tokens=self.output_tokens, alpha=self.alpha, max_batch=self.max_batch,
                         capacity_qps=self.capacity_qps, saturated=self.saturated,
                         speedup_at_qps=self.speedup_at_qps, crossover_batch=self.crossover_batch,
                         crossover_qps=self.crossover_qps))
        return pd.DataFrame(rows).set_index("class_name")


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def max_batch_for(prompt_tokens: int, output_tokens: int, memory_plan=None) -> int:
    """vLLM's max_num_seqs or what the KV cache holds of requests this long, whichever is smaller."""
    if memory_plan is None:
        return DEFAULT_MAX_BATCH
    kv_requests = memory_plan.kv_capacity_tokens // (prompt_tokens + output_tokens)
    return max(1, min(memory_plan.max_num_seqs, kv_requests))


def effective_alpha(alphas_and_shares, k: int) -> float | None:
    """The alpha whose E(alpha, k) is the share-weighted mean of the classes' E (None if any alpha is unknown)."""
    pairs = list(alphas_and_shares)
    if not pairs or any(a is None for a, _ in pairs):
        return None
    if len({a for a, _ in pairs}) == 1:
        return pairs[0][0]
    mean_e = sum(share * speculation.expected_tokens_per_step(a, k) for a, share in pairs)
    return speculation.alpha_from_mean_acceptance_length(min(mean_e, k + 1.0), k)


def _shape_load(dep, wl, alpha, k, per_replica_qps, replicas, memory_plan, cache) -> tuple:
    """(max_batch, capacity per replica, crossover batch, crossover QPS whole deployment, QpsResult or None) for
    one request shape; memoised in `cache` (a single-class mix is the class itself: computed once)."""
    key = (wl, alpha)
    if key in cache:
        return cache[key]
    cap_batch = max_batch_for(wl.prompt_tokens, wl.output_tokens, memory_plan)
    capacity = load.capacity_qps(dep, wl, speculative=False, max_batch=cap_batch)
    cross_b = cross_q = result = None
    if alpha is not None and dep.method != "none":
        cross_b = load.crossover_batch(dep, alpha, k, wl.mean_context_len, max_batch=max(cap_batch, 2))
        q = load.crossover_qps(dep, wl, alpha, k, max_batch=cap_batch)
        cross_q = None if q is None else q * replicas
        result = load.speedup_at_qps(dep, per_replica_qps, wl, alpha, k, max_batch=cap_batch)
    cache[key] = (cap_batch, capacity, cross_b, cross_q, result)
    return cache[key]


def _class_load(dep, request_class, alpha, k, per_replica_qps, replicas, memory_plan, cache) -> ClassLoad:
    wl = load.Workload(request_class.prompt_tokens, request_class.output_tokens)
    cap_batch, capacity, cross_b, cross_q, result = _shape_load(dep, wl, alpha, k, per_replica_qps, replicas,
                                                                memory_plan, cache)
    saturated = per_replica_qps >= capacity
    speed = None if result is None or saturated else result.speedup
    return ClassLoad(request_class.name, request_class.share, wl.prompt_tokens, wl.output_tokens, alpha, cap_batch,
                     capacity * replicas, cross_b, cross_q, speed, saturated)


def _curves(dep, wl, alpha, k, max_batch, capacity_per_replica, replicas, points):
    if points < 2:
        return (), {}
    lo, hi = capacity_per_replica / 1000.0, capacity_per_replica * 1.25
    xs = tuple(lo * (hi / lo) ** (i / (points - 1)) for i in range(points))
    curves = {}
    for a in ((alpha,) if alpha is not None else rules.ILLUSTRATIVE_ALPHAS):
        ys = []
        for q in xs:
            r = load.speedup_at_qps(dep, q, wl, a, k, max_batch=max_batch)
            ys.append(None if (r.baseline.saturated or r.speculative.saturated or not math.isfinite(r.speedup))
                      else r.speedup)
        curves[f"alpha {a:.2f}"] = ys
    return tuple(x * replicas for x in xs), curves


def forecast(dep, scenario, alphas, *, memory_plan=None, replicas: int | None = None,
             curve_points: int = CURVE_POINTS) -> LoadPrediction:
    """The load model for `scenario` on `dep` (a `load.Deployment`), with per-class alphas (None = unknown).

    `replicas` defaults to num_gpus // tensor_parallel_size (the memory plan's replicas when given).
    """
    k = scenario.num_speculative_tokens
    if replicas is None:
        replicas = memory_plan.replicas if memory_plan is not None else max(
            1, scenario.num_gpus // scenario.tensor_parallel_size)
        replicas_source = "derived: num_gpus // tensor_parallel_size"
    else:
        replicas_source = "given"
    per_replica = scenario.qps / replicas
    prompt = max(1, round(sum(c.share * c.prompt_tokens for c in scenario.workload)))
    output = max(1, round(sum(c.share * c.output_tokens for c in scenario.workload)))
    wl = load.Workload(prompt, output)
    cache: dict = {}
    classes = tuple(_class_load(dep, c, a, k, per_replica, replicas, memory_plan, cache)
                    for c, a in zip(scenario.workload, alphas))
    mix_capacity = 1.0 / sum(c.share / c.capacity_qps for c in classes) if all(c.capacity_qps > 0 for c in classes) \
        else 0.0
    alpha = effective_alpha(zip(alphas, (c.share for c in scenario.workload)), k)
    speculative = dep.method != "none"
    c_ratio = load.cost_ratio(dep, 1, wl.mean_context_len) if speculative else 0.0
    be = speculation.break_even_alpha(k, c_ratio) if speculative and c_ratio < 1 else None
    max_batch, _, cross_b, cross_q, result = _shape_load(
        dep, wl, alpha if speculative else None, k, per_replica, replicas, memory_plan, cache)
    base = load.batch_from_qps(dep, per_replica, wl, speculative=False, max_batch=max_batch)
    saturated = base.saturated or scenario.qps >= mix_capacity
    batch, speed = base.batch_size, None
    if result is not None and not saturated:
        batch, speed = result.speculative.batch_size, result.speedup
    xs, curves = _curves(dep, wl, alpha, k, max_batch, mix_capacity / replicas, replicas,
                         curve_points if speculative else 0)
    notes = (f"load model: {dep.factors.source}",
             f"{replicas} replica(s) ({replicas_source}); each serves {per_replica:.3g} requests/s",
             f"running batch capped at {max_batch} per replica (max_num_seqs or the KV cache at "
             f"{prompt} + {output} tokens per request)")
    return LoadPrediction(
        calibration=dep.factors.source, replicas=replicas, replicas_source=replicas_source, qps=scenario.qps,
        prompt_tokens=prompt, output_tokens=output, alpha=alpha, k=k, cost_ratio=c_ratio, break_even_alpha=be,
        max_batch=max_batch, capacity_qps=mix_capacity, saturated=saturated,
        replicas_needed=max(1, math.ceil(scenario.qps / (mix_capacity / replicas))) if mix_capacity > 0 else 0,
        batch_at_qps=batch, speedup_at_qps=speed, crossover_batch=cross_b, crossover_qps=cross_q, classes=classes,
        curve_x=xs, curves=curves, notes=notes)
